"""One row of a suite (a model, or a variant row, and a seed), run from its spec alone (a worker's job).

A :class:`RowSpec` is plain, picklable data: the row's resolved settings (one :class:`Settings`),
its name, model, seed, checkpoint, device, thread count and its data: the folders, the splits the
check before work loaded and their videos' paths, so a worker reads no annotation file again.
:func:`run_row_spec` runs it in a fresh process (see :mod:`clip2video.experiments.runner`): it
seeds every generator from the row's seed, sets torch's thread count, then goes through named
steps (context, model, training, encoding, scoring, record). A ``[train] backbone = "frozen"``
row reads the features its suite computed once (:mod:`clip2video.experiments.frozen`), trains only
its heads over them with the same trainer and encodes the test split from them. Nothing a row computes depends on
which rows ran before it in the process, so a record is bitwise identical alone, after other rows,
or with several rows at once.
"""

from __future__ import annotations

import dataclasses
import glob
import random
import re
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clip2video.data.annotations import SplitData
from clip2video.data.datasets import PairDataset
from clip2video.data.frame_cache import FrameCache
from clip2video.data.frames import FrameSampler
from clip2video.data.protocols import Protocol, get_protocol
from clip2video.data.text import CaptionTokenizer
from clip2video.engine import distributed as ddp
from clip2video.engine.cache import EmbeddingCache
from clip2video.engine.evaluate import (
    encode_split_pair,
    encode_texts,
    evaluate,
    evaluate_embeddings,
    time_reversal_diagnostic,
)
from clip2video.engine.features import FeatureModel, encode_features, train_heads
from clip2video.engine.postprocess import build_postprocessors
from clip2video.engine.scoring import similarity_part_matrices
from clip2video.engine.train import WALL_CLOCK, TrainConfig, TrainResult, train
from clip2video.errors import Clip2VideoError
from clip2video.experiments.frozen import FROZEN_UNTRAINED, FrozenFeatures, is_frozen, load_feature_bank
from clip2video.experiments.preflight import check_frame_size, model_kwargs
from clip2video.metrics import retrieval_metrics
from clip2video.settings import Settings

# Settings that decide how a suite is scheduled, not what a row computes.
SCHEDULING_KEYS = ("name", "description", "models", "seeds", "zero_shot", "rows", "tables")
# Settings that change speed only, never a number (left out of the row settings and their digest).
SPEED_ONLY = {
    "run": ("jobs",),
    "data": ("num_workers", "frame_cache_mb", "allow_outside_links"),
    "eval": ("save_sim",),
}


@dataclass
class DataPaths:
    """Where a suite's annotations and videos are, and the protocol that reads them."""

    protocol: Protocol
    annotations: Path
    videos: Path


@dataclass(frozen=True)
class RowData:
    """A row's data as the check before work resolved it: folders, splits, each split's video paths."""

    protocol: str
    annotations: str
    videos: str
    splits: Mapping[str, SplitData] = field(default_factory=dict)
    video_paths: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class RowSpec:
    """Everything one row needs, as plain values: a worker runs it with no other input."""

    suite: str
    row: str  # the record's folder: the row's name, with -s<seed> when the suite has several seeds
    model: str
    seed: int
    trained: bool
    settings: Settings  # the row's resolved settings (the suite's plus its own set)
    data: RowData
    runs_dir: str
    base_row: str = ""  # the row's name without the seed ("" = the model's name)
    variant: bool = False  # a [[rows]] variant: its name is part of its settings
    device: str = "cpu"
    threads: int = 1
    checkpoint: str | None = None
    checkpoint_id: dict[str, str] | None = None  # path and sha256 of the checkpoint (its settings)
    clip_weights: str | None = None
    progress: bool = False
    resume: bool = False  # continue this row's last.pt (the parent checked that its settings match)
    fingerprint: dict[str, Any] = field(default_factory=dict)
    imports: tuple[str, ...] = ()  # the command's --import modules (plugins), loaded first in a worker
    features: FrozenFeatures | None = None  # train.backbone = "frozen": the suite's features (not a setting)

    @property
    def row_dir(self) -> Path:
        return Path(self.runs_dir) / self.suite / self.row

    @property
    def row_name(self) -> str:
        """The row's name without the seed (what tables, MLflow and ``extra["row"]`` key on)."""
        return self.base_row or self.model

    @property
    def protocol(self) -> str:
        return self.data.protocol

    @property
    def row_settings(self) -> dict[str, Any]:
        """What decides the row's numbers (digested into its fingerprint, stored as ``config.json``)."""
        return resolved_row_settings(
            self.settings,
            model=self.model,
            seed=self.seed,
            trained=self.trained,
            checkpoint=self.checkpoint_id,
            clip_weights=self.clip_weights,
            device=self.device,
            threads=self.threads,
            name=self.row_name if self.variant else None,
        )


