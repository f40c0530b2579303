"""Errors caused by input or settings a user can fix; stages print them without a traceback."""


class BrainsegError(Exception):
    """Base of every error whose message names the file or key at fault and the fix."""


def listing(items: list[str], limit: int = 10) -> str:
    """The first `limit` items for an error message, with the total when there are more."""
    return ", ".join(items[:limit]) + (f", ... ({len(items)} in all)" if len(items) > limit else "")
