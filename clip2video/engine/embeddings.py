"""A split to embeddings: its captions and videos encoded once each, through the embedding cache.

:func:`encode_split` finds the split's videos, encodes them (through an
:class:`~clip2video.engine.cache.EmbeddingCache` when given one, keyed by the model, the protocol,
the split, the tokenizer / sampler settings and the identity of the captions and video files) and
returns :class:`Embeddings`; :func:`encode_split_pair` encodes the plain and the time-reversed pass
from one decode of each video. Under ``torch.distributed`` every rank encodes its shard.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from clip2video.engine import distributed as _dist
from clip2video.engine.cache import EmbeddingCache, model_fingerprint, strings_digest, videos_digest
from clip2video.engine.encode import (
    encode_texts,
    encode_texts_distributed,
    encode_videos,
    encode_videos_distributed,
    model_device,
)

__all__ = ["Embeddings", "EncodeOptions", "encode_split", "encode_split_pair"]


@dataclass
class Embeddings:
    """Encoded test set: ``text[N, E]``, ``video[M, E]``; ``caption_video[i]`` indexes ``video``."""

    text: Tensor
    video: Tensor
    caption_video: np.ndarray
    video_ids: list[str]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.caption_video = np.asarray(self.caption_video, dtype=np.int64)
        if self.text.shape[0] != len(self.caption_video):
            raise ValueError(
                f"Embeddings: {self.text.shape[0]} caption embeddings but {len(self.caption_video)} "
                "caption_video entries"
            )
        if self.video.shape[0] != len(self.video_ids):
            raise ValueError(
                f"Embeddings: {self.video.shape[0]} video embeddings but {len(self.video_ids)} video ids"
            )


def _settings(obj: Any) -> dict[str, Any]:
    """Public plain-valued attributes of a sampler/tokenizer (its settings), with its class."""
    if obj is None:
        return {}
    plain = (int, float, str, bool, tuple, list, type(None))
    items = {
        k: v
        for k, v in getattr(obj, "__dict__", {}).items()
        if not k.startswith("_") and isinstance(v, plain)
    }
    return {"class": type(obj).__qualname__, **items}


def _protocol_name(protocol: Any) -> str:
    return protocol if isinstance(protocol, str) else str(getattr(protocol, "name", protocol))


def _default_sampler(protocol: Any) -> Any:
    """The frame sampler a suite on ``protocol`` gets when it sets no ``[frames]`` key."""
    from clip2video.data.frames import FrameSampler

    return FrameSampler.for_protocol(protocol)


def _default_tokenizer(protocol: Any) -> Any:
    """The tokenizer a suite on ``protocol`` gets when it sets no ``[text] max_words``."""
    from clip2video.data.text import CaptionTokenizer

    return CaptionTokenizer.for_protocol(protocol)


def _video_dataset(paths: Sequence[Path], video_ids: Sequence[str], sampler: Any) -> Dataset:
    from clip2video.data.datasets import VideoDataset

    return VideoDataset(list(paths), list(video_ids), sampler)


def _cached_many(
    cache: EmbeddingCache | None,
    parts: Sequence[Mapping[str, Any]],
    fn: Callable[[list[int]], list[dict[str, Any]]],
    collective: bool,
) -> list[tuple[dict[str, Any], str]]:
    """Each entry of ``parts`` through the cache; ``fn(missing)`` computes the missing ones at once.

    With ``collective`` all ranks agree on every hit or miss and rank 0 writes. Returns
    ``(value, state)`` per entry, state ``"off"``, ``"hit"`` or ``"miss"``.
    """
    if cache is None:
        return [(value, "off") for value in fn(list(range(len(parts))))]
    entries = [cache.get(p) for p in parts]
    hits = [_dist.all_agree(e is not None) if collective else e is not None for e in entries]
    missing = [k for k, hit in enumerate(hits) if not hit]
    cache.hits += len(parts) - len(missing)
    cache.misses += len(missing)
    computed = dict(zip(missing, fn(missing), strict=True)) if missing else {}
    if not collective or _dist.rank_and_world()[0] == 0:
        for k, value in computed.items():
            cache.put(parts[k], value)
    return [(computed[k], "miss") if k in computed else (entries[k], "hit") for k in range(len(parts))]


def _cached(
    cache: EmbeddingCache | None,
    parts: Mapping[str, Any],
    fn: Callable[[], dict[str, Any]],
    collective: bool,
) -> tuple[dict[str, Any], str]:
    """``fn()`` through the cache; with ``collective`` all ranks agree on hit/miss, rank 0 writes."""
    return _cached_many(cache, [parts], lambda _missing: [fn()], collective)[0]


@dataclass(frozen=True)
class EncodeOptions:
    """How a split is encoded: the keyword arguments :func:`encode_split`, :func:`encode_split_pair`,
    :func:`evaluate` and :func:`time_reversal_diagnostic` pass through unchanged.

    ``sampler`` / ``tokenizer`` default to the protocol's settings; ``video_dataset`` overrides the
    dataset built from the split's files; ``distributed=None`` encodes collectively whenever a
    ``torch.distributed`` group exists (``False``: never).
    """

    sampler: Any = None
    tokenizer: Any = None
    cache: EmbeddingCache | None = None
    split_name: str = "test"
    batch_size: int = 16
    text_batch_size: int = 256
    num_workers: int = 0
    device: torch.device | str | None = None
    amp: bool = False
    video_dataset: Dataset | None = None
    distributed: bool | None = None
    progress: bool = True

    @property
    def collective(self) -> bool:
        """Whether every rank takes part (each encodes its shard, all receive everything)."""
        return _dist.is_distributed() if self.distributed is None else bool(self.distributed)


def _encode_split_passes(
    model: nn.Module,
    split: Any,
    protocol: Any,
    videos_dir: str | os.PathLike[str],
    reverses: Sequence[bool],
    options: EncodeOptions,
) -> list[Embeddings]:
    """Captions once, and one video pass per entry of ``reverses`` from a single decode of each
    video; each through ``options.cache`` when there is one."""
    collective = options.collective
    if collective and not _dist.is_distributed():
        raise ValueError("encode_split(distributed=True) needs an initialised torch.distributed group")
    options = _with_protocol_defaults(options, protocol)
    video_ids = list(split.video_ids)
    paths = _find_videos(videos_dir, video_ids) if options.video_dataset is None else []
    text_key, video_keys = _cache_keys(model, protocol, options, split, paths, reverses)

    def caption_pass() -> dict[str, Any]:
        return _encode_captions(model, options, list(split.captions), collective)

    def missing_video_passes(missing: list[int]) -> list[dict[str, Any]]:
        return _encode_video_passes(
            model, options, paths, video_ids, [reverses[k] for k in missing], collective
        )

    text = _cached(options.cache, text_key, caption_pass, collective)
    videos = _cached_many(options.cache, video_keys, missing_video_passes, collective)
    return _split_embeddings(model, protocol, options, split, reverses, text, videos)


def _with_protocol_defaults(options: EncodeOptions, protocol: Any) -> EncodeOptions:
    """``options`` with the protocol's frame sampler and tokenizer where none is given."""
    sampler = options.sampler if options.sampler is not None else _default_sampler(protocol)
    tokenizer = options.tokenizer if options.tokenizer is not None else _default_tokenizer(protocol)
    return dataclasses.replace(options, sampler=sampler, tokenizer=tokenizer)


