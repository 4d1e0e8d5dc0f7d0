"""``check_decodes``: decode every frame of a video file or frame folder fully (the decoders' tests).

Stricter than the frame sampler, which decodes only the picked frames; the tests use it to prove
that generated and damaged videos decode (or fail) as intended.
"""

from __future__ import annotations

from pathlib import Path

from clip2video.data.videos import frame_files, open_video
from clip2video.errors import VideoReadError


def check_decodes(path: str | Path, video_id: str | None = None) -> int:
    """Decode every frame of a video file or frame folder fully; returns the number of frames.

    Stricter than the sampler, which decodes only the picked frames. A file
    is decoded frame by frame with PyAV with error concealment off (a corrupt payload after frame
    0 raises) and must yield the frame count its index promises; a folder must have no gap in
    its numbering and every image must decode completely. Any failure is a VideoReadError naming
    ``video_id`` (default: the file stem or folder name) and the file.
    """
    path = Path(path)
    vid = video_id or (path.name if path.is_dir() else path.stem)
    if path.is_dir():
        return _check_folder(path, vid)
    reader = open_video(path, vid, decoder="pyav")  # missing, empty, no frames: VideoReadError
    try:
        count = reader.decode_all()
    except Exception as exc:  # av.error.InvalidDataError and friends
        raise VideoReadError(
            vid, path, f"frames do not decode ({type(exc).__name__}: {str(exc).strip()[:300]}); re-encode it"
        ) from exc
    if count != len(reader):
        raise VideoReadError(
            vid, path, f"only {count} of the {len(reader)} frames in its index decode; re-encode it"
        )
    return count


def _check_folder(folder: Path, vid: str) -> int:
    from PIL import Image

    files = frame_files(folder)  # a gap in the numbering raises here
    if not files:
        raise VideoReadError(vid, folder, "frame folder holds no .jpg/.png frames; re-extract the video")
    for file in files:
        try:
            with Image.open(file) as image:
                image.load()  # the whole payload: a truncated image raises here
        except (OSError, SyntaxError, ValueError) as exc:
            raise VideoReadError(vid, file, f"frame image does not decode ({exc})") from exc
    return len(files)
