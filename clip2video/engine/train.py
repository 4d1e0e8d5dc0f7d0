"""Co-learning training loop for every registry model (models.md, "Training").

* Loss: :func:`~clip2video.engine.losses.co_learning_loss` over the *global* batch (all ranks).
* Optimizer: CLIP4Clip's BertAdam recipe (:mod:`clip2video.engine.optim`), warmup + cosine over
  the whole run, global gradient-norm clipping, logit scale clamped at 100 after each step.
* Gradient accumulation is exact (GradCache): the micro-batches are first encoded without
  gradients, the full-batch loss gives the gradient of every embedding, then each micro-batch is
  re-encoded with gradients and back-propagated with its slice of those gradients. The update is
  the one of a single big batch (the negatives are the whole batch), at a micro-batch's memory.
* Data order is a pure function of ``(seed, epoch)``; checkpoints every epoch hold everything else
  (model, optimizer, scheduler, RNG, history), so ``resume=True`` ends with the same weights and
  metrics as an uninterrupted run.
* Model selection never looks at a test split unless ``select_on="test"`` is asked for, and then
  the result says ``selected_on_test=True`` so every row it touches can be marked.
* Under torchrun (``torch.distributed`` initialized) each rank trains on its slice of every
  global batch; see :mod:`clip2video.engine.distributed`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

from clip2video.data.datasets import resolve_num_workers
from clip2video.engine import distributed as ddp
from clip2video.engine.checkpoint import (
    CheckpointError,
    capture_rng_state,
    load_checkpoint,
    load_model_state,
    restore_rng_state,
    save_checkpoint,
)
from clip2video.engine.evaluate import progress_desc
from clip2video.engine.losses import co_learning_loss
from clip2video.engine.optim import BertAdam, build_optimizer, warmup_cosine
from clip2video.settings import TrainSettings

SELECT_ON = ("final", "val", "test")
LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"
# Settings that may differ between an interrupted run and its resumption (they do not change results).
RESUME_FREE_KEYS = frozenset({"device", "num_workers", "progress", "log_every"})


# Each history entry's wall-clock start and end (Unix seconds): the only values that differ between
# two otherwise identical runs; comparisons of histories leave them out (without_wall_clock).
WALL_CLOCK = "wall_clock"


def without_wall_clock(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``history`` without each entry's wall-clock times (for comparing two runs' histories)."""
    return [{k: v for k, v in entry.items() if k != WALL_CLOCK} for entry in history]


# [train] keys that a row reads, not the trainer (train.backbone: finetune or frozen).
ROW_TRAIN_KEYS = ("backbone",)
# The [train] defaults of defaults.toml (a suite's training settings): the one place they are written.
_TRAIN = TrainSettings.defaults()


@dataclass
class TrainConfig:
    """Every training setting. The suite's ``[train]`` keys default to ``defaults.toml``'s (CLIP4Clip's
    recipe, models.md); the rest are the optimizer's constants and the run's own values."""

    epochs: int = _TRAIN.epochs
    batch_size: int = _TRAIN.batch_size  # the global batch: all ranks and micro-batches together
    grad_accum: int = _TRAIN.grad_accum  # micro-batches per optimizer step (per rank)
    lr: float = _TRAIN.lr
    coef_lr: float = _TRAIN.coef_lr  # clip.* parameters train at lr * coef_lr
    weight_decay: float = _TRAIN.weight_decay
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    bias_correction: bool = False  # BertAdam has none; True (with clip_grad_per_param=0) is AdamW
    warmup: float = _TRAIN.warmup  # fraction of the whole run
    clip_grad: float = _TRAIN.clip_grad  # global gradient-norm clipping; 0 disables
    clip_grad_per_param: float = 1.0  # BertAdam's per-parameter clipping inside its step; 0 disables
    logit_scale_max: float | None = 100.0  # CLIP4Clip clamps logit_scale.exp() at 100 after each step
    seed: int = 42
    device: str = "auto"  # "auto": CUDA when available, else CPU
    amp: bool = True  # bf16 autocast on CUDA; the CPU always runs float32
    num_workers: int = 0
    select_on: str = _TRAIN.select_on  # "final" | "val" | "test" (test only when asked; the result is marked)
    select_metric: str = "t2v_R1"  # higher is better
    val_every: int = _TRAIN.val_every
    log_every: int = 10  # tracker steps
    progress: bool | str = True  # a string names the bars, e.g. "tdb s0"

    @classmethod
    def from_settings(cls, train: TrainSettings, **run: Any) -> TrainConfig:
        """A suite's ``[train]`` section plus the row's own values (``seed``, ``device``, ``progress``,
        ``num_workers``). ``backbone`` is not the trainer's: it decides what the row feeds it
        (the full model, or a frozen backbone's features)."""
        values = {k: v for k, v in train.to_dict().items() if k not in ROW_TRAIN_KEYS}
        return cls(**values, **run)

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)  # type: ignore[assignment]
        if self.select_on not in SELECT_ON:
            raise ValueError(f"TrainConfig.select_on must be one of {SELECT_ON}, got {self.select_on!r}")
        for key in ("epochs", "batch_size", "grad_accum", "val_every", "log_every"):
            if getattr(self, key) < 1:
                raise ValueError(f"TrainConfig.{key} must be >= 1, got {getattr(self, key)}")
        if not 0.0 <= self.warmup < 1.0:
            raise ValueError(f"TrainConfig.warmup is a fraction of the run in [0, 1), got {self.warmup}")

    def to_dict(self) -> dict[str, Any]:
        """Plain values (checkpoints, tracking)."""
        return dataclasses.asdict(self)


