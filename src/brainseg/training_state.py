"""Resumable training state: written atomically after every epoch, reloaded after a kill.

The state holds the model, optimizer, schedule, gradient scaler, epoch, best score and weights,
early-stopping position, the per-epoch log (replayed into dvclive, whose files DVC deletes
before rerunning a stage) and the random-number generators. A fingerprint of everything that
shapes the result (params, data, training code) is stored with it: a state made under other
settings is never resumed.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import asdict
from pathlib import Path
from types import ModuleType

import numpy as np
import torch

from brainseg.config import Params
from brainseg.io import atomic_output

# Settings that change speed but not results, so changing them keeps a state resumable.
_RESULT_NEUTRAL = ("resume", "num_workers", "pin_memory")


def _file_digest(path: Path, digest) -> None:
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)


def fingerprint(params: Params, data_files: list[Path], code: list[ModuleType]) -> str:
    train = {k: v for k, v in asdict(params.train).items() if k not in _RESULT_NEUTRAL}
    settings = {"seed": params.seed, "image_size": params.preprocess.image_size,
                "model": asdict(params.model), "train": train}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for path in [*data_files, *(Path(m.__file__) for m in code)]:
        digest.update(path.name.encode())
        _file_digest(path, digest)
    return digest.hexdigest()


def rng_state() -> dict:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        # Plain types only, so the state loads with weights_only=True.
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": random.getstate(),
    }


def restore_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    numpy = state["numpy"]
    np.random.set_state(("MT19937", numpy["keys"].numpy().astype(np.uint32), numpy["pos"], numpy["has_gauss"],
                         numpy["gauss"]))
    random.setstate(state["python"])


def save_state(path: Path, state: dict) -> None:
    with atomic_output(path, clear_abandoned=True) as tmp:  # a kill during the save keeps the previous state
        torch.save(state, tmp)


def load_state(path: Path, expected_fingerprint: str) -> dict | None:
    """The saved state, or None (with a notice) when there is none or it belongs to other settings."""
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a state we cannot read is not worth failing the run over
        print(f"resume: ignoring unreadable {path} ({type(err).__name__}: {err}); starting afresh")
        return None
    if state.get("fingerprint") != expected_fingerprint:
        print(f"resume: {path} was saved with other params, data or code; starting afresh")
        return None
    return state