def resolved_row_settings(
    settings: Settings | Mapping[str, Any],
    *,
    model: str,
    seed: int,
    trained: bool,
    checkpoint: dict[str, str] | None,
    clip_weights: str | None,
    device: str,
    threads: int,
    name: str | None = None,
) -> dict[str, Any]:
    """The settings that decide one row's numbers: the suite's sections plus the row's own values.

    Scheduling keys (the model and seed lists, other rows, tables), speed-only keys (``run.jobs``,
    ``data.num_workers``, ``data.frame_cache_mb``), ``[train]`` for an untrained row and
    ``[synthetic]`` for a protocol that is not generated are left out, so adding a model to a
    suite or running with more jobs keeps the other rows' records valid. ``name``: a variant row's
    name (``row.name``; plain rows are named after their model and carry none).
    """
    if not isinstance(settings, Settings):
        settings = Settings.from_dict(settings)
    out = {k: v for k, v in settings.to_dict().items() if k not in SCHEDULING_KEYS}
    for section, keys in SPEED_ONLY.items():
        for key in keys:
            out.get(section, {}).pop(key, None)
    if not trained:
        out.pop("train", None)  # an evaluated-only row does not depend on the training recipe
    if get_protocol(settings.protocol).hook("prepare_data") is None:
        out.pop("synthetic", None)  # generator settings matter only for generated data
    out.setdefault("run", {})["threads"] = int(threads)
    out["backbone"]["clip_weights"] = (
        clip_weights if clip_weights is not None else settings.backbone.clip_weights
    )
    out["row"] = {
        "model": model,
        "seed": int(seed),
        "trained": bool(trained),
        "checkpoint": checkpoint,
        "device": device,
    }
    if name is not None:
        out["row"]["name"] = name
    return out


# ----------------------------------------------------------------------------- the worker


def run_row_spec(spec: RowSpec) -> str:
    """Worker entry point: run one row and write its record; returns the record folder."""
    started = time.time()
    seed_everything(spec.seed)
    set_threads(spec)
    ctx = row_context(spec)
    model = build_row_model(spec)
    check_frame_size(model, spec.settings.frames.image_size)
    extra: dict[str, Any] = {
        "model": spec.model,
        "row": spec.row_name,
        "device": spec.device,
        "seed": spec.seed,
        "trained": spec.trained,
        "threads": spec.threads,
    }
    features = None
    if is_frozen(spec):
        features = train_frozen_row(ctx, model, extra)
    elif spec.trained:
        result = train_row(ctx, model)
        extra.update(training_extra(result))
    scored = score_test_split(ctx, model, extra, features=features)
    extra[WALL_CLOCK] = {"start": started, "end": time.time()}  # the row's real start and end (Unix s)
    if ddp.rank_and_world()[0] == 0:  # under torchrun every rank encodes, rank 0 writes
        write_row_records(ctx, model, scored, extra)
    return str(spec.row_dir)


def run_row_in_worker(spec: RowSpec) -> str:
    """:func:`run_row_spec` in a worker process: the harness' errors come back as plain
    ``Clip2VideoError`` with the same one-line message (some subclasses do not unpickle)."""
    from clip2video.plugins import import_modules, load_entry_points

    try:
        load_entry_points()
        import_modules(spec.imports, export=False)
        return run_row_spec(spec)
    except Clip2VideoError as exc:
        raise Clip2VideoError(f"row {spec.row!r}: {exc}") from None


def seed_everything(seed: int) -> None:
    """Python, numpy and torch (CPU and every CUDA device) from the row's seed only."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # seeds CUDA too


def set_threads(spec: RowSpec) -> None:
    """torch's intra-op threads on the CPU (part of the row settings: it changes float results)."""
    if not spec.device.startswith("cuda"):
        torch.set_num_threads(max(1, spec.threads))


