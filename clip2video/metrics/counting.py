"""The counting core: per-query ranks by counting scores, never sorting.

For each query the core COUNTS candidates: ``higher`` = candidates scoring strictly above the
ground truth, ``equal`` = candidates scoring the same (the ground truth excluded) and, for the
official several-captions text-to-video path, ``before`` = tied candidates with a smaller index.
That is O(N*M) work, done in chunks of queries with pure torch ops on the device the scores live
on. "Above" and "equal" come from the sign of one float difference per score (exact; see
``_above_and_equal_block``), counted on CPUs in cache-sized blocks of each chunk.
``ranks_from_scores`` takes rows computed on demand (say from embeddings) and never holds more than
a chunk; ``query_ranks`` runs the same core over a full matrix.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from clip2video.metrics.ranks import QueryRanks, _rank
from clip2video.metrics.validation import (
    _SHOWN,
    _as_matrix,
    _caption_video_array,
    _check_no_nan,
    _check_options,
    _nan_rows,
)

__all__ = ["ScoreRows", "query_ranks", "ranks_from_scores"]

ScoreRows = Callable[[int, int], torch.Tensor]
"""``score_rows(start, stop)`` returns ``sim[start:stop]``, a ``[stop - start, num_videos]`` tensor."""

_CPU_BLOCK_ELEMENTS = 2**20  # scores counted at once on a CPU (4 MiB of float32: cache-sized)
_EXACT_COUNT_LIMIT = 2**24  # counts are float32 sums of +-1 (see _above_and_equal): exact below this


def ranks_from_scores(
    score_rows: ScoreRows,
    caption_video: Any,
    num_videos: int,
    *,
    chunk_size: int = 1024,
    tie_policy: str = "pessimistic",
    v2t: str = "official",
    progress: bool = False,
) -> QueryRanks:
    """Per-query ranks from similarity rows computed on demand; the full matrix never exists.

    Args:
        score_rows: ``score_rows(start, stop)`` -> ``sim[start:stop]`` as a ``[stop - start,
            num_videos]`` tensor (any device: counting runs there). It must be deterministic: it is
            called twice per row (pass 1: t2v counts and each video's ground-truth score; pass 2:
            v2t counts), with the same ``(start, stop)`` both times.
        caption_video: caption i's video index, ``num_captions`` ints (numpy, torch or a list).
        num_videos: the number of videos (columns); each must have at least one caption.
        chunk_size: rows per call. For ``v2t="official"`` with several captions per video, chunks
            hold whole caption groups (a chunk grows past ``chunk_size`` to finish a group); groups
            whose captions are not contiguous are fetched run by run (one call per contiguous run).
        tie_policy: one of ``TIE_POLICIES``. v2t: one of ``V2T_CONVENTIONS``.
        progress: show a tqdm bar over chunks.

    Memory stays ``O(chunk x num_videos)`` on the scores' device, plus ``O(num_captions +
    num_videos)`` for the counts.
    """
    return _rank_rows(score_rows, caption_video, num_videos, chunk_size, tie_policy, v2t, progress, True)


def _rank_rows(
    score_rows: ScoreRows,
    caption_video: Any,
    num_videos: int,
    chunk_size: int,
    tie_policy: str,
    v2t: str,
    progress: bool,
    check_nan: bool,
) -> QueryRanks:
    """The two counting passes behind ``ranks_from_scores`` and ``query_ranks``."""
    _check_options(tie_policy, v2t)
    if not isinstance(num_videos, (int, np.integer)) or num_videos <= 0:
        raise ValueError(f"num_videos must be a positive int, got {num_videos!r}")
    if not isinstance(chunk_size, (int, np.integer)) or chunk_size <= 0:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    if num_videos >= _EXACT_COUNT_LIMIT or len(caption_video) >= _EXACT_COUNT_LIMIT:
        raise ValueError(
            f"at most {_EXACT_COUNT_LIMIT - 1} videos and captions are supported (counts are float32 sums "
            f"of +-1, exact below 2**24); got {num_videos} videos and {len(caption_video)} captions"
        )
    cv = _caption_video_array(caption_video, None, int(num_videos))
    num_videos = int(num_videos)
    counts_per_video = np.bincount(cv, minlength=num_videos)
    single_caption = bool(np.all(counts_per_video == 1))
    grouped = v2t == "official" and not single_caption
    plan = _chunk_plan(cv, int(chunk_size), grouped)
    need_before = tie_policy == "legacy" and not single_caption
    fetch = _Fetcher(score_rows, cv, num_videos, check_nan=check_nan)

    t2v_higher = t2v_equal = t2v_before = None
    target = None  # per video: the best own caption's score on that video
    for chunk in tqdm(plan, desc="ranking (pass 1/2)", disable=not progress, leave=False):
        rows, index = fetch(chunk, check_nan=True)
        if t2v_higher is None:
            t2v_higher, t2v_equal, t2v_before, target = _allocate(rows, len(cv), num_videos)
        cols, sel = fetch.device_index(rows.device, index)
        gt = rows.gather(1, cols.unsqueeze(1))
        higher, equal = _above_and_equal(rows, gt, 1)
        t2v_higher[sel] = higher
        t2v_equal[sel] = equal - 1  # the ground truth itself
        if need_before:
            smaller = fetch.arange(rows.device).unsqueeze(0) < cols.unsqueeze(1)
            t2v_before[sel] = _count((rows == gt) & smaller, 1)
        target.scatter_reduce_(0, cols, gt.squeeze(1), reduce="amax")

    v2t_higher = torch.zeros_like(target, dtype=torch.int32)
    v2t_equal = torch.zeros_like(target, dtype=torch.int32)
    for chunk in tqdm(plan, desc="ranking (pass 2/2)", disable=not progress, leave=False):
        rows, index = fetch(chunk, check_nan=False)
        cols, _ = fetch.device_index(rows.device, index)
        if grouped:
            rows, cols = _group_max(rows, cols)
        _count_columns(rows, cols, target, v2t_higher, v2t_equal)

    return _assemble(
        t2v_higher, t2v_equal, t2v_before if need_before else None, v2t_higher, v2t_equal,
        tie_policy, v2t, single_caption,
    )  # fmt: skip


def _allocate(rows: torch.Tensor, num_captions: int, num_videos: int) -> tuple[torch.Tensor, ...]:
    """Count buffers on the scores' device (int32: counts stay below 2**31 rows or columns)."""
    kw = {"dtype": torch.int32, "device": rows.device}
    target = torch.full((num_videos,), -torch.inf, dtype=rows.dtype, device=rows.device)
    return (
        torch.zeros(num_captions, **kw),
        torch.zeros(num_captions, **kw),
        torch.zeros(num_captions, **kw),
        target,
    )


