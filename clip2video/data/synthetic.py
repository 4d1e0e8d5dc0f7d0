"""The offline ``synthetic`` protocol: a small generated video-text dataset where frame order matters.

Clips show simple filled shapes that move, grow, appear or change; captions name the shape, the
colour and the event, including its direction or order. Every test clip's exact time reversal is
also in the test gallery, with captions that differ only in the order/direction words, so a model
blind to frame order cannot tell the two apart (see :mod:`clip2video.data.order`).

On disk (the same layout as the VATEX-style protocols)::

    <root>/annotations/{train,val,test}_list.txt   one video id per line
    <root>/annotations/synthetic_data.json         {video_id: {"enCap": [caption, ...]}}
    <root>/annotations/synthetic_meta.json         {"generator", "generator_version", "seed",
                                                    "settings", "videos": {video_id: {...}}}
    <root>/videos/<video_id>.mp4                   lossless H.264 at 5 fps

Everything is drawn from ``numpy.random.default_rng([seed, ...])``, so one seed and one set of
settings give identical annotation files and identical decoded frames.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from clip2video.data.video_writer import write_video
from clip2video.errors import Clip2VideoError, ConfigError, ProtocolError

if TYPE_CHECKING:
    from clip2video.settings import Settings

GENERATOR_VERSION = 1
FPS = 5
# n - 1 divisible by 11: the sampler's picks linspace(0, n - 1, 12) are then exact multiples of
# (n - 1) / 11, so a reversed clip's picks are exactly the reversed picks.
FRAME_COUNTS: tuple[int, ...] = (12, 23, 34)
DATA_FILE = "synthetic_data.json"
META_FILE = "synthetic_meta.json"
SPLIT_FILES: dict[str, str] = {"train": "train_list.txt", "val": "val_list.txt", "test": "test_list.txt"}

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 40, 40),
    "green": (40, 200, 70),
    "blue": (50, 90, 240),
    "yellow": (240, 220, 40),
    "purple": (170, 70, 220),
}

# event -> (family, the order/direction word its captions use)
EVENTS: dict[str, tuple[str, str]] = {
    "moves_left": ("horizontal", "left"),
    "moves_right": ("horizontal", "right"),
    "moves_up": ("vertical", "up"),
    "moves_down": ("vertical", "down"),
    "grows": ("size", "grows"),
    "shrinks": ("size", "shrinks"),
    "appears": ("visibility", "appears"),
    "disappears": ("visibility", "disappears"),
    "appears_before": ("sequence", "before"),
    "appears_after": ("sequence", "after"),
    "colour_before": ("colour", "before"),
    "colour_after": ("colour", "after"),
}
# the time reversal of each event
REVERSED_EVENT: dict[str, str] = {
    "moves_left": "moves_right",
    "moves_right": "moves_left",
    "moves_up": "moves_down",
    "moves_down": "moves_up",
    "grows": "shrinks",
    "shrinks": "grows",
    "appears": "disappears",
    "disappears": "appears",
    "appears_before": "appears_after",
    "appears_after": "appears_before",
    "colour_before": "colour_after",
    "colour_after": "colour_before",
}
# the word pairs a twin's captions may swap, and nothing else
ORDER_WORD_PAIRS: tuple[tuple[str, str], ...] = (
    ("left", "right"),
    ("up", "down"),
    ("grows", "shrinks"),
    ("appears", "disappears"),
    ("before", "after"),
)
# {c} colour, {s} shape, {c2}/{s2} the second object or colour, {w} the order/direction word
TEMPLATES: dict[str, tuple[str, ...]] = {
    "horizontal": ("a {c} {s} moves {w}", "the {c} {s} slides to the {w}", "a {c} {s} travels {w}"),
    "vertical": ("a {c} {s} moves {w}", "the {c} {s} slides {w}", "a {c} {s} travels {w}"),
    "size": ("a {c} {s} {w}", "the {c} {s} slowly {w}", "a {c} {s} {w} in size"),
    "visibility": ("a {c} {s} {w}", "the {c} {s} suddenly {w}", "a {c} {s} {w} on the screen"),
    "sequence": (
        "a {c} {s} appears {w} a {c2} {s2}",
        "the {c} {s} is shown {w} the {c2} {s2}",
        "a {c} {s} comes {w} a {c2} {s2}",
    ),
    "colour": (
        "a {s} is {c} {w} it is {c2}",
        "the {s} turns {c} {w} it turns {c2}",
        "a {s} shows {c} {w} {c2}",
    ),
}
FAMILIES: tuple[str, ...] = tuple(TEMPLATES)
# the event each family is drawn in before an optional reversal
_CANONICAL_EVENT: dict[str, str] = {
    "horizontal": "moves_right",
    "vertical": "moves_down",
    "size": "grows",
    "visibility": "appears",
    "sequence": "appears_before",
    "colour": "colour_before",
}
_CLIP_STREAM, _ORDER_STREAM = 0, 1


@dataclass(frozen=True)
class Clip:
    """One generated clip: its frames (uint8 ``[T, H, W, 3]``) and what they show."""

    frames: np.ndarray
    shape: str
    colour: str
    event: str
    second: dict[str, str] | None

    def reversed(self) -> Clip:
        """The exact time reversal, with the reversed event."""
        return Clip(
            self.frames[::-1].copy(), self.shape, self.colour, REVERSED_EVENT[self.event], self.second
        )

    def captions(self, template_ids: list[int]) -> list[str]:
        """Captions from the family's templates ``template_ids`` (a twin uses the same ids)."""
        family, word = EVENTS[self.event]
        second = self.second or {}
        fields = {"c": self.colour, "s": self.shape, "w": word}
        fields.update(c2=second.get("colour", ""), s2=second.get("shape", ""))
        return [TEMPLATES[family][i].format(**fields) for i in template_ids]


