"""A bounded in-memory cache of preprocessed frames, shared by training and evaluation.

Keyed by the video file (path, size, modification time), the preprocessing size and the exact
source frames picked, so a hit returns the very tensor a fresh decode would give: jittered
training picks simply miss. Small datasets (the synthetic protocol) then decode each video once
per process instead of once per pair and epoch.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from pathlib import Path

import torch


class FrameCache:
    """Least-recently-used cache of frame tensors, bounded by bytes."""

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"FrameCache max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._frames: OrderedDict[Hashable, torch.Tensor] = OrderedDict()
        self._probes: dict[Hashable, tuple[int, float]] = {}

    @staticmethod
    def file_key(path: Path) -> tuple[str, int, int]:
        """Identity of a video file's contents (regenerated files miss)."""
        st = path.stat()
        return (str(path.resolve()), st.st_size, st.st_mtime_ns)

    def probe(self, file_key: Hashable) -> tuple[int, float] | None:
        """Frame count and frame rate recorded for a file, or None."""
        return self._probes.get(file_key)

    def set_probe(self, file_key: Hashable, num_frames: int, fps: float) -> None:
        self._probes[file_key] = (int(num_frames), float(fps))

    def get(self, key: Hashable) -> torch.Tensor | None:
        """The cached tensor for ``key`` (most recently used now), or None."""
        frames = self._frames.get(key)
        if frames is None:
            self.misses += 1
            return None
        self._frames.move_to_end(key)
        self.hits += 1
        return frames

    def put(self, key: Hashable, frames: torch.Tensor) -> None:
        """Store ``frames`` (evicting the least recently used entries past ``max_bytes``)."""
        size = frames.element_size() * frames.nelement()
        if size > self.max_bytes:
            return
        if key in self._frames:
            self.bytes -= self._size(self._frames.pop(key))
        self._frames[key] = frames
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, old = self._frames.popitem(last=False)
            self.bytes -= self._size(old)

    @staticmethod
    def _size(frames: torch.Tensor) -> int:
        return frames.element_size() * frames.nelement()

    def __len__(self) -> int:
        return len(self._frames)