def _above_and_equal(
    rows: torch.Tensor, threshold: torch.Tensor, dim: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``_above_and_equal_block`` over blocks of rows small enough to stay in a CPU's cache
    (about ``_CPU_BLOCK_ELEMENTS`` scores); on GPUs the chunk is one block."""
    step = rows.shape[0] if rows.is_cuda else max(1, _CPU_BLOCK_ELEMENTS // max(1, rows.shape[1]))
    if rows.shape[0] <= step:
        return _above_and_equal_block(rows, threshold, dim)
    blocks = [
        _above_and_equal_block(rows[a : a + step], threshold[a : a + step] if dim == 1 else threshold, dim)
        for a in range(0, rows.shape[0], step)
    ]
    if dim == 1:
        return torch.cat([b[0] for b in blocks]), torch.cat([b[1] for b in blocks])
    return sum(b[0] for b in blocks), sum(b[1] for b in blocks)


def _above_and_equal_block(
    rows: torch.Tensor, threshold: torch.Tensor, dim: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per line along ``dim`` (dim=1: per row, ``threshold`` [rows, 1]; dim=0: per column,
    ``threshold`` [columns]): entries strictly above the threshold and entries equal to it, int32.

    One float difference instead of two bool comparisons (torch's bool-producing comparisons are
    several times slower on CPU): ``s = sign(rows - threshold)``, ``sum(s) = above - below``,
    ``sum(|s|) = above + below``. Exact: for IEEE floats ``x - y`` is zero only when ``x == y``
    and rounding never flips its sign, and the +-1 sums stay far below 2**24. The one doubtful
    case, ``inf - inf`` = NaN (torch's CPU sign gives 0, i.e. "equal", which is right, but no
    device promises it), only happens where the threshold is infinite; those lines are counted
    by comparison instead.
    """
    diff = rows - threshold
    diff.sign_()
    net = diff.sum(dim)
    diff.abs_()
    moved = diff.sum(dim)
    above = ((net + moved) / 2).to(torch.int32)
    equal = (rows.shape[dim] - moved).to(torch.int32)
    flat = threshold.reshape(-1)
    infinite = torch.nonzero(torch.isinf(flat)).squeeze(1)
    if len(infinite):  # rare: count those lines the slow, comparison way
        lines = rows.index_select(1 - dim, infinite)
        limit = flat[infinite].unsqueeze(1) if dim == 1 else flat[infinite]
        above[infinite] = _count(lines > limit, dim)
        equal[infinite] = _count(lines == limit, dim)
    return above, equal


def _count(mask: torch.Tensor, dim: int) -> torch.Tensor:
    """Number of True along ``dim`` (an int32 reduction: several times faster than bool -> int64
    on CPU; a chunk's counts are below 2**31)."""
    return mask.sum(dim, dtype=torch.int32)


def _group_max(rows: torch.Tensor, cols: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of whole caption groups -> one row per group (its max); returns (rows, group ids)."""
    groups, local = torch.unique(cols, return_inverse=True)
    if len(groups) == len(cols):
        return rows, cols
    out = torch.full((len(groups), rows.shape[1]), -torch.inf, dtype=rows.dtype, device=rows.device)
    out.scatter_reduce_(0, local.unsqueeze(1).expand_as(rows), rows, reduce="amax")
    return out, groups


def _count_columns(
    rows: torch.Tensor,
    owner: torch.Tensor,
    target: torch.Tensor,
    higher: torch.Tensor,
    equal: torch.Tensor,
) -> None:
    """Add, per column v, the rows scoring above / equal to ``target[v]``, excluding each row's
    entry in its own column ``owner[i]`` (a video's own caption or group never counts)."""
    above, same = _above_and_equal(rows, target, 0)
    higher += above
    equal += same
    own = rows.gather(1, owner.unsqueeze(1)).squeeze(1)
    own_target = target[owner]
    higher.index_add_(0, owner, -(own > own_target).int())
    equal.index_add_(0, owner, -(own == own_target).int())


def _assemble(
    t2v_higher: torch.Tensor,
    t2v_equal: torch.Tensor,
    t2v_before: torch.Tensor | None,
    v2t_higher: torch.Tensor,
    v2t_equal: torch.Tensor,
    tie_policy: str,
    v2t: str,
    single_caption: bool,
) -> QueryRanks:
    """Device counts -> numpy ``QueryRanks`` with the policy's ranks."""
    th, te, vh, ve = (
        x.cpu().numpy().astype(np.int64) for x in (t2v_higher, t2v_equal, v2t_higher, v2t_equal)
    )
    tb = t2v_before.cpu().numpy().astype(np.int64) if t2v_before is not None else np.zeros_like(th)
    return QueryRanks(
        t2v=_rank(th, te, tb if t2v_before is not None else None, tie_policy),
        v2t=_rank(vh, ve, None, tie_policy),
        t2v_tied=te > 0,
        v2t_tied=ve > 0,
        t2v_higher=th,
        t2v_equal=te,
        t2v_before=tb,
        v2t_higher=vh,
        v2t_equal=ve,
        tie_policy=tie_policy,
        v2t_convention=v2t,
        single_caption=single_caption,
    )


class _Fetcher:
    """Fetches a chunk (a list of contiguous runs) of score rows, checks and normalises them."""

    def __init__(self, score_rows: ScoreRows, cv: np.ndarray, num_videos: int, *, check_nan: bool) -> None:
        self.score_rows = score_rows
        self.check_nan = check_nan
        self.cv = cv
        self.num_videos = num_videos
        self._cv_on: dict[torch.device, torch.Tensor] = {}
        self._arange_on: dict[torch.device, torch.Tensor] = {}

    def __call__(self, runs: list[tuple[int, int]], *, check_nan: bool) -> tuple[torch.Tensor, np.ndarray]:
        parts = [self._run(start, stop, check_nan and self.check_nan) for start, stop in runs]
        rows = parts[0] if len(parts) == 1 else torch.cat(parts)
        index = np.concatenate([np.arange(start, stop) for start, stop in runs])
        return rows, index

    def _run(self, start: int, stop: int, check_nan: bool) -> torch.Tensor:
        rows = self.score_rows(start, stop)
        if not isinstance(rows, torch.Tensor):
            rows = torch.as_tensor(np.asarray(rows))
        if tuple(rows.shape) != (stop - start, self.num_videos):
            raise ValueError(
                f"score_rows({start}, {stop}) returned shape {tuple(rows.shape)}, expected "
                f"({stop - start}, {self.num_videos}) (rows {start}:{stop} of sim, one column per video)"
            )
        if rows.dtype in (torch.float16, torch.bfloat16):
            rows = rows.float()  # exact, so ties and order are unchanged
        elif not rows.is_floating_point():
            rows = rows.double()
        if check_nan:
            bad = _nan_rows(rows)
            if len(bad):
                raise ValueError(
                    f"sim has +-inf or NaN in row(s) {(bad[:_SHOWN] + start).tolist()} (first found; caption "
                    "indices): fix the model outputs or drop those captions; a score that is not a finite "
                    "number is never ranked silently"
                )
        return rows

    def device_index(
        self, device: torch.device, index: np.ndarray
    ) -> tuple[torch.Tensor, slice | torch.Tensor]:
        """``(caption_video[index], selector of index)`` on ``device``; the selector is a slice
        when ``index`` is one ascending run."""
        if device not in self._cv_on:
            self._cv_on[device] = torch.from_numpy(self.cv).to(device)
        cv = self._cv_on[device]
        if index[-1] - index[0] == len(index) - 1 and np.all(np.diff(index) == 1):
            sel: slice | torch.Tensor = slice(int(index[0]), int(index[-1]) + 1)
        else:
            sel = torch.from_numpy(index).to(device)
        return cv[sel], sel

    def arange(self, device: torch.device) -> torch.Tensor:
        """Video indices on ``device``."""
        if device not in self._arange_on:
            self._arange_on[device] = torch.arange(self.num_videos, device=device)
        return self._arange_on[device]


def _chunk_plan(cv: np.ndarray, chunk_size: int, grouped: bool) -> list[list[tuple[int, int]]]:
    """Chunks of caption rows as lists of ``(start, stop)`` runs.

    Ungrouped: plain ranges. Grouped: captions ordered group by group (groups by first
    appearance, captions in index order), each chunk holding whole groups; a contiguous layout
    gives one run per chunk.
    """
    n = len(cv)
    if not grouped:
        return [[(a, min(a + chunk_size, n))] for a in range(0, n, chunk_size)]
    first = np.full(int(cv.max()) + 1, n, dtype=np.int64)
    np.minimum.at(first, cv, np.arange(n))
    order = np.argsort(first[cv], kind="stable")
    group_ends = np.flatnonzero(np.diff(cv[order])) + 1
    group_ends = np.append(group_ends, n)
    plan: list[list[tuple[int, int]]] = []
    start = 0
    while start < n:
        j = int(np.searchsorted(group_ends, start + chunk_size, side="right")) - 1
        if j < 0 or group_ends[j] <= start:  # the next group alone is larger than chunk_size
            j = int(np.searchsorted(group_ends, start, side="right"))
        stop = int(group_ends[j])
        plan.append(_runs(order[start:stop]))
        start = stop
    return plan


def _runs(index: np.ndarray) -> list[tuple[int, int]]:
    """Split sorted-or-not caption indices into maximal ascending contiguous runs."""
    breaks = np.flatnonzero(np.diff(index) != 1) + 1
    starts = np.concatenate([[0], breaks])
    stops = np.concatenate([breaks, [len(index)]])
    return [(int(index[a]), int(index[b - 1]) + 1) for a, b in zip(starts, stops, strict=True)]


def query_ranks(
    sim: Any,
    caption_video: Any,
    *,
    tie_policy: str = "pessimistic",
    v2t: str = "official",
    chunk_size: int = 1024,
) -> QueryRanks:
    """Per-query ranks of a full similarity matrix ``sim[num_captions, num_videos]`` (numpy or
    torch, any device, float16/32/64); the same counting core as ``ranks_from_scores``."""
    _check_options(tie_policy, v2t)
    matrix = _as_matrix(sim)
    _caption_video_array(caption_video, matrix.shape[0], matrix.shape[1])
    if not isinstance(chunk_size, (int, np.integer)) or chunk_size <= 0:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    _check_no_nan(matrix, int(chunk_size))
    return _rank_rows(
        lambda start, stop: matrix[start:stop],
        caption_video,
        matrix.shape[1],
        chunk_size,
        tie_policy,
        v2t,
        False,  # no progress bar
        False,  # NaN already checked above, naming every row
    )
