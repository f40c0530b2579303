"""Entry-point helper shared by the stage scripts."""

from __future__ import annotations

import sys
from collections.abc import Callable

from brainseg.errors import BrainsegError


def run(main: Callable[[], object]) -> None:
    """Run a stage; a user-fixable error ends it with its message and exit code 2, no traceback.

    A missing input file is one: the stage was run by hand before the stages that write it.
    """
    try:
        main()
    except BrainsegError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except FileNotFoundError as err:
        print(f"error: {err.filename} does not exist: it is written by an earlier stage; run `dvc repro`, "
              "which runs the stages in order", file=sys.stderr)
        sys.exit(2)