@dataclass
class RowContext:
    """The data, frame sampler, tokenizer and caches one row works with."""

    spec: RowSpec
    paths: DataPaths
    splits: dict[str, SplitData]
    sampler: FrameSampler
    tokenizer: CaptionTokenizer
    cache: EmbeddingCache

    @property
    def settings(self) -> Settings:
        return self.spec.settings

    def encode_captions(self, model: torch.nn.Module, split: str) -> torch.Tensor:
        """Text embeddings of a split's captions (e.g. QB-Norm's query bank)."""
        ids, mask = self.tokenizer(list(self.splits[split].captions))
        return encode_texts(
            model, ids, mask, batch_size=256, device=self.spec.device, progress=self.spec.progress
        )


def row_context(spec: RowSpec) -> RowContext:
    """The row's data (as the check before work loaded it), sampler, tokenizer and embedding cache."""
    protocol = get_protocol(spec.data.protocol)
    paths = DataPaths(protocol, Path(spec.data.annotations), Path(spec.data.videos))
    settings = spec.settings
    sampler = FrameSampler.from_settings(settings.frames)
    cache_mb = settings.data.frame_cache_mb
    sampler.attach_cache(FrameCache(cache_mb * 2**20) if cache_mb > 0 else None)
    tokenizer = CaptionTokenizer.from_settings(settings.text)
    cache = EmbeddingCache(Path(spec.runs_dir) / ".embedding-cache")
    return RowContext(spec, paths, dict(spec.data.splits), sampler, tokenizer, cache)


def build_row_model(spec: RowSpec) -> torch.nn.Module:
    """A fresh model for the row: from a checkpoint when given, else from the row's settings.

    A model receives only the options its factory declares (``models.registry``).
    """
    from clip2video.models import from_official_checkpoint
    from clip2video.models.registry import create_model_from_options

    torch.manual_seed(spec.seed)
    options = model_kwargs(spec.settings, spec.clip_weights)
    if spec.checkpoint is not None:
        path = Path(spec.checkpoint)
        if not path.is_file():
            raise Clip2VideoError(f"checkpoint for {spec.model!r} not found: {path}")
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
            state = state["model"]  # a checkpoint written by this harness' trainer
        return from_official_checkpoint(
            state, variant=spec.model, center_weight=spec.settings.model.center_weight
        )
    return create_model_from_options(spec.model, options)


# ----------------------------------------------------------------------------- steps


def progress_label(ctx: RowContext, what: str = "") -> bool | str:
    """Progress bars name the model, seed and split (``"tdb s0 test"``); False when they are off."""
    if not ctx.spec.progress:
        return False
    return " ".join(x for x in (ctx.spec.model, f"s{ctx.spec.seed}", what) if x)


def encode_kwargs(ctx: RowContext, split: str = "test") -> dict[str, Any]:
    """Batching, device and precision of every encoding pass (bf16 autocast on CUDA only)."""
    return {
        "batch_size": ctx.settings.eval.batch_size,
        "num_workers": ctx.settings.data.num_workers,
        "device": ctx.spec.device,
        "amp": ctx.spec.device.startswith("cuda"),
        "progress": progress_label(ctx, split),
    }


def train_config(ctx: RowContext) -> TrainConfig:
    """The suite's [train] table as a TrainConfig for this row."""
    return TrainConfig.from_settings(
        ctx.settings.train,
        seed=ctx.spec.seed,
        device=ctx.spec.device,
        progress=progress_label(ctx),
        num_workers=ctx.settings.data.num_workers,
    )


def make_val_fn(ctx: RowContext, features: FeatureModel | None = None) -> Any:
    """Validation after each epoch: the protocol's val split, or test if asked (marked); from the
    frozen backbone's ``features`` (heads only) when the row has them."""
    select_on = ctx.settings.train.select_on
    split_name = "test" if select_on == "test" else "val"
    if split_name not in ctx.splits:
        if select_on == "val":
            raise Clip2VideoError(
                f"protocol {ctx.paths.protocol.name} has no validation split: use train.select_on = 'final'"
            )
        return None
    split = ctx.splits[split_name]
    e = ctx.settings.eval
    if features is not None:

        def features_val_fn(model: torch.nn.Module, epoch: int) -> dict[str, float]:
            emb = encode_features(features, split_name)
            result = evaluate_embeddings(
                features.model,
                emb,
                tie_policy=e.tie_policy,
                v2t=e.v2t,
                recall_ks=list(e.recall_ks),
                keep_sim=False,
            )
            return dict(result.metrics)

        return features_val_fn

    def val_fn(model: torch.nn.Module, epoch: int) -> dict[str, float]:
        result = evaluate(
            model,
            split,
            ctx.paths.videos,
            ctx.sampler,
            ctx.tokenizer,
            split_name=split_name,
            tie_policy=e.tie_policy,
            v2t=e.v2t,
            recall_ks=list(e.recall_ks),
            keep_sim=False,
            protocol=ctx.paths.protocol,
            **encode_kwargs(ctx, split_name),
        )
        return {} if result is None else dict(result.metrics)

    return val_fn


