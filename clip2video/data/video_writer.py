"""Write real video files with PyAV (synthetic protocol, tests, benchmarks).

``index_coded_frames`` makes frames that carry their own index in their pixels: each frame is a
4x4 grid of big squares; square ``b`` (row-major) is bright when bit ``b`` of the frame index is
set. The squares survive yuv420 chroma subsampling, lossy H.264 and JPEG, so ``decode_index``
recovers the index of any decoded or extracted frame (tests and benchmarks check which source
frame a decoder returned).
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np


def write_video(
    path: str | Path,
    frames: np.ndarray,
    fps: float,
    *,
    lossless: bool = True,
    codec: str = "libx264",
) -> Path:
    """Write ``frames`` (uint8 ``[T, H, W, 3]`` RGB, H and W even) to ``path``.

    ``lossless`` uses x264's qp=0 in yuv444p, so each decoded frame depends only on its own
    pixels (a time-reversed clip decodes to exactly the reversed frames). ``fps`` may be
    fractional (29.97 is written as 30000/1001).
    """
    import av

    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
    if frames.shape[1] % 2 or frames.shape[2] % 2:
        raise ValueError(f"frame height and width must be even, got {frames.shape[1:3]}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rate = Fraction(30000, 1001) if abs(fps - 29.97) < 1e-6 else Fraction(fps).limit_denominator(1001)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width = frames.shape[2]
        stream.height = frames.shape[1]
        if codec == "libx264":
            stream.pix_fmt = "yuv444p" if lossless else "yuv420p"
            stream.options = {"qp": "0", "preset": "ultrafast"} if lossless else {"preset": "ultrafast"}
        else:
            stream.pix_fmt = "yuv420p"
        for image in frames:
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


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
