"""Run an experiment suite end to end: data -> train (or load) each model -> evaluate -> record.

Everything lands on disk first (``runs/<suite>/<row>/``: metrics, per-query ranks, the similarity
matrix, config, checkpoints); MLflow and ``results/`` are regenerated from those records.
"""

from __future__ import annotations

import dataclasses
import glob
import re
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from clip2video.data.annotations import SplitData, load_split
from clip2video.data.datasets import PairDataset
from clip2video.data.frame_cache import FrameCache
from clip2video.data.frames import FrameSampler
from clip2video.data.protocols import Protocol, data_folders, get_protocol
from clip2video.data.text import CaptionTokenizer
from clip2video.data.verify import require_test_videos
from clip2video.engine import ddp
from clip2video.engine.cache import EmbeddingCache
from clip2video.engine.evaluate import (
    encode_split_pair,
    evaluate,
    evaluate_embeddings,
    find_split_videos,
    time_reversal_diagnostic,
)
from clip2video.engine.postprocess import DualSoftmax, QBNorm
from clip2video.engine.train import TrainConfig, train
from clip2video.errors import Clip2VideoError, ProtocolError
from clip2video.experiments.suite import Suite, load_suite
from clip2video.metrics import retrieval_metrics

ZERO_SHOT_ROW = "meanp-zeroshot"
REVERSAL_KEYS = ("order_changed_share", "mean_abs_score_change", "rev_t2v_R1", "rev_v2t_R1")


@dataclass
class DataPaths:
    """Where a suite's annotations and videos are, and the protocol that reads them."""

    protocol: Protocol
    annotations: Path
    videos: Path


@dataclass
class SuiteResult:
    """What a suite run produced: one metrics dict per row, and the files it wrote."""

    suite: Suite
    runs_dir: Path
    rows: dict[str, dict[str, float]] = field(default_factory=dict)
    results_files: list[Path] = field(default_factory=list)
    elapsed_s: float = 0.0

    def summary(self) -> str:
        """A short text table of the headline metrics (the full tables are in results/)."""
        import pandas as pd
        from tabulate import tabulate

        keys = ["t2v_R1", "t2v_R5", "t2v_MnR", "v2t_R1", "v2t_R5", "order_acc"]
        frame = pd.DataFrame(
            [{"row": name, **{k: m.get(k) for k in keys if k in m}} for name, m in self.rows.items()]
        )
        head = f"suite {self.suite.name!r} ({self.suite.protocol}) finished in {self.elapsed_s:.0f} s"
        table = tabulate(frame, headers="keys", tablefmt="github", showindex=False, floatfmt=".1f")
        files = f"records: {self.runs_dir / self.suite.name}"
        if self.results_files:
            files += f"\nresults: {self.results_files[0].parent}"
        return f"{head}\n{table}\n{files}"


# ----------------------------------------------------------------------------- data


def resolve_data(suite: Suite, data_root: str | Path, *, rank: int = 0) -> DataPaths:
    """Locate (or, for ``synthetic``, generate) the suite's annotations and videos."""
    protocol = get_protocol(suite.protocol)
    root = Path(data_root)
    if protocol.layout == "synthetic":
        from clip2video.data.synthetic import generate_synthetic

        syn = suite["synthetic"]
        folder = root / (
            f"synthetic-s{syn['seed']}-{syn['num_train']}-{syn['num_val']}-{syn['num_test_pairs']}"
            f"-c{syn['captions_per_video']}-{syn['height']}x{syn['width']}"
        )
        if rank == 0:
            generate_synthetic(
                folder,
                seed=syn["seed"],
                num_train=syn["num_train"],
                num_val=syn["num_val"],
                num_test_pairs=syn["num_test_pairs"],
                captions_per_video=syn["captions_per_video"],
                size=(syn["height"], syn["width"]),
            )
        ddp.barrier()
        return DataPaths(protocol, folder / "annotations", folder / "videos")
    data = suite["data"]
    annotations, videos = data_folders(
        protocol, root, annotations=data["annotations"], videos=data["videos"]
    )  # DATA/<protocol>/ or the dataset's shared DATA/<msrvtt|msvd|vatex>/
    for what, path in (("annotations", annotations), ("videos", videos)):
        if not path.is_dir():
            raise ProtocolError(
                f"suite {suite.name!r} (protocol {protocol.name}): the {what} folder {path} does not "
                f"exist; pass --data-root DIR holding {protocol.name}/ (or "
                f"{protocol.subfolder or protocol.name}/) with annotations/ and videos/, or set "
                f"data.{what} in the suite (--set data.{what}=PATH)"
            )
    return DataPaths(protocol, annotations, videos)