def train_dataset(ctx: RowContext) -> PairDataset:
    """The training pairs with a training-mode sampler; data order depends on the row's seed only."""
    split = ctx.splits["train"]
    paths = [Path(p) for p in ctx.spec.data.video_paths["train"]]
    pairs = [(int(v), c) for v, c in zip(split.caption_video, split.captions, strict=True)]
    sampler = dataclasses.replace(ctx.sampler, train=True).attach_cache(ctx.sampler.cache)
    return PairDataset(pairs, paths, split.video_ids, sampler, ctx.tokenizer, ctx.spec.seed)


def train_row(ctx: RowContext, model: torch.nn.Module) -> TrainResult:
    """Train the row's model (continuing its ``last.pt`` when the spec says so)."""
    ckpt_dir = ctx.spec.row_dir / "checkpoints"
    return train(
        model,
        train_dataset(ctx),
        train_config(ctx),
        out_dir=ckpt_dir,
        val_fn=make_val_fn(ctx),
        resume=ctx.spec.resume and (ckpt_dir / "last.pt").is_file(),
        meta={"row_settings": ctx.spec.row_settings},
    )


def train_frozen_row(ctx: RowContext, model: torch.nn.Module, extra: dict[str, Any]) -> FeatureModel:
    """Train the row's heads over its suite's frozen-backbone features with the unchanged trainer
    (heads at ``lr``; the backbone has no trainable parameter); returns the feature model the test
    split is encoded with. Training sees the evaluation sampler's frames (the features are computed
    once): the official loader's jitter of interior frame picks is not applied (zero on the synthetic
    protocol, whose clips are short). A model with no head parameters (meanp) is not trained and its
    record says so (``trained`` False, ``frozen_untrained``)."""
    features = FeatureModel(model, load_feature_bank(ctx.spec, model))
    ckpt_dir = ctx.spec.row_dir / "checkpoints"
    config = dataclasses.replace(train_config(ctx), num_workers=0)  # bank rows: nothing to decode
    heads = train_heads(
        features,
        config,
        out_dir=ckpt_dir,
        val_fn=make_val_fn(ctx, features),
        resume=ctx.spec.resume and (ckpt_dir / "last.pt").is_file(),
        meta={"row_settings": ctx.spec.row_settings},
    )
    extra["backbone"] = "frozen"
    if heads.trained and heads.result is not None:
        extra.update(training_extra(heads.result))
    else:
        extra["trained"] = False
        extra["frozen_untrained"] = FROZEN_UNTRAINED
    return features


def training_extra(result: TrainResult) -> dict[str, Any]:
    """What a record keeps of the training: selection and the per-epoch history (with steps)."""
    return {
        "selected_on": result.selected_on,
        "selected_on_test": result.selected_on_test,
        "best_epoch": result.best_epoch,
        "history": [{k: v for k, v in h.items() if k != "step_losses"} for h in result.history],
    }


@dataclass
class Scored:
    """The test split's embeddings, plain evaluation and similarity matrix."""

    emb: Any
    plain: Any
    sim: np.ndarray
    metrics: dict[str, float]
    arrays: dict[str, np.ndarray]
    parts: dict[str, np.ndarray] = field(default_factory=dict)  # TAB: sim_global, sim_aligned


