"""Frame sampling: the instants the official two-step pipeline uses, read straight from the video.

The official pipeline extracts every video with ``ffmpeg -i video -r 5 -q 0 %08d.jpg`` and then
picks at most ``max_frames`` of the extracted JPEGs. ``FrameSampler`` works out which *source*
frame ffmpeg writes at each output index (``ffmpeg_output_frames``), applies the official picks to
that list, and decodes only those source frames with decord. A frame folder (``<id>/00000001.jpg
...``) is taken to *be* the extracted frames and is picked from directly. Both paths go through
the same CLIP preprocessing (PIL bicubic resize of the short side, center crop, normalize).

``decode`` chooses the pixels of a video file's picked frames:

- ``"direct"`` (the default): the decoder's RGB frames, the same instants as the official
  extraction but without its JPEG round trip (pixels differ from the official frames by ~2 levels
  on average, up to ~200 at sharp colour edges);
- ``"official-jpeg"``: each picked frame goes through the official extraction's JPEG route in
  memory (``official_jpeg``): the decoded YUV frame, converted to full range as ffmpeg 5.1's
  swscale does for ``ffmpeg -i V -r 5 -q 0 %08d.jpg``, encoded by ffmpeg's MJPEG encoder at
  ``-q 0`` (PyAV), then decoded like the official loader (``PIL.Image.open(...).convert("RGB")``).
  On 8-bit YUV 4:2:0 / 4:4:4 videos the result equals the official JPEG folders' pixels bit for bit
  (tests/test_ffmpeg_parity.py).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clip2video.data.frame_cache import FrameCache
from clip2video.data.videos import PyAVReader, decoder_threads, frame_files, open_video
from clip2video.errors import VideoReadError
from clip2video.settings import FrameSettings, section_defaults

CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
_MEAN = torch.tensor(CLIP_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
_STD = torch.tensor(CLIP_STD, dtype=torch.float32).view(1, 3, 1, 1)

DECODE_MODES = ("direct", "official-jpeg")
_DROP = Fraction(-11, 10)  # ffmpeg's CFR thresholds, in output-frame units
_DUP = Fraction(11, 10)
_NB0_SHIFT = Fraction(6, 10)


def _as_fraction(fps: float | Fraction) -> Fraction:
    """A frame rate as an exact fraction; NTSC rates (29.97, 23.976, 59.94) become n*1000/1001."""
    if isinstance(fps, Fraction):
        return fps
    if not math.isfinite(fps) or fps <= 0:
        raise ValueError(f"frame rate must be a positive number, got {fps}")
    return Fraction(fps).limit_denominator(1001)


@lru_cache(maxsize=4096)
def _ffmpeg_map(num_source_frames: int, source_fps: Fraction, out_fps: Fraction) -> tuple[int, ...]:
    ratio = source_fps / out_fps  # source frames per output frame
    # frame duration in output units: min(1/ratio, 1), replaced by lrint(1/ratio) when that is > 0
    rounded = round(1 / ratio)
    duration = Fraction(rounded) if rounded > 0 else min(1 / ratio, Fraction(1))
    out: list[int] = []
    last_nb0 = [0, 0, 0]
    previous: int | None = None
    for i in range(num_source_frames):
        delta0 = i / ratio - len(out)
        delta = delta0 + duration
        nb_frames, nb0 = 1, 0
        if delta < _DROP:
            nb_frames = 0
        elif delta > _DUP:
            nb_frames = round(delta)
            if delta0 > _DUP:
                nb0 = round(delta0 - _NB0_SHIFT)
        nb0 = min(nb0, nb_frames)
        last_nb0 = [nb0, *last_nb0[:2]]
        for j in range(nb_frames):
            out.append(previous if j < nb0 and previous is not None else i)
        previous = i
    if previous is not None:  # end of stream: ffmpeg repeats the last frame median(last nb0) times
        out.extend([previous] * sorted(last_nb0)[1])
    return tuple(out)


def ffmpeg_output_frames(num_source_frames: int, source_fps: float, extraction_fps: float = 5.0) -> list[int]:
    """Source frame index of every frame ``ffmpeg -i video -r <extraction_fps> out/%08d.jpg`` writes.

    Rule found empirically with ffmpeg 5.1 (Debian 12) on index-coded videos (see
    tests/test_ffmpeg_parity.py) and matching the constant-frame-rate logic of its ``-r`` output
    option. With ``r = source_fps / extraction_fps``, source frame ``i`` sits at output time
    ``t_i = i / r`` and lasts ``d = min(1/r, 1)`` (``d = round(1/r)`` when that is >= 1); with ``k``
    frames written so far and ``delta = t_i + d - k``:

    * ``delta < -1.1``: frame ``i`` is dropped;
    * ``-1.1 <= delta <= 1.1``: frame ``i`` is written once, as output ``k``;
    * ``delta > 1.1`` (only below ~5.5 fps): it is written ``round(delta)`` times, the first
      ``round(delta - d - 0.6)`` of them showing frame ``i - 1`` when ``delta - d > 1.1``.

    So output 0 is frame 0 and output 1 is frame 1 (not the frame at 0.2 s), and from then on
    output ``k`` is the first frame with ``(i + 1) / r >= k - 1.1``: the frame that starts in
    ``[t - 1/source_fps, t)`` with ``t = (k - 1.1) / extraction_fps`` (0.22 s before ``k / 5`` s). Ties (``delta == -1.1`` exactly, e.g. at 50 fps)
    keep the frame, as ffmpeg does. Exact rational arithmetic, cached per (length, rate).
    """
    if num_source_frames < 0:
        raise ValueError(f"num_source_frames must be >= 0, got {num_source_frames}")
    return list(_ffmpeg_map(int(num_source_frames), _as_fraction(source_fps), _as_fraction(extraction_fps)))


@dataclass
class FrameSampler:
    """The official frame selection and CLIP preprocessing, for video files and frame folders.

    ``extraction_fps``: the rate the official pipeline extracts frames at (5); ``stride``: keep
    every ``stride``-th extracted frame as a candidate (2 on MSR-VTT, 1 on MSVD/VATEX);
    ``max_frames``: at most this many frames (12); ``image_size``: CLIP's input size;
    ``train``: jitter the interior picks as the official training loader does; ``decode``: the
    pixels of a video file's frames, ``"direct"`` or ``"official-jpeg"`` (module docstring).
    """

    extraction_fps: float = 5.0
    stride: int = 1
    max_frames: int = 12
    image_size: int = 224
    train: bool = False
    decode: str = "direct"

    @classmethod
    def from_settings(cls, frames: FrameSettings, *, train: bool = False) -> FrameSampler:
        """The sampler a suite's ``[frames]`` section describes: the one place a sampler is built
        from settings (rows, the evaluation-drift layer, the engine's protocol default)."""
        return cls(**frames.to_dict(), train=train)

    @classmethod
    def for_protocol(cls, protocol: Any) -> FrameSampler:
        """The sampler of a suite on ``protocol`` that sets no ``[frames]`` key (its published settings)."""
        from clip2video.data.protocols import get_protocol

        values = {**section_defaults("frames"), **get_protocol(protocol).settings()["frames"]}
        return cls.from_settings(FrameSettings.from_dict(values))

    def __post_init__(self) -> None:
        if self.stride < 1 or self.max_frames < 1 or self.image_size < 1 or self.extraction_fps <= 0:
            raise ValueError(
                f"FrameSampler needs stride >= 1, max_frames >= 1, image_size >= 1 and extraction_fps > 0, "
                f"got {self}"
            )
        if self.decode not in DECODE_MODES:
            raise ValueError(f"frames.decode = {self.decode!r}: expected one of {', '.join(DECODE_MODES)}")
        self._transform = None
        self._cache = None

    @property
    def cache(self) -> FrameCache | None:
        """The frame cache loads are served from (None: every load decodes)."""
        return self._cache

    def attach_cache(self, cache: FrameCache | None) -> FrameSampler:
        """Serve repeated loads of the same file and frames from ``cache`` (returns ``self``)."""
        self._cache = cache
        return self

    # ----- which frames -------------------------------------------------------------------------
    def extracted_count(self, num_source_frames: int, source_fps: float) -> int:
        """How many frames ``ffmpeg -r extraction_fps`` writes for this video."""
        return len(ffmpeg_output_frames(num_source_frames, source_fps, self.extraction_fps))

    def extracted_to_source(self, k: int, source_fps: float, num_source_frames: int) -> int:
        """The source frame ffmpeg shows at extracted index ``k`` (0-based; rule in ffmpeg_output_frames)."""
        mapping = ffmpeg_output_frames(num_source_frames, source_fps, self.extraction_fps)
        if not 0 <= k < len(mapping):
            raise IndexError(f"extracted index {k} out of range: ffmpeg writes {len(mapping)} frames")
        return mapping[k]

    def pick(self, n_extracted: int, rng: np.random.Generator | None = None) -> list[int]:
        """The official picks among ``n_extracted`` extracted frames (indices into them).

        ``c = n // stride`` candidates at ``linspace(0, n-1, c).astype(int)``; all of them if
        ``c <= max_frames``, else ``linspace(0, c-1, max_frames).astype(int)`` among them. When
        ``train``, each interior pick moves by a random integer in ``[-h, h)`` with
        ``h = (pick[1] - pick[0]) // 2`` counted in candidates, when ``h > 2`` (as the official
        loader does; ``rng=None`` draws from numpy's global state like it). One deviation: a video
        with at least one but fewer than ``stride`` extracted frames keeps its first frame, where
        the official loader would return an empty video.
        """
        if n_extracted <= 0:
            return []
        count = max(n_extracted // self.stride, 1)
        candidates = np.linspace(0, n_extracted - 1, num=count).astype(int)
        if count <= self.max_frames:
            return candidates.tolist()
        picks = np.linspace(0, count - 1, num=self.max_frames).astype(int)
        if self.train:
            half = int(picks[1] - picks[0]) // 2
            if half > 2:
                size = self.max_frames - 2
                if rng is None:
                    jitter = np.random.randint(-half, half, size)
                else:
                    jitter = rng.integers(-half, half, size)
                picks[1:-1] += jitter
        return candidates[picks].tolist()

    def source_indices(
        self, num_source_frames: int, source_fps: float, rng: np.random.Generator | None = None
    ) -> list[int]:
        """Source (decoder) frame indices of the frames the official pipeline would use."""
        mapping = ffmpeg_output_frames(num_source_frames, source_fps, self.extraction_fps)
        return [mapping[k] for k in self.pick(len(mapping), rng)]

    # ----- pixels -------------------------------------------------------------------------------
    def preprocess(self, images: list | np.ndarray, pad_to: int | None = None) -> torch.Tensor:
        """CLIP's preprocessing of PIL images (or uint8 HxWx3 arrays) -> FloatTensor[T, 3, S, S].

        Bit-identical to ``open_clip.image_transform(S, is_train=False)`` (torchvision's PIL
        bicubic resize of the short side, center crop, ToTensor, Normalize): each frame is resized
        and cropped with PIL, then the clip's frames are scaled and normalized in one vectorized
        step. With ``pad_to`` the result has ``pad_to`` frames, the ones after the real frames 0.
        """
        size = self.image_size
        count = len(images)
        total = count if pad_to is None else max(int(pad_to), count)
        out = torch.empty(total, 3, size, size, dtype=torch.float32)
        if count:
            crops = np.stack([self._resize_crop(image) for image in images])
            pixels = torch.from_numpy(crops).permute(0, 3, 1, 2).to(torch.float32)
            real = out[:count]
            torch.div(pixels, 255, out=real)
            real.sub_(_MEAN).div_(_STD)
        out[count:].zero_()
        return out

    def _resize_crop(self, image: Any) -> np.ndarray:
        """uint8 ``[S, S, 3]``: PIL bicubic resize of the short side to S, then the center S x S."""
        from PIL import Image

        if not isinstance(image, Image.Image):
            image = Image.fromarray(np.asarray(image, dtype=np.uint8))
        if image.mode != "RGB":
            image = image.convert("RGB")
        size = self.image_size
        width, height = image.size
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = size, int(size * long / short)  # torchvision's rounding
        new_w, new_h = (new_short, new_long) if width <= height else (new_long, new_short)
        if (new_w, new_h) != (width, height):
            image = image.resize((new_w, new_h), Image.BICUBIC)
        array = np.asarray(image)
        top = int(round((new_h - size) / 2.0))
        left = int(round((new_w - size) / 2.0))
        return array[top : top + size, left : left + size]

    def _pad(self, frames: torch.Tensor) -> torch.Tensor:
        """A copy of ``frames`` padded to ``max_frames`` with zero frames."""
        size, count = self.image_size, frames.shape[0]
        out = torch.empty(self.max_frames, 3, size, size, dtype=torch.float32)
        out[:count] = frames
        out[count:].zero_()
        return out

    def load(
        self, path: str | Path, rng: np.random.Generator | None = None, video_id: str | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Frames ``FloatTensor[max_frames, 3, S, S]`` and mask ``LongTensor[max_frames]`` of a video.

        ``path`` is a video file (decoded with decord, only the picked frames) or a frame folder
        (its sorted images are the extracted frames). Fewer frames than ``max_frames`` are
        zero-padded and masked, never repeated. Every read failure is a VideoReadError naming
        ``video_id`` (default: the file's stem) and the path.
        """
        path = Path(path)
        vid = video_id or (path.name if path.is_dir() else path.stem)
        if path.is_dir():
            frames, count = self._load_folder(path, vid, rng)
        else:
            frames, count = self._load_file(path, vid, rng)
        mask = torch.zeros(self.max_frames, dtype=torch.long)
        mask[:count] = 1
        return frames, mask

    def _load_folder(
        self, folder: Path, vid: str, rng: np.random.Generator | None
    ) -> tuple[torch.Tensor, int]:
        from PIL import Image

        files = frame_files(folder)
        if not files:
            raise VideoReadError(vid, folder, "frame folder holds no .jpg/.png frames; re-extract the video")
        images = []
        for k in self.pick(len(files), rng):
            try:
                with Image.open(files[k]) as image:
                    images.append(image.convert("RGB"))
            except OSError as exc:
                raise VideoReadError(vid, files[k], f"cannot read frame image ({exc})") from exc
        return self.preprocess(images, pad_to=self.max_frames), len(images)

    def _load_file(self, path: Path, vid: str, rng: np.random.Generator | None) -> tuple[torch.Tensor, int]:
        cache, reader = self._cache, None
        file_key = cache.file_key(path) if cache is not None else None
        probe = cache.probe(file_key) if cache is not None else None
        if probe is None:
            reader = open_video(path, vid)
            probe = (len(reader), float(reader.get_avg_fps()))
            if cache is not None:
                cache.set_probe(file_key, *probe)
        num_frames, fps = probe
        if not math.isfinite(fps) or fps <= 0:
            raise VideoReadError(vid, path, f"the video reports no usable frame rate ({fps}); re-encode it")
        indices = self.source_indices(num_frames, fps, rng)
        key = (file_key, self.image_size, tuple(indices)) + (
            () if self.decode == "direct" else (self.decode,)
        )
        if cache is not None and (hit := cache.get(key)) is not None:
            return self._pad(hit), hit.shape[0]
        if self.decode == "official-jpeg":
            images = official_jpeg_frames(path, indices, vid)
            frames = self.preprocess(images, pad_to=self.max_frames)
        else:
            frames = self._decode(reader or open_video(path, vid), path, vid, indices)
        if cache is not None:
            cache.put(key, frames[: len(indices)].clone())
        return frames, len(indices)

    def _decode(self, reader: Any, path: Path, vid: str, indices: list[int]) -> torch.Tensor:
        unique = sorted(set(indices))
        try:
            batch = reader.get_batch(unique).asnumpy()
        except Exception as exc:  # decord: RuntimeError or DECORDError; PyAV: av.error.*, IndexError
            raise VideoReadError(
                vid,
                path,
                f"{_decoder_name(reader)} failed reading frames {unique[0]}..{unique[-1]} of {len(reader)} "
                f"({type(exc).__name__}: {str(exc).strip()[:300]}); the file is probably truncated or corrupt",
            ) from exc
        if batch.shape[0] != len(unique):
            raise VideoReadError(
                vid, path, f"{_decoder_name(reader)} returned {batch.shape[0]} of {len(unique)} frames"
            )
        row = {index: n for n, index in enumerate(unique)}
        return self.preprocess([batch[row[index]] for index in indices], pad_to=self.max_frames)


# ----------------------------------------------------------------------------------------------
# The official extraction's JPEG route, in memory
# ----------------------------------------------------------------------------------------------

# The encoder pixel format ffmpeg's CLI picks for an input format (the MJPEG encoder's full-range
# formats), and whether the input is limited ("tv") range and needs converting.
_JPEG_FORMATS = {
    "yuv420p": "yuvj420p",
    "yuv422p": "yuvj422p",
    "yuv444p": "yuvj444p",
    "yuvj420p": "yuvj420p",
    "yuvj422p": "yuvj422p",
    "yuvj444p": "yuvj444p",
}
_RANGE_JPEG = 2  # AVCOL_RANGE_JPEG (full range)


def luma_to_full_range(y: np.ndarray) -> np.ndarray:
    """8-bit limited-range luma to full range, as ffmpeg 5.1's swscale computes it (its
    ``lumRangeToJpeg_c`` on 15-bit values, then ``yuv2plane1_8`` rounding; no dither for 8-bit input)."""
    v = np.minimum(y.astype(np.int64) << 7, 30189) * 19077 - 39057361
    return np.clip(((v >> 14) + 64) >> 7, 0, 255).astype(np.uint8)


def chroma_to_full_range(c: np.ndarray) -> np.ndarray:
    """8-bit limited-range chroma to full range, as ffmpeg 5.1's swscale (``chrRangeToJpeg_c``)."""
    v = np.minimum(c.astype(np.int64) << 7, 30775) * 4663 - 9289992
    return np.clip(((v >> 12) + 64) >> 7, 0, 255).astype(np.uint8)


def _planes(frame: Any) -> list[np.ndarray]:
    """The frame's planes as uint8 arrays without their line padding."""
    return [
        np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)[:, : plane.width]
        for plane in frame.planes
    ]


class OfficialJpeg:
    """``-q 0`` MJPEG encoding of decoded YUV frames, then PIL's decode: the official frames.

    ffmpeg's CLI turns ``-q 0`` into the encoder flag ``qscale`` with ``global_quality = 0``
    (lambda 0, clipped to ``qmin`` = 2): the same settings on PyAV's codec context give the same
    quantised coefficients, so PIL decodes the same pixels (the files' bytes differ only in
    ffmpeg's version comment and Huffman tables).
    """

    def __init__(self) -> None:
        self._encoders: dict[tuple[int, int, str], Any] = {}
        self._pts = 0

    def _encoder(self, width: int, height: int, pix_fmt: str) -> Any:
        import av

        key = (width, height, pix_fmt)
        if key not in self._encoders:
            ctx = av.CodecContext.create("mjpeg", "w")
            ctx.width, ctx.height, ctx.pix_fmt = width, height, pix_fmt
            ctx.time_base = Fraction(1, 5)
            ctx.qscale = True  # -q: a fixed quantiser scale, no rate control
            ctx.global_quality = 0  # -q 0 (FF_QP2LAMBDA * 0)
            ctx.qmin, ctx.qmax = 2, 31  # ffmpeg's defaults: -q 0 encodes at qscale 2
            self._encoders[key] = ctx
        return self._encoders[key]

    def encode(self, frame: Any) -> bytes:
        """The JPEG file ``ffmpeg -i V -q 0 %08d.jpg`` writes for the decoded frame ``frame``."""
        import av

        target = _JPEG_FORMATS.get(frame.format.name)
        if target is None:  # other formats: PyAV's swscale to 4:2:0 (not proven bit-exact)
            frame, target = frame.reformat(format="yuvj420p"), "yuvj420p"
            planes = _planes(frame)
        else:
            planes = _planes(frame)
            full = frame.format.name.startswith("yuvj") or frame.color_range == _RANGE_JPEG
            if not full:
                planes = [luma_to_full_range(planes[0])] + [chroma_to_full_range(c) for c in planes[1:]]
        out = av.VideoFrame(frame.width, frame.height, target)
        for plane, data in zip(out.planes, planes, strict=True):
            buffer = np.zeros((plane.height, plane.line_size), np.uint8)
            buffer[:, : plane.width] = data
            plane.update(buffer.tobytes())
        out.pts = self._pts  # one encoder per size serves the video's frames, in order
        self._pts += 1
        packets = self._encoder(frame.width, frame.height, target).encode(out)
        return b"".join(bytes(p) for p in packets)

    def image(self, frame: Any) -> Any:
        """The official loader's view of the frame: ``Image.open(jpeg).convert("RGB")``."""
        from PIL import Image

        with Image.open(io.BytesIO(self.encode(frame))) as image:
            return image.convert("RGB")


def official_jpeg_frames(path: str | Path, indices: list[int], video_id: str) -> list[Any]:
    """The picked source frames (decord's numbering: decoded frames in presentation order) through
    the official extraction's JPEG route, as RGB PIL images; VideoReadError naming the video."""
    import av

    if not indices:
        return []
    keep, last = set(indices), max(indices)
    jpeg = OfficialJpeg()
    found: dict[int, Any] = {}
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            stream.thread_count = decoder_threads()
            for k, frame in enumerate(container.decode(stream)):
                if k in keep:
                    found[k] = jpeg.image(frame)
                if k >= last:
                    break
    except Exception as exc:  # av.error.*, IndexError (no video stream)
        raise VideoReadError(
            video_id,
            path,
            f"PyAV failed reading frames for frames.decode = 'official-jpeg' ({type(exc).__name__}: "
            f"{str(exc).strip()[:300]}); the file is probably truncated or corrupt",
        ) from exc
    missing = sorted(keep - set(found))
    if missing:
        raise VideoReadError(video_id, path, f"PyAV decoded no frame {missing[:5]}: the stream ends early")
    return [found[i] for i in indices]


def _decoder_name(reader: Any) -> str:
    return "PyAV" if isinstance(reader, PyAVReader) else "decord"
