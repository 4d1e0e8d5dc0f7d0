"""Test videos whose frames carry their own index in their pixels.

Each frame is a 4x4 grid of big squares; square ``b`` (row-major) is bright when bit ``b`` of the
frame index is set. The squares are large enough to survive yuv420 chroma subsampling, lossy
H.264 and JPEG, so ``decode_index`` recovers the index of any decoded or extracted frame.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

from clip2video.data.video_writer import (  # noqa: F401  (re-exported for the tests)
    BITS,
    BRIGHT,
    DARK,
    GRID,
    decode_index,
    index_coded_frames,
    write_video,
)


def make_video(
    path: str | Path,
    num_frames: int,
    fps: float,
    size: tuple[int, int] = (64, 64),
    lossless: bool = True,
    *,
    texture: bool = False,
) -> Path:
    """Write an index-coded H.264 video of ``num_frames`` frames; ``size`` is (width, height)."""
    assert num_frames >= 1, (
        f"make_video needs at least one frame (make_zero_frame_video writes none), got {num_frames}"
    )
    width, height = size
    frames = index_coded_frames(num_frames, height, width, texture=texture)
    return write_video(path, frames, fps, lossless=lossless)


def make_bframe_video(
    path: str | Path, num_frames: int, fps: float, size: tuple[int, int] = (64, 64)
) -> Path:
    """An index-coded lossy H.264 video with B-frames and short GOPs (reordered decoding)."""
    import av

    width, height = size
    assert width % 2 == 0 and height % 2 == 0, f"yuv420p needs an even frame size, got {size}"
    frames = index_coded_frames(num_frames, height, width)
    rate = Fraction(30000, 1001) if abs(fps - 29.97) < 1e-6 else Fraction(fps).limit_denominator(1001)
    path = Path(path)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "medium", "bf": "3", "g": "24"}
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def make_zero_frame_video(path: str | Path, size: tuple[int, int] = (64, 64)) -> Path:
    """A valid mp4 holding a video stream with no frame at all."""
    import av

    path = Path(path)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        container.start_encoding()
    return path


def remux_faststart(src: str | Path, dst: str | Path) -> Path:
    """Copy ``src``'s video packets into ``dst`` with the mp4 index (moov) first."""
    import av

    dst = Path(dst)
    with av.open(str(src)) as source, av.open(str(dst), "w", options={"movflags": "faststart"}) as out:
        stream = source.streams.video[0]
        target = out.add_stream_from_template(stream)
        for packet in source.demux(stream):
            if packet.dts is None:
                continue
            packet.stream = target
            out.mux(packet)
    return dst