def _under(root: Path, value: str) -> Path | None:
    if not value:
        return None
    path = Path(value)
    return path if path.is_absolute() else root / path


def load_splits(paths: DataPaths, *, allow_missing: bool) -> dict[str, SplitData]:
    """Train, validation (when the protocol has one) and test splits; missing test videos are errors."""
    proto = paths.protocol
    splits = {"train": load_split(proto, paths.annotations, "train")}
    if proto.val_split:
        splits["val"] = require_test_videos(
            load_split(proto, paths.annotations, "val"), paths.videos, allow_missing=allow_missing
        )
    splits["test"] = require_test_videos(
        load_split(proto, paths.annotations, "test"), paths.videos, allow_missing=allow_missing
    )
    return splits


# ----------------------------------------------------------------------------- models


def model_options(suite: Suite, clip_weights: str | None) -> dict[str, Any]:
    """``create_model`` keyword arguments shared by every row of the suite."""
    backbone = suite["backbone"]
    clip: Any = dict(backbone["config"]) if backbone["clip"] == "tiny" else backbone["clip"]
    weights = clip_weights if clip_weights is not None else backbone["clip_weights"]
    return {
        "clip": clip,
        "clip_weights": None if weights in ("none", "", None) else weights,
        **suite["model"],
    }


def build_row_model(
    name: str, options: dict[str, Any], seed: int, checkpoint: Path | None
) -> torch.nn.Module:
    """A fresh model for a row: from an official-layout checkpoint when given, else from options."""
    from clip2video.models import create_model, from_official_checkpoint

    torch.manual_seed(seed)
    if checkpoint is not None:
        if not checkpoint.is_file():
            raise Clip2VideoError(f"checkpoint for {name!r} not found: {checkpoint}")
        # Any checkpoint the harness writes (trainer's last.pt / best.pt, state_dict, official_state_dict).
        return from_official_checkpoint(
            checkpoint, variant=name, center_weight=options.get("center_weight", 0.5)
        )
    return create_model(name, **options)


def train_config(suite: Suite, seed: int, device: str, progress: bool) -> TrainConfig:
    """The suite's [train] table as a TrainConfig."""
    t = dict(suite["train"])
    return TrainConfig(
        seed=seed, device=device, progress=progress, num_workers=suite["data"]["num_workers"], **t
    )


# ----------------------------------------------------------------------------- one row


@dataclass
class RowContext:
    """What every row of a suite shares."""

    suite: Suite
    paths: DataPaths
    splits: dict[str, SplitData]
    sampler: FrameSampler
    tokenizer: CaptionTokenizer
    device: str
    cache: EmbeddingCache
    runs_dir: Path
    progress: bool
    rank: int
    resume: bool = False


def _encode_kwargs(ctx: RowContext) -> dict[str, Any]:
    """Batching, device and precision of every encoding pass (bf16 autocast on CUDA only)."""
    return {
        "batch_size": ctx.suite["eval"]["batch_size"],
        "num_workers": ctx.suite["data"]["num_workers"],
        "device": ctx.device,
        "amp": ctx.device.startswith("cuda"),
        "progress": ctx.progress,
    }


def make_val_fn(ctx: RowContext) -> Any:
    """Validation with the engine after each epoch: the protocol's val split, or test if asked (marked)."""
    select_on = ctx.suite["train"]["select_on"]
    split_name = "test" if select_on == "test" else "val"
    if split_name not in ctx.splits:
        if select_on == "val":
            raise Clip2VideoError(
                f"protocol {ctx.paths.protocol.name} has no validation split: use train.select_on = 'final'"
            )
        return None
    split = ctx.splits[split_name]
    e = ctx.suite["eval"]

    def val_fn(model: torch.nn.Module, epoch: int) -> dict[str, float]:
        result = evaluate(
            model,
            split,
            ctx.paths.videos,
            ctx.sampler,
            ctx.tokenizer,
            split_name=split_name,
            tie_policy=e["tie_policy"],
            v2t=e["v2t"],
            keep_sim=False,
            protocol=ctx.paths.protocol,
            **_encode_kwargs(ctx),
        )
        return {} if result is None else dict(result.metrics)

    return val_fn


