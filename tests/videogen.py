"""Test videos whose frames carry their own index in their pixels.

Each frame is a 4x4 grid of big squares; square ``b`` (row-major) is bright when bit ``b`` of the
frame index is set. The squares are large enough to survive yuv420 chroma subsampling, lossy
H.264 and JPEG, so ``decode_index`` recovers the index of any decoded or extracted frame.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

from clip2video.data.video_writer import write_video

GRID = 4
BITS = GRID * GRID
DARK, BRIGHT = 30, 225


def index_coded_frames(
    num_frames: int, height: int, width: int, *, texture: bool = False, seed: int = 0
) -> np.ndarray:
    """uint8 ``[T, H, W, 3]`` frames; frame ``t`` shows ``t`` in binary as a 4x4 grid of squares.

    ``texture`` adds moving noise (+-25 grey levels) so that lossy codecs have real work to do
    (benchmarks); the code still decodes because the two levels are 195 apart.
    """
    if num_frames >= 2**BITS:
        raise ValueError(f"at most {2**BITS - 1} frames can be coded, asked for {num_frames}")
    rows = np.arange(height) * GRID // height
    cols = np.arange(width) * GRID // width
    cell = rows[:, None] * GRID + cols[None, :]  # [H, W] bit number of each pixel
    index = np.arange(num_frames)[:, None, None]
    bits = (index >> cell[None]) & 1  # [T, H, W]
    frames = np.where(bits == 1, BRIGHT, DARK).astype(np.int16)
    frames = np.repeat(frames[..., None], 3, axis=-1)
    if texture:
        rng = np.random.default_rng(seed)
        base = rng.integers(-25, 26, size=(height * 2, width * 2, 3), dtype=np.int16)
        for t in range(num_frames):
            dy, dx = (t * 3) % height, (t * 5) % width
            frames[t] += base[dy : dy + height, dx : dx + width]
    frames = np.clip(frames, 0, 255).astype(np.uint8)
    assert all(decode_index(frames[i]) == i for i in (0, num_frames - 1)), "index code does not round-trip"
    return frames


def decode_index(frame: np.ndarray) -> int:
    """The index coded in ``frame`` (``[H, W, 3]`` or ``[H, W]``, any size, uint8 or float 0..255)."""
    image = np.asarray(frame, dtype=np.float64)
    if image.ndim == 3:
        image = image.mean(axis=-1)
    height, width = image.shape
    value = 0
    for bit in range(BITS):
        r, c = divmod(bit, GRID)
        # the middle half of each square, away from edges blurred by the codec
        y0, y1 = (4 * r + 1) * height // (4 * GRID), (4 * r + 3) * height // (4 * GRID)
        x0, x1 = (4 * c + 1) * width // (4 * GRID), (4 * c + 3) * width // (4 * GRID)
        if image[y0:y1, x0:x1].mean() > (DARK + BRIGHT) / 2:
            value |= 1 << bit
    return value


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
    width, height = size
    frames = index_coded_frames(num_frames, height, width, texture=texture)
    return write_video(path, frames, fps, lossless=lossless)


def make_bframe_video(
    path: str | Path, num_frames: int, fps: float, size: tuple[int, int] = (64, 64)
) -> Path:
    """An index-coded lossy H.264 video with B-frames and short GOPs (reordered decoding)."""
    import av

    width, height = size
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
