"""Suites are data: every shipped suite loads, unknown keys and bad types are named."""

from __future__ import annotations

import pytest

from clip2video.experiments.suite import SuiteError, list_suites, load_suite

PAPER_K = {"msrvtt-1k-a": 5, "msvd": 5, "vatex-1k5": 7, "vatex-hgr": 7}


def test_every_shipped_suite_loads():
    names = list_suites()
    for required in ("ablation", "smoke", *PAPER_K):
        assert required in names
    for name in names:
        suite = load_suite(name)
        assert suite.name == name
        assert suite.models


@pytest.mark.parametrize("name", sorted(PAPER_K))
def test_paper_suites_use_the_paper_settings(name):
    s = load_suite(name)
    assert s["backbone"]["clip"] == "ViT-B-32-quickgelu"
    assert s["frames"]["max_frames"] == 12 and s["frames"]["image_size"] == 224
    assert s["text"]["max_words"] == 32
    assert s["model"]["center_k"] == PAPER_K[name] and s["model"]["center_weight"] == 0.5
    assert s["model"]["temporal_layers"] == 4
    t = s["train"]
    assert (t["epochs"], t["batch_size"], t["lr"], t["coef_lr"], t["weight_decay"]) == (
        5,
        128,
        1e-4,
        1e-3,
        0.2,
    )
    assert s["zero_shot"] is True and s["eval"]["legacy"] is True
    assert t["select_on"] != "test"
    assert s.models == ["meanp", "seqtransf", "tdb", "tab", "clip2video"]


def test_ablation_is_offline():
    s = load_suite("ablation")
    assert s.protocol == "synthetic"
    assert s["backbone"]["clip_weights"] == "none"


def test_unknown_key_is_named(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\nprotocol = "synthetic"\nmodels = ["meanp"]\n[train]\nepochs = 1\nlrr = 3\n')
    with pytest.raises(SuiteError, match=r"train\.lrr"):
        load_suite(bad)


def test_wrong_type_is_named(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\nprotocol = "synthetic"\nmodels = ["meanp"]\n[train]\nepochs = "five"\n')
    with pytest.raises(SuiteError, match=r"train\.epochs.*int"):
        load_suite(bad)


def test_overrides_merge_and_validate():
    s = load_suite("smoke", overrides={"train": {"epochs": 1}})
    assert s["train"]["epochs"] == 1
    assert s["train"]["batch_size"] == load_suite("smoke")["train"]["batch_size"]
    with pytest.raises(SuiteError, match="nope"):
        load_suite("smoke", overrides={"nope": 1})


def test_missing_suite_lists_known():
    with pytest.raises(SuiteError, match="ablation"):
        load_suite("does-not-exist")


def test_validation_selection_only_where_the_protocol_has_a_validation_split():
    from clip2video.data.protocols import get_protocol

    for name in list_suites():
        s = load_suite(name)
        if s["train"]["select_on"] == "val":
            assert get_protocol(s.protocol).val_split, f"suite {name} selects on a validation split it lacks"