def run_row(
    ctx: RowContext,
    name: str,
    model_name: str,
    model: torch.nn.Module,
    *,
    do_train: bool,
    seed: int,
    tracker: Any,
) -> dict[str, float] | None:
    """Train (optionally) and evaluate one row, write its record; returns its metrics (rank 0)."""
    from clip2video.data.synthetic import load_twins
    from clip2video.engine.records import write_run_record
    from clip2video.metrics.bootstrap import bootstrap_ci
    from clip2video.order import twin_order_accuracy

    suite, e = ctx.suite, ctx.suite["eval"]
    row_dir = ctx.runs_dir / suite.name / name
    if ctx.rank == 0:  # post-processed rows of an earlier run of this row are stale now
        for stale in row_dir.parent.glob(f"{glob.escape(name)}+*"):
            shutil.rmtree(stale)
    extra: dict[str, Any] = {"model": model_name, "device": ctx.device, "seed": seed, "trained": do_train}
    config: dict[str, Any] = {"suite": suite.settings, "model": getattr(model, "config", {})}
    if do_train:
        cfg = train_config(suite, seed, ctx.device, ctx.progress)
        config["train"] = cfg.to_dict()
        train_split = ctx.splits["train"]
        paths = find_split_videos(ctx.paths.videos, train_split.video_ids)
        pairs = [(int(v), c) for v, c in zip(train_split.caption_video, train_split.captions, strict=True)]
        train_sampler = dataclasses.replace(ctx.sampler, train=True).attach_cache(ctx.sampler.cache)
        dataset = PairDataset(pairs, paths, train_split.video_ids, train_sampler, ctx.tokenizer, seed)
        ckpt_dir = row_dir / "checkpoints"
        result = train(
            model,
            dataset,
            cfg,
            out_dir=ckpt_dir,
            val_fn=make_val_fn(ctx),
            tracker=tracker,
            resume=ctx.resume and (ckpt_dir / "last.pt").is_file(),
        )
        extra.update(
            selected_on=result.selected_on,
            selected_on_test=result.selected_on_test,
            best_epoch=result.best_epoch,
            history=[{k: v for k, v in h.items() if k != "step_losses"} for h in result.history],
        )
    test = ctx.splits["test"]

    # Encoding is collective under torchrun: every rank runs the same passes, rank 0 ranks.
    # Each test video is decoded once; the time-reversal pass reverses the same decoded frames.
    emb, rev_emb = encode_split_pair(
        model,
        test,
        ctx.paths.protocol,
        ctx.paths.videos,
        sampler=ctx.sampler,
        tokenizer=ctx.tokenizer,
        cache=ctx.cache,
        time_reversal=bool(e["time_reversal"]),
        **_encode_kwargs(ctx),
    )
    if ctx.rank != 0:
        return None
    plain = evaluate_embeddings(model, emb, tie_policy=e["tie_policy"], v2t=e["v2t"], keep_sim=True)
    sim = plain.sim.float().cpu().numpy()
    metrics = dict(plain.metrics)
    if e["legacy"]:
        extra["legacy"] = retrieval_metrics(sim, emb.caption_video, tie_policy="legacy", v2t=e["v2t"])
    if ctx.paths.protocol.layout == "synthetic":
        twins = load_twins(ctx.paths.annotations, test.video_ids)
        extra.update(twin_order_accuracy(sim, emb.caption_video, twins))
    if e["time_reversal"]:
        diag = time_reversal_diagnostic(
            model, test, ctx.paths.videos, emb=emb, rev_emb=rev_emb, tie_policy=e["tie_policy"], v2t=e["v2t"]
        )
        extra["time_reversal"] = {k: v for k, v in diag.items() if k.startswith("rev_") or "change" in k}
        extra["order_changed_share"] = diag["order_changed_share"]
    extra["dropped"] = test.dropped
    write_run_record(
        row_dir,
        name=name,
        metrics=metrics,
        ranks=plain.ranks,
        caption_video=emb.caption_video,
        protocol=ctx.paths.protocol.name,
        config=config,
        extra=extra,
        sim=sim,
    )
    intervals = bootstrap_ci(plain.ranks, caption_video=emb.caption_video, n_boot=e["bootstrap"], seed=seed)
    tracker.log_final(metrics, intervals)
    tracker.log_record(row_dir)
    for post in _postprocess_specs(ctx, model, e["postprocess"]):
        row = evaluate_embeddings(
            model, emb, tie_policy=e["tie_policy"], v2t=e["v2t"], post=post, keep_sim=False
        )
        post_name = f"{name}+{_slug(post.row_name.lstrip('+'))}"
        write_run_record(
            ctx.runs_dir / suite.name / post_name,
            name=post_name,
            metrics=row.metrics,
            ranks=row.ranks,
            caption_video=emb.caption_video,
            protocol=ctx.paths.protocol.name,
            config=config,
            extra={**extra, "postprocess": post.row_name, "base_row": name},
        )
    return {**metrics, **{k: v for k, v in extra.items() if k.startswith("order_")}}


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "", text.replace("=", "-").replace(",", "_"))


