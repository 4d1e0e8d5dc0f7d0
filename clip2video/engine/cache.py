"""On-disk cache of encoded embeddings, so that re-evaluating skips decoding and encoding.

A cache entry is keyed by everything that decides the embeddings: the model's weights (a
deterministic hash of its state dict), its class and encoding config, the protocol and split,
the frame settings (fps, stride, max_frames, image size), the text settings (max_words), the
time-reversal flag and a digest of the video ids / captions. Settings that act only on the
similarity matrix (tie policy, v2t convention, TAB weight w, DSL, QB-Norm) are not part of the
key, so changing them reuses the cached embeddings.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "EVAL_ONLY_CONFIG_KEYS",
    "EmbeddingCache",
    "cache_key",
    "model_fingerprint",
    "state_dict_hash",
    "strings_digest",
    "videos_digest",
]

# Model config entries that change only the similarity, not the embeddings.
EVAL_ONLY_CONFIG_KEYS: tuple[str, ...] = ("center_weight", "w")


def _tensor_bytes(t: torch.Tensor) -> bytes:
    """Raw little-endian bytes of a tensor of any dtype (bf16 included), on the CPU."""
    flat = t.detach().to("cpu").contiguous().reshape(-1)
    if flat.numel() == 0:
        return b""
    return flat.view(torch.uint8).numpy().tobytes()


def state_dict_hash(state_dict: Mapping[str, Any]) -> str:
    """sha256 over (name, dtype, shape, bytes) of every tensor, in sorted key order."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        value = state_dict[name]
        h.update(name.encode())
        if isinstance(value, torch.Tensor):
            h.update(f"|{value.dtype}|{tuple(value.shape)}|".encode())
            h.update(_tensor_bytes(value))
        else:
            h.update(f"|{value!r}|".encode())
    return h.hexdigest()


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


def model_fingerprint(model: torch.nn.Module) -> dict[str, Any]:
    """Class name, encoding config (eval-only keys removed) and state-dict hash of ``model``."""
    config = dict(getattr(model, "config", {}) or {})
    for key in EVAL_ONLY_CONFIG_KEYS:
        config.pop(key, None)
    return {
        "class": f"{type(model).__module__}.{type(model).__qualname__}",
        "config": _jsonable(config),
        "weights": state_dict_hash(model.state_dict()),
    }


def strings_digest(items: Iterable[str]) -> str:
    """sha256 of a sequence of strings (order matters; lengths are framed, so no ambiguity)."""
    h = hashlib.sha256()
    for s in items:
        b = str(s).encode()
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


def videos_digest(paths: Iterable[str | os.PathLike[str]]) -> str:
    """Identity of the videos behind an entry: each file's path, size and mtime, and for a frame
    folder every image inside (an overwritten jpg changes it, although the folder's own stat does not)."""
    from clip2video.fingerprint import video_identity

    return strings_digest(f"{Path(p).resolve()}|{video_identity(p)}" for p in paths)


def cache_key(key_parts: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of ``key_parts`` (sorted keys; non-JSON values by repr)."""
    text = json.dumps(_jsonable(key_parts), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


class EmbeddingCache:
    """A folder of ``<key>.pt`` files (``torch.save`` of a dict of tensors and plain values).

    ``hits`` and ``misses`` count lookups in this process. Files are written atomically (a
    temporary file in the same folder, then ``os.replace``), so a crash or a concurrent writer
    never leaves a half-written entry; a corrupt entry is recomputed and overwritten.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.hits = 0
        self.misses = 0

    def path(self, key_parts: Mapping[str, Any]) -> Path:
        """Where the entry of ``key_parts`` lives."""
        return self.root / f"{cache_key(key_parts)}.pt"

    def get(self, key_parts: Mapping[str, Any]) -> dict[str, Any] | None:
        """The stored entry, or None when absent or unreadable."""
        path = self.path(key_parts)
        if not path.is_file():
            return None
        try:
            entry = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # truncated or foreign file: treat as a miss and overwrite it
            return None
        if not isinstance(entry, dict) or entry.get("key_parts") != _jsonable(key_parts):
            return None
        return entry["value"]

    def put(self, key_parts: Mapping[str, Any], value: Mapping[str, Any]) -> Path:
        """Store ``value`` (tensors moved to the CPU) atomically; returns the file path."""
        path = self.path(key_parts)
        payload = {
            "key_parts": _jsonable(key_parts),
            "value": {k: (v.detach().cpu() if isinstance(v, torch.Tensor) else v) for k, v in value.items()},
        }
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=f".{path.stem}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                torch.save(payload, fh)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    def get_or_compute(
        self, key_parts: Mapping[str, Any], fn: Callable[[], Mapping[str, Any]]
    ) -> dict[str, Any]:
        """The cached entry of ``key_parts``, or ``fn()`` stored under it."""
        entry = self.get(key_parts)
        if entry is not None:
            self.hits += 1
            return entry
        self.misses += 1
        value = dict(fn())
        self.put(key_parts, value)
        return value