def score_test_split(
    ctx: RowContext, model: torch.nn.Module, extra: dict[str, Any], *, features: FeatureModel | None = None
) -> Scored:
    """Encode the test split (and its reversal), rank, and fill ``extra`` with the diagnostics.
    With a frozen backbone's ``features`` the embeddings come from them (heads only; the reversal
    reverses each video's frame features, which equals encoding the reversed frames)."""
    e, test = ctx.settings.eval, ctx.splits["test"]

    if features is not None:
        emb = encode_features(features, "test")
        rev_emb = encode_features(features, "test", reverse=True) if e.time_reversal else None
    else:
        emb, rev_emb = encode_split_pair(  # each test video decoded once for both passes
            model,
            test,
            ctx.paths.protocol,
            ctx.paths.videos,
            sampler=ctx.sampler,
            tokenizer=ctx.tokenizer,
            cache=ctx.cache,
            time_reversal=bool(e.time_reversal),
            **encode_kwargs(ctx, "test"),
        )
    ks = list(e.recall_ks)
    plain = evaluate_embeddings(model, emb, tie_policy=e.tie_policy, v2t=e.v2t, keep_sim=True, recall_ks=ks)
    sim = plain.sim.float().cpu().numpy()
    metrics = dict(plain.metrics)
    if e.legacy:
        extra["legacy"] = retrieval_metrics(
            sim, emb.caption_video, tie_policy="legacy", v2t=e.v2t, recall_ks=ks
        )
    protocol_extra = protocol_extra_metrics(ctx, sim, emb.caption_video)
    arrays = protocol_extra.pop("arrays", {})
    extra.update(protocol_extra)
    if e.time_reversal:
        diag = time_reversal_diagnostic(
            model,
            test,
            ctx.paths.videos,
            emb=emb,
            rev_emb=rev_emb,
            tie_policy=e.tie_policy,
            v2t=e.v2t,
            recall_ks=ks,
        )
        extra["time_reversal"] = {k: v for k, v in diag.items() if k.startswith("rev_") or "change" in k}
        extra["order_changed_share"] = diag["order_changed_share"]
    extra["dropped"] = test.dropped
    parts = {k: v.cpu().numpy() for k, v in similarity_part_matrices(model, emb).items()}
    return Scored(emb, plain, sim, metrics, arrays, parts)


def protocol_extra_metrics(ctx: RowContext, sim: np.ndarray, caption_video: Any) -> dict[str, Any]:
    """The protocol's own extra metrics (the synthetic twins' order accuracy), via its hook."""
    hook = ctx.paths.protocol.hook("extra_metrics")
    if hook is not None:
        return dict(hook(sim, caption_video, ctx.paths.annotations, ctx.splits["test"]))
    return {}


def write_row_records(ctx: RowContext, model: torch.nn.Module, scored: Scored, extra: dict[str, Any]) -> None:
    """The row's record, and one marked record per post-processor."""
    from clip2video.engine.records import write_run_record

    spec, e = ctx.spec, ctx.settings.eval
    for stale in spec.row_dir.parent.glob(f"{glob.escape(spec.row)}+*"):
        shutil.rmtree(stale)  # post-processed rows of an earlier run of this row
    config = {**spec.row_settings, "model_config": getattr(model, "config", {})}
    common = {"protocol": ctx.paths.protocol.name, "config": config}
    write_run_record(
        spec.row_dir,
        name=spec.row,
        metrics=scored.metrics,
        ranks=scored.plain.ranks,
        extra=extra,
        sim=scored.sim if e.save_sim else None,
        sim_parts=(scored.parts or None) if e.save_sim else None,
        **common,
        **record_kwargs(spec.fingerprint, scored.arrays, scored.emb.caption_video, extra),
    )
    for post in build_postprocessors(list(e.postprocess), ctx=ctx, model=model):
        row = evaluate_embeddings(
            model,
            scored.emb,
            tie_policy=e.tie_policy,
            v2t=e.v2t,
            post=post,
            keep_sim=False,
            recall_ks=list(e.recall_ks),
        )
        post_name = f"{spec.row}+{_slug(post.row_name.lstrip('+'))}"
        post_extra = {**extra, "postprocess": post.row_name, "base_row": spec.row}
        write_run_record(
            spec.row_dir.parent / post_name,
            name=post_name,
            metrics=row.metrics,
            ranks=row.ranks,
            extra=post_extra,
            **common,
            **record_kwargs(spec.fingerprint, {}, scored.emb.caption_video, post_extra),
        )


def record_kwargs(
    fingerprint: dict[str, Any], arrays: dict[str, np.ndarray], caption_video: Any, extra: dict[str, Any]
) -> dict[str, Any]:
    """The record's fingerprint, per-query arrays and caption -> video map."""
    return {"fingerprint": fingerprint, "arrays": arrays or None, "caption_video": np.asarray(caption_video)}


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "", text.replace("=", "-").replace(",", "_"))


__all__ = ["DataPaths", "RowData", "RowSpec", "resolved_row_settings", "run_row_spec"]
