"""Frozen-backbone mode: backbone features computed once per suite, then only the heads train.

With a frozen CLIP backbone, everything a retrieval model computes from its backbone is the same
for every row, seed and epoch of a suite:

* per video, the raw frame embeddings ``x`` ``[F, D]`` (``RetrievalModel.frame_embeddings``: CLIP
  image embeddings after ``ln_post`` and ``proj``; zeros in padded slots) and its frame mask, plus
  once the zero frame's embedding (``pad``, what ``fill_padding`` puts in a TDB model's padded
  slots);
* per caption, the projected hidden state of every token ``[L, D]`` (``text_hidden``), its token
  mask and its EOT position: everything ``text_head`` needs, TAB's text side included.

:func:`compute_split_features` computes them once per split (each video decoded once, each caption
encoded once, no gradients) and caches them on disk (:class:`~clip2video.engine.cache.EmbeddingCache`)
under a key of the backbone's weights digest and config, the data (video ids, the files' identity,
the captions) and the frame / text settings, so a second suite run, or any row, reads them.

:class:`FeatureModel` is a model for the UNCHANGED trainer (:func:`clip2video.engine.train.train`)
and for evaluation: it shares the retrieval model's modules under the same names (its state dict
is the model's), freezes ``clip.*``, and its ``encode_text(rows, mask)`` / ``encode_video(rows,
mask)`` take ROW INDICES into a :class:`FeatureBank` (every split's features, concatenated) and run
only the heads (``text_head``, ``pool_video``). :class:`FeaturePairDataset` yields the trainer's
batch format ``(text_row, text_mask, video_row, video_mask, video_index)``. :func:`encode_features`
returns the :class:`~clip2video.engine.evaluate.Embeddings` that ``evaluate_embeddings`` ranks.

What differs from fine-tuning (the paper's regime, ``clip.*`` at ``lr * coef_lr``): the backbone
does not move at all, and training uses the evaluation sampler's frames (the official training
loader's jitter of interior frame picks is not applied; on the ``synthetic`` protocol that jitter
is zero: its clips have at most 34 frames, so the jitter half-width never exceeds 2 picks).
A model whose every parameter is in the backbone (``meanp``) has nothing to train: :func:`train_heads`
then evaluates it as it is and says so (``trained=False`` with the reason).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from clip2video.engine.cache import EmbeddingCache, state_dict_hash, strings_digest, videos_digest
from clip2video.engine.evaluate import Embeddings, reverse_frames
from clip2video.engine.train import TrainConfig, TrainResult, train

FEATURES_FORMAT = 1

__all__ = [
    "FEATURES_FORMAT",
    "FeatureBank",
    "FeatureModel",
    "FeaturePairDataset",
    "HeadsResult",
    "SplitFeatures",
    "backbone_digest",
    "cached_split_features",
    "compute_features",
    "compute_split_features",
    "encode_features",
    "feature_cache_key",
    "freeze_backbone",
    "has_trainable_heads",
    "train_heads",
]


# ----------------------------------------------------------------------------- per split


@dataclass
class SplitFeatures:
    """Frozen-backbone features of one split (CPU tensors, float32).

    ``video[M, F, D]`` raw frame embeddings (zeros in padded slots), ``video_mask[M, F]``;
    ``text[N, L, D]`` projected hidden states (``L``: the split's longest caption, the rest of the
    context is never read: CLIP's text encoder is causal and heads read only real tokens),
    ``text_mask[N, L]``, ``eot[N]``; ``pad[D]`` the zero frame's embedding.
    """

    video: Tensor
    video_mask: Tensor
    text: Tensor
    text_mask: Tensor
    eot: Tensor
    pad: Tensor
    caption_video: np.ndarray
    video_ids: list[str]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.caption_video = np.asarray(self.caption_video, dtype=np.int64)
        n, m = self.text.shape[0], self.video.shape[0]
        if len(self.caption_video) != n or len(self.video_ids) != m or self.eot.shape != (n,):
            raise ValueError(
                f"SplitFeatures: {n} captions, {len(self.caption_video)} caption_video entries, "
                f"{self.eot.shape[0]} EOT positions; {m} videos, {len(self.video_ids)} ids"
            )

    @property
    def num_videos(self) -> int:
        return int(self.video.shape[0])

    @property
    def num_captions(self) -> int:
        return int(self.text.shape[0])

    def reversed(self) -> SplitFeatures:
        """The same split with every video's real frames reversed in time.

        A frame's embedding depends on that frame only, so this equals encoding the reversed
        frames (what the time-reversal diagnostic does) without a backbone call."""
        return dataclasses.replace(
            self, video=reverse_frames(self.video, self.video_mask), meta={**self.meta, "reverse": True}
        )

    def to_value(self) -> dict[str, Any]:
        """Plain tensors and values for the cache (``torch.load(weights_only=True)`` reads them)."""
        return {
            "video": self.video,
            "video_mask": self.video_mask,
            "text": self.text,
            "text_mask": self.text_mask,
            "eot": self.eot,
            "pad": self.pad,
            "caption_video": torch.as_tensor(self.caption_video),
            "video_ids": list(self.video_ids),
        }

    @classmethod
    def from_value(cls, value: Mapping[str, Any], meta: dict[str, Any] | None = None) -> SplitFeatures:
        return cls(
            video=value["video"],
            video_mask=value["video_mask"],
            text=value["text"],
            text_mask=value["text_mask"],
            eot=value["eot"],
            pad=value["pad"],
            caption_video=np.asarray(value["caption_video"]),
            video_ids=list(value["video_ids"]),
            meta=dict(meta or {}),
        )


def backbone_digest(model: nn.Module) -> dict[str, Any]:
    """What identifies a backbone's features: its architecture (``model.config`` minus the heads'
    options) and the sha256 of its CLIP state dict."""
    clip = model.clip
    arch = {
        "class": f"{type(clip).__module__}.{type(clip).__qualname__}",
        "clip": _plain(getattr(model, "config", {}).get("clip")),
        "quick_gelu": _plain(getattr(model, "config", {}).get("quick_gelu")),
    }
    return {**arch, "weights": state_dict_hash(clip.state_dict())}


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in sorted(value.items())}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value if isinstance(value, str | int | float | bool | type(None)) else repr(value)


def _settings(obj: Any) -> dict[str, Any]:
    plain = (int, float, str, bool, tuple, list, type(None))
    items = {k: v for k, v in vars(obj).items() if not k.startswith("_") and isinstance(v, plain)}
    return {"class": type(obj).__qualname__, **items}


def feature_cache_key(
    model: nn.Module, split: Any, split_name: str, paths: Sequence[Path], sampler: Any, tokenizer: Any
) -> dict[str, Any]:
    """The cache key of a split's features: format, backbone digest, data fingerprint (video ids,
    the files' path/size/mtime, the captions, caption -> video map) and frame / text settings."""
    return {
        "kind": "frozen-features",
        "format": FEATURES_FORMAT,
        "backbone": backbone_digest(model),
        "split": split_name,
        "videos": strings_digest(list(split.video_ids)),
        "files": videos_digest(paths),
        "captions": strings_digest(list(split.captions)),
        "caption_video": strings_digest(str(int(v)) for v in np.asarray(split.caption_video)),
        "frames": _settings(sampler),
        "text": _settings(tokenizer),
    }