def _postprocess_specs(ctx: RowContext, model: torch.nn.Module, names: list[str]) -> list[Any]:
    specs: list[Any] = []
    for name in names:
        if name == "dsl":
            specs.append(DualSoftmax())
        elif name == "qbnorm":
            train = ctx.splits["train"]
            ids, mask = ctx.tokenizer(list(train.captions))
            from clip2video.engine.evaluate import encode_texts

            bank = encode_texts(model, ids, mask, batch_size=256, device=ctx.device, progress=ctx.progress)
            specs.append(QBNorm(bank_text=bank, bank="train-captions"))
        else:
            raise Clip2VideoError(f"eval.postprocess: unknown {name!r}; known: dsl, qbnorm")
    return specs


# ----------------------------------------------------------------------------- the suite


def run_suite(
    suite_name: str | Path,
    *,
    data_root: str | Path = "data",
    clip_weights: str | None = None,
    device: str = "cpu",
    eval_only: bool = False,
    checkpoints: dict[str, Path] | None = None,
    runs_dir: str | Path = "runs",
    tracking_uri: str | None = None,
    tracking: bool = True,
    overrides: dict[str, Any] | None = None,
    nproc: int = 1,
    progress: bool = True,
    resume: bool = False,
) -> SuiteResult:
    """Run every row of a suite and regenerate its tables; see ``clip2video ablation --help``.

    Under torchrun (``WORLD_SIZE`` set) every rank trains and encodes its shard; rank 0 alone
    ranks, writes records, tables and MLflow runs. ``nproc`` > 1 outside torchrun is handled by
    the command line, which relaunches itself under ``torch.distributed.run``. ``resume`` keeps
    rows whose record is complete and continues an interrupted row from its ``last.pt``.
    """
    from clip2video.engine.records import write_suite_info
    from clip2video.tracking import NullTracker, create_tracker

    start = time.perf_counter()
    suite = load_suite(suite_name, overrides)
    rank, _world = ddp.init_distributed_from_env()
    checkpoints = dict(checkpoints or {})
    tracker = create_tracker(tracking_uri, enabled=tracking and rank == 0) if rank == 0 else NullTracker()
    paths = resolve_data(suite, data_root, rank=rank)
    splits = load_splits(paths, allow_missing=suite["data"]["allow_missing"])
    split_notes = _split_file_notes(paths) if rank == 0 else []
    frames, proto = suite["frames"], paths.protocol
    sampler = FrameSampler(
        extraction_fps=proto.extraction_fps,
        stride=proto.stride,
        max_frames=frames["max_frames"],
        image_size=frames["image_size"],
        train=False,
    )
    cache_mb = suite["data"]["frame_cache_mb"]
    sampler.attach_cache(FrameCache(cache_mb * 2**20) if cache_mb > 0 else None)
    tokenizer = CaptionTokenizer(max_words=suite["text"]["max_words"])
    runs = Path(runs_dir)
    ctx = RowContext(
        suite,
        paths,
        splits,
        sampler,
        tokenizer,
        device,
        EmbeddingCache(runs / ".embedding-cache"),
        runs,
        progress,
        rank,
        resume=resume,
    )
    options = model_options(suite, clip_weights)
    result = SuiteResult(suite=suite, runs_dir=runs)
    rows: list[str] = []
    with tracker.start_suite(suite.name, suite.settings):
        for seed in suite["seeds"]:
            for name, model_name, do_train, ckpt in _row_plan(suite, eval_only, checkpoints, seed):
                done = _finished_row(runs / suite.name / name) if resume else None
                if done is not None:
                    result.rows[name] = done
                    rows.append(name)
                    rows.extend(_post_rows(ctx, name))
                    continue
                model = build_row_model(model_name, options, seed, ckpt)
                with tracker.start_model(name, {"model": getattr(model, "config", {}), "seed": seed}):
                    metrics = run_row(
                        ctx, name, model_name, model, do_train=do_train, seed=seed, tracker=tracker
                    )
                if metrics is not None:
                    result.rows[name] = metrics
                    rows.append(name)
                    rows.extend(_post_rows(ctx, name))
        if rank == 0:
            notes = _suite_notes(suite, proto, splits) + split_notes
            write_suite_info(
                runs,
                suite.name,
                protocol=proto.name,
                rows=rows,
                notes=notes,
                extra={"settings": suite.settings},
            )
    result.elapsed_s = time.perf_counter() - start
    return result