@dataclass
class TrainResult:
    """What :func:`train` returns; ``final_metrics`` belong to the selected epoch."""

    final_metrics: dict[str, float]
    best_epoch: int  # 0-based epoch whose weights the model holds now
    history: list[dict[str, Any]]
    checkpoint_path: Path  # the checkpoint holding the selected weights
    selected_on: str = "final"
    selected_on_test: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class MetricsTracker(Protocol):
    """Anything with ``log_metrics`` (the MLflow wrapper lives in ``clip2video.tracking``)."""

    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...


class GlobalBatchSampler(Sampler[list[int]]):
    """Index lists of this rank's micro-batches, global batch after global batch.

    The permutation is a pure function of ``(seed, epoch)``: rank ``r`` of ``world`` takes rows
    ``[r * B / world, (r + 1) * B / world)`` of each global batch ``B`` and splits them into
    ``micro_batches`` consecutive micro-batches. The incomplete last batch is dropped.
    """

    def __init__(
        self,
        num_items: int,
        batch_size: int,
        *,
        seed: int,
        epoch: int,
        rank: int = 0,
        world: int = 1,
        micro_batches: int = 1,
    ) -> None:
        if batch_size % (world * micro_batches):
            raise ValueError(
                f"batch_size {batch_size} must be divisible by world size {world} x grad_accum "
                f"{micro_batches}: pick a batch size that splits evenly"
            )
        self.num_items, self.batch_size = num_items, batch_size
        self.seed, self.epoch, self.rank, self.world = seed, epoch, rank, world
        self.micro_batches = micro_batches
        self.steps = num_items // batch_size

    def order(self) -> np.ndarray:
        """The epoch's global permutation of item indices."""
        return np.random.default_rng([self.seed, self.epoch]).permutation(self.num_items)

    def __iter__(self) -> Iterator[list[int]]:
        perm = self.order()
        local = self.batch_size // self.world
        micro = local // self.micro_batches
        for step in range(self.steps):
            start = step * self.batch_size + self.rank * local
            for m in range(self.micro_batches):
                yield perm[start + m * micro : start + (m + 1) * micro].tolist()

    def __len__(self) -> int:
        return self.steps * self.micro_batches


