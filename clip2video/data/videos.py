"""Locate a video by id and open it with a frame decoder, turning every failure into a VideoReadError.

Two decoders read video files with the same interface (``len(reader)``, ``reader.get_avg_fps()``,
``reader.get_batch(indices).asnumpy()`` -> uint8 ``[T, H, W, 3]``): decord, the default, and PyAV
(:class:`PyAVReader`), used automatically where decord is not installed (decord has no macOS arm64
wheel) or when ``CLIP2VIDEO_DECODER=pyav``. Frame ``k`` is the ``k``-th frame in presentation
order for both, so they pick the same source frames.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clip2video.errors import VideoReadError
from clip2video.fileio import confined

VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".avi", ".webm", ".mkv", ".mov", ".m4v", ".3gp")
FRAME_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png")


ALLOW_LINKS_HINT = (
    "to allow them pass --set data.allow_outside_links=true (ablation, eval) or --allow-outside-links "
    "(data verify)"
)
_POLICY = {"allow_outside_links": False}


@contextmanager
def outside_links(allowed: bool) -> Iterator[None]:
    """Inside this block, video files and frame folders may be symbolic links that leave the videos
    folder (``data.allow_outside_links``); outside it (the default) such links are refused."""
    before = _POLICY["allow_outside_links"]
    _POLICY["allow_outside_links"] = bool(allowed)
    try:
        yield
    finally:
        _POLICY["allow_outside_links"] = before


def find_video(videos_dir: str | Path, video_id: str) -> Path:
    """Return the file ``<id>.<ext>`` or the frame folder ``<id>/`` for ``video_id``.

    Raises VideoReadError naming the id and the folder searched when neither exists. The id must
    stay inside ``videos_dir`` (no ``..``, not absolute), and so must the file it names through
    symbolic links unless :func:`outside_links` allows them: else an ``UnsafePathError``.
    """
    root = Path(videos_dir)
    allow = _POLICY["allow_outside_links"]
    confined(root, video_id, "video id", allow_outside_links=True)  # the id itself: always checked
    for ext in VIDEO_EXTENSIONS:
        candidate = root / f"{video_id}{ext}"
        if candidate.is_file():
            return confined(
                root,
                f"{video_id}{ext}",
                f"video {video_id!r}",
                allow_outside_links=allow,
                allow_hint=ALLOW_LINKS_HINT,
            )
    folder = root / video_id
    if folder.is_dir():
        return confined(
            root, video_id, f"video {video_id!r}", allow_outside_links=allow, allow_hint=ALLOW_LINKS_HINT
        )
    raise VideoReadError(
        video_id,
        root,
        f"no file {video_id}.<{'|'.join(e[1:] for e in VIDEO_EXTENSIONS)}> and no frame folder "
        f"{video_id}/ in {root}; pass the folder that holds the protocol's videos",
    )


def lookup_videos(videos_dir: str | Path, video_ids: Iterable[str]) -> dict[str, Path | None]:
    """Each id's file or frame folder (:func:`find_video`), ``None`` where neither exists.

    The one place a split's ids are looked up: :func:`find_videos`, ``data verify`` and the
    preflight checks all go through it. An id or link that leaves the folder is an error
    (``UnsafePathError``), never "missing".
    """
    found: dict[str, Path | None] = {}
    for vid in video_ids:
        if vid not in found:
            try:
                found[vid] = find_video(videos_dir, vid)
            except VideoReadError:
                found[vid] = None
    return found


def find_videos(videos_dir: str | Path, video_ids: Sequence[str]) -> list[Path]:
    """The path of every id, in order; one VideoReadError naming every missing id."""
    found = lookup_videos(videos_dir, video_ids)
    paths = [found[vid] for vid in video_ids]
    missing = [vid for vid, path in zip(video_ids, paths, strict=True) if path is None]
    if missing:
        raise VideoReadError(
            ", ".join(missing),
            videos_dir,
            f"{len(missing)} of {len(video_ids)} videos are missing; add them or point at the right "
            "folder (an evaluation may drop missing test videos with allow_missing, which records them)",
        )
    return [path for path in paths if path is not None]


def frame_files(folder: Path) -> list[Path]:
    """Sorted image files of a frame folder (``00000001.jpg`` ...).

    Numbered frames (every stem made of digits, as ffmpeg's ``%08d.jpg`` writes them) must run
    without a gap from the first number: a missing frame would shift every later one, so it is a
    VideoReadError naming the folder and the first missing file.
    """
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in FRAME_EXTENSIONS)
    if files and all(p.stem.isdigit() for p in files):
        numbers = [int(p.stem) for p in files]
        if len(set(numbers)) != len(numbers):
            raise VideoReadError(
                folder.name, folder, "frame folder holds two images with the same frame number; keep one"
            )
        files.sort(key=lambda p: int(p.stem))
        numbers.sort()
        if numbers[-1] - numbers[0] + 1 != len(numbers):
            present = set(numbers)
            gap = next(n for n in range(numbers[0], numbers[-1]) if n not in present)
            width = len(files[0].stem)
            name = f"{gap:0{width}d}{files[0].suffix}"
            missing = numbers[-1] - numbers[0] + 1 - len(numbers)
            raise VideoReadError(
                folder.name,
                folder,
                f"frame folder has a gap: {name} is missing ({missing} missing between "
                f"{files[0].name} and {files[-1].name}); later frames would shift, so re-extract the video",
            )
    return files


@dataclass(frozen=True)
class VideoInfo:
    """What a decoder reports about a video before any frame is read."""

    num_frames: int
    fps: float
    width: int
    height: int


DECODERS: tuple[str, ...] = ("decord", "pyav")


def video_decoder() -> str:
    """The decoder video files are read with: ``$CLIP2VIDEO_DECODER`` if set, else decord when installed, else PyAV."""
    chosen = os.environ.get("CLIP2VIDEO_DECODER", "").strip().lower()
    if chosen:
        if chosen not in DECODERS:
            raise ValueError(f"CLIP2VIDEO_DECODER={chosen!r}: use one of {', '.join(DECODERS)}")
        return chosen
    return "decord" if importlib.util.find_spec("decord") is not None else "pyav"


def decoder_threads() -> int:
    """Decoder threads: 1 inside a DataLoader worker (the workers are the parallelism), else
    ``torch.get_num_threads()`` (the row's thread budget, ``[run] threads``). Frames decode the
    same with any thread count."""
    import torch
    from torch.utils.data import get_worker_info

    return 1 if get_worker_info() is not None else max(int(torch.get_num_threads()), 1)


class _Frames:
    """What ``get_batch`` returns: decord's NDArray interface (``asnumpy()``) over a numpy array."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array

    def asnumpy(self) -> np.ndarray:
        return self.array


class PyAVReader:
    """A video file read with PyAV, with the decord ``VideoReader`` calls the sampler uses.

    Frame ``k`` is the ``k``-th decoded frame in presentation order (decord's numbering);
    ``len`` counts the video stream's packets that carry a frame, as decord counts its index;
    ``get_avg_fps`` is the stream's average rate. ``get_batch`` decodes from the start up to the
    last index asked for and keeps the asked frames (RGB24).
    """

    def __init__(self, path: str | Path) -> None:
        import av

        self.path = str(path)
        with av.open(self.path) as container:
            if not container.streams.video:
                raise ValueError("no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            self._fps = float(rate) if rate else 0.0
            self._len = sum(1 for packet in container.demux(stream) if packet.size > 0)

    def __len__(self) -> int:
        return self._len

    def get_avg_fps(self) -> float:
        return self._fps

    def get_batch(self, indices: Any) -> _Frames:
        wanted = [int(i) for i in indices]
        if not wanted:
            return _Frames(np.zeros((0, 0, 0, 3), np.uint8))
        bad = [i for i in wanted if not 0 <= i < self._len]
        if bad:
            raise IndexError(f"frame indices {bad[:5]} are outside 0..{self._len - 1}")
        last, keep = max(wanted), set(wanted)
        found: dict[int, np.ndarray] = {}
        for k, frame in enumerate(self._frames()):
            if k in keep:
                found[k] = frame.to_ndarray(format="rgb24")
            if k >= last:
                break
        if len(found) != len(keep):
            missing = sorted(keep - set(found))
            raise RuntimeError(f"PyAV decoded no frame {missing[:5]}: the stream ends early")
        return _Frames(np.stack([found[i] for i in wanted]))

    def _frames(self) -> Any:
        import av

        with av.open(self.path) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            stream.thread_count = decoder_threads()
            yield from container.decode(stream)

    def decode_all(self) -> int:
        """Decode every frame (errors raised, not concealed); returns the number of frames."""
        import av

        count = 0
        with av.open(self.path) as container:
            stream = container.streams.video[0]
            stream.codec_context.options = {"err_detect": "explode"}
            for packet in container.demux(stream):
                for _frame in packet.decode():
                    count += 1
            return count


def open_video(path: str | Path, video_id: str | None = None, *, decoder: str | None = None):
    """Open ``path`` with the chosen decoder (see :func:`video_decoder`) and return its reader.

    decord raises RuntimeError (and sometimes its own DECORDError), PyAV its ``av.error`` types,
    for missing, empty, garbage or truncated files; all are re-raised as VideoReadError with the
    id and path.
    """
    path = Path(path)
    vid = video_id or path.stem
    if not path.exists():
        raise VideoReadError(vid, path, "file does not exist")
    if path.is_file() and path.stat().st_size == 0:
        raise VideoReadError(vid, path, "file is empty (0 bytes)")
    decoder = decoder or video_decoder()
    try:
        if decoder == "decord":
            import decord

            reader = decord.VideoReader(str(path), num_threads=decoder_threads())
        else:
            reader = PyAVReader(path)
    except Exception as exc:  # decord: RuntimeError or DECORDError; PyAV: av.error.* or ValueError
        raise VideoReadError(vid, path, f"{decoder} cannot open it: {open_failure(exc)}") from exc
    if len(reader) == 0:
        raise VideoReadError(vid, path, "the video has no frames")
    return reader


def open_failure(exc: BaseException) -> str:
    """Why a decoder could not open a file, in a few words (decord's own message is an internal
    assertion: ``[12:00:00] .../video_reader.cc:151: Check failed: ... cannot find video stream``)."""
    text = " ".join(str(exc).split())
    if "cannot find video stream" in text or "no video stream" in text:
        return "it has no video stream (an audio-only file, or not a video)"
    if "Check failed" in text and "ERROR" in text:
        text = text.split("ERROR", 1)[1].strip()
    return f"{type(exc).__name__}: {text[:200] or 'no message'}"


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
    # the first frame decoded (decord: indexing; PyAVReader has get_batch only)
    first = reader[0] if hasattr(reader, "__getitem__") else reader.get_batch([0]).asnumpy()[0]
    height, width = first.shape[:2] if len(reader) else (0, 0)
    return VideoInfo(num_frames=len(reader), fps=float(reader.get_avg_fps()), width=width, height=height)