def _finished_row(row_dir: Path) -> dict[str, float] | None:
    """The metrics of a row whose record is complete (``--resume`` keeps it), else None."""
    from clip2video.engine.records import RecordError, read_run_record

    if not (row_dir / "metrics.json").is_file():
        return None
    try:
        record = read_run_record(row_dir)
    except RecordError:
        return None
    order = {k: v for k, v in record.extra.items() if k.startswith("order_")}
    return {**record.metrics, **order}


def _post_rows(ctx: RowContext, name: str) -> list[str]:
    folder = ctx.runs_dir / ctx.suite.name
    return sorted(p.name for p in folder.glob(f"{glob.escape(name)}+*") if (p / "metrics.json").is_file())


def _row_plan(suite: Suite, eval_only: bool, checkpoints: dict[str, Path], seed: int) -> list[tuple]:
    """(row name, registry model, train?, checkpoint) for each row of the suite and seed."""
    suffix = "" if len(suite["seeds"]) == 1 else f"-s{seed}"
    plan: list[tuple] = []
    if suite["zero_shot"]:
        plan.append((ZERO_SHOT_ROW + suffix, "meanp", False, None))
    for model in suite.models:
        ckpt = checkpoints.get(model, checkpoints.get("*"))
        if eval_only and ckpt is None:
            warnings.warn(f"--eval-only: no checkpoint for {model!r}; its row is skipped", stacklevel=2)
            continue
        plan.append((model + suffix, model, not eval_only, ckpt))
    return plan


def _split_file_notes(paths: DataPaths) -> list[str]:
    """Warn, and footnote the tables, when a split file is not the public one (``data verify``)."""
    from clip2video.data.verify import check_split_files

    proto = paths.protocol
    if proto.layout == "synthetic":
        return []
    bad = [c for c in check_split_files(proto, paths.annotations) if not c.ok]
    if not bad:
        return []
    files = "; ".join(
        f"{c.file} ({c.status}: {c.actual_count if c.actual_count is not None else '?'} ids, "
        f"the public file has {c.expected_count if c.expected_count is not None else '?'})"
        for c in bad
    )
    note = (
        f"split files in {paths.annotations} are not the public {proto.name} files: {files}; these "
        f"numbers are not comparable with the published ones "
        f"(`clip2video data verify --protocol {proto.name}` shows the details)"
    )
    warnings.warn(note, stacklevel=3)
    return [note]


def _suite_notes(suite: Suite, proto: Protocol, splits: dict[str, SplitData]) -> list[str]:
    notes = []
    if proto.layout == "synthetic":
        from clip2video.order import ORDER_CEILING_NOTE

        notes.append(ORDER_CEILING_NOTE)
    test = splits["test"]
    notes.append(
        f"test split: {test.num_videos} videos, {test.num_captions} captions; tie policy "
        f"{suite['eval']['tie_policy']}, v2t {suite['eval']['v2t']}; model selection: "
        f"{suite['train']['select_on']} epoch"
    )
    return notes


__all__ = ["run_suite", "SuiteResult", "resolve_data", "load_splits"]
