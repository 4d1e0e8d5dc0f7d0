"""Input checks of the ranking core: the options, the similarity matrix and the caption-to-video map.

Every error is a ``ValueError`` naming what is wrong and where (rows, captions, videos).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from clip2video.metrics.ranks import TIE_POLICIES, V2T_CONVENTIONS

_SHOWN = 5  # how many offending indices an error message names


def _check_options(tie_policy: str, v2t: str) -> None:
    if tie_policy not in TIE_POLICIES:
        raise ValueError(f"unknown tie_policy {tie_policy!r}: choose one of {TIE_POLICIES}")
    if v2t not in V2T_CONVENTIONS:
        raise ValueError(f"unknown v2t convention {v2t!r}: choose one of {V2T_CONVENTIONS}")
    if tie_policy == "legacy" and v2t != "official":
        raise ValueError(
            "tie_policy='legacy' reproduces the official code, which has no 'first-hit' v2t: "
            "use v2t='official' with legacy, or another tie_policy with first-hit"
        )


def _nan_rows(rows: torch.Tensor) -> torch.Tensor:
    """Indices (CPU) of the rows holding NaN or +-inf (a score must be a finite number). A row sum
    is not finite for every such row (and may overflow for others), so only those suspect rows are
    scanned element by element."""
    if not rows.is_floating_point():
        return torch.zeros(0, dtype=torch.int64)
    suspects = torch.nonzero(~torch.isfinite(rows.sum(1))).squeeze(1)
    if len(suspects) == 0:
        return suspects.cpu()
    return suspects[(~torch.isfinite(rows[suspects])).any(1)].cpu()


def _check_no_nan(matrix: torch.Tensor, chunk_size: int) -> None:
    """Raise ValueError naming the rows of ``matrix`` that hold NaN or +-inf (scanned in chunks of rows).

    +-inf is an error like NaN: a finite model never scores infinity, so an infinite similarity
    means an overflow or a masking bug upstream, and ranking it would hide that.
    """
    rows = torch.cat(
        [
            _nan_rows(matrix[start : start + chunk_size]) + start
            for start in range(0, matrix.shape[0], chunk_size)
        ]
    )
    if len(rows):
        raise ValueError(
            f"sim has +-inf or NaN in {len(rows)} row(s): {rows[:_SHOWN].tolist()}"
            + (" ..." if len(rows) > _SHOWN else "")
            + " (caption indices); fix the model outputs or drop those captions, a score that is not a "
            "finite number is never ranked"
        )


def _as_matrix(sim: Any) -> torch.Tensor:
    """``sim`` as a 2-D, non-empty torch tensor (numpy shares memory; devices are kept)."""
    if isinstance(sim, torch.Tensor):
        matrix = sim.detach()
    else:
        array = np.asarray(sim)
        if array.dtype == object or array.dtype.kind not in "biuf":
            raise ValueError(f"sim must be a numeric matrix, got dtype {array.dtype}")
        matrix = torch.from_numpy(np.ascontiguousarray(array))
    if matrix.ndim != 2:
        raise ValueError(
            f"sim must be 2-D [num_captions, num_videos], got shape {tuple(matrix.shape)}"
            + (
                " (a 1-D vector: reshape it to [1, num_videos] or [num_captions, 1])"
                if matrix.ndim == 1
                else ""
            )
        )
    if matrix.numel() == 0:
        raise ValueError(f"sim is empty (shape {tuple(matrix.shape)}): nothing to rank")
    return matrix


def _caption_video_array(caption_video: Any, num_captions: int | None, num_videos: int) -> np.ndarray:
    """Validate ``caption_video`` -> int64 numpy; errors name the captions / videos at fault."""
    if isinstance(caption_video, torch.Tensor):
        if caption_video.is_floating_point() or caption_video.dtype == torch.bool:
            raise ValueError(f"caption_video must hold integer video indices, got {caption_video.dtype}")
        cv = caption_video.detach().cpu().numpy()
    else:
        cv = np.asarray(caption_video)
        if cv.size and cv.dtype.kind not in "iu":
            raise ValueError(f"caption_video must hold integer video indices, got dtype {cv.dtype}")
    if cv.ndim != 1:
        raise ValueError(f"caption_video must be 1-D (one video index per caption), got shape {cv.shape}")
    if cv.size == 0:
        raise ValueError("caption_video is empty: there are no captions to rank")
    cv = cv.astype(np.int64)
    if num_captions is not None and len(cv) != num_captions:
        raise ValueError(
            f"shape mismatch: sim has {num_captions} rows (captions) but caption_video has {len(cv)} "
            "entries; they must match one to one"
        )
    bad = np.flatnonzero((cv < 0) | (cv >= num_videos))
    if len(bad):
        shown = ", ".join(f"caption {i} -> {cv[i]}" for i in bad[:_SHOWN])
        raise ValueError(
            f"caption_video index out of range [0, {num_videos}) for {len(bad)} caption(s): {shown}"
            + (" ..." if len(bad) > _SHOWN else "")
        )
    empty = np.flatnonzero(np.bincount(cv, minlength=num_videos) == 0)
    if len(empty):
        raise ValueError(
            f"{len(empty)} video(s) have no caption: video indices {empty[:_SHOWN].tolist()}"
            + (" ..." if len(empty) > _SHOWN else "")
            + "; every video column needs at least one caption (drop the video or add its captions)"
        )
    return cv
