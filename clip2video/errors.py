"""Exceptions shared across the package, each naming what is at fault and what to do."""

from __future__ import annotations


class Clip2VideoError(Exception):
    """Base class of the harness' own errors."""


class VideoReadError(Clip2VideoError):
    """A video file (or frame folder) is missing, empty, corrupt or unreadable."""

    def __init__(self, video_id: str, path: object, reason: str) -> None:
        self.video_id = video_id
        self.path = path
        self.reason = reason
        super().__init__(f"video {video_id!r} at {path}: {reason}")


class ProtocolError(Clip2VideoError):
    """A protocol's annotations or split files are missing or inconsistent."""


class WeightsError(Clip2VideoError):
    """CLIP or checkpoint weights cannot be found or loaded."""