def resolve_device(name: str) -> torch.device:
    """``"auto"`` is ``cuda:LOCAL`` when CUDA is available (the current device), else the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")
    return torch.device(name)


def _autocast(device: torch.device, amp: bool) -> contextlib.AbstractContextManager:
    if amp and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _cpu_cuda_rng(device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def _set_cpu_cuda_rng(state: tuple[torch.Tensor, torch.Tensor | None], device: torch.device) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


def _encode(
    model: nn.Module, batch: Sequence[torch.Tensor], amp_ctx: Callable
) -> tuple[torch.Tensor, torch.Tensor]:
    ids, mask, frames, fmask = batch[:4]
    with amp_ctx():
        text = model.encode_text(ids, mask)
        video = model.encode_video(frames, fmask)
    return text.float(), video.float()


def compute_gradients(
    model: nn.Module,
    micro_batches: Sequence[Sequence[torch.Tensor]],
    *,
    device: torch.device,
    amp: bool = False,
) -> dict[str, float]:
    """Accumulate into ``.grad`` the gradient of the co-learning loss over the global batch.

    ``micro_batches`` are this rank's slices (tensors already on ``device``). One micro-batch is
    encoded with gradients directly; several use GradCache (see the module docstring), restoring
    the RNG state before each re-encoding so that dropout, if any, matches. Under torchrun the
    gradients are averaged over ranks before returning. Returns the logged loss values.
    """
    amp_ctx = lambda: _autocast(device, amp)  # noqa: E731
    rank, world = ddp.rank_and_world()
    if len(micro_batches) == 1:
        text, video = _encode(model, micro_batches[0], amp_ctx)
        text, video = ddp.all_gather_with_grad(text), ddp.all_gather_with_grad(video)
        loss, logs = co_learning_loss(model, text, video)
        loss.backward()
    else:
        rng_states, texts, videos = [], [], []
        with torch.no_grad():
            for batch in micro_batches:
                rng_states.append(_cpu_cuda_rng(device))
                t, v = _encode(model, batch, amp_ctx)
                texts.append(t)
                videos.append(v)
        local_text, local_video = torch.cat(texts), torch.cat(videos)
        text = ddp.all_gather_nograd(local_text).requires_grad_(True)
        video = ddp.all_gather_nograd(local_video).requires_grad_(True)
        loss, logs = co_learning_loss(model, text, video)
        loss.backward()
        n_local = local_text.shape[0]
        # Every rank computed the same full loss: its slice's share of the summed gradient is
        # ``world`` times the slice of dL/d(embeddings); average_gradients divides by ``world``.
        grad_text = text.grad[rank * n_local : (rank + 1) * n_local] * world
        grad_video = video.grad[rank * n_local : (rank + 1) * n_local] * world
        end_state = _cpu_cuda_rng(device)
        offset = 0
        for batch, state in zip(micro_batches, rng_states, strict=True):
            _set_cpu_cuda_rng(state, device)
            t, v = _encode(model, batch, amp_ctx)
            n = t.shape[0]
            torch.autograd.backward([t, v], [grad_text[offset : offset + n], grad_video[offset : offset + n]])
            offset += n
        _set_cpu_cuda_rng(end_state, device)
    ddp.average_gradients(model)
    return logs


def _clamp_logit_scale(model: nn.Module, max_scale: float | None) -> None:
    if max_scale is None:
        return
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name == "logit_scale" or name.endswith(".logit_scale"):
                p.clamp_(max=math.log(max_scale))


def _to_device(batch: Sequence[Any], device: torch.device) -> list[Any]:
    return [b.to(device, non_blocking=True) if isinstance(b, torch.Tensor) else b for b in batch]


def _check_resume_config(saved: dict[str, Any], config: TrainConfig, path: Path) -> None:
    current = config.to_dict()
    differ = sorted(
        k
        for k in set(saved) | set(current)
        if k not in RESUME_FREE_KEYS and _norm(saved.get(k)) != _norm(current.get(k))
    )
    if differ:
        detail = ", ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in differ)
        raise CheckpointError(
            f"cannot resume from {path}: settings changed ({detail}); resume with the original "
            "settings or start a new run in another out_dir"
        )


def _norm(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _is_better(value: float, best: float | None) -> bool:
    return best is None or value > best


def _best_so_far(history: list[dict[str, Any]], config: TrainConfig) -> tuple[float | None, int]:
    """(best validation value, selected epoch) of a resumed history: the last epoch under
    ``select_on="final"`` (validation metrics are only logged then), else the best on ``select_metric``."""
    best_value: float | None = None
    best_epoch = history[-1]["epoch"] if history else -1
    if config.select_on == "final":
        return best_value, best_epoch
    for record in history:
        value = record.get("val", {}).get(config.select_metric)
        if value is not None and _is_better(value, best_value):
            best_value, best_epoch = value, record["epoch"]
    return best_value, best_epoch


def _check_resume_meta(saved: Any, meta: dict[str, Any] | None, path: Path) -> None:
    """Refuse to continue a checkpoint written under other row settings (``meta``)."""
    if meta is None or saved is None:
        return
    from clip2video.fingerprint import differences

    differ = differences(saved, meta)
    if differ:
        raise CheckpointError(
            f"cannot resume from {path}: settings changed ({'; '.join(differ[:5])}); resume with the "
            "original settings, or rerun without --resume to start this row over"
        )


@dataclass
class _TrainRun:
    """The state one training run carries from epoch to epoch (what ``last.pt`` saves)."""

    model: nn.Module
    config: TrainConfig
    device: torch.device
    rank: int
    world: int
    steps_per_epoch: int
    optimizer: BertAdam
    scheduler: LambdaLR
    last_path: Path
    best_path: Path
    start_epoch: int = 0
    global_step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_value: float | None = None  # best validation value so far (select_on "val" / "test")
    best_epoch: int = -1  # the epoch whose weights are selected so far


def train(
    model: nn.Module,
    train_dataset: Dataset,
    config: TrainConfig,
    *,
    out_dir: str | Path,
    val_fn: Callable[[nn.Module, int], dict[str, float]] | None = None,
    resume: bool = False,
    tracker: MetricsTracker | None = None,
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
    meta: dict[str, Any] | None = None,
) -> TrainResult:
    """Train ``model`` on ``train_dataset`` (items ``(ids, mask, frames, fmask, video_index)``).

    ``val_fn(model, epoch)`` returns validation metrics (the evaluation engine) after every
    ``val_every``-th and the last epoch; under torchrun it runs on every rank (the engine shards
    the encoding over ranks) and rank 0's metrics are kept; with ``select_on="val"`` (or ``"test"``, marked) the best
    epoch on ``select_metric`` is restored at the end. Checkpoints go to ``out_dir/last.pt``
    (every epoch) and ``out_dir/best.pt`` (the selected epoch). ``resume=True`` continues from
    ``last.pt``. ``on_epoch_end(epoch, record)`` runs after each epoch's checkpoint is written.
    ``meta`` (e.g. the row's resolved settings) is stored in ``last.pt``; resuming refuses a
    checkpoint whose ``meta`` differs.
    """
    run = _prepare_run(model, train_dataset, config, out_dir=Path(out_dir), val_fn=val_fn)
    if resume:
        _resume_run(run, meta)
    else:
        _start_fresh(run)
    run.best_value, run.best_epoch = _best_so_far(run.history, config)

    for epoch in range(run.start_epoch, config.epochs):
        started = time.time()
        record = _train_epoch(run, train_dataset, epoch, tracker)
        if val_fn is not None and _validates_after(epoch, config):
            record["val"] = _validate(run.model, val_fn, epoch)
        record[WALL_CLOCK] = {"start": started, "end": time.time()}  # Unix seconds (MLflow's timestamps)
        run.history.append(record)
        _log_epoch(run, record, tracker)
        _select_epoch(run, epoch, record)
        _save_last_checkpoint(run, epoch, meta)
        ddp.barrier()
        if on_epoch_end is not None:
            on_epoch_end(epoch, record)
    return _selected_result(run)


def _prepare_run(
    model: nn.Module,
    train_dataset: Dataset,
    config: TrainConfig,
    *,
    out_dir: Path,
    val_fn: Callable[[nn.Module, int], dict[str, float]] | None,
) -> _TrainRun:
    """Check the settings against the data, move ``model`` to its device and build the optimizer
    (BertAdam) and its warmup + cosine schedule over the whole run."""
    rank, world = ddp.rank_and_world()
    device = resolve_device(config.device)
    if config.select_on != "final" and val_fn is None:
        raise ValueError(f"select_on={config.select_on!r} needs a val_fn that returns metrics")
    steps_per_epoch = len(train_dataset) // config.batch_size
    if steps_per_epoch == 0:
        raise ValueError(
            f"the training set has {len(train_dataset)} pairs, fewer than one batch of "
            f"{config.batch_size}: lower batch_size"
        )
    total_steps = steps_per_epoch * config.epochs
    model.to(device)
    optimizer = build_optimizer(
        model,
        lr=config.lr,
        coef_lr=config.coef_lr,
        weight_decay=config.weight_decay,
        betas=config.betas,
        eps=config.eps,
        max_grad_norm=config.clip_grad_per_param,
        bias_correction=config.bias_correction,
    )
    return _TrainRun(
        model=model,
        config=config,
        device=device,
        rank=rank,
        world=world,
        steps_per_epoch=steps_per_epoch,
        optimizer=optimizer,
        scheduler=warmup_cosine(optimizer, total_steps, config.warmup),
        last_path=out_dir / LAST_CHECKPOINT,
        best_path=out_dir / BEST_CHECKPOINT,
    )


def _start_fresh(run: _TrainRun) -> None:
    """Seed every RNG from ``config.seed`` and give every rank rank 0's initial weights."""
    _seed_all(run.config.seed)
    ddp.broadcast_parameters(run.model)


def _resume_run(run: _TrainRun, meta: dict[str, Any] | None) -> None:
    """Continue from ``last.pt``: the same settings are required, then weights, optimizer,
    schedule, step counters, history and RNG states are restored."""
    state = load_checkpoint(run.last_path, map_location="cpu")
    _check_resume_config(state["config"], run.config, run.last_path)
    _check_resume_meta(state.get("meta"), meta, run.last_path)
    load_model_state(run.model, state["model"], run.last_path)
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.start_epoch, run.global_step = state["epoch"] + 1, state["step"]
    run.history = list(state["history"])
    restore_rng_state(state["rng"])


def _epoch_loader(train_dataset: Dataset, run: _TrainRun, epoch: int) -> DataLoader:
    """This rank's micro-batches of ``epoch``, in an order that is a pure function of
    ``(seed, epoch)`` (the dataset's ``set_epoch`` re-draws its train-time sampling)."""
    config = run.config
    if hasattr(train_dataset, "set_epoch"):
        train_dataset.set_epoch(epoch)
    sampler = GlobalBatchSampler(
        len(train_dataset),
        config.batch_size,
        seed=config.seed,
        epoch=epoch,
        rank=run.rank,
        world=run.world,
        micro_batches=config.grad_accum,
    )
    return DataLoader(
        train_dataset,
        batch_sampler=sampler,
        num_workers=resolve_num_workers(config.num_workers, run.device),
        pin_memory=run.device.type == "cuda",
        generator=torch.Generator().manual_seed(config.seed + epoch),
    )


def _train_epoch(
    run: _TrainRun, train_dataset: Dataset, epoch: int, tracker: MetricsTracker | None
) -> dict[str, Any]:
    """One epoch of optimizer steps (``grad_accum`` micro-batches each) with its progress bar and
    step logging; returns the epoch's record (mean loss, learning rates, every step's loss)."""
    config = run.config
    loader = _epoch_loader(train_dataset, run, epoch)
    run.model.train()
    step_losses: list[float] = []
    bar = tqdm(
        total=run.steps_per_epoch,
        desc=progress_desc(config.progress, f"train {epoch + 1}/{config.epochs}"),
        unit="step",
        disable=not (config.progress and run.rank == 0),
    )
    tick, micro = time.perf_counter(), []
    for batch in loader:
        micro.append(_to_device(batch, run.device))
        if len(micro) < config.grad_accum:
            continue
        loss, lr_now = _optimizer_step(run, micro)
        micro = []
        step_losses.append(loss)
        now = time.perf_counter()
        bar.set_postfix(
            loss=f"{loss:.4f}",
            lr=f"{lr_now:.2e}",
            samples_s=f"{config.batch_size / max(now - tick, 1e-9):.1f}",
        )
        tick = now
        bar.update(1)
        if tracker is not None and run.rank == 0 and run.global_step % config.log_every == 0:
            tracker.log_metrics({"train/loss": loss, "train/lr": lr_now}, step=run.global_step)
    bar.close()
    return {
        "epoch": epoch,
        "step": run.global_step,
        "loss": float(np.mean(step_losses)),
        "lr": run.optimizer.param_groups[1]["lr"],
        "lr_clip": run.optimizer.param_groups[0]["lr"],
        "step_losses": step_losses,
    }


def _optimizer_step(run: _TrainRun, micro: list[list[Any]]) -> tuple[float, float]:
    """One update from one global batch: gradients, global-norm clipping, the optimizer and
    schedule steps, the logit-scale clamp. Returns (loss, learning rate used by the step)."""
    config = run.config
    logs = compute_gradients(run.model, micro, device=run.device, amp=config.amp)
    if config.clip_grad > 0:
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), config.clip_grad)
    lr_now = run.optimizer.param_groups[1]["lr"]
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    _clamp_logit_scale(run.model, config.logit_scale_max)
    run.global_step += 1
    return logs["loss"], lr_now


