"""A toy post-processor in one file: column centring (subtract each video's mean score).

One class and one registration. Centring a column changes how videos compare within a caption's
row (text -> video ranks) but not how captions compare within a video's column, so the row
reports only ``t2v``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from clip2video.engine import postprocess


@dataclass(frozen=True)
class ColumnCentring:
    """``sim - sim.mean(dim=0)``: a video that scores high against every caption loses its lead."""

    directions: tuple[str, ...] = ("t2v",)

    @property
    def row_name(self) -> str:
        return "+centre"

    def apply(self, sim: Tensor, score_texts: Callable[[Tensor], Tensor] | None = None) -> Tensor:
        return sim - sim.mean(dim=0, keepdim=True)


def build(ctx: Any, model: Any) -> ColumnCentring:
    """The registry's factory: ``eval.postprocess = ["centre"]`` builds one per row."""
    return ColumnCentring()


# The one registration.
postprocess.register_postprocessor("centre")(build)
assert "centre" in postprocess.list_postprocessors(), (
    "the registration above must make eval.postprocess accept it"
)
