"""Order sensitivity: does a caption prefer its own clip over the clip's exact time reversal?

The ``synthetic`` protocol puts every test clip's time-reversed twin in the test gallery, with
captions that differ only in the order/direction words. ``twin_order_accuracy`` scores, for every
caption whose video has a twin, the pairwise choice between the two.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

ORDER_CEILING_NOTE = (
    "order_acc: % of captions (of clips whose exact time reversal is in the gallery) that score "
    "their own clip above the reversed twin; a tie (|diff| <= atol) counts 1/2. A model blind to "
    "frame order (meanp) scores 50% up to float rounding, so it cannot put the right clip first "
    "on more than half of these pairs."
)


def _pair_scores(
    sim: Any, rows: np.ndarray, own: np.ndarray, twin: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``sim[rows, own]`` and ``sim[rows, twin]`` as float64 numpy, gathered on sim's device."""
    if hasattr(sim, "detach"):  # a torch tensor, maybe on a GPU: gather before moving
        import torch

        index = {k: torch.as_tensor(v, device=sim.device) for k, v in (("r", rows), ("o", own), ("t", twin))}
        detached = sim.detach()
        own_s = detached[index["r"], index["o"]].double().cpu().numpy()
        twin_s = detached[index["r"], index["t"]].double().cpu().numpy()
        return own_s, twin_s
    array = np.asarray(sim)
    return array[rows, own].astype(np.float64), array[rows, twin].astype(np.float64)


def twin_order_accuracy(
    sim: Any,
    caption_video: Sequence[int] | np.ndarray,
    twin_of_video: Sequence[int] | np.ndarray,
    *,
    atol: float = 1e-4,
) -> dict[str, float]:
    """Pairwise accuracy of each caption's own clip against its time-reversed twin.

    ``sim`` is ``[num_captions, num_videos]`` (numpy or torch, any device); ``caption_video[i]`` is
    caption i's video and ``twin_of_video[v]`` the index of v's reversed twin, or -1 for none. For
    every caption whose video has a twin: 1 if ``own > twin + atol``, 0.5 if
    ``|own - twin| <= atol`` (a tie), 0 otherwise. Returns ``order_acc`` (the mean, as a
    percentage; NaN when no caption has a twin), ``order_ties`` and ``order_queries`` (counts).

    Why an order-blind model scores exactly 50%: ``meanp`` embeds a video as the masked mean of
    its frame embeddings. A clip and its exact reversal have the same frames, and since n - 1 is
    divisible by the 11 gaps between 12 picks the sampler keeps the same frame set (reversed),
    so the two means sum the same multiset of vectors and differ only by summation order,
    i.e. by float rounding (~1e-7 relative). Every caption then scores its own clip and the twin
    equally: each pair is a tie worth 1/2, and the accuracy is 50% up to that rounding.
    """
    caption_video = np.asarray(caption_video, dtype=np.int64)
    twin_of_video = np.asarray(twin_of_video, dtype=np.int64)
    num_captions, num_videos = (int(d) for d in tuple(sim.shape))
    if caption_video.shape != (num_captions,):
        raise ValueError(f"caption_video has shape {caption_video.shape}; sim has {num_captions} rows")
    if twin_of_video.shape != (num_videos,):
        raise ValueError(f"twin_of_video has shape {twin_of_video.shape}; sim has {num_videos} columns")
    for name, values in (("caption_video", caption_video), ("twin_of_video", twin_of_video)):
        low = -1 if name == "twin_of_video" else 0
        bad = np.flatnonzero((values < low) | (values >= num_videos))
        if bad.size:
            raise ValueError(
                f"{name} has out-of-range entries at {bad[:10].tolist()} (num_videos={num_videos})"
            )
    twins = twin_of_video[caption_video]
    rows = np.flatnonzero(twins >= 0)
    own, twin = _pair_scores(sim, rows, caption_video[rows], twins[rows])
    bad_rows = rows[~(np.isfinite(own) & np.isfinite(twin))]
    if bad_rows.size:
        raise ValueError(f"sim holds NaN/inf in rows {bad_rows[:10].tolist()}; check the model's outputs")
    diff = own - twin
    ties = np.abs(diff) <= atol
    score = np.where(ties, 0.5, (diff > atol).astype(np.float64))
    accuracy = float(100.0 * score.mean()) if rows.size else float("nan")
    return {"order_acc": accuracy, "order_ties": int(ties.sum()), "order_queries": int(rows.size)}


def twin_order_wins(
    sim: Any,
    caption_video: Sequence[int] | np.ndarray,
    twin_of_video: Sequence[int] | np.ndarray,
    *,
    atol: float = 1e-4,
) -> np.ndarray:
    """Per-caption outcome of the twin choice (1 win, 0.5 tie, 0 loss; NaN: the video has no twin).

    The mean over the non-NaN entries, in percent, is :func:`twin_order_accuracy`'s ``order_acc``.
    """
    caption_video = np.asarray(caption_video, dtype=np.int64)
    twins = np.asarray(twin_of_video, dtype=np.int64)[caption_video]
    rows = np.flatnonzero(twins >= 0)
    own, twin = _pair_scores(sim, rows, caption_video[rows], twins[rows])
    diff = own - twin
    out = np.full(caption_video.shape, np.nan)
    out[rows] = np.where(np.abs(diff) <= atol, 0.5, (diff > atol).astype(np.float64))
    return out
