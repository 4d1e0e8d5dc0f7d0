"""Pretraining the synthetic world's backbone (engine/pretrain.py) and naming shipped backbones.

A tiny recipe (48 clips, a 1-layer CLIP) runs in a few seconds: its loss falls, the same recipe
gives bitwise identical weights and file bytes, and the saved ``.npz`` loads back (no pickle) into
``build_clip`` under the shipped-backbone spellings, with its checksum checked.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from clip2video.engine.cache import state_dict_hash
from clip2video.engine.pretrain import PretrainRecipe, make_pretrain_data, pretrain, save_pretrained
from clip2video.errors import WeightsError
from clip2video.fingerprint import file_sha256
from clip2video.models import build_clip, create_model, shipped
from clip2video.models.shipped import ShippedBackbone, read_npz

TINY = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "layers": 1},
}


def tiny_recipe(**overrides) -> PretrainRecipe:
    values = dict(name="test-tiny", num_clips=48, clip=TINY, epochs=4, batch_size=16, lr=2e-3)
    values.update(overrides)
    return PretrainRecipe(**values)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """One tiny pretraining, saved: (result, weights path, recipe path)."""
    result = pretrain(tiny_recipe())
    out = tmp_path_factory.mktemp("pretrained")
    weights, recipe = save_pretrained(result, out, command=["clip2video", "pretrain", "--out", str(out)])
    return result, weights, recipe


def test_pretraining_data_is_disjoint_seeded_and_single_frames():
    recipe = tiny_recipe(num_clips=6)
    a, b = make_pretrain_data(recipe), make_pretrain_data(recipe)
    assert np.array_equal(a.frames, b.frames) and torch.equal(a.ids, b.ids)
    other = make_pretrain_data(tiny_recipe(num_clips=6, data_seed=0))
    assert not np.array_equal(a.frames, other.frames)  # another seed draws other clips
    assert a.frames.shape == (6, 12, 32, 32, 3) and (a.num_frames == 12).all()
    assert all(len(c) == 3 for c in a.captions)  # every template of the clip's family


def test_loss_falls(pretrained):
    result, _, _ = pretrained
    losses = result.losses
    assert len(losses) == 4
    assert losses[-1] < losses[0] - 0.05, losses


def test_same_recipe_gives_identical_weights_and_bytes(pretrained, tmp_path):
    result, weights, _ = pretrained
    again = pretrain(tiny_recipe())
    assert state_dict_hash(again.clip.state_dict()) == state_dict_hash(result.clip.state_dict())
    copy, _ = save_pretrained(again, tmp_path)
    assert copy.read_bytes() == weights.read_bytes()
    other = pretrain(tiny_recipe(train_seed=1, epochs=1))
    assert state_dict_hash(other.clip.state_dict()) != state_dict_hash(result.clip.state_dict())


def test_saved_file_round_trips_without_pickle(pretrained):
    result, weights, recipe_path = pretrained
    state = read_npz(weights)
    own = result.clip.state_dict()
    assert set(state) == set(own)
    assert all(torch.equal(state[k], own[k]) for k in own)
    with np.load(weights, allow_pickle=False) as archive:  # plain arrays: no object dtype anywhere
        assert all(archive[k].dtype != object for k in archive.files)
    recipe = json.loads(recipe_path.read_text())
    assert recipe["sha256"] == file_sha256(weights)
    assert recipe["size_bytes"] == weights.stat().st_size
    assert recipe["recipe"]["num_clips"] == 48 and recipe["recipe"]["threads"] == 1
    assert recipe["command"].startswith("clip2video pretrain")
    assert len(recipe["epoch_losses"]) == 4
    # an .npz path is a clip_weights file like any other
    model = create_model("meanp", clip=TINY, clip_weights=str(weights))
    assert state_dict_hash(model.clip.state_dict()) == state_dict_hash(own)


@pytest.fixture
def registered(pretrained, tmp_path, monkeypatch):
    """The tiny weights registered as a shipped backbone in a temporary weights folder."""
    _, weights, recipe = pretrained
    folder = tmp_path / "weights"
    folder.mkdir()
    (folder / "test-tiny.npz").write_bytes(weights.read_bytes())
    (folder / "test-tiny.json").write_text(recipe.read_text())
    monkeypatch.setattr(shipped, "WEIGHTS_DIR", folder)
    entry = ShippedBackbone("test-tiny", TINY, "test-tiny.npz", file_sha256(weights))
    monkeypatch.setitem(shipped.SHIPPED_BACKBONES, "test-tiny", entry)
    return folder / "test-tiny.npz"


def test_shipped_spellings_load_the_checked_weights(pretrained, registered):
    result, _, _ = pretrained
    want = state_dict_hash(result.clip.state_dict())
    by_name, arch = build_clip("test-tiny", "shipped")
    assert state_dict_hash(by_name.state_dict()) == want and arch["quick_gelu"] is True
    tagged, _ = build_clip({"embed_dim": 64}, "shipped:test-tiny")  # the file decides the architecture
    assert state_dict_hash(tagged.state_dict()) == want
    random_init, _ = build_clip("test-tiny", None)  # the name alone: the architecture, random init
    assert state_dict_hash(random_init.state_dict()) != want
    assert random_init.visual.conv1.weight.shape == by_name.visual.conv1.weight.shape
    model = create_model("tdb", clip="test-tiny", clip_weights="shipped", temporal_layers=1)
    assert model.config["clip"] == "test-tiny" and model.config["clip_weights"] == "shipped"


def test_corrupt_or_missing_shipped_weights_fail_naming_the_file(registered):
    data = bytearray(registered.read_bytes())
    data[len(data) // 2] ^= 0xFF
    registered.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match=r"test-tiny\.npz has sha256 .* \(corrupt or modified\)"):
        build_clip("test-tiny", "shipped")
    registered.unlink()
    with pytest.raises(WeightsError, match=r"test-tiny\.npz is missing"):
        build_clip("test-tiny", "shipped")


def test_bad_shipped_names_are_one_line_errors():
    with pytest.raises(WeightsError, match="no shipped backbone 'nope'"):
        build_clip("ViT-B-32", "shipped:nope")
    with pytest.raises(WeightsError, match="needs backbone.clip to name a shipped backbone"):
        build_clip({"embed_dim": 64}, "shipped")


def test_the_shipped_backbone_matches_its_recipe_and_checksum():
    for name, entry in shipped.SHIPPED_BACKBONES.items():
        if not entry.path.is_file():
            pytest.fail(f"shipped backbone {name}: {entry.path} is not in the package")
        recipe = shipped.read_recipe(name)
        assert recipe["sha256"] == entry.sha256 == file_sha256(entry.path)
        assert recipe["size_bytes"] == entry.path.stat().st_size
        state = shipped.shipped_state_dict(name)
        model, _ = build_clip(name, "shipped")
        assert state_dict_hash(model.state_dict()) == state_dict_hash(state)
        assert Path(entry.path).stat().st_size < 20 * 2**20


def test_cli_verb_writes_the_weights_and_recipe(tmp_path, capsys):
    from clip2video.cli import main

    clip = json.dumps(TINY, separators=(",", ":"))
    code = main(
        [
            "pretrain",
            "--out",
            str(tmp_path),
            "--no-progress",
            "--set",
            "name=cli-tiny",
            "num_clips=16",
            "epochs=1",
            "batch_size=8",
            f"clip={clip}",
        ]
    )
    assert code == 0
    recipe = json.loads((tmp_path / "cli-tiny.json").read_text())
    assert recipe["sha256"] == file_sha256(tmp_path / "cli-tiny.npz")
    assert recipe["recipe"]["clip"] == TINY and recipe["recipe"]["epochs"] == 1
    assert recipe["command"].startswith("clip2video pretrain --out ")
    assert "sha256" in capsys.readouterr().out
    assert main(["pretrain", "--out", str(tmp_path), "--set", "bogus=1"]) == 1
    assert "bogus=1" in capsys.readouterr().err
