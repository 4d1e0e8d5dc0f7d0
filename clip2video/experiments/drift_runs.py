"""The drift gate's runs: everything the gate computes with a live model or a suite run.

Comparison, locks and messages are the report layer's (:mod:`clip2video.report.drift` for the
training layer, :mod:`clip2video.report.eval_drift` for the evaluation layer);
:mod:`clip2video.drift_gate` runs the gate end to end. This module:

**The evaluation layer** (:func:`run_eval_layer`). For each registered model of the suite, a fixed
tiny checkpoint is *regenerated from a seed* (never committed as a binary) and evaluated with the
engine (:func:`clip2video.engine.evaluate.evaluate`) on fixed generated synthetic data.

- Weights: every parameter is drawn with NumPy's ``Generator`` (PCG64, seeded from the lock seed
  and a CRC-32 of the parameter's name), which is bit-identical on every CPU, and loaded into the
  model; no torch RNG kernel enters. Parameters that models share (``clip.*``) get the same values
  in every model.
- Data: ``generate_synthetic`` with a small fixed size (the suite's synthetic seed); its videos
  are lossless, so the decoded frames are exact.
- Architecture and evaluation settings come from the suite (``[backbone.config]``, which must be a
  tiny config, ``[model]``, ``[frames] max_frames`` and ``image_size``, ``[text]``,
  ``eval.tie_policy``, ``eval.v2t``). Frames are extracted at the synthetic protocol's
  ``extraction_fps`` and ``stride`` (its data is the synthetic protocol's); a suite that resolves
  to others is refused, since the lock does not record them.

**The training layer's seed spread** (:func:`seed_spread_options`, :func:`seed_spread`): the run
that measures the seed spread for ``--update`` covers only the seeds the locked run lacks (seed 0
is run once), and the locked run's own records stand for the others. The suite runs themselves
(``--rerun`` and that one) go through the pipeline (:mod:`clip2video.drift_gate`).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clip2video.engine.records import RunRecord
from clip2video.errors import DriftError
from clip2video.experiments.options import RunOptions
from clip2video.experiments.suite import Suite
from clip2video.fingerprint import platform_fingerprint
from clip2video.settings import Settings, thaw

WEIGHTS_SEED = 20261203
# A seeded checkpoint is kept only when its rankings are robust to rounding: every score a rank
# compares with a query's ground-truth score differs from it by more than RANK_MARGIN (relative), or
# equals it exactly (ties by construction, e.g. meanp and a reversed twin). Rounding across kernel
# sets was measured at <= 1.5e-6 relative on these models.
RANK_MARGIN = 5e-5
ORDER_ATOL = 1e-4  # twin_order_accuracy's tie tolerance
SEED_TRIES = 64
FRAME_CACHE_BYTES = 256 * 2**20
# The fixed synthetic test set: 8 clips and their 8 exact time reversals, 2 captions each.
DATA_SIZE = {
    "num_train": 0,
    "num_val": 0,
    "num_test_pairs": 8,
    "captions_per_video": 2,
    "height": 32,
    "width": 32,
}
LOG_LOGIT_SCALE = math.log(1 / 0.07)  # CLIP's initial logit scale, fixed rather than drawn
# Where --update's seed-spread run goes, under the gate's runs folder.
SEED_SPREAD_DIR = "seed-spread"


# ----------------------------------------------------------------------------- settings


def eval_settings(suite_settings: Settings | Mapping[str, Any]) -> dict[str, Any]:
    """The part of a resolved suite (its settings, or their plain dict) that decides the
    evaluation-drift numbers: the plain dict the lock stores."""
    s = suite_settings if isinstance(suite_settings, Settings) else Settings.from_dict(suite_settings)
    if s.backbone.clip != "tiny" or not s.backbone.config:
        raise DriftError(
            f"suite {s.name!r}: the evaluation-drift layer needs a tiny backbone "
            '(backbone.clip = "tiny" with a [backbone.config] table, as in the smoke suite); '
            "use --layer train for this suite"
        )
    fixed = _synthetic_frames()
    changed = [
        f"frames.{k} = {getattr(s.frames, k)!r}"
        for k in ("extraction_fps", "stride")
        if getattr(s.frames, k) != fixed[k]
    ]
    if changed:
        raise DriftError(
            f"suite {s.name!r}: {', '.join(changed)}, but the evaluation-drift layer "
            f"samples its synthetic data at the synthetic protocol's {fixed['extraction_fps']:g} fps and "
            f"stride {fixed['stride']}; use --layer train for this suite"
        )
    ks = list(s.eval.recall_ks or (1, 5, 10))
    return {
        **({"recall_ks": ks} if ks != [1, 5, 10] else {}),  # the default leaves the locks as they were
        "models": list(s.models),
        "clip_config": thaw(s.backbone.config),
        "model": s.model.to_dict(),
        "frames": {"max_frames": s.frames.max_frames, "image_size": s.frames.image_size},
        "max_words": s.text.max_words,
        "tie_policy": s.eval.tie_policy,
        "v2t": s.eval.v2t,
        "data": {"seed": s.synthetic.seed, **DATA_SIZE},
    }


def _synthetic_frames() -> dict[str, Any]:
    """The synthetic protocol's frame settings (what a suite on it gets unless it sets its own)."""
    from clip2video.data.protocols import get_protocol

    return get_protocol("synthetic").settings()["frames"]