def _validates_after(epoch: int, config: TrainConfig) -> bool:
    """Validation runs after every ``val_every``-th epoch and after the last one."""
    return (epoch + 1) % config.val_every == 0 or epoch + 1 == config.epochs


def _validate(
    model: nn.Module, val_fn: Callable[[nn.Module, int], dict[str, float]], epoch: int
) -> dict[str, float]:
    """``val_fn`` on every rank (the engine's encode_split is collective); rank 0's metrics."""
    model.eval()
    metrics = val_fn(model, epoch)
    return {k: float(v) for k, v in dict(ddp.broadcast_object(metrics)).items()}


def _log_epoch(run: _TrainRun, record: dict[str, Any], tracker: MetricsTracker | None) -> None:
    """The epoch's mean loss and validation metrics to the tracker (rank 0)."""
    if tracker is None or run.rank != 0:
        return
    logged = {"train/epoch_loss": record["loss"]}
    logged.update({f"val/{k}": v for k, v in record.get("val", {}).items()})
    tracker.log_metrics(logged, step=run.global_step)


def _select_epoch(run: _TrainRun, epoch: int, record: dict[str, Any]) -> None:
    """Model selection: ``"final"`` keeps the latest epoch; otherwise a better ``select_metric``
    makes ``epoch`` the selected one and writes its weights to ``best.pt``."""
    config = run.config
    if config.select_on == "final":
        run.best_epoch = epoch
        return
    value = record.get("val", {}).get(config.select_metric)
    if value is not None and _is_better(value, run.best_value):
        run.best_value, run.best_epoch = value, epoch
        if run.rank == 0:
            save_checkpoint(
                run.best_path, {"model": run.model.state_dict(), "epoch": epoch, "val": record["val"]}
            )
    elif value is None and "val" in record:
        raise KeyError(
            f"val_fn returned no {config.select_metric!r} (select_metric); keys: {sorted(record['val'])}"
        )


