"""Suites are data: every shipped suite loads, unknown keys and bad types are named."""

from __future__ import annotations

import pytest

from clip2video.experiments.suite import SuiteError, load_suite, shipped_suites

PAPER_K = {"msrvtt-1k-a": 5, "msvd": 5, "vatex-1k5": 7, "vatex-hgr": 7}


def test_every_shipped_suite_loads():
    names = shipped_suites()
    for required in ("ablation", "ablation-scratch", "smoke", *PAPER_K):
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
    """``ablation``: the shipped pretrained tiny CLIP, frozen; ``ablation-scratch``: the first offline
    ablation, a tiny CLIP from scratch (fine-tuned), unchanged."""
    s = load_suite("ablation")
    assert s.protocol == "synthetic"
    assert (s["backbone"]["clip"], s["backbone"]["clip_weights"]) == ("tiny-synthetic", "shipped")
    assert s["train"]["backbone"] == "frozen"
    scratch = load_suite("ablation-scratch")
    assert scratch.protocol == "synthetic" and scratch["backbone"]["clip_weights"] == "none"
    assert scratch["train"]["backbone"] == "finetune"


def test_the_ablation_answers_each_question_with_its_own_table():
    """Components (with TAB on top of TDB), TDB's projection, K (the protocol's K = 5 is the plain
    clip2video row) and w (from clip2video's stored similarity parts), each against its reference."""
    from clip2video.data.protocols import get_protocol

    s = load_suite("ablation")
    assert s.settings.model.center_k == get_protocol("synthetic").settings()["model"]["center_k"] == 5
    tables = {t.name: t for t in s.settings.tables}
    assert list(tables) == ["components", "tdb-projection", "centers", "weights"]
    components = tables["components"]
    assert components.rows == ("meanp", "tdb", "tab", "clip2video") and components.reference == "meanp"
    assert components.compare == (("clip2video", "tdb"),)
    assert tables["tdb-projection"].rows == ("tdb", "tdb-mlp", "tdb-none")
    assert tables["centers"].reference == "clip2video"
    ks = [s.row_settings(r).model.center_k for r in s.rows if r.model == "clip2video"]
    assert sorted(ks) == [1, 3, 5, 7, 9]
    weights = tables["weights"]
    assert (weights.kind, weights.row, weights.reference) == ("weights", "clip2video", 0.5)
    assert weights.weights == (0.0, 0.25, 0.5, 0.75, 1.0)


def test_the_scratch_ablation_keeps_every_setting_of_the_first_ablation():
    """``ablation-scratch`` is the suite ``ablation`` was before the pretrained backbone (its records
    and the committed tables stay comparable): every resolved setting but the name."""
    scratch = load_suite("ablation-scratch").settings.to_dict()
    assert scratch.pop("name") == "ablation-scratch"
    assert scratch == FIRST_ABLATION


FIRST_ABLATION = {
    "description": "Temporal-module ablation on the offline synthetic protocol (tiny CLIP from scratch)",
    "protocol": "synthetic",
    "models": ["meanp", "seqtransf", "tdb", "tab", "clip2video"],
    "seeds": [0, 1, 2],
    "zero_shot": False,
    "run": {"jobs": 0, "threads": 1},
    "data": {
        "annotations": "",
        "videos": "",
        "allow_missing": False,
        "allow_outside_links": False,
        "num_workers": 0,
        "frame_cache_mb": 512,
    },
    "synthetic": {
        "seed": 0,
        "num_train": 600,
        "num_val": 60,
        "num_test_pairs": 60,
        "captions_per_video": 2,
        "height": 32,
        "width": 32,
    },
    "backbone": {
        "clip": "tiny",
        "clip_weights": "none",
        "config": {
            "embed_dim": 64,
            "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8},
            "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "layers": 2},
        },
    },
    "model": {"tdb_proj": "selfattn", "center_weight": 0.5, "temporal_layers": 2, "center_k": 5},
    "frames": {"decode": "direct", "extraction_fps": 5.0, "stride": 1, "max_frames": 12, "image_size": 32},
    "text": {"max_words": 32},
    "train": {
        "epochs": 6,
        "batch_size": 32,
        "grad_accum": 1,
        "lr": 1e-3,
        "coef_lr": 1.0,
        "weight_decay": 0.2,
        "warmup": 0.1,
        "clip_grad": 1.0,
        "select_on": "final",
        "val_every": 1,
        "backbone": "finetune",
    },
    "eval": {
        "tie_policy": "mean",
        "v2t": "official",
        "recall_ks": [1, 5, 10],
        "legacy": False,
        "time_reversal": True,
        "bootstrap": 1000,
        "batch_size": 64,
        "save_sim": True,  # (added later: it kept its similarity matrices, as every suite did)
        "postprocess": [],
    },
}


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

    for name in shipped_suites():
        s = load_suite(name)
        if s["train"]["select_on"] == "val":
            assert get_protocol(s.protocol).val_split, f"suite {name} selects on a validation split it lacks"


# ----------------------------------------------------------------------------- one rule for settings

PROTOCOL_KEYS = (
    ("frames", "extraction_fps"),
    ("frames", "stride"),
    ("frames", "max_frames"),
    ("frames", "image_size"),
    ("text", "max_words"),
    ("model", "center_k"),
)


def _write(tmp_path, text: str):
    path = tmp_path / "s.toml"
    path.write_text('name = "s"\nmodels = ["meanp"]\n' + text)
    return path