@torch.inference_mode()
def _compute(
    model: nn.Module,
    split: Any,
    paths: Sequence[Path],
    sampler: Any,
    tokenizer: Any,
    *,
    batch_size: int,
    text_batch_size: int,
    num_workers: int,
    progress: bool | str,
) -> SplitFeatures:
    from tqdm.auto import tqdm

    from clip2video.data.datasets import VideoDataset
    from clip2video.models.retrieval import eot_index

    model.eval()
    dataset = VideoDataset(list(paths), list(split.video_ids), sampler)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, shuffle=False)
    m = len(dataset)
    video: Tensor | None = None
    video_mask: Tensor | None = None
    label = f"{progress}: " if isinstance(progress, str) and progress else ""
    for index, frames, mask in tqdm(
        loader, desc=f"{label}backbone features", unit="batch", disable=not progress
    ):
        x = model.frame_embeddings(frames, mask).float()
        if video is None:
            video = torch.zeros(m, *x.shape[1:])
            video_mask = torch.zeros(m, mask.shape[1], dtype=torch.long)
        video[index] = x
        video_mask[index] = mask.long()
    if video is None:
        raise ValueError(f"split {split.split or '?'} has no videos to compute features of")
    ids, mask = tokenizer(list(split.captions))
    hidden = [
        model.text_hidden(ids[s : s + text_batch_size]).float()
        for s in range(0, ids.shape[0], text_batch_size)
    ]
    text = torch.cat(hidden) if hidden else torch.zeros(0, ids.shape[1], model.embed_dim)
    eot = eot_index(ids)
    length = int(max(int(mask.sum(1).max()) if len(mask) else 1, int(eot.max()) + 1 if len(eot) else 1))
    return SplitFeatures(
        video=video,
        video_mask=video_mask,
        text=text[:, :length].contiguous(),
        text_mask=mask[:, :length].contiguous(),
        eot=eot,
        pad=model.pad_embedding(torch.device("cpu")).float(),
        caption_video=np.asarray(split.caption_video),
        video_ids=list(split.video_ids),
    )