# ---------------------------------------------------------------------------------------------
# drawing


class _Canvas:
    """Pixel-centre coordinates of a frame and the centred square the model sees after cropping."""

    def __init__(self, height: int, width: int) -> None:
        self.height, self.width = height, width
        self.side = float(min(height, width))
        self.oy, self.ox = (height - self.side) / 2.0, (width - self.side) / 2.0
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
        self.yy, self.xx = yy + 0.5, xx + 0.5

    def mask(self, shape: str, cy: float, cx: float, r: float) -> np.ndarray:
        """Boolean mask of a filled ``shape`` of half-size ``r`` centred at (cy, cx) in crop units."""
        dy, dx = self.yy - (self.oy + cy), self.xx - (self.ox + cx)
        if shape == "circle":
            return dy * dy + dx * dx <= r * r
        if shape == "square":
            side = 0.85 * r
            return (np.abs(dy) <= side) & (np.abs(dx) <= side)
        if shape == "triangle":  # apex up, base down
            return (dy >= -r) & (dy <= r) & (np.abs(dx) <= (dy + r) / 2.0)
        if shape == "diamond":
            return np.abs(dy) + np.abs(dx) <= r
        raise ValueError(f"unknown shape {shape!r}; choose one of {SHAPES}")

    def background(self, rng: np.random.Generator) -> np.ndarray:
        """A dark plain colour with a light static texture, uint8 ``[H, W, 3]``."""
        base = rng.integers(15, 70, size=3).astype(np.int16)
        texture = rng.integers(-6, 7, size=(self.height, self.width, 1)).astype(np.int16)
        return np.clip(base + texture, 0, 255).astype(np.uint8)


def _rgb(name: str) -> np.ndarray:
    return np.asarray(COLOURS[name], dtype=np.uint8)


def _pick(rng: np.random.Generator, options: tuple[str, ...] | list[str]) -> str:
    return str(options[int(rng.integers(len(options)))])


def _position(rng: np.random.Generator, side: float, r: float) -> float:
    """A centre coordinate keeping an object of half-size ``r`` inside the crop."""
    return float(rng.uniform(r + 1.0, side - r - 1.0))


def _draw_move(
    canvas: _Canvas, rng: np.random.Generator, frames: np.ndarray, shape: str, colour: str, axis: int
):
    side, n = canvas.side, len(frames)
    r = float(rng.uniform(0.12, 0.17)) * side
    lo, hi = r + 1.0, side - r - 1.0
    start = float(rng.uniform(lo, lo + 0.15 * side))
    stop = float(rng.uniform(hi - 0.15 * side, hi))
    other = _position(rng, side, r)
    for t, frame in enumerate(frames):
        along = start + (stop - start) * t / (n - 1)
        cy, cx = (other, along) if axis == 1 else (along, other)
        frame[canvas.mask(shape, cy, cx, r)] = _rgb(colour)


