"""Official CLIP2Video / CLIP4Clip checkpoint layout: writing, reading, round trips, errors."""

from __future__ import annotations

import warnings

import pytest
import torch

from clip2video.errors import WeightsError
from clip2video.models import from_official_checkpoint
from tests.support.tiny_clip import (
    tiny_clip_config,
    tiny_model,
    tiny_official_checkpoint,
    tiny_text,
    tiny_video,
)

ALL = ["meanp", "seqtransf", "tdb", "tab", "clip2video"]


def logits(model, seed=0):
    ids, tmask = tiny_text(3, 10, seed=seed)
    frames, vmask = tiny_video(2, 6, lengths=[6, 3], seed=seed)
    with torch.no_grad():
        return model.similarity(model.encode_text(ids, tmask), model.encode_video(frames, vmask))


@pytest.mark.parametrize("name", ALL)
def test_round_trip_float32_gives_identical_logits(name):
    model = tiny_model(name, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no unused keys in our own layout
        loaded = from_official_checkpoint(model.official_state_dict(clip_dtype=torch.float32), variant=name)
    assert loaded.config == model.config | {"clip": loaded.config["clip"]}
    assert torch.equal(logits(model), logits(loaded))


def test_round_trip_fp16_clip_within_documented_tolerance(tmp_path):
    """fp16 CLIP weights (as released) change tiny-model logits by well under 1e-2 (logit scale 14.3)."""
    model = tiny_model("clip2video", seed=2)
    path = tmp_path / "pytorch_model.bin.0"
    torch.save(model.official_state_dict(), path)
    loaded = from_official_checkpoint(path, variant="clip2video")
    diff = (logits(model) - logits(loaded)).abs().max()
    assert 0 < diff < 1e-2


def test_official_layout_keys_and_dtypes():
    model = tiny_model("clip2video")
    sd = model.official_state_dict()
    heads = {k for k in sd if not k.startswith("clip.")}
    expected_prefixes = (
        "frame_position_embeddings.weight",
        "transformerClip.resblocks.0.attn.in_proj_weight",
        "transformerClip.resblocks.1.mlp.c_proj.bias",
        "type_position_embeddings.weight",
        "frame2t_attention.resblocks.0.ln_1.weight",
        "trans_layernorm.weight",
        "trans_layernorm.bias",
        "weight_center",
        "emb_center",
        "actionClip.resblocks.0.attn.out_proj.weight",
    )
    for key in expected_prefixes:
        assert key in heads, key
    assert not any(k.startswith(("tdb.", "tab.")) for k in sd)
    for key in (
        "clip.visual.conv1.weight",
        "clip.visual.class_embedding",
        "clip.visual.proj",
        "clip.visual.transformer.resblocks.1.mlp.c_fc.weight",
        "clip.token_embedding.weight",
        "clip.text_projection",
        "clip.logit_scale",
        "clip.transformer.resblocks.0.attn.in_proj_bias",
    ):
        assert sd[key].dtype == torch.float16, key
    assert all(sd[k].dtype == torch.float32 for k in heads)
    assert sd["frame_position_embeddings.weight"].shape == (32, 64)  # text context length x D
    assert sd["weight_center"].shape == (5, 64)


@pytest.mark.parametrize("name", ALL)
def test_every_variant_loads_from_a_tiny_official_file(name, tmp_path):
    path = tiny_official_checkpoint(name, tmp_path / "ckpt.bin", seed=3, temporal_layers=3, center_k=7)
    model = from_official_checkpoint(path, variant=name)
    assert model.config["clip"] == tiny_clip_config() | {"vision_cfg": model.config["clip"]["vision_cfg"]}
    assert model.config["clip"]["vision_cfg"]["width"] == 64
    assert model.config["clip"]["text_cfg"]["vocab_size"] == 1000
    if name != "meanp":
        assert model.config["temporal_layers"] == 3
    if name in ("tab", "clip2video"):
        assert model.config["center_k"] == 7
    assert torch.isfinite(logits(model)).all()


def test_architecture_read_from_tensors_64_pixel_frames(tmp_path):
    clip = tiny_clip_config(image_size=64, patch_size=16, context_length=77)
    path = tiny_official_checkpoint("clip2video", tmp_path / "c.bin", clip=clip)
    model = from_official_checkpoint(path)
    assert model.config["clip"]["vision_cfg"]["image_size"] == 64
    assert model.config["positions"] == 77
    frames, mask = tiny_video(1, 4, size=64)
    with torch.no_grad():
        assert model.encode_video(frames, mask).shape == (1, 128)


def test_tdb_projection_read_from_keys(tmp_path):
    path = tiny_official_checkpoint("clip2video", tmp_path / "mlp.bin", tdb_proj="mlp")
    assert from_official_checkpoint(path).tdb.proj == "mlp"
    path = tiny_official_checkpoint("tdb", tmp_path / "none.bin", tdb_proj="none")
    assert from_official_checkpoint(path, variant="tdb").tdb.proj == "none"


def test_missing_key_is_an_error_naming_it(tmp_path):
    sd = tiny_model("clip2video").official_state_dict()
    del sd["emb_center"]
    del sd["actionClip.resblocks.0.ln_2.bias"]
    with pytest.raises(WeightsError, match="emb_center") as info:
        from_official_checkpoint(sd, variant="clip2video")
    assert "actionClip.resblocks.0.ln_2.bias" in str(info.value)


def test_missing_clip_key_is_an_error_naming_it():
    sd = tiny_model("meanp").official_state_dict()
    del sd["clip.text_projection"]
    with pytest.raises(WeightsError, match="clip.text_projection"):
        from_official_checkpoint(sd, variant="meanp")


def test_unused_keys_are_listed_in_one_warning():
    sd = tiny_model("clip2video").official_state_dict()
    with pytest.warns(UserWarning, match="not used") as record:
        model = from_official_checkpoint(sd, variant="meanp")
    messages = [str(r.message) for r in record if "not used" in str(r.message)]
    assert len(messages) == 1
    for key in ("trans_layernorm.weight", "weight_center", "frame_position_embeddings.weight"):
        assert key in messages[0]
    assert model.config["name"] == "meanp"


def test_clip4clip_layout_loads_under_its_own_names():
    """CLIP4Clip seqTransf: clip.* + frame_position_embeddings + transformerClip, nothing else."""
    source = tiny_model("seqtransf", seed=4)
    sd = source.official_state_dict()
    assert {k.split(".")[0] for k in sd} == {"clip", "frame_position_embeddings", "transformerClip"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = from_official_checkpoint(sd, variant="seqTransf")
        meanp = from_official_checkpoint(tiny_model("meanp").official_state_dict(), variant="meanP")
    assert loaded.config["name"] == "seqtransf" and meanp.config["name"] == "meanp"
    assert torch.allclose(logits(source), logits(loaded), atol=1e-2)


def test_module_prefix_and_wrapped_state_dict_are_accepted():
    sd = tiny_model("tab").official_state_dict(clip_dtype=torch.float32)
    wrapped = {"state_dict": {"module." + k: v for k, v in sd.items()}}
    model = from_official_checkpoint(wrapped, variant="tab", center_weight=0.25)
    assert model.center_weight == 0.25


def test_missing_file_names_it(tmp_path):
    with pytest.raises(WeightsError, match="nope.bin"):
        from_official_checkpoint(tmp_path / "nope.bin")


def test_official_and_retrieval_do_not_import_each_other_both_ways():
    """models/official.py imports retrieval (to build variants); retrieval must not import official,
    not even inside a function (the renames live in models/layout.py)."""
    import ast
    from pathlib import Path

    import clip2video.models as pkg

    def imported(name: str) -> set[str]:
        tree = ast.parse((Path(pkg.__file__).parent / f"{name}.py").read_text())
        found: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module)
                found.update(f"{node.module}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
        return found

    assert "clip2video.models.retrieval" in imported("official")
    assert not any(m.startswith("clip2video.models.official") for m in imported("retrieval"))
    assert not any(
        m.startswith(("clip2video.models.official", "clip2video.models.retrieval"))
        for m in imported("layout")
    )