def compute_split_features(
    model: nn.Module,
    split: Any,
    videos_dir: str | Path,
    sampler: Any,
    tokenizer: Any,
    *,
    split_name: str = "test",
    cache: EmbeddingCache | None = None,
    batch_size: int = 64,
    text_batch_size: int = 256,
    num_workers: int = 0,
    progress: bool | str = False,
    key_extra: Mapping[str, Any] | None = None,
) -> SplitFeatures:
    """A split's frozen-backbone features, from ``cache`` when it holds them (else computed once
    and stored). ``model`` is any retrieval model on the backbone (only its ``clip`` is used:
    ``frame_embeddings``, ``text_hidden``, ``pad_embedding``); ``split`` a ``SplitData``.
    ``key_extra``: more parts of the cache key (e.g. the torch thread count and kernel set the
    features were computed with: they change the floats). ``meta`` says ``cache`` (``hit`` /
    ``miss`` / ``off``), the seconds spent and, with a cache, the entry's ``key``."""
    from clip2video.data.videos import find_videos

    start = time.perf_counter()
    paths = find_videos(videos_dir, split.video_ids)
    key = None
    if cache is not None:
        key = feature_cache_key(model, split, split_name, paths, sampler, tokenizer)
        if key_extra:
            key["run"] = dict(key_extra)
        entry = cache.get(key)
        if entry is not None:
            cache.hits += 1
            return SplitFeatures.from_value(
                entry,
                {"split": split_name, "cache": "hit", "seconds": time.perf_counter() - start, "key": key},
            )
        cache.misses += 1
    features = _compute(
        model,
        split,
        paths,
        sampler,
        tokenizer,
        batch_size=batch_size,
        text_batch_size=text_batch_size,
        num_workers=num_workers,
        progress=progress,
    )
    if cache is not None:
        cache.put(key, features.to_value())
    features.meta = {
        "split": split_name,
        "cache": "miss" if cache is not None else "off",
        "seconds": time.perf_counter() - start,
    }
    if key is not None:
        features.meta["key"] = key
    return features


def cached_split_features(
    cache: EmbeddingCache, key: Mapping[str, Any], split_name: str
) -> SplitFeatures | None:
    """The features stored under ``key`` (a ``meta["key"]`` of :func:`compute_split_features`), or
    None when the cache does not hold them: how a row reads the features its suite computed."""
    entry = cache.get(key)
    if entry is None:
        return None
    return SplitFeatures.from_value(entry, {"split": split_name, "cache": "hit", "key": dict(key)})


def compute_features(
    model: nn.Module,
    splits: Mapping[str, Any],
    videos_dir: str | Path,
    sampler: Any,
    tokenizer: Any,
    **kwargs: Any,
) -> dict[str, SplitFeatures]:
    """:func:`compute_split_features` of every split (``{name: SplitData}``), e.g. train, val and
    test once per suite; keyword arguments (``cache``, batch sizes, ``progress``) as there."""
    return {
        name: compute_split_features(model, split, videos_dir, sampler, tokenizer, split_name=name, **kwargs)
        for name, split in splits.items()
    }


# ----------------------------------------------------------------------------- the bank


