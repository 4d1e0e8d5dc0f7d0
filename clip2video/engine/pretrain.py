"""Pretrain a tiny image-text CLIP for the synthetic world: the paper's "pretrained backbone", offline.

CLIP2Video fine-tunes a CLIP that was pretrained contrastively on images and their captions. The
offline ablation has no such CLIP, so this module makes one for the ``synthetic`` protocol's world:

* **Data**: clips drawn by the synthetic generator (:func:`clip2video.data.synthetic.draw_clip`)
  from ``default_rng([data_seed, 0, i])``, the same stream the generator uses for clip ``i``, with a
  ``data_seed`` (default 1000) that no suite's ``synthetic.seed`` uses, so the clips are disjoint
  from the ablation's splits. Each clip keeps the 12 frames the ablation's frame sampler picks
  (``FrameSampler.pick``) and every caption template of its family. Nothing is written to disk.
* **Objective**: CLIP's symmetric contrastive loss between SINGLE frames and captions: each epoch
  every clip contributes one (frame, caption) pair drawn from ``(train_seed, epoch, clip)``; frame
  order is never seen. The frame is the clip's last picked frame (its end state) for a share
  ``last_frame_share`` of the pairs, else a uniformly drawn one. Why: a clip and its time reversal
  show the same set of frames, so uniformly drawn frames carry no information about the direction
  words ("moves left" / "right", "grows" / "shrinks", "before" / "after"); the text tower then
  cannot tell them apart (measured: cosine 0.996 between "a red circle moves left" and "... right"),
  and no temporal head can learn order against it. A real CLIP knows such words from still images
  ("on the left", "large"); the end-state pairs give the tiny CLIP that static prior. At share 1
  the prior is so strong that order becomes trivial and the mean-pooled baseline collapses; the
  default 0.5 keeps both meaningful (measured with benchmarks/ablation_design.py). The model is
  the ``meanp`` head over a one-frame "video" (the normalised frame embedding), so the loss, the
  optimizer (BertAdam, warmup + cosine, every parameter at ``lr``) and the loop are the project's
  own :func:`clip2video.engine.train.train`.
* **Determinism**: a pure function of the :class:`PretrainRecipe` on one kernel set; torch runs
  with ``recipe.threads`` intra-op threads (1). Other kernel sets (``ATEN_CPU_CAPABILITY``) round
  differently, which is why the result is shipped as package data
  (:mod:`clip2video.models.shipped`) rather than rebuilt on each machine.

``clip2video pretrain --out DIR`` runs it and writes ``DIR/<name>.npz`` and ``DIR/<name>.json``.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import shlex
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from clip2video.data.frames import FrameSampler
from clip2video.data.synthetic import EVENTS, TEMPLATES, draw_clip
from clip2video.data.text import CaptionTokenizer
from clip2video.engine.train import TrainConfig, TrainResult, train
from clip2video.fileio import atomic_write_text
from clip2video.fingerprint import cpu_model, file_sha256
from clip2video.models.shipped import TINY_SYNTHETIC_CONFIG, write_npz

RECIPE_FORMAT = 1
_CLIP_STREAM = 0  # the generator's per-clip stream (clip2video.data.synthetic)


@dataclass(frozen=True)
class PretrainRecipe:
    """Everything that decides the pretrained weights (with the torch build and kernel set)."""

    name: str = "tiny-synthetic"
    data_seed: int = 1000  # synthetic.seed of the pretraining clips (no suite uses it)
    num_clips: int = 8000
    size: tuple[int, int] = (32, 32)  # frame height, width (the synthetic protocol's)
    max_frames: int = 12  # frames kept per clip: the ablation sampler's picks
    max_words: int = 32
    clip: dict[str, Any] = field(default_factory=lambda: json.loads(json.dumps(TINY_SYNTHETIC_CONFIG)))
    quick_gelu: bool = True
    # the share of pairs whose frame is the clip's last picked frame (its end state); the others
    # take a uniformly drawn picked frame (see the module docstring)
    last_frame_share: float = 0.5
    train_seed: int = 0
    epochs: int = 60
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.2
    warmup: float = 0.1
    threads: int = 1

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["size"] = list(self.size)
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PretrainRecipe:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"unknown pretraining setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        values = dict(values)
        if not 0.0 <= float(values.get("last_frame_share", 0.0)) <= 1.0:
            raise ValueError(f"last_frame_share must be in [0, 1], got {values['last_frame_share']!r}")
        if "size" in values:
            values["size"] = tuple(values["size"])
        return cls(**values)


# ----------------------------------------------------------------------------------- data


@dataclass
class PretrainData:
    """The pretraining clips: picked frames (uint8 ``[N, F, H, W, 3]``), how many are real
    (``[N]``), and every caption of each clip, tokenized (``ids``/``mask`` ``[N, C, L]``)."""

    frames: np.ndarray
    num_frames: np.ndarray
    ids: torch.Tensor
    mask: torch.Tensor
    captions: list[list[str]]


def make_pretrain_data(recipe: PretrainRecipe) -> PretrainData:
    """Draw ``recipe.num_clips`` clips from the synthetic generator (seeded, in memory)."""
    sampler = FrameSampler(
        extraction_fps=5.0, stride=1, max_frames=recipe.max_frames, image_size=recipe.size[0]
    )
    tokenizer = CaptionTokenizer(max_words=recipe.max_words)
    n, f = recipe.num_clips, recipe.max_frames
    frames = np.zeros((n, f, *recipe.size, 3), dtype=np.uint8)
    counts = np.zeros(n, dtype=np.int64)
    captions: list[list[str]] = []
    for i in range(n):
        clip = draw_clip(np.random.default_rng([recipe.data_seed, _CLIP_STREAM, i]), recipe.size)
        picks = sampler.pick(len(clip.frames))
        frames[i, : len(picks)] = clip.frames[picks]
        counts[i] = len(picks)
        family = EVENTS[clip.event][0]
        captions.append(clip.captions(list(range(len(TEMPLATES[family])))))
    per_clip = max(len(c) for c in captions)
    ids = torch.zeros(n, per_clip, recipe.max_words, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, texts in enumerate(captions):
        t_ids, t_mask = tokenizer(texts)
        ids[i, : len(texts)], mask[i, : len(texts)] = t_ids, t_mask
    # CLIP's text encoder is causal: the padding after the longest caption changes nothing, so it
    # is cut (about 3x less text compute on these short captions)
    length = int(mask.sum(-1).max())
    return PretrainData(
        frames, counts, ids[..., :length].contiguous(), mask[..., :length].contiguous(), captions
    )


class SingleFrameDataset(Dataset):
    """Item ``i`` -> ``(ids, mask, frame [1, 3, S, S], frame mask [1], i)``: one frame and one
    caption of clip ``i``, both drawn from ``default_rng((seed, epoch, i))`` (call ``set_epoch``)."""

    def __init__(self, data: PretrainData, image_size: int, seed: int, last_frame_share: float = 0.0) -> None:
        self.data, self.seed, self.epoch = data, int(seed), 0
        self.last_frame_share = float(last_frame_share)
        self.sampler = FrameSampler(extraction_fps=5.0, stride=1, max_frames=1, image_size=image_size)
        self.num_captions = (data.mask[:, :, 0] > 0).sum(1).numpy()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.data.num_frames)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int]:
        rng = np.random.default_rng((self.seed, self.epoch, int(index)))
        count = int(self.data.num_frames[index])
        frame = count - 1 if rng.random() < self.last_frame_share else int(rng.integers(count))
        caption = int(rng.integers(self.num_captions[index]))
        pixels = self.sampler.preprocess([self.data.frames[index, frame]])
        ones = torch.ones(1, dtype=torch.long)
        return self.data.ids[index, caption], self.data.mask[index, caption], pixels, ones, index


# ----------------------------------------------------------------------------------- training


@dataclass
class PretrainResult:
    """The pretrained open_clip ``CLIP`` (float32, CPU), the training record and timings."""

    clip: torch.nn.Module
    recipe: PretrainRecipe
    result: TrainResult
    seconds: dict[str, float]

    @property
    def losses(self) -> list[float]:
        """Mean training loss of each epoch."""
        return [float(h["loss"]) for h in self.result.history]


def pretrain(
    recipe: PretrainRecipe, *, progress: bool | str = False, work_dir: str | Path | None = None
) -> PretrainResult:
    """Pretrain the backbone of ``recipe`` (see the module docstring); deterministic per kernel set.

    ``work_dir`` receives the trainer's checkpoints (a temporary folder by default)."""
    from clip2video.models.registry import create_model

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(max(1, recipe.threads))
    try:
        start = time.perf_counter()
        data = make_pretrain_data(recipe)
        made = time.perf_counter()
        torch.manual_seed(recipe.train_seed)
        model = create_model("meanp", clip=dict(recipe.clip), clip_weights=None, quick_gelu=recipe.quick_gelu)
        config = TrainConfig(
            epochs=recipe.epochs,
            batch_size=recipe.batch_size,
            lr=recipe.lr,
            coef_lr=1.0,
            weight_decay=recipe.weight_decay,
            warmup=recipe.warmup,
            seed=recipe.train_seed,
            device="cpu",
            num_workers=0,
            progress=progress,
        )
        dataset = SingleFrameDataset(data, recipe.size[0], recipe.train_seed, recipe.last_frame_share)
        with tempfile.TemporaryDirectory(prefix="clip2video-pretrain-") as tmp:
            out_dir = Path(work_dir) if work_dir is not None else Path(tmp)
            result = train(model, dataset, config, out_dir=out_dir)
        done = time.perf_counter()
    finally:
        torch.set_num_threads(previous_threads)
    clip = model.clip.eval()
    seconds = {"data": made - start, "train": done - made, "total": done - start}
    return PretrainResult(clip, recipe, result, seconds)


