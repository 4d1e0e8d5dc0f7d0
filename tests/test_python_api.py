"""The notebook API is honest (issue 19 §7): ``clip2video.evaluate`` evaluates a model on a
protocol's test split with no suite and returns metrics and a record; ``from_official_checkpoint``
and ``list_protocols`` are top-level names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import clip2video
from clip2video.data.synthetic import generate_synthetic
from clip2video.metrics import metrics_from_ranks, retrieval_metrics


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``DATA/synthetic/{annotations,videos}``: 6 test videos, seconds to write."""
    root = tmp_path_factory.mktemp("data")
    generate_synthetic(root / "synthetic", seed=0, num_train=2, num_val=1, num_test_pairs=3)
    return root


def test_evaluate_a_model_on_a_protocol_returns_metrics_and_a_record(data_root: Path, tmp_path: Path) -> None:
    from tests.support.toys import toy_model  # noqa: F401  (registers toy_mean_colour)

    model = clip2video.create_model("toy_mean_colour", dim=8).train()
    result = clip2video.evaluate(model, "synthetic", data_root=data_root, record_dir=tmp_path / "row")
    assert model.training, "the model's mode is restored"
    split = result.split
    assert result.sim.shape == (len(split.captions), len(split.video_ids)) == (12, 6)
    assert result.metrics == retrieval_metrics(result.sim, split.caption_video)
    record = result.record
    assert record is not None and record.name == "toy_mean_colour" and record.protocol == "synthetic"
    assert metrics_from_ranks(record.query_ranks()) == result.metrics, "the record rebuilds every number"
    assert record.config["model_config"] == model.config
    again = clip2video.evaluate(model, "synthetic", data_root=data_root, recall_ks=[1, 2], tie_policy="mean")
    assert "t2v_R2" in again.metrics and "t2v_R5" not in again.metrics and again.record is None


def test_evaluate_names_what_is_missing(tmp_path: Path) -> None:
    from clip2video.errors import Clip2VideoError

    model = clip2video.create_model("meanp", clip="tiny", config=_tiny(), clip_weights="none")
    with pytest.raises(Clip2VideoError, match="synthetic"):
        clip2video.evaluate(model, "synthetic", data_root=tmp_path)
    with pytest.raises(KeyError, match="Did you mean 'synthetic'"):
        clip2video.evaluate(model, "synthetc", data_root=tmp_path)


def test_top_level_names() -> None:
    from clip2video.engine.evaluate import evaluate_protocol
    from clip2video.models import from_official_checkpoint

    assert clip2video.from_official_checkpoint is from_official_checkpoint
    assert clip2video.evaluate is evaluate_protocol
    assert "msrvtt-1k-a" in clip2video.list_protocols()
    assert {"evaluate", "from_official_checkpoint", "list_protocols"} <= set(clip2video.__all__)


def test_a_model_rebuilt_from_its_config_scores_the_same(data_root: Path) -> None:
    """``create_model(**model.config)`` plus the weights gives the same numbers."""
    torch.manual_seed(0)
    model = clip2video.create_model(
        "tdb", clip="tiny", config=_tiny(), clip_weights="none", temporal_layers=1
    )
    twin = clip2video.create_model(**model.config)
    twin.load_state_dict(model.state_dict())
    a = clip2video.evaluate(model, "synthetic", data_root=data_root)
    b = clip2video.evaluate(twin, "synthetic", data_root=data_root)
    assert a.metrics == b.metrics and np.array_equal(a.sim.numpy(), b.sim.numpy())


def _tiny() -> dict:
    from tests.support.protocol_fixtures import TINY_BACKBONE

    return dict(TINY_BACKBONE)