class FeatureBank:
    """Every split's features concatenated (text padded to the longest split's ``L``); a split's
    rows start at ``text_offset[split]`` / ``video_offset[split]``."""

    def __init__(self, splits: Mapping[str, SplitFeatures]) -> None:
        if not splits:
            raise ValueError("FeatureBank needs at least one split")
        first = next(iter(splits.values()))
        length = max(f.text.shape[1] for f in splits.values())
        texts, tmasks, eots, videos, vmasks = [], [], [], [], []
        self.text_offset: dict[str, int] = {}
        self.video_offset: dict[str, int] = {}
        self.splits = dict(splits)
        n = m = 0
        for name, feats in splits.items():
            if not torch.equal(feats.pad, first.pad) or feats.video.shape[1:] != first.video.shape[1:]:
                raise ValueError(f"split {name!r}: features of another backbone or frame layout")
            self.text_offset[name], self.video_offset[name] = n, m
            grow = length - feats.text.shape[1]
            texts.append(torch.nn.functional.pad(feats.text, (0, 0, 0, grow)))
            tmasks.append(torch.nn.functional.pad(feats.text_mask, (0, grow)))
            eots.append(feats.eot)
            videos.append(feats.video)
            vmasks.append(feats.video_mask)
            n += feats.num_captions
            m += feats.num_videos
        self.text = torch.cat(texts)
        self.text_mask = torch.cat(tmasks)
        self.eot = torch.cat(eots)
        self.video = torch.cat(videos)
        self.video_mask = torch.cat(vmasks)
        self.pad = first.pad

    def text_rows(self, split: str) -> Tensor:
        """The bank rows of ``split``'s captions, in order."""
        start = self.text_offset[split]
        return torch.arange(start, start + self.splits[split].num_captions)

    def video_rows(self, split: str) -> Tensor:
        """The bank rows of ``split``'s videos, in order."""
        start = self.video_offset[split]
        return torch.arange(start, start + self.splits[split].num_videos)


# ----------------------------------------------------------------------------- the model


def freeze_backbone(model: nn.Module) -> nn.Module:
    """Stop gradients into ``clip.*`` (the backbone); returns ``model``."""
    for param in model.clip.parameters():
        param.requires_grad_(False)
    return model


def has_trainable_heads(model: nn.Module) -> bool:
    """Whether any parameter outside ``clip.*`` can train (meanp: none)."""
    return any(p.requires_grad for n, p in model.named_parameters() if not n.startswith("clip."))


class FeatureModel(nn.Module):
    """A retrieval model's heads over a :class:`FeatureBank`, for the unchanged trainer.

    The model's modules are registered here under their own names (the state dict, the optimizer's
    ``clip.*`` grouping and checkpoints are the model's), ``clip.*`` is frozen, and the bank's
    tensors are non-persistent buffers (they move with ``.to`` and stay out of the state dict).
    ``encode_text(rows, mask)`` and ``encode_video(rows, mask)`` take bank row indices (``mask`` is
    the rows' mask, as the trainer passes it); ``similarity`` and ``similarity_parts`` are the
    model's. :attr:`model` is the wrapped retrieval model (the same parameters).
    """

    def __init__(self, model: nn.Module, bank: FeatureBank) -> None:
        super().__init__()
        object.__setattr__(self, "model", model)  # not a child: the children below are its own
        own = dict(model.named_parameters(recurse=False))
        if own:
            raise ValueError(f"{type(model).__name__} has parameters outside its modules: {sorted(own)}")
        for name, child in model.named_children():
            self.add_module(name, child)
        freeze_backbone(model)
        self.config = getattr(model, "config", {})
        self.bank = bank
        self.register_buffer("text_feats", bank.text, persistent=False)
        self.register_buffer("text_masks", bank.text_mask, persistent=False)
        self.register_buffer("text_eot", bank.eot, persistent=False)
        self.register_buffer("video_feats", bank.video, persistent=False)
        self.register_buffer("video_masks", bank.video_mask, persistent=False)
        self.register_buffer("pad", bank.pad, persistent=False)

    def encode_text(self, rows: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        rows = rows.to(self.text_eot.device).long()
        mask = self.text_masks[rows] if attention_mask is None else attention_mask.to(self.text_masks.device)
        return self.model.text_head(self.text_feats[rows], self.text_eot[rows], mask)

    def encode_video(self, rows: Tensor, video_mask: Tensor | None = None) -> Tensor:
        rows = rows.to(self.video_masks.device).long()
        mask = self.video_masks[rows] if video_mask is None else video_mask.to(self.video_masks.device)
        return self.model.pool_video(self.video_feats[rows], mask, pad=self.pad)

    def similarity_parts(self, text: Tensor, video: Tensor) -> list[tuple[float, Tensor]]:
        return self.model.similarity_parts(text, video)

    def similarity(self, text: Tensor, video: Tensor) -> Tensor:
        return self.model.similarity(text, video)


class FeaturePairDataset(Dataset):
    """Training pairs of a split as bank rows: item ``i`` -> ``(text_row, text_mask, video_row,
    video_mask, video_index)``, the batch layout ``train`` passes to ``encode_text`` /
    ``encode_video`` (caption ``i`` with its video, as ``PairDataset`` pairs them)."""

    def __init__(self, bank: FeatureBank, split: str) -> None:
        feats = bank.splits[split]
        self.text_rows = bank.text_rows(split)
        self.video_index = torch.as_tensor(feats.caption_video, dtype=torch.long)
        self.video_rows = bank.video_offset[split] + self.video_index
        self.bank = bank

    def __len__(self) -> int:
        return int(self.text_rows.shape[0])

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor, Tensor, Tensor, int]:
        t, v = self.text_rows[index], self.video_rows[index]
        return t, self.bank.text_mask[t], v, self.bank.video_mask[v], int(self.video_index[index])


