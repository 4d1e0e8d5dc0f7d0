"""Training checkpoints: atomic writes (temp file, fsync, rename) and RNG-state capture.

A checkpoint is one ``torch.save`` dict holding only tensors and plain Python values, so it loads
with ``weights_only=True``: model, optimizer and scheduler state dicts, epoch, step, the Python /
NumPy / torch (and CUDA) RNG states, the data-order state, the config and the history.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clip2video.errors import Clip2VideoError
from clip2video.fileio import fsync_dir

CHECKPOINT_FORMAT = 1


class CheckpointError(Clip2VideoError):
    """A training checkpoint is missing, unreadable or does not match the run resuming it."""


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically: a crash mid-write leaves the previous file intact.

    The bytes go to a temporary file in the same folder, which is flushed, fsynced and then
    renamed over ``path`` with ``os.replace`` (atomic on POSIX and Windows).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save({"format": CHECKPOINT_FORMAT, **state}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}: run without resume, or point out_dir at the run")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means the same thing here
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({type(exc).__name__}: {unreadable_reason(exc)}); "
            "delete it (or run without --resume) to restart the run"
        ) from exc
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path} is not a clip2video training checkpoint (format {CHECKPOINT_FORMAT}); "
            "delete it to restart the run"
        )
    return state


def unreadable_reason(exc: BaseException, limit: int = 160) -> str:
    """torch.load's failure in a few words: its first sentence, never its multi-line advice (for a
    pickle that holds more than tensors it suggests ``weights_only=False``, which would run code)."""
    text = " ".join(str(exc).split())
    if text.startswith("Weights only load failed"):
        return "not a plain tensor/state-dict file (it holds other Python objects)"
    return text.split(". ")[0][:limit] or "no message"


def load_model_state(model: torch.nn.Module, state_dict: Any, path: str | os.PathLike) -> None:
    """Load a checkpoint's model weights into ``model``, or fail with one line naming ``path``.

    A checkpoint of another architecture (e.g. resuming after a backbone or model change) has
    missing, unexpected or differently shaped tensors; the error names a few and says what to do.
    """
    if not isinstance(state_dict, dict):
        raise CheckpointError(f"checkpoint {path} holds no model state dict; delete it to restart the run")
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    wrong = [
        f"{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if k in state_dict and isinstance(state_dict[k], torch.Tensor) and state_dict[k].shape != v.shape
    ]
    if missing or unexpected or wrong:
        parts = [
            f"{label} {', '.join(items[:3])}{' ...' if len(items) > 3 else ''}"
            for label, items in (
                ("shape (checkpoint vs model)", wrong),
                ("missing", missing),
                ("unexpected", unexpected),
            )
            if items
        ]
        raise CheckpointError(
            f"checkpoint {path} was written by another model architecture ({'; '.join(parts)}): the "
            "settings changed since it was saved; run without --resume, or delete it to restart the run"
        )
    model.load_state_dict(state_dict)


def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU and (when present) CUDA RNG states, as tensors and plain values."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    np.random.set_state(
        (
            np_state["kind"],
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