@pytest.mark.parametrize("protocol", ["msrvtt-1k-a", "vatex-1k5", "msvd", "synthetic"])
def test_a_suite_that_omits_the_protocol_keys_gets_the_protocols_values(tmp_path, protocol):
    """defaults.toml < the protocol's defaults < the suite file < --set."""
    from clip2video.data.protocols import get_protocol

    p = get_protocol(protocol)
    s = load_suite(_write(tmp_path, f'protocol = "{protocol}"\n'))
    assert s["frames"] == {
        "decode": "direct",  # not a protocol key: defaults.toml's
        "extraction_fps": p.extraction_fps,
        "stride": p.stride,
        "max_frames": p.max_frames,
        "image_size": p.image_size,
    }
    assert s["text"]["max_words"] == p.max_words and s["model"]["center_k"] == p.center_k
    assert s["model"]["center_weight"] == 0.5  # not a protocol key: defaults.toml's


def test_the_suite_file_beats_the_protocol_and_set_beats_both(tmp_path):
    path = _write(
        tmp_path, 'protocol = "vatex-1k5"\n[model]\ncenter_k = 4\n[frames]\nstride = 3\nextraction_fps = 2\n'
    )
    s = load_suite(path)
    assert (s["model"]["center_k"], s["frames"]["stride"], s["frames"]["extraction_fps"]) == (4, 3, 2.0)
    assert s["text"]["max_words"] == 32  # still the protocol's
    s = load_suite(path, {"model": {"center_k": 3}, "text": {"max_words": 20}})
    assert (s["model"]["center_k"], s["text"]["max_words"], s["frames"]["stride"]) == (3, 20, 3)
    assert load_suite("msrvtt-1k-a", {"model": {"center_k": 3}})["model"]["center_k"] == 3


def test_set_protocol_brings_that_protocols_defaults(tmp_path):
    """``--set protocol=...`` switches the protocol layer too, on a file or on a loaded Suite."""
    from clip2video.experiments.suite import suite_from_settings

    s = load_suite(_write(tmp_path, 'protocol = "msrvtt-1k-a"\n'), {"protocol": "vatex-1k5"})
    assert (s["model"]["center_k"], s["frames"]["stride"]) == (7, 1)
    built = suite_from_settings("b", {"protocol": "msrvtt-1k-a", "models": ["meanp"]})
    assert (built["model"]["center_k"], built["frames"]["stride"]) == (5, 2)
    moved = load_suite(built, {"protocol": "vatex-1k5"})
    assert (moved["model"]["center_k"], moved["frames"]["stride"]) == (7, 1)
    assert load_suite(built, {"model": {"center_k": 3}})["model"]["center_k"] == 3


def test_protocol_keys_are_checked_like_any_other(tmp_path):
    with pytest.raises(SuiteError, match=r"frames\.stride.*int"):
        load_suite(_write(tmp_path, 'protocol = "msvd"\n[frames]\nstride = "two"\n'))
    with pytest.raises(SuiteError, match=r"frames\.stride = 0 is out of range"):
        load_suite(_write(tmp_path, 'protocol = "msvd"\n[frames]\nstride = 0\n'))
    with pytest.raises(SuiteError, match=r"frames\.extraction_fps = 0\.0 is out of range"):
        load_suite(_write(tmp_path, 'protocol = "msvd"\n[frames]\nextraction_fps = 0\n'))
    with pytest.raises(SuiteError, match="Unknown protocol 'nope'"):
        load_suite(_write(tmp_path, 'protocol = "nope"\n[frames]\nmax_frames = 4\n'))
    with pytest.raises(SuiteError, match="'protocol' is required"):
        load_suite(_write(tmp_path, "[frames]\nmax_frames = 4\n"))


def test_shipped_suites_name_a_protocol_key_only_where_they_differ():
    """Each shipped suite resolves every protocol key to its protocol's value unless its file sets
    it; a value a file sets must differ from the protocol's (no silent repeats)."""
    from clip2video.data.protocols import get_protocol
    from clip2video.experiments.suite import suite_file_settings

    for name in shipped_suites():
        declared = suite_file_settings(name)
        s = load_suite(name)
        defaults = get_protocol(s.protocol).settings()
        for section, key in PROTOCOL_KEYS:
            if key in declared.get(section, {}):
                assert s[section][key] != defaults[section][key], (
                    f"{name}: {section}.{key} repeats the protocol"
                )
            else:
                assert s[section][key] == defaults[section][key], (name, section, key)


# What every shipped suite resolved to before the protocol keys came from the protocol (stride and
# extraction_fps were then read from the protocol by the row): the numbers must not move.
SHIPPED_PROTOCOL_VALUES = {
    "ablation": (5.0, 1, 12, 32, 32, 5),
    "ablation-scratch": (5.0, 1, 12, 32, 32, 5),
    "smoke": (5.0, 1, 12, 32, 32, 5),
    "msrvtt-1k-a": (5.0, 2, 12, 224, 32, 5),
    "msrvtt-full": (5.0, 2, 12, 224, 32, 5),
    "msvd": (5.0, 1, 12, 224, 32, 5),
    "vatex-1k5": (5.0, 1, 12, 224, 32, 7),
    "vatex-hgr": (5.0, 1, 12, 224, 32, 7),
}


@pytest.mark.parametrize("name", sorted(SHIPPED_PROTOCOL_VALUES))
def test_every_shipped_suite_resolves_to_the_values_it_always_had(name):
    s = load_suite(name)
    assert tuple(s[section][key] for section, key in PROTOCOL_KEYS) == SHIPPED_PROTOCOL_VALUES[name]
    assert set(SHIPPED_PROTOCOL_VALUES) == set(shipped_suites())