def encode_features(
    feature_model: FeatureModel, split: str, *, reverse: bool = False, batch_size: int = 1024
) -> Embeddings:
    """A split's caption and video embeddings from the bank (heads only): what ``encode_split``
    returns for the full model. ``reverse`` reverses every video's real frames in time."""
    bank = feature_model.bank
    feats = bank.splits[split]
    was_training = feature_model.training
    feature_model.eval()
    with torch.inference_mode():
        text_rows, video_rows = bank.text_rows(split), bank.video_rows(split)
        text = torch.cat(
            [
                feature_model.encode_text(text_rows[s : s + batch_size])
                for s in range(0, len(text_rows), batch_size)
            ]
        )
        videos = []
        for s in range(0, len(video_rows), batch_size):
            rows = video_rows[s : s + batch_size]
            if reverse:
                mask = bank.video_mask[rows]
                x = reverse_frames(bank.video[rows], mask).to(feature_model.pad.device)
                videos.append(feature_model.model.pool_video(x, mask.to(x.device), pad=feature_model.pad))
            else:
                videos.append(feature_model.encode_video(rows))
        video = torch.cat(videos)
    feature_model.train(was_training)
    meta = {
        "split": split,
        "reverse": bool(reverse),
        "features": "frozen",
        **{k: v for k, v in feats.meta.items() if k in ("cache",)},
    }
    return Embeddings(
        text=text.float(),
        video=video.float(),
        caption_video=feats.caption_video,
        video_ids=list(feats.video_ids),
        meta=meta,
    )


# ----------------------------------------------------------------------------- training


@dataclass
class HeadsResult:
    """What :func:`train_heads` did: ``trained`` False (with ``reason``) when there was nothing to
    train; ``result`` is the trainer's result otherwise."""

    trained: bool
    result: TrainResult | None
    reason: str = ""
    seconds: float = 0.0


def train_heads(
    feature_model: FeatureModel,
    config: TrainConfig,
    *,
    out_dir: str | Path,
    split: str = "train",
    val_fn: Callable[[nn.Module, int], dict[str, float]] | None = None,
    resume: bool = False,
    meta: dict[str, Any] | None = None,
) -> HeadsResult:
    """Train the heads of ``feature_model`` on ``split``'s pairs with the unchanged trainer.

    A model with no trainable parameter outside the frozen backbone (``meanp``) is not trained:
    the result says ``trained=False`` and why, and the model is evaluated as it is."""
    start = time.perf_counter()
    if not has_trainable_heads(feature_model.model):
        name = getattr(feature_model.model, "config", {}).get("name", type(feature_model.model).__name__)
        return HeadsResult(
            trained=False,
            result=None,
            reason=(
                f"{name} has no trainable parameters with a frozen backbone: evaluated as is "
                "(the pretrained backbone's zero-shot retrieval), with no training"
            ),
            seconds=time.perf_counter() - start,
        )
    result = train(
        feature_model,
        FeaturePairDataset(feature_model.bank, split),
        config,
        out_dir=out_dir,
        val_fn=val_fn,
        resume=resume,
        meta=meta,
    )
    return HeadsResult(trained=True, result=result, seconds=time.perf_counter() - start)
