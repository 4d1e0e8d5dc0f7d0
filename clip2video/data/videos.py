"""Locate a video by id and open it with decord, turning every failure into a VideoReadError."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from clip2video.errors import VideoReadError

VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".avi", ".webm", ".mkv", ".mov", ".m4v", ".3gp")
FRAME_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png")


def find_video(videos_dir: str | Path, video_id: str) -> Path:
    """Return the file ``<id>.<ext>`` or the frame folder ``<id>/`` for ``video_id``.

    Raises VideoReadError naming the id and the folder searched when neither exists.
    """
    root = Path(videos_dir)
    for ext in VIDEO_EXTENSIONS:
        candidate = root / f"{video_id}{ext}"
        if candidate.is_file():
            return candidate
    folder = root / video_id
    if folder.is_dir():
        return folder
    raise VideoReadError(
        video_id,
        root,
        f"no file {video_id}.<{'|'.join(e[1:] for e in VIDEO_EXTENSIONS)}> and no frame folder "
        f"{video_id}/ in {root}; pass the folder that holds the protocol's videos",
    )


def frame_files(folder: Path) -> list[Path]:
    """Sorted image files of a frame folder (``00000001.jpg`` ...)."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in FRAME_EXTENSIONS)


@dataclass(frozen=True)
class VideoInfo:
    """What a decoder reports about a video before any frame is read."""

    num_frames: int
    fps: float
    width: int
    height: int


def open_video(path: str | Path, video_id: str | None = None):
    """Open ``path`` with decord and return its ``VideoReader``.

    decord raises RuntimeError (and sometimes its own DECORDError) for missing, empty, garbage
    or truncated files; both are re-raised as VideoReadError with the id and path.
    """
    import decord

    path = Path(path)
    vid = video_id or path.stem
    if not path.exists():
        raise VideoReadError(vid, path, "file does not exist")
    if path.is_file() and path.stat().st_size == 0:
        raise VideoReadError(vid, path, "file is empty (0 bytes)")
    try:
        reader = decord.VideoReader(str(path), num_threads=1)
    except Exception as exc:  # decord raises RuntimeError or decord._ffi.base.DECORDError
        raise VideoReadError(vid, path, f"decord cannot open it ({type(exc).__name__}: {exc})") from exc
    if len(reader) == 0:
        raise VideoReadError(vid, path, "the video has no frames")
    return reader


def probe_video(path: str | Path, video_id: str | None = None) -> VideoInfo:
    """Number of frames, frame rate and size of a video file or frame folder."""
    path = Path(path)
    if path.is_dir():
        files = frame_files(path)
        if not files:
            raise VideoReadError(video_id or path.name, path, "frame folder holds no .jpg/.png frames")
        from PIL import Image

        with Image.open(files[0]) as img:
            width, height = img.size
        return VideoInfo(num_frames=len(files), fps=0.0, width=width, height=height)
    reader = open_video(path, video_id)
    height, width = reader[0].shape[:2] if len(reader) else (0, 0)
    return VideoInfo(num_frames=len(reader), fps=float(reader.get_avg_fps()), width=width, height=height)