# ----------------------------------------------------------------------------- weights


def _draw(name: str, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Deterministic float32 values for one parameter (see the module docstring)."""
    rng = np.random.Generator(np.random.PCG64([seed, zlib.crc32(name.encode())]))
    noise = rng.standard_normal(shape, dtype=np.float64)
    leaf = name.rsplit(".", 1)[-1]
    is_norm = any(part.startswith(("ln", "trans_layernorm")) or "norm" in part for part in name.split("."))
    if name.endswith("logit_scale"):
        return np.full(shape, LOG_LOGIT_SCALE, dtype=np.float32)
    if len(shape) >= 2:
        fan_in = int(np.prod(shape[1:]))
        return (noise * fan_in**-0.5).astype(np.float32)
    if is_norm and leaf == "weight":
        return (1.0 + 0.1 * noise).astype(np.float32)
    return (0.1 * noise).astype(np.float32)


def seeded_weights_(model: torch.nn.Module, seed: int = WEIGHTS_SEED) -> torch.nn.Module:
    """Overwrite every parameter of ``model`` with values drawn by NumPy from ``seed``; returns it."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            values = _draw(name, tuple(param.shape), seed)
            param.copy_(torch.from_numpy(values).to(param.dtype))
    return model.eval()


def build_seeded_model(name: str, settings: dict[str, Any], seed: int) -> torch.nn.Module:
    """Registered model ``name`` with the tiny CLIP of ``settings`` and weights drawn from ``seed``."""
    from clip2video.models import create_model

    options = {**settings["model"], "clip": settings["clip_config"], "clip_weights": None, "quick_gelu": True}
    return seeded_weights_(create_model(name, **options), seed)


def rank_margin(sim: np.ndarray, caption_video: np.ndarray, twins: np.ndarray) -> float:
    """Smallest relative gap between a ground-truth score and a score it is ranked against.

    Covers t2v (a caption's own video vs the other videos), v2t (a video's captions vs the other
    captions) and the twin order test (``| |own - twin| - atol |``). Exact ties are skipped.
    """
    sim = sim.astype(np.float64)
    cv = np.asarray(caption_video)
    own = sim[np.arange(sim.shape[0]), cv]  # [N]
    scale = np.maximum(np.abs(own), 1.0)
    gaps = [np.abs(sim - own[:, None]) / scale[:, None]]  # t2v rows (own column gives 0: skipped)
    for v in range(sim.shape[1]):
        mine = cv == v
        col = sim[:, v]
        gaps.append(
            (
                np.abs(col[~mine][None, :] - col[mine][:, None]) / np.maximum(np.abs(col[mine]), 1.0)[:, None]
            ).ravel()
        )
    tw = twins[cv]
    has = tw >= 0
    diff = np.abs(own[has] - sim[np.flatnonzero(has), tw[has]])
    gaps.append(np.abs(diff[diff > 0] - ORDER_ATOL) / scale[has][diff > 0])
    flat = np.concatenate([g.ravel() for g in gaps])
    flat = flat[flat > 0]
    return float(flat.min()) if flat.size else math.inf


# ----------------------------------------------------------------------------- evaluation


@dataclass
class ModelEval:
    """One model's evaluation-drift numbers."""

    metrics: dict[str, float]
    sim: np.ndarray


@dataclass
class EvalRun:
    """The evaluation-drift numbers of every model, with the settings and platform they came from."""

    settings: dict[str, Any]
    models: dict[str, ModelEval] = field(default_factory=dict)
    fingerprint: dict[str, Any] = field(default_factory=dict)


def data_folder(data_root: str | Path, settings: dict[str, Any]) -> Path:
    """Where the fixed synthetic data of ``settings`` is generated (idempotent)."""
    d = settings["data"]
    return Path(data_root) / (
        f"eval-drift-s{d['seed']}-p{d['num_test_pairs']}-c{d['captions_per_video']}-{d['height']}x{d['width']}"
    )


def run_eval_layer(
    suite_settings: Settings | Mapping[str, Any], data_root: str | Path, seeds: dict[str, int] | None = None
) -> EvalRun:
    """Evaluate every model of the suite from its seeded tiny checkpoint on the fixed data.

    ``seeds`` (the lock's ``settings.weights_seeds``) fixes each model's weight seed. Without it
    (relocking) each model takes the first seed from ``WEIGHTS_SEED`` on whose rankings have a
    rounding margin of at least ``RANK_MARGIN`` (see :func:`rank_margin`).
    """
    settings = eval_settings(suite_settings)
    data = _fixed_data(settings, data_root)
    run = EvalRun(settings=settings, fingerprint=platform_fingerprint("cpu"))
    chosen: dict[str, int] = {}
    for name in settings["models"]:
        if seeds is not None and name in seeds:
            chosen[name] = int(seeds[name])
            run.models[name] = _evaluate_seeded(data, settings, name, chosen[name])
        else:
            chosen[name], run.models[name] = _first_clear_seed(data, settings, name)
    settings["weights_seeds"] = chosen
    return run


@dataclass
class _FixedData:
    """The evaluation layer's generated test split with the sampler, tokenizer and twins it uses."""

    videos: Path
    protocol: Any
    split: Any
    sampler: Any
    tokenizer: Any
    twins: np.ndarray


def _fixed_data(settings: dict[str, Any], data_root: str | Path) -> _FixedData:
    """Generate (once) the fixed synthetic data and load its test split; one frame cache decodes
    each test video once for all models."""
    from clip2video.data.annotations import load_split
    from clip2video.data.frame_cache import FrameCache
    from clip2video.data.frames import FrameSampler
    from clip2video.data.protocols import get_protocol
    from clip2video.data.synthetic import generate_synthetic, load_twins
    from clip2video.data.text import CaptionTokenizer
    from clip2video.settings import FrameSettings, TextSettings, section_defaults

    d = settings["data"]
    root = generate_synthetic(
        data_folder(data_root, settings),
        seed=d["seed"],
        num_train=d["num_train"],
        num_val=d["num_val"],
        num_test_pairs=d["num_test_pairs"],
        captions_per_video=d["captions_per_video"],
        size=(d["height"], d["width"]),
    )
    protocol = get_protocol("synthetic")
    split = load_split(protocol, root / "annotations", "test")
    frames = {**_synthetic_frames(), **settings["frames"]}  # fps and stride: checked by eval_settings
    # Each test video is decoded once for all models.
    sampler = FrameSampler.from_settings(
        FrameSettings.from_dict({**section_defaults("frames"), **frames})
    ).attach_cache(FrameCache(FRAME_CACHE_BYTES))
    tokenizer = CaptionTokenizer.from_settings(TextSettings(max_words=settings["max_words"]))
    twins = load_twins(root / "annotations", split.video_ids)
    return _FixedData(root / "videos", protocol, split, sampler, tokenizer, twins)


def _evaluate_seeded(data: _FixedData, settings: dict[str, Any], name: str, seed: int) -> ModelEval:
    """Model ``name`` with weights from ``seed``, evaluated by the engine on the fixed data (CPU)."""
    from clip2video.data.order import twin_order_accuracy
    from clip2video.engine.evaluate import evaluate

    result = evaluate(
        build_seeded_model(name, settings, seed),
        data.split,
        data.videos,
        data.sampler,
        data.tokenizer,
        protocol=data.protocol,
        tie_policy=settings["tie_policy"],
        v2t=settings["v2t"],
        recall_ks=settings.get("recall_ks"),
        keep_sim=True,
        batch_size=8,
        device="cpu",
        progress=False,
        distributed=False,
    )
    sim = result.sim.float().cpu().numpy()
    metrics = {k: float(v) for k, v in result.metrics.items()}
    metrics["order_acc"] = float(
        twin_order_accuracy(sim, data.split.caption_video, data.twins, atol=ORDER_ATOL)["order_acc"]
    )
    return ModelEval(metrics=metrics, sim=sim)


def _first_clear_seed(data: _FixedData, settings: dict[str, Any], name: str) -> tuple[int, ModelEval]:
    """The first weight seed from ``WEIGHTS_SEED`` whose rankings have a rounding margin of at
    least ``RANK_MARGIN`` (relocking), with its evaluation."""
    for seed in range(WEIGHTS_SEED, WEIGHTS_SEED + SEED_TRIES):
        candidate = _evaluate_seeded(data, settings, name, seed)
        if rank_margin(candidate.sim, data.split.caption_video, data.twins) >= RANK_MARGIN:
            return seed, candidate
    raise DriftError(
        f"model {name!r}: no weight seed in {WEIGHTS_SEED}..{WEIGHTS_SEED + SEED_TRIES - 1} gives "
        f"rankings with a rounding margin of {RANK_MARGIN:g}; its scores are degenerate"
    )


# ----------------------------------------------------------------------------- training layer


def missing_seeds(have: Iterable[int | None], wanted: Iterable[int]) -> list[int]:
    """The seeds of ``wanted`` that ``have`` lacks, in order."""
    present = {int(s) for s in have if s is not None}
    return [int(s) for s in wanted if int(s) not in present]


def seed_spread_options(
    options: RunOptions, suite: Suite, have: Iterable[int | None], wanted: Iterable[int]
) -> RunOptions | None:
    """How the seed spread is measured: ``suite`` (as resolved, ``options``' ``--set`` kept: the
    suite file is not read again) under the seeds of ``wanted`` that the locked run lacks
    (``have``), into ``<options.runs_dir>/seed-spread``, untracked; None when none is missing."""
    missing = missing_seeds(have, wanted)
    if not missing:
        return None
    return RunOptions(
        suite=suite,
        overrides={**options.plain_overrides(), "seeds": missing},
        data_root=options.data_root,
        clip_weights=options.clip_weights,
        device=options.device,
        runs_dir=Path(options.runs_dir) / SEED_SPREAD_DIR,
        results_dir=None,
        tracking=False,
        progress=options.progress,
        jobs=options.jobs,
        reference=None,
    )


def seed_spread(records: list[RunRecord], wanted: Iterable[int], others: list[RunRecord]) -> list[RunRecord]:
    """Every row's records under the seeds of ``wanted``: those of ``records`` (the run being
    locked) reused, plus ``others`` (the run of :func:`seed_spread_options`)."""
    wanted = [int(s) for s in wanted]
    return [rec for rec in records if rec.seed is not None and int(rec.seed) in wanted] + list(others)


__all__ = [
    "DATA_SIZE",
    "EvalRun",
    "ModelEval",
    "RANK_MARGIN",
    "SEED_SPREAD_DIR",
    "WEIGHTS_SEED",
    "build_seeded_model",
    "data_folder",
    "eval_settings",
    "missing_seeds",
    "rank_margin",
    "run_eval_layer",
    "seed_spread",
    "seed_spread_options",
    "seeded_weights_",
]
