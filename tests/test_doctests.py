"""The docstring examples of the notebook API run as written (issue 11 §11)."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "clip2video",
    "clip2video.errors",
    "clip2video.registry",
    "clip2video.metrics",
    "clip2video.metrics.formulas",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.attempted > 0, f"{name} has no docstring examples"
    assert result.failed == 0


def test_top_level_exports() -> None:
    import clip2video

    assert set(clip2video.__all__) >= {"create_model", "list_models", "retrieval_metrics", "results"}
    from tests.support.protocol_fixtures import TINY_BACKBONE

    model = clip2video.create_model("meanp", clip=dict(TINY_BACKBONE), clip_weights=None, temporal_layers=1)
    assert sum(p.numel() for p in model.parameters()) > 0 and "meanp" in clip2video.list_models()