def _cache_keys(
    model: nn.Module,
    protocol: Any,
    options: EncodeOptions,
    split: Any,
    paths: Sequence[Path],
    reverses: Sequence[bool],
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The cache key parts of the caption pass and of each video pass: model, protocol, split,
    tokenizer / sampler settings, and the identity of the captions / videos (and their files)."""
    fingerprint = model_fingerprint(model) if options.cache is not None else None
    common = {"model": fingerprint, "protocol": _protocol_name(protocol), "split": options.split_name}
    text_key = {
        **common,
        "kind": "text",
        "text": _settings(options.tokenizer),
        "captions": strings_digest(list(split.captions)),
    }
    video_common = {
        **common,
        "kind": "video",
        "frames": _settings(options.sampler),
        "videos": strings_digest(list(split.video_ids)),
        "files": videos_digest(paths) if paths else None,
    }
    return text_key, [{**video_common, "reverse": bool(rev)} for rev in reverses]


def _encode_captions(
    model: nn.Module, options: EncodeOptions, captions: list[str], collective: bool
) -> dict[str, Any]:
    """The caption pass (this rank's shard when ``collective``, gathered)."""
    ids, mask = options.tokenizer(captions)
    encode = encode_texts_distributed if collective else encode_texts
    emb = encode(
        model,
        ids,
        mask,
        batch_size=options.text_batch_size,
        device=options.device,
        amp=options.amp,
        progress=options.progress,
    )
    return {"text": emb}


def _encode_video_passes(
    model: nn.Module,
    options: EncodeOptions,
    paths: Sequence[Path],
    video_ids: Sequence[str],
    reverses: Sequence[bool],
    collective: bool,
) -> list[dict[str, Any]]:
    """One video pass per entry of ``reverses``, all from one decode of each video."""
    dataset = options.video_dataset
    if dataset is None:
        dataset = _video_dataset(paths, video_ids, options.sampler)
    encode = encode_videos_distributed if collective else encode_videos
    embs = encode(
        model,
        dataset,
        passes=[bool(rev) for rev in reverses],
        batch_size=options.batch_size,
        num_workers=options.num_workers,
        device=options.device,
        amp=options.amp,
        progress=options.progress,
    )
    return [{"video": emb} for emb in embs]


def _split_embeddings(
    model: nn.Module,
    protocol: Any,
    options: EncodeOptions,
    split: Any,
    reverses: Sequence[bool],
    text: tuple[dict[str, Any], str],
    videos: Sequence[tuple[dict[str, Any], str]],
) -> list[Embeddings]:
    """One :class:`Embeddings` per pass on the encoding device, with where each part came from."""
    dev = torch.device(options.device) if options.device is not None else model_device(model)
    text_emb = text[0]["text"].to(dev)
    video_ids = list(split.video_ids)
    out = []
    for rev, (video, video_state) in zip(reverses, videos, strict=True):
        meta = {
            "protocol": _protocol_name(protocol),
            "split": options.split_name,
            "reverse": bool(rev),
            "text_cache": text[1],
            "video_cache": video_state,
            "dropped": dict(getattr(split, "dropped", {}) or {}),
        }
        out.append(
            Embeddings(
                text=text_emb,
                video=video["video"].to(dev),
                caption_video=np.asarray(split.caption_video, dtype=np.int64),
                video_ids=video_ids,
                meta=meta,
            )
        )
    return out


def encode_split(
    model: nn.Module,
    split: Any,
    protocol: Any,
    videos_dir: str | os.PathLike[str],
    *,
    reverse: bool = False,
    **kwargs: Any,
) -> Embeddings:
    """Encode a split's captions and videos once each (or read them from ``cache``).

    ``split`` is a ``SplitData`` (video_ids, captions, caption_video); ``protocol`` a Protocol or
    its name (the sampler and tokenizer default to ``Protocol.settings()``: what a suite that sets
    no ``[frames]`` / ``[text]`` key gets). ``reverse`` encodes
    time-reversed frames. Keyword arguments: ``sampler``, ``tokenizer``, ``cache``, ``split_name``
    ("test"), ``batch_size`` (16), ``text_batch_size`` (256), ``num_workers`` (0; -1 = one per
    available core, at most 8), ``device``, ``amp``, ``video_dataset`` (overrides the dataset
    built from the split's files), ``distributed``, ``progress``. Under an initialised
    ``torch.distributed`` group (``distributed=None``: whenever one exists; ``False``: never,
    e.g. when only rank 0 validates) every rank must call this: each encodes its shard and all
    ranks receive the full embeddings.
    """
    return _encode_split_passes(
        model, split, protocol, videos_dir, (bool(reverse),), EncodeOptions(**kwargs)
    )[0]


def encode_split_pair(
    model: nn.Module,
    split: Any,
    protocol: Any,
    videos_dir: str | os.PathLike[str],
    *,
    time_reversal: bool,
    **kwargs: Any,
) -> tuple[Embeddings, Embeddings | None]:
    """``(plain, reversed or None)`` embeddings of a split, decoding each video once.

    With ``time_reversal`` the reversed pass encodes :func:`reverse_frames` of the very frames
    the plain pass decoded (one decode per video, one caption pass), and each pass is cached
    under the same key as ``encode_split(reverse=...)`` uses: a cached pass is read, only the
    missing ones are encoded. Results equal two :func:`encode_split` calls exactly. Keyword
    arguments as :func:`encode_split`'s.
    """
    reverses = (False, True) if time_reversal else (False,)
    embs = _encode_split_passes(model, split, protocol, videos_dir, reverses, EncodeOptions(**kwargs))
    return embs[0], (embs[1] if time_reversal else None)


def _find_videos(videos_dir: str | os.PathLike[str], video_ids: Sequence[str]) -> list[Path]:
    """Path of every split video; one VideoReadError naming every missing id (``data.videos``)."""
    from clip2video.data.videos import find_videos

    return find_videos(videos_dir, video_ids)
