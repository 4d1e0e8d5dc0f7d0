"""Write real video files with PyAV (synthetic protocol, tests, benchmarks)."""

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
