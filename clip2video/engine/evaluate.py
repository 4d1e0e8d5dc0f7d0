"""The evaluation engine: encode every caption and video once -> one similarity -> metrics.

Evaluation and training validation both go through these functions:

* :func:`encode_texts` / :func:`encode_videos` encode each item exactly once (each video is
  decoded once, by iterating its dataset once), under ``torch.inference_mode`` and, with
  ``amp=True`` on CUDA, bf16 autocast.
* :func:`encode_split` finds the split's videos, encodes them (through an
  :class:`~clip2video.engine.cache.EmbeddingCache` when given one) and returns
  :class:`Embeddings`; under ``torch.distributed`` every rank encodes its shard.
* :func:`evaluate_embeddings` turns embeddings into a similarity matrix (optionally with a TAB
  mixing weight ``w`` and a post-processing row, DSL or QB-Norm) and then into per-query ranks and
  metrics through :mod:`clip2video.metrics`, the one ranking core. Without ``keep_sim`` only one
  chunk of similarity rows exists at a time.
* :func:`encode_split_pair` encodes the plain and the time-reversed pass from one decode of
  each video (the reversed frames are :func:`reverse_frames` of the same tensors).
* :func:`evaluate` glues the two; :func:`time_reversal_diagnostic` measures how much a model
  uses frame order.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from clip2video import metrics as _metrics
from clip2video.engine import distributed as _dist
from clip2video.engine.cache import EmbeddingCache, model_fingerprint, strings_digest, videos_digest
from clip2video.engine.postprocess import PostProcess

if TYPE_CHECKING:
    from clip2video.metrics import QueryRanks

__all__ = [
    "Embeddings",
    "EncodeOptions",
    "EvalResult",
    "autocast_context",
    "encode_split",
    "encode_split_pair",
    "encode_texts_distributed",
    "encode_video_passes",
    "encode_videos_distributed",
    "encode_texts",
    "encode_video_items",
    "encode_videos",
    "evaluate",
    "evaluate_embeddings",
    "find_split_videos",
    "model_device",
    "own_scores",
    "reverse_frames",
    "similarity_function",
    "time_reversal_diagnostic",
]

DEFAULT_CHUNK = 1024


# ----------------------------------------------------------------------------- results


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


@dataclass
class EvalResult:
    """Metrics and per-query ranks of one row; ``sim`` is kept only with ``keep_sim=True``.

    ``row_name`` is ``""`` for the plain row and the post-processing suffix (``+DSL(T=100)``,
    ``+QB-Norm(...)``) for a marked row.
    """

    metrics: dict[str, float]
    ranks: QueryRanks
    sim: Tensor | None = None
    row_name: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------- encoding


def model_device(model: nn.Module) -> torch.device:
    """Device of the model's first parameter (CPU for a parameterless model)."""
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def autocast_context(device: torch.device | str, amp: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA when ``amp``; a no-op otherwise (float32 on the CPU)."""
    device = torch.device(device)
    if amp and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def reverse_frames(frames: Tensor, mask: Tensor) -> Tensor:
    """Reverse each video's real frames in time; padded slots and the mask stay where they are.

    ``frames`` is ``[F, ...]`` with ``mask[F]`` or ``[B, F, ...]`` with ``mask[B, F]``; the real
    frames (mask 1) at positions ``p_0 < ... < p_{n-1}`` receive the frames of ``p_{n-1}, ..., p_0``.
    Returns a new tensor.
    """
    single = mask.dim() == 1
    f = frames.unsqueeze(0) if single else frames
    m = mask.unsqueeze(0) if single else mask
    if f.shape[:2] != m.shape:
        raise ValueError(
            f"reverse_frames: frames {tuple(frames.shape)} do not match mask {tuple(mask.shape)}"
        )
    out = f.clone()
    for b in range(m.shape[0]):
        pos = torch.nonzero(m[b] > 0).flatten()
        out[b, pos] = f[b, pos.flip(0)]
    return out[0] if single else out


def caption_batches(
    ids: Tensor, mask: Tensor, batch_size: int, *, by_length: bool
) -> list[tuple[Tensor, int]]:
    """``(row indices, token length)`` per batch of captions.

    Without ``by_length``: consecutive rows, full length. With ``by_length``: captions grouped by
    their own length (up to and including EOT, the largest id), each group cut to that length, in
    batches of at most ``batch_size``.
    """
    n, full = ids.shape
    if not by_length:
        return [(torch.arange(s, min(s + batch_size, n)), full) for s in range(0, n, batch_size)]
    lengths = torch.maximum(mask.sum(1), ids.argmax(1) + 1).clamp(max=full)
    order = torch.sort(lengths, stable=True).indices
    batches: list[tuple[Tensor, int]] = []
    for length in torch.unique(lengths).tolist():
        rows = order[lengths[order] == length]
        batches += [(rows[s : s + batch_size], int(length)) for s in range(0, len(rows), batch_size)]
    return batches


def encode_texts(
    model: nn.Module,
    ids: Tensor,
    mask: Tensor,
    *,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    amp: bool = False,
    progress: bool = True,
) -> Tensor:
    """``model.encode_text`` over ``ids[N, L]`` in batches; returns float32 ``[N, E]`` on ``device``.

    When the model's text encoder is causal (``model.text_is_causal``: CLIP's is), no token attends
    to a later one, so the padding after EOT cannot change a caption's embedding: captions are then
    encoded in groups of equal length, each cut to its length (:func:`caption_batches`), which
    skips the padding's compute (3.3x less text time on MSR-VTT 1k-A's captions: 11.6 of 32 tokens
    on average). The result equals the padded encoding up to float rounding (~1e-7). Identical
    captions have the same length, so they share a group and, unless the group holds more than
    ``batch_size`` captions, a batch: their embeddings are then bitwise equal, and so are their ties.
    """
    device = torch.device(device) if device is not None else model_device(model)
    by_length = bool(getattr(model, "text_is_causal", False))
    batches = caption_batches(ids, mask, batch_size, by_length=by_length)
    if not batches:
        raise ValueError("encode_texts: no captions to encode")
    parts: list[Tensor] = []
    with torch.inference_mode(), autocast_context(device, amp):
        for rows, length in tqdm(
            batches, desc=progress_desc(progress, "encode captions"), unit="batch", disable=not progress
        ):
            emb = model.encode_text(ids[rows, :length].to(device), mask[rows, :length].to(device))
            parts.append(emb.float())
    out = torch.cat(parts)
    if not by_length:
        return out
    ordered = torch.empty_like(out)
    ordered[torch.cat([rows for rows, _ in batches]).to(out.device)] = out
    return ordered


PHASE_VIDEOS = 256  # videos decoded per phase on a CPU (~1.9 GB of 12 x 224 px frames)


def _video_batches(
    dataset_or_loader: Dataset | DataLoader, batch_size: int, num_workers: int, device: torch.device
) -> Iterable:
    """The batches ``(index, frames, mask)`` to encode, in dataset order.

    With CUDA (or no loader workers, or a DataLoader given) decoding streams beside the model. On a
    CPU with loader workers, decoding and the model would fight for the same cores, so they take
    turns instead: the workers (every core, up to 8) decode ``PHASE_VIDEOS`` videos while the model
    waits, then the model encodes them on every torch thread while the workers wait. The batches are
    the same either way, so the embeddings are too.
    """
    if isinstance(dataset_or_loader, DataLoader):
        yield from dataset_or_loader
        return
    from clip2video.data.datasets import resolve_num_workers

    phased = device.type == "cpu" and num_workers != 0
    workers = resolve_num_workers(num_workers, device, phased=phased)
    total = len(dataset_or_loader)
    step = max(batch_size, PHASE_VIDEOS // batch_size * batch_size) if phased else max(total, 1)
    for start in range(0, total, step):
        part = (
            dataset_or_loader
            if not phased
            else Subset(dataset_or_loader, range(start, min(start + step, total)))
        )
        loader = DataLoader(part, batch_size=batch_size, shuffle=False, num_workers=workers, drop_last=False)
        yield from (list(loader) if phased else loader)


def encode_video_passes(
    model: nn.Module,
    dataset_or_loader: Dataset | DataLoader,
    passes: Sequence[bool] = (False,),
    *,
    batch_size: int = 16,
    num_workers: int = 0,
    device: torch.device | str | None = None,
    amp: bool = False,
    progress: bool = True,
) -> tuple[Tensor, list[Tensor]]:
    """Decode every item ``(index, frames, mask)`` once and encode it once per pass.

    ``passes`` holds one flag per pass: ``False`` encodes the frames as decoded, ``True`` with each
    video's real frames reversed in time (:func:`reverse_frames` of the same decoded tensors).
    Every pass sees the same batches, so each result equals a separate pass over the data.
    Returns ``(indices[M], [embeddings[M, E] per pass])`` in iteration order; the indices are
    those the items carry (a ``Subset`` keeps the original dataset's indices).
    """
    passes = tuple(bool(p) for p in passes)
    if not passes:
        raise ValueError("encode_video_passes: give at least one pass")
    device = torch.device(device) if device is not None else model_device(model)
    batches = _video_batches(dataset_or_loader, batch_size, num_workers, device)
    total = (
        -(-_dataset_len(dataset_or_loader) // batch_size)
        if not isinstance(dataset_or_loader, DataLoader)
        else None
    )
    indices: list[Tensor] = []
    out: list[list[Tensor]] = [[] for _ in passes]
    with torch.inference_mode(), autocast_context(device, amp):
        for index, frames, mask in tqdm(
            batches,
            total=total,
            desc=progress_desc(progress, "encode videos"),
            unit="batch",
            disable=not progress,
        ):
            dev_mask = mask.to(device)
            for k, rev in enumerate(passes):
                batch = _reverse(frames, mask) if rev else frames
                out[k].append(model.encode_video(batch.to(device), dev_mask).float())
            indices.append(torch.as_tensor(index, dtype=torch.long).reshape(-1).cpu())
    if not indices:
        return torch.zeros(0, dtype=torch.long), [torch.zeros(0, 0, device=device) for _ in passes]
    return torch.cat(indices), [torch.cat(o) for o in out]


def encode_video_items(
    model: nn.Module,
    dataset_or_loader: Dataset | DataLoader,
    *,
    batch_size: int = 16,
    num_workers: int = 0,
    device: torch.device | str | None = None,
    amp: bool = False,
    reverse_frames: bool = False,
    progress: bool = True,
) -> tuple[Tensor, Tensor]:
    """Encode every item ``(index, frames, mask)`` once; returns ``(indices[M], embeddings[M, E])``.

    The indices are those the items carry (a ``Subset`` keeps the original dataset's indices),
    in iteration order. With ``reverse_frames`` each video's real frames are reversed in time.
    """
    idx, (emb,) = encode_video_passes(
        model,
        dataset_or_loader,
        (reverse_frames,),
        batch_size=batch_size,
        num_workers=num_workers,
        device=device,
        amp=amp,
        progress=progress,
    )
    return idx, emb


_reverse = reverse_frames  # the keyword argument of encode_video_items shadows the function name


def _in_index_order(idx: Tensor, emb: Tensor, total: int) -> Tensor:
    if len(idx) != total or (len(idx) and not torch.equal(torch.sort(idx).values, torch.arange(total))):
        raise ValueError(
            f"encode_videos: the dataset yielded indices {idx.tolist()[:20]}... for {total} items; "
            "items must be (i, frames, mask) with each i in 0..len-1 exactly once"
        )
    out = torch.empty_like(emb)
    out[idx.to(emb.device)] = emb
    return out


def _dataset_len(dataset_or_loader: Dataset | DataLoader) -> int:
    return len(dataset_or_loader.dataset if isinstance(dataset_or_loader, DataLoader) else dataset_or_loader)


def encode_videos(
    model: nn.Module,
    dataset_or_loader: Dataset | DataLoader,
    *,
    batch_size: int = 16,
    num_workers: int = 0,
    device: torch.device | str | None = None,
    amp: bool = False,
    reverse_frames: bool = False,
    progress: bool = True,
    passes: Sequence[bool] | None = None,
) -> Tensor | list[Tensor]:
    """Encode a video dataset (items ``(i, frames, mask)``, ``i`` in ``0..M-1``) into ``[M, E]``.

    Each video is decoded once; row ``i`` of the result is item ``i``'s embedding. With
    ``passes`` (see :func:`encode_video_passes`) the result is one ``[M, E]`` tensor per pass,
    all from the same decoded frames, and ``reverse_frames`` is ignored.
    """
    flags = (reverse_frames,) if passes is None else tuple(passes)
    idx, embs = encode_video_passes(
        model,
        dataset_or_loader,
        flags,
        batch_size=batch_size,
        num_workers=num_workers,
        device=device,
        amp=amp,
        progress=progress,
    )
    total = _dataset_len(dataset_or_loader)
    ordered = [_in_index_order(idx, emb, total) for emb in embs]
    return ordered[0] if passes is None else ordered


def encode_texts_distributed(
    model: nn.Module, ids: Tensor, mask: Tensor, *, contiguous: bool = False, **kwargs: Any
) -> Tensor:
    """:func:`encode_texts` of this rank's shard, gathered by index (every rank gets all rows)."""
    if not _dist.is_distributed():
        return encode_texts(model, ids, mask, **kwargs)
    rank, world = _dist.rank_and_world()
    shard = _dist.shard_indices(ids.shape[0], rank, world, contiguous=contiguous)
    local = encode_texts(model, ids[shard], mask[shard], **kwargs) if shard else torch.zeros(0, 0)
    return _dist.gather_by_index(local, shard, ids.shape[0])


def encode_videos_distributed(
    model: nn.Module,
    dataset: Dataset | DataLoader,
    *,
    contiguous: bool = False,
    passes: Sequence[bool] | None = None,
    **kwargs: Any,
) -> Tensor | list[Tensor]:
    """:func:`encode_videos` where each rank decodes and encodes its shard, gathered by index.

    Items must be ``(i, frames, mask)``; the gathered result has row ``i`` = item ``i``.
    A DataLoader argument is unwrapped to its dataset (its sampler would pad). ``passes`` as in
    :func:`encode_videos`.
    """
    if not _dist.is_distributed():
        return encode_videos(model, dataset, passes=passes, **kwargs)
    if isinstance(dataset, DataLoader):
        dataset = dataset.dataset
    flags = (bool(kwargs.pop("reverse_frames", False)),) if passes is None else tuple(passes)
    rank, world = _dist.rank_and_world()
    total = len(dataset)
    shard = _dist.shard_indices(total, rank, world, contiguous=contiguous)
    if shard:
        idx, local = encode_video_passes(model, Subset(dataset, shard), flags, **kwargs)
    else:
        idx, local = torch.zeros(0, dtype=torch.long), [torch.zeros(0, 0) for _ in flags]
    gathered = [_dist.gather_by_index(emb, idx, total) for emb in local]
    return gathered[0] if passes is None else gathered


# ----------------------------------------------------------------------------- split -> embeddings


def find_split_videos(videos_dir: str | os.PathLike[str], video_ids: Sequence[str]) -> list[Path]:
    """Path of every split video; one VideoReadError naming every missing id.

    The same lookup as ``clip2video.data.videos.find_videos`` (this name is kept for callers of
    the engine)."""
    from clip2video.data.videos import find_videos

    return find_videos(videos_dir, video_ids)


def progress_desc(progress: bool | str, what: str) -> str:
    """A progress bar's label: ``progress`` may be a string naming the work (``"tdb s0 test"``)."""
    return f"{progress}: {what}" if isinstance(progress, str) and progress else what


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


def _files_digest(paths: Sequence[Path]) -> str:
    """Identity of the videos (files, and every image of a frame folder): regenerated data misses."""
    return videos_digest(paths)


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
    paths = find_split_videos(videos_dir, video_ids) if options.video_dataset is None else []
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
        "files": _files_digest(paths) if paths else None,
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


# ----------------------------------------------------------------------------- similarity -> metrics


def similarity_function(model: nn.Module, w: float | None = None) -> Callable[[Tensor, Tensor], Tensor]:
    """``(text, video) -> sim`` of ``model``; ``w`` re-mixes TAB's two parts without re-encoding.

    With ``w`` the similarity is ``w * global + (1 - w) * aligned`` from
    ``model.similarity_parts``; a model without TAB (one part) rejects ``w``.
    """
    if w is None:
        return model.similarity

    def mixed(text: Tensor, video: Tensor) -> Tensor:
        parts = model.similarity_parts(text, video)
        if len(parts) != 2:
            raise ValueError(
                f"w={w} re-weights TAB's global and aligned similarities, but {type(model).__name__} "
                f"has {len(parts)} similarity part(s); evaluate it without w"
            )
        (_, glob), (_, aligned) = parts
        return w * glob + (1.0 - w) * aligned

    return mixed


def _score_rows(sim_fn: Callable[[Tensor, Tensor], Tensor], emb: Embeddings) -> Callable[[int, int], Tensor]:
    def rows(start: int, stop: int) -> Tensor:
        with torch.inference_mode():
            return sim_fn(emb.text[start:stop], emb.video).float()

    return rows


def _full_sim(sim_fn: Callable[[Tensor, Tensor], Tensor], emb: Embeddings, chunk_size: int) -> Tensor:
    rows = _score_rows(sim_fn, emb)
    n = emb.text.shape[0]
    return torch.cat([rows(s, min(s + chunk_size, n)) for s in range(0, n, chunk_size)])


def evaluate_embeddings(
    model: nn.Module,
    emb: Embeddings,
    *,
    tie_policy: str = "pessimistic",
    v2t: str = "official",
    w: float | None = None,
    post: PostProcess | None = None,
    keep_sim: bool = True,
    chunk_size: int = DEFAULT_CHUNK,
) -> EvalResult:
    """Similarity -> per-query ranks -> metrics for one row, from already-encoded embeddings.

    ``post`` (a :class:`~clip2video.engine.postprocess.DualSoftmax` or ``QBNorm``) turns the
    result into a marked row (``row_name`` = its suffix; QB-Norm reports t2v only). Without
    ``keep_sim`` and ``post``, ranks come from :func:`clip2video.metrics.ranks_from_scores` and at
    most ``chunk_size`` similarity rows exist at a time. Post-processing needs the whole matrix.
    """
    sim_fn = similarity_function(model, w)
    num_videos = emb.video.shape[0]
    sim: Tensor | None = None
    if post is None and not keep_sim:
        ranks = _metrics.ranks_from_scores(
            _score_rows(sim_fn, emb),
            emb.caption_video,
            num_videos,
            chunk_size=chunk_size,
            tie_policy=tie_policy,
            v2t=v2t,
        )
    else:
        sim = _full_sim(sim_fn, emb, chunk_size)
        if post is not None:
            sim = post.apply(sim, lambda text: _full_sim(sim_fn, _bank(emb, text), chunk_size))
        ranks = _metrics.query_ranks(sim, emb.caption_video, tie_policy=tie_policy, v2t=v2t)
    metrics = _metrics.metrics_from_ranks(ranks)
    row_name = ""
    if post is not None:
        row_name = post.row_name
        metrics = {k: v for k, v in metrics.items() if k.split("_", 1)[0] in post.directions}
    meta = {"tie_policy": tie_policy, "v2t": v2t, "w": w, **emb.meta}
    return EvalResult(
        metrics=metrics, ranks=ranks, sim=sim if keep_sim else None, row_name=row_name, meta=meta
    )


def _bank(emb: Embeddings, text: Tensor) -> Embeddings:
    """Bank captions scored against ``emb``'s gallery (their caption_video is irrelevant)."""
    return Embeddings(
        text=text.to(emb.video.device),
        video=emb.video,
        caption_video=np.zeros(text.shape[0], dtype=np.int64),
        video_ids=emb.video_ids,
    )


def evaluate(
    model: nn.Module,
    split: Any,
    videos_dir: str | os.PathLike[str],
    sampler: Any = None,
    tokenizer: Any = None,
    *,
    protocol: Any = "custom",
    reverse: bool = False,
    tie_policy: str = "pessimistic",
    v2t: str = "official",
    w: float | None = None,
    post: PostProcess | None = None,
    keep_sim: bool = True,
    chunk_size: int = DEFAULT_CHUNK,
    **encode_kwargs: Any,
) -> EvalResult | None:
    """Find videos -> encode once (or read the cache) -> similarity -> metrics.

    The encoding keywords (``cache``, ``split_name``, ``batch_size``, ``num_workers``, ``device``,
    ``amp``, ``distributed``, ``progress``, ...) are :func:`encode_split`'s (:class:`EncodeOptions`);
    the ranking ones :func:`evaluate_embeddings`'s. Under ``torch.distributed`` (see
    :func:`encode_split`'s ``distributed``) all ranks encode their shards and rank 0 ranks: the
    other ranks return None.
    """
    options = EncodeOptions(sampler=sampler, tokenizer=tokenizer, **encode_kwargs)
    (emb,) = _encode_split_passes(model, split, protocol, videos_dir, (bool(reverse),), options)
    if options.collective and _dist.rank_and_world()[0] != 0:
        return None
    return evaluate_embeddings(
        model, emb, tie_policy=tie_policy, v2t=v2t, w=w, post=post, keep_sim=keep_sim, chunk_size=chunk_size
    )


# ----------------------------------------------------------------------------- time reversal


def own_scores(
    model: nn.Module,
    text: Tensor,
    video: Tensor,
    caption_video: np.ndarray | Sequence[int],
    *,
    w: float | None = None,
    chunk_size: int = DEFAULT_CHUNK,
) -> Tensor:
    """``sim[i, caption_video[i]]`` for every caption, without building the whole matrix."""
    sim_fn = similarity_function(model, w)
    cv = torch.as_tensor(np.asarray(caption_video, dtype=np.int64), device=video.device)
    out = []
    with torch.inference_mode():
        for s in range(0, text.shape[0], chunk_size):
            t = text[s : s + chunk_size]
            v = video[cv[s : s + chunk_size]]
            out.append(torch.diagonal(sim_fn(t, v)).float())
    return torch.cat(out)


def time_reversal_diagnostic(
    model: nn.Module,
    split: Any,
    videos_dir: str | os.PathLike[str],
    sampler: Any = None,
    tokenizer: Any = None,
    *,
    protocol: Any = "custom",
    atol: float = 1e-4,
    tie_policy: str = "pessimistic",
    v2t: str = "official",
    w: float | None = None,
    emb: Embeddings | None = None,
    rev_emb: Embeddings | None = None,
    **encode_kwargs: Any,
) -> dict[str, float]:
    """How much does the model use frame order? Metrics on time-reversed frames, and score changes.

    Returns the plain metrics, the same metrics on reversed frames (keys prefixed ``rev_``),
    ``order_changed_share`` (percentage of captions whose score for their own video changes by
    more than ``atol`` when that video's real frames are reversed), ``mean_abs_score_change``,
    ``max_abs_score_change``, ``atol`` and ``num_queries``. An order-blind model (meanp) gives 0.
    Pass ``emb`` / ``rev_emb`` to reuse embeddings already encoded; other keyword arguments
    (``cache``, ...) go to :func:`encode_split`.
    """
    kwargs = dict(sampler=sampler, tokenizer=tokenizer, **encode_kwargs)
    if emb is None and rev_emb is None:
        emb, rev_emb = encode_split_pair(model, split, protocol, videos_dir, time_reversal=True, **kwargs)
    if emb is None:
        emb = encode_split(model, split, protocol, videos_dir, reverse=False, **kwargs)
    if rev_emb is None:
        rev_emb = encode_split(model, split, protocol, videos_dir, reverse=True, **kwargs)
    plain = evaluate_embeddings(model, emb, tie_policy=tie_policy, v2t=v2t, w=w, keep_sim=False)
    rev = evaluate_embeddings(model, rev_emb, tie_policy=tie_policy, v2t=v2t, w=w, keep_sim=False)
    before = own_scores(model, emb.text, emb.video, emb.caption_video, w=w)
    after = own_scores(model, emb.text, rev_emb.video, emb.caption_video, w=w)
    diff = (after - before).abs()
    out: dict[str, float] = dict(plain.metrics)
    out.update({f"rev_{k}": v for k, v in rev.metrics.items()})
    out.update(
        order_changed_share=float(100.0 * (diff > atol).double().mean()),
        mean_abs_score_change=float(diff.double().mean()),
        max_abs_score_change=float(diff.max()),
        atol=float(atol),
        num_queries=float(diff.numel()),
    )
    return out
