"""Inference-time post-processing of a similarity matrix: dual softmax (DSL) and QB-Norm.

Both use statistics beyond a single (caption, video) pair, so they are never the default: the
engine reports them as separate rows whose name carries the suffix returned here
(``+DSL(T=100)``, ``+QB-Norm(bank=train-captions,k=1,beta=20)``), next to the plain rows.
All functions take and return ``sim[num_captions, num_videos]`` and never modify their input.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from clip2video.registry import Registry

__all__ = [
    "POSTPROCESSORS",
    "DualSoftmax",
    "build_postprocessors",
    "list_postprocessors",
    "register_postprocessor",
    "PostProcess",
    "QBNorm",
    "dual_softmax",
    "dsl_row_name",
    "qb_norm",
    "qb_norm_row_name",
]


def _fmt(value: float) -> str:
    """Short, stable number formatting for row names (100.0 -> '100', 0.5 -> '0.5')."""
    return f"{float(value):g}"


def dsl_row_name(temperature: float) -> str:
    """Row-name suffix of a dual-softmax row."""
    return f"+DSL(T={_fmt(temperature)})"


def dual_softmax(sim: Tensor, temperature: float = 100.0) -> tuple[Tensor, str]:
    """Dual softmax: ``sim * softmax(sim * T, dim=0)``; returns (new matrix, row-name suffix).

    The softmax runs over the caption axis (dim 0): each video's scores are reweighted by how
    strongly that video prefers each caption over the other test captions, which uses the whole
    test set's statistics. Computed in float32 (float64 inputs stay float64).
    """
    s = torch.as_tensor(sim)
    s = s.float() if s.dtype not in (torch.float32, torch.float64) else s
    return s * torch.softmax(s * temperature, dim=0), dsl_row_name(temperature)


def qb_norm_row_name(bank: str, k: int = 1, beta: float = 20.0) -> str:
    """Row-name suffix of a QB-Norm row; ``bank`` names the querybank's source."""
    return f"+QB-Norm(bank={bank},k={k},beta={_fmt(beta)})"


def qb_norm(
    sim: Tensor, bank_sim: Tensor, k: int = 1, beta: float = 20.0, *, bank: str = "bank"
) -> tuple[Tensor, str]:
    """Querybank normalisation with the dynamic inverted softmax (Bogolin et al., CVPR 2022).

    ``sim`` is ``[num_queries, num_gallery]``, ``bank_sim`` is ``[num_bank_queries, num_gallery]``
    (the bank's queries, e.g. training captions, scored against the same test gallery).

    Formula implemented:

    1. Activation set ``A`` = gallery items that are among the top-``k`` of at least one bank query.
    2. A test query ``q`` whose top-1 gallery item lies in ``A`` is normalised, over its whole row,
       by the inverted softmax ``exp(beta * s_qj) / sum_b exp(beta * bank_sim_bj)``; every other
       query keeps its raw scores (this is what makes the softmax "dynamic").
    3. Normalised rows are returned in the log domain, ``beta * s_qj - logsumexp_b(beta * bank_sim_bj)``:
       log is increasing, so each row ranks exactly as the paper's exp-domain values do, without
       overflow on logit-scaled similarities.

    Ranks are meaningful along query rows (text-to-video when queries are captions); the
    engine reports only that direction for QB-Norm rows. Returns (new matrix, row-name suffix).
    """
    s = torch.as_tensor(sim)
    b = torch.as_tensor(bank_sim).to(device=s.device)
    if s.ndim != 2 or b.ndim != 2 or s.shape[1] != b.shape[1]:
        raise ValueError(
            f"qb_norm: sim {tuple(s.shape)} and bank_sim {tuple(b.shape)} must be 2-D over the same "
            "gallery (same number of columns); score the bank's queries against the test gallery"
        )
    if k < 1 or k > s.shape[1]:
        raise ValueError(f"qb_norm: k={k} must be between 1 and the gallery size {s.shape[1]}")
    dtype = torch.float64 if s.dtype == torch.float64 else torch.float32
    s = s.to(dtype)
    b = b.to(dtype)
    activated = torch.zeros(s.shape[1], dtype=torch.bool, device=s.device)
    activated[torch.topk(b, k, dim=1).indices.reshape(-1)] = True
    rows = activated[s.argmax(dim=1)]
    log_norm = torch.logsumexp(beta * b, dim=0)  # [num_gallery]
    out = s.clone()
    out[rows] = beta * s[rows] - log_norm
    return out, qb_norm_row_name(bank, k, beta)