def _draw_size(canvas: _Canvas, rng: np.random.Generator, frames: np.ndarray, shape: str, colour: str):
    side, n = canvas.side, len(frames)
    r0, r1 = float(rng.uniform(0.06, 0.1)) * side, float(rng.uniform(0.26, 0.32)) * side
    cy, cx = _position(rng, side, r1), _position(rng, side, r1)
    for t, frame in enumerate(frames):
        frame[canvas.mask(shape, cy, cx, r0 + (r1 - r0) * t / (n - 1))] = _rgb(colour)


def _switch_frame(rng: np.random.Generator, n: int) -> int:
    """First frame of the second phase: between a quarter and three quarters of the clip."""
    return int(rng.integers(max(1, n // 4), n - n // 4))


def _draw_visibility(canvas: _Canvas, rng: np.random.Generator, frames: np.ndarray, shape: str, colour: str):
    r = float(rng.uniform(0.14, 0.2)) * canvas.side
    mask = canvas.mask(shape, _position(rng, canvas.side, r), _position(rng, canvas.side, r), r)
    for frame in frames[_switch_frame(rng, len(frames)) :]:
        frame[mask] = _rgb(colour)


def _draw_two_phases(
    canvas: _Canvas,
    rng: np.random.Generator,
    frames: np.ndarray,
    first: tuple[str, str],
    second: tuple[str, str],
):
    """``first`` (shape, colour) alone, then ``second`` alone, each at its own place."""
    side = canvas.side
    cut = _switch_frame(rng, len(frames))
    for (shape, colour), phase in ((first, frames[:cut]), (second, frames[cut:])):
        r = float(rng.uniform(0.14, 0.2)) * side
        mask = canvas.mask(shape, _position(rng, side, r), _position(rng, side, r), r)
        for frame in phase:
            frame[mask] = _rgb(colour)


def draw_clip(rng: np.random.Generator, size: tuple[int, int], *, num_frames: int | None = None) -> Clip:
    """Draw one random clip: a family, objects and timing, then a coin flip for its direction."""
    canvas = _Canvas(*size)
    family = _pick(rng, FAMILIES)
    shape, colour = _pick(rng, SHAPES), _pick(rng, list(COLOURS))
    n = int(num_frames or FRAME_COUNTS[int(rng.integers(len(FRAME_COUNTS)))])
    frames = np.repeat(canvas.background(rng)[None], n, axis=0)
    second: dict[str, str] | None = None
    if family in ("horizontal", "vertical"):
        _draw_move(canvas, rng, frames, shape, colour, axis=1 if family == "horizontal" else 0)
    elif family == "size":
        _draw_size(canvas, rng, frames, shape, colour)
    elif family == "visibility":
        _draw_visibility(canvas, rng, frames, shape, colour)
    elif family == "sequence":
        other = (
            _pick(rng, [s for s in SHAPES if s != shape]),
            _pick(rng, [c for c in COLOURS if c != colour]),
        )
        _draw_two_phases(canvas, rng, frames, (shape, colour), other)
        second = {"shape": other[0], "colour": other[1]}
    else:  # colour change of one object in place
        other_colour = _pick(rng, [c for c in COLOURS if c != colour])
        _draw_two_phases(canvas, rng, frames, (shape, colour), (shape, other_colour))
        second = {"shape": shape, "colour": other_colour}
    clip = Clip(frames, shape, colour, _CANONICAL_EVENT[family], second)
    return clip.reversed() if rng.random() < 0.5 else clip


# ---------------------------------------------------------------------------------------------
# the dataset


class SyntheticSettingsError(ConfigError, ValueError):
    """A synthetic-dataset setting is out of range (a ValueError for older callers)."""


@dataclass(frozen=True)
class SyntheticSettings:
    """Everything besides the seed that decides the generated data."""

    num_train: int = 600
    num_val: int = 60
    num_test_pairs: int = 60
    captions_per_video: int = 2
    size: tuple[int, int] = (32, 32)

    def validate(self) -> None:
        """Raise :class:`SyntheticSettingsError` (also a ValueError) naming the first bad setting."""
        for key in ("num_train", "num_val", "num_test_pairs"):
            if getattr(self, key) < 0:
                raise SyntheticSettingsError(
                    f"synthetic {key} (--{key.replace('_', '-')}) must be >= 0, got {getattr(self, key)}"
                )
        most = min(len(t) for t in TEMPLATES.values())
        if not 1 <= self.captions_per_video <= most:
            raise SyntheticSettingsError(
                f"synthetic captions_per_video (--captions-per-video) must be in 1..{most}, "
                f"got {self.captions_per_video}"
            )
        height, width = self.size
        if height < 16 or width < 16 or height % 2 or width % 2:
            raise SyntheticSettingsError(
                f"synthetic frame size (--size H W) must be even and >= 16 on both sides, got "
                f"{height} {width}"
            )

    def as_json(self) -> dict[str, Any]:
        """The settings as stored in the meta file."""
        return {
            "num_train": self.num_train,
            "num_val": self.num_val,
            "num_test_pairs": self.num_test_pairs,
            "captions_per_video": self.captions_per_video,
            "size": list(self.size),
            "fps": FPS,
            "frame_counts": list(FRAME_COUNTS),
        }


def video_id(index: int) -> str:
    """The id of the ``index``-th generated clip (``syn00042``)."""
    return f"syn{index:05d}"


def _record(
    clip: Clip, split: str, twin: str | None = None, reversed_of: str | None = None
) -> dict[str, Any]:
    return {
        "split": split,
        "shape": clip.shape,
        "colour": clip.colour,
        "event": clip.event,
        "second": clip.second,
        "num_frames": int(len(clip.frames)),
        "twin": twin,
        "reversed_of": reversed_of,
    }


def _template_ids(rng: np.random.Generator, clip: Clip, count: int) -> list[int]:
    family = EVENTS[clip.event][0]
    return [int(i) for i in rng.choice(len(TEMPLATES[family]), size=count, replace=False)]


def _clip_jobs(
    seed: int, settings: SyntheticSettings
) -> tuple[dict[str, list[str]], list[tuple[str, Callable]]]:
    """Split lists and, per clip, (id, a function drawing its (Clip, captions, record))."""
    size, k = settings.size, settings.captions_per_video
    splits: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    jobs: list[tuple[str, Callable]] = []

    def single(index: int, split: str) -> Callable:
        def job():
            rng = np.random.default_rng([seed, _CLIP_STREAM, index])
            clip = draw_clip(rng, size)
            return [(clip, clip.captions(_template_ids(rng, clip, k)), _record(clip, split))]

        return job

    def pair(index: int) -> Callable:
        a, b = video_id(index), video_id(index + 1)

        def job():
            rng = np.random.default_rng([seed, _CLIP_STREAM, index])
            clip = draw_clip(rng, size)
            ids = _template_ids(rng, clip, k)
            twin = clip.reversed()
            return [
                (clip, clip.captions(ids), _record(clip, "test", twin=b)),
                (twin, twin.captions(ids), _record(twin, "test", twin=a, reversed_of=a)),
            ]

        return job

    index = 0
    for split, count in (("train", settings.num_train), ("val", settings.num_val)):
        for _ in range(count):
            splits[split].append(video_id(index))
            jobs.append((video_id(index), single(index, split)))
            index += 1
    for _ in range(settings.num_test_pairs):
        splits["test"] += [video_id(index), video_id(index + 1)]
        jobs.append((video_id(index), pair(index)))
        index += 2
    # shuffle the test gallery so that a clip and its twin are not always neighbours in one order
    order = np.random.default_rng([seed, _ORDER_STREAM]).permutation(len(splits["test"]))
    splits["test"] = [splits["test"][i] for i in order]
    return splits, jobs


def load_meta(annotations_dir: str | Path) -> dict[str, Any]:
    """Read ``synthetic_meta.json``; ProtocolError naming the file when it is missing or broken."""
    path = Path(annotations_dir) / META_FILE
    if not path.is_file():
        raise ProtocolError(
            f"{path} does not exist; generate the synthetic dataset first "
            f"(`clip2video data synthetic {Path(annotations_dir).parent}`)"
        )
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ProtocolError(
            f"{path} is not valid JSON ({exc}); regenerate it with "
            f"`clip2video data synthetic {Path(annotations_dir).parent} --overwrite` (and the suite's settings)"
        ) from exc
    if not isinstance(meta, dict) or not isinstance(meta.get("videos"), dict):
        raise ProtocolError(
            f"{path} has no 'videos' mapping; regenerate it with "
            f"`clip2video data synthetic {Path(annotations_dir).parent} --overwrite` (and the suite's settings)"
        )
    return meta


def load_twins(annotations_dir: str | Path, video_ids: Sequence[str]) -> np.ndarray:
    """``twin_of_video`` for a split's ``video_ids`` from the synthetic meta file.

    Entry v is the index in ``video_ids`` of v's time-reversed twin, or -1 when v has none or its
    twin is not among ``video_ids``. Raises ProtocolError naming the file or the unknown ids.
    """
    records = load_meta(annotations_dir)["videos"]
    unknown = [vid for vid in video_ids if vid not in records]
    if unknown:
        path = Path(annotations_dir) / META_FILE
        raise ProtocolError(f"{path} has no entry for {len(unknown)} video(s), e.g. {unknown[:5]}")
    position = {vid: i for i, vid in enumerate(video_ids)}
    return np.asarray([position.get(records[vid].get("twin"), -1) for vid in video_ids], dtype=np.int64)


def _missing_files(root: Path, meta: dict[str, Any]) -> list[Path]:
    annotations = root / "annotations"
    needed = [annotations / DATA_FILE, *(annotations / name for name in SPLIT_FILES.values())]
    needed += [root / "videos" / f"{vid}.mp4" for vid in meta["videos"]]
    return [p for p in needed if not p.is_file()]


def _is_complete(root: Path, meta: dict[str, Any]) -> bool:
    return not _missing_files(root, meta)


def _existing_meta(root: Path) -> dict[str, Any] | None:
    try:
        return load_meta(root / "annotations")
    except ProtocolError:
        return None


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _generate_into(folder: Path, seed: int, settings: SyntheticSettings) -> None:
    splits, jobs = _clip_jobs(seed, settings)
    captions: dict[str, dict[str, list[str]]] = {}
    records: dict[str, dict[str, Any]] = {}
    with tqdm(
        total=sum(len(v) for v in splits.values()), desc="synthetic clips", unit="clip", disable=None
    ) as bar:
        for first_id, job in jobs:
            index = int(first_id[3:])
            for offset, (clip, texts, record) in enumerate(job()):
                vid = video_id(index + offset)
                write_video(folder / "videos" / f"{vid}.mp4", clip.frames, fps=FPS, lossless=True)
                captions[vid] = {"enCap": texts}
                records[vid] = record
                bar.update()
    annotations = folder / "annotations"
    for split, name in SPLIT_FILES.items():
        _write_text(annotations / name, "".join(f"{vid}\n" for vid in splits[split]))
    _write_text(annotations / DATA_FILE, json.dumps(captions, indent=1) + "\n")
    meta = {
        "generator": "clip2video.data.synthetic",
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "settings": settings.as_json(),
        "videos": records,
    }
    _write_text(annotations / META_FILE, json.dumps(meta, indent=1) + "\n")  # written last


def _complete_or_refuse(root: Path, seed: int, settings: SyntheticSettings, overwrite: bool) -> bool:
    """True when ``root`` holds a complete dataset of ``seed`` and ``settings``; False when it can be
    written there; Clip2VideoError when something else is there (and not ``overwrite``). Reads only."""
    meta = _existing_meta(root)
    wanted = {"generator_version": GENERATOR_VERSION, "seed": seed, "settings": settings.as_json()}
    if meta is not None and all(meta.get(k) == v for k, v in wanted.items()) and _is_complete(root, meta):
        return True
    if root.exists() and any(root.iterdir()) and not overwrite:
        if meta is None:
            what = "files but no synthetic dataset"
        else:
            differing = [
                f"{k} ({meta.get(k)!r} there, {v!r} wanted)" for k, v in wanted.items() if meta.get(k) != v
            ]
            if not differing:
                absent = _missing_files(root, meta)
                shown = ", ".join(str(p) for p in absent[:5]) + (" ..." if len(absent) > 5 else "")
                differing = [f"{len(absent)} missing file(s): {shown}"]
            what = f"a synthetic dataset that differs in {'; '.join(differing)}"
        size = settings.size
        raise Clip2VideoError(
            f"{root} already holds {what}; regenerate it with `clip2video data synthetic {root} "
            f"--seed {seed} --num-train {settings.num_train} --num-val {settings.num_val} "
            f"--num-test-pairs {settings.num_test_pairs} --captions-per-video {settings.captions_per_video} "
            f"--size {size[0]} {size[1]} --overwrite` "
            "(generate_synthetic(..., overwrite=True)), or choose an empty folder"
        )
    return False


def generate_synthetic(
    root: str | Path,
    *,
    seed: int = 0,
    num_train: int = 600,
    num_val: int = 60,
    num_test_pairs: int = 60,
    captions_per_video: int = 2,
    size: tuple[int, int] = (32, 32),
    overwrite: bool = False,
) -> Path:
    """Write the synthetic dataset under ``root`` and return ``root``.

    ``size`` is (H, W) of the frames; objects stay inside the centred min(H, W) square that a
    resize + center crop keeps. The test split holds ``num_test_pairs`` clips and, for each, its
    exact time reversal (``2 * num_test_pairs`` videos). Idempotent: when ``root`` already holds
    a complete dataset of this seed and these settings nothing is written. A different dataset
    there is an error unless ``overwrite`` (which replaces ``root/annotations`` and
    ``root/videos`` only). Generation happens in a temporary folder beside ``root``, so an
    interrupted run leaves no half-written dataset.
    """
    settings = SyntheticSettings(num_train, num_val, num_test_pairs, captions_per_video, tuple(size))
    settings.validate()
    root = Path(root)
    if _complete_or_refuse(root, seed, settings, overwrite):
        return root
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.partial-", dir=root.parent))
    try:
        _generate_into(staging, seed, settings)
        for name in ("videos", "annotations"):  # annotations (with the meta file) last
            if (root / name).exists():
                shutil.rmtree(root / name)
            (staging / name).replace(root / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root


# ----------------------------------------------------------------------------- protocol hooks
# (``Protocol.hooks = "clip2video.data.synthetic"``: the runner calls these, with no branch of its own)


def data_folder(settings: Settings, root: str | Path) -> Path:
    """Where :func:`prepare_data` keeps the suite's ``[synthetic]`` data under ``root``."""
    syn = settings.synthetic
    return Path(root) / (
        f"synthetic-s{syn.seed}-{syn.num_train}-{syn.num_val}-{syn.num_test_pairs}"
        f"-c{syn.captions_per_video}-{syn.height}x{syn.width}"
    )


def _wanted(settings: Settings) -> SyntheticSettings:
    syn = settings.synthetic
    return SyntheticSettings(
        syn.num_train, syn.num_val, syn.num_test_pairs, syn.captions_per_video, (syn.height, syn.width)
    )


def data_ready(settings: Settings, root: str | Path) -> bool:
    """Whether :func:`prepare_data` would write nothing (the data is there, complete); raises
    Clip2VideoError when its folder holds something it would refuse to replace. Reads only."""
    wanted = _wanted(settings)
    wanted.validate()
    return _complete_or_refuse(data_folder(settings, root), settings.synthetic.seed, wanted, overwrite=False)


def prepare_data(settings: Settings, root: str | Path) -> Path:
    """Generate (once) the suite's ``[synthetic]`` data under ``root``; returns its folder."""
    wanted, folder = _wanted(settings), data_folder(settings, root)
    generate_synthetic(
        folder,
        seed=settings.synthetic.seed,
        num_train=wanted.num_train,
        num_val=wanted.num_val,
        num_test_pairs=wanted.num_test_pairs,
        captions_per_video=wanted.captions_per_video,
        size=wanted.size,
    )
    return folder


def extra_metrics(sim: Any, caption_video: Any, annotations_dir: str | Path, split: Any) -> dict[str, Any]:
    """The twins' order accuracy (``order_*``) and the per-caption outcomes (``arrays.order_wins``)."""
    from clip2video.data.order import twin_order_accuracy, twin_order_wins

    twins = load_twins(annotations_dir, split.video_ids)
    return {
        **twin_order_accuracy(sim, caption_video, twins),
        "arrays": {"order_wins": twin_order_wins(sim, caption_video, twins)},
    }


def notes() -> tuple[str, ...]:
    """Footnotes for the suite's tables."""
    from clip2video.data.order import ORDER_CEILING_NOTE

    return (ORDER_CEILING_NOTE,)