def platform_info() -> dict[str, Any]:
    """What decides float results besides the recipe: torch build, kernel set, CPU."""
    return {
        "torch": torch.__version__,
        "numpy": np.__version__,
        "kernel_set": torch.backends.cpu.get_cpu_capability(),
        "machine": platform.machine(),
        "processor": cpu_model(),
        "python": platform.python_version(),
    }


def save_pretrained(
    result: PretrainResult, out_dir: str | Path, *, command: Sequence[str] | None = None
) -> tuple[Path, Path]:
    """Write ``<name>.npz`` (the CLIP state dict, deterministic bytes) and ``<name>.json`` (the
    recipe: command, settings, platform, losses, sha256 and size). Returns both paths."""
    out_dir = Path(out_dir)
    name = result.recipe.name
    weights = write_npz(out_dir / f"{name}.npz", result.clip.state_dict())
    recipe = {
        "format": RECIPE_FORMAT,
        "name": name,
        "file": weights.name,
        "sha256": file_sha256(weights),
        "size_bytes": weights.stat().st_size,
        "command": shlex.join(command) if command is not None else None,
        "recipe": result.recipe.to_dict(),
        "platform": platform_info(),
        "epoch_losses": [round(v, 6) for v in result.losses],
        "seconds": {k: round(v, 2) for k, v in result.seconds.items()},
        "parameters": int(sum(p.numel() for p in result.clip.parameters())),
    }
    recipe_path = atomic_write_text(out_dir / f"{name}.json", json.dumps(recipe, indent=1) + "\n")
    return weights, recipe_path


def default_command(argv: Sequence[str] | None = None) -> list[str]:
    """The command line that ran (for the recipe)."""
    return ["clip2video", *(sys.argv[1:] if argv is None else argv)]