class PostProcess(Protocol):
    """A post-processing row: ``row_name`` and ``apply(sim, score_texts) -> sim``.

    ``score_texts(text_embeddings) -> [n, num_videos]`` scores extra caption embeddings against
    the evaluated gallery (QB-Norm's bank); ``directions`` lists the metric directions the row
    reports (``"t2v"``, ``"v2t"``).
    """

    row_name: str
    directions: tuple[str, ...]

    def apply(self, sim: Tensor, score_texts: Callable[[Tensor], Tensor]) -> Tensor: ...


@dataclass(frozen=True)
class DualSoftmax:
    """Dual softmax row spec (both directions are computed from the post-processed matrix)."""

    temperature: float = 100.0
    directions: tuple[str, ...] = ("t2v", "v2t")

    @property
    def row_name(self) -> str:
        return dsl_row_name(self.temperature)

    def apply(self, sim: Tensor, score_texts: Callable[[Tensor], Tensor] | None = None) -> Tensor:
        return dual_softmax(sim, self.temperature)[0]


@dataclass(frozen=True, eq=False)
class QBNorm:
    """QB-Norm row spec: ``bank_text`` are encoded bank captions, ``bank`` names their source."""

    bank_text: Tensor
    bank: str
    k: int = 1
    beta: float = 20.0
    directions: tuple[str, ...] = ("t2v",)

    @property
    def row_name(self) -> str:
        return qb_norm_row_name(self.bank, self.k, self.beta)

    def apply(self, sim: Tensor, score_texts: Callable[[Tensor], Tensor]) -> Tensor:
        bank_sim = score_texts(self.bank_text)
        return qb_norm(sim, bank_sim, self.k, self.beta, bank=self.bank)[0]


# ----------------------------------------------------------------------------- registry

# name -> ``factory(ctx, model) -> PostProcess``; ``ctx`` is the row being evaluated (its splits,
# tokenizer, device), ``model`` the trained model. Adding a post-processor: one class + one entry.
# Installed packages register through the entry-point group ``clip2video.postprocessors`` (a module
# that registers on import, or a factory registered under the entry's name).
PostProcessorFactory = Callable[[Any, Any], PostProcess]
POSTPROCESSORS: Registry[PostProcessorFactory] = Registry("post-processor", "postprocessors")


def register_postprocessor(
    name: str, *, overwrite: bool = False
) -> Callable[[PostProcessorFactory], PostProcessorFactory]:
    """Register ``factory(ctx, model) -> PostProcess`` under ``name`` (an ``eval.postprocess`` entry)."""
    return POSTPROCESSORS.register(name=name, overwrite=overwrite)


def list_postprocessors() -> list[str]:
    """Registered post-processor names, sorted (installed plugins included)."""
    return POSTPROCESSORS.list()


def check_postprocessors(names: list[str]) -> None:
    """Raise ``ValueError`` naming the unknown entries of ``eval.postprocess`` (before any work)."""
    unknown = [n for n in names if n not in POSTPROCESSORS]
    if unknown:
        raise ValueError(
            f"eval.postprocess: unknown {', '.join(map(repr, unknown))}; known: {', '.join(list_postprocessors())}"
        )


def build_postprocessors(names: list[str], *, ctx: Any, model: Any) -> list[PostProcess]:
    """One post-processor per name, built for the row ``ctx`` and its ``model``."""
    check_postprocessors(list(names))
    return [POSTPROCESSORS.get(name)(ctx, model) for name in names]


@register_postprocessor("dsl")
def _dsl(ctx: Any, model: Any) -> PostProcess:
    return DualSoftmax()


@register_postprocessor("qbnorm")
def _qbnorm(ctx: Any, model: Any) -> PostProcess:
    """QB-Norm with the training captions as the query bank (the row context encodes them)."""
    return QBNorm(bank_text=ctx.encode_captions(model, "train"), bank="train-captions")