def _save_last_checkpoint(run: _TrainRun, epoch: int, meta: dict[str, Any] | None) -> None:
    """Everything a resumption needs after ``epoch`` to ``last.pt`` (rank 0)."""
    if run.rank != 0:
        return
    save_checkpoint(
        run.last_path,
        {
            "model": run.model.state_dict(),
            "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(),
            "epoch": epoch,
            "step": run.global_step,
            "rng": capture_rng_state(),
            "data_order": {"seed": run.config.seed, "next_epoch": epoch + 1, "world": run.world},
            "config": run.config.to_dict(),
            "history": run.history,
            "meta": meta,
        },
    )


def _selected_result(run: _TrainRun) -> TrainResult:
    """Restore the selected epoch's weights (from ``best.pt`` unless ``select_on="final"``) and
    report that epoch's metrics."""
    config = run.config
    selected_path = run.last_path
    if config.select_on != "final" and run.best_epoch >= 0:
        best_state = load_checkpoint(run.best_path, map_location="cpu")
        load_model_state(run.model, best_state["model"], run.best_path)
        selected_path = run.best_path
    selected = next((r for r in run.history if r["epoch"] == run.best_epoch), run.history[-1])
    return TrainResult(
        final_metrics={"train_loss": selected["loss"], **selected.get("val", {})},
        best_epoch=selected["epoch"],
        history=run.history,
        checkpoint_path=selected_path,
        selected_on=config.select_on,
        selected_on_test=config.select_on == "test",
    )
