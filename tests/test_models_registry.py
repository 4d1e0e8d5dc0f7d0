"""Registry, configs, CLIP sources and the initialisation of new modules from CLIP's text tower."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from clip2video.errors import ConfigError, UnknownNameError, WeightsError
from clip2video.models import backbone, create_model, list_models, register_model
from clip2video.models.backbone import (
    RandomWeightsWarning,
    build_clip,
    build_clip_from_config,
    infer_clip_config,
)
from clip2video.models.retrieval import RetrievalModel
from tests.support.tiny_clip import tiny_clip_config, tiny_model, tiny_text, tiny_video

ALL = ["meanp", "seqtransf", "tdb", "tab", "clip2video"]


# ---------------------------------------------------------------- registry
def test_list_and_unknown_name():
    assert list_models("t?b") == ["tab", "tdb"]
    with pytest.raises(KeyError, match="clip2video"):
        create_model("clip3video")


def test_new_model_plugs_in_with_one_decorator():
    @register_model
    def _test_only_double_meanp(**config):
        return create_model("meanp", **config)

    assert "_test_only_double_meanp" in list_models()
    model = create_model("_test_only_double_meanp", clip=tiny_clip_config())
    assert isinstance(model, RetrievalModel)
    with pytest.raises(ValueError, match="already registered"):
        register_model(name="_test_only_double_meanp")(lambda **c: None)


@pytest.mark.parametrize("name", ALL)
def test_config_is_json_and_rebuilds_the_model(name):
    model = tiny_model(name, perturb=False)
    config = json.loads(json.dumps(model.config))
    assert config["name"] == name
    rebuilt = create_model(**config)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
        k: v.shape for k, v in model.state_dict().items()
    }


def test_options_each_variant_records():
    assert "center_k" not in tiny_model("meanp", center_k=9).config  # accepted, unused
    assert tiny_model("tdb", tdb_proj="mlp").config["tdb_proj"] == "mlp"
    assert tiny_model("tab", center_k=3).tab.center_k == 3
    with pytest.raises(ValueError, match="tdb_proj"):
        tiny_model("tdb", tdb_proj="lstm")
    with pytest.raises(TypeError):
        tiny_model("meanp", centre_k=3)


def test_clip_parameters_live_under_clip():
    model = tiny_model("clip2video", perturb=False)
    names = [n for n, _ in model.named_parameters()]
    clip_names = {n for n in names if n.startswith("clip.")}
    assert clip_names == {"clip." + n for n, _ in model.clip.named_parameters()}
    assert any(n.startswith("tdb.") for n in names) and any(n.startswith("tab.") for n in names)
    assert "logit_scale" not in dict(model.named_parameters())  # exposed as a property of clip's
    assert model.logit_scale is model.clip.logit_scale


# --------------------------------------------------------- initialisation
def test_new_modules_initialised_from_clip_text_tower():
    model = tiny_model("clip2video", perturb=False, temporal_layers=4)
    clip = model.clip
    torch.testing.assert_close(model.frame_position_embeddings.weight, clip.positional_embedding)
    torch.testing.assert_close(model.tdb.type_position_embeddings.weight, clip.positional_embedding[0:2])

    def same(a: nn.Module, b: nn.Module) -> bool:
        return all(
            torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
        )

    text = clip.transformer.resblocks
    assert same(model.transformerClip.resblocks[0], text[0])
    assert same(model.transformerClip.resblocks[1], text[1])
    # the tiny text tower has 2 blocks: temporal blocks 2 and 3 keep the default init
    assert not same(model.transformerClip.resblocks[2], text[0])
    assert torch.equal(model.transformerClip.resblocks[3].ln_1.weight, torch.ones(64))
    assert same(model.tdb.frame2t_attention.resblocks[0], text[0])
    assert same(model.tab.actionClip.resblocks[0], text[0])


def test_mlp_projection_initialised_from_visual_proj_and_centers_std():
    clip = tiny_clip_config(width=128, embed_dim=64)
    clip["text_cfg"]["width"] = 64
    clip["text_cfg"]["heads"] = 1
    torch.manual_seed(0)
    model = create_model("clip2video", clip=clip, tdb_proj="mlp", center_k=400)
    torch.testing.assert_close(model.tdb.frame2t_projection, model.clip.visual.proj[:64])
    std = model.tab.weight_center.std().item()
    assert abs(std - 64**-0.5) < 0.01  # D^-0.5 per models.md, over 400 x 64 draws
    assert model.tab.emb_center.shape == (400, 64)


# ----------------------------------------------------------------- backbone
def test_infer_clip_config_from_state_dict():
    cfg = tiny_clip_config(image_size=64, context_length=77)
    model = build_clip_from_config(cfg)
    assert infer_clip_config(model.state_dict()) == cfg


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("kind", ["state_dict_fp16", "jit"])
def test_local_openai_archive(kind, tmp_path):
    torch.manual_seed(0)
    source = build_clip_from_config(tiny_clip_config()).eval()
    path = tmp_path / "ViT-tiny.pt"
    if kind == "jit":
        torch.jit.script(source).save(str(path))
    else:
        torch.save({k: v.half() for k, v in source.state_dict().items()}, path)
    model = create_model("meanp", clip="ViT-B-32-quickgelu", clip_weights=str(path)).eval()
    assert model.config["clip_weights"] == str(path)
    assert model.clip.visual.conv1.weight.dtype == torch.float32
    assert infer_clip_config(model.clip.state_dict()) == tiny_clip_config()
    frames, mask = tiny_video(1, 2)
    with torch.no_grad():
        want = torch.nn.functional.normalize(source.encode_image(frames[0]), dim=-1).mean(0)
        got = model.encode_video(frames, mask)[0]
    tol = 0 if kind == "jit" else 5e-3
    torch.testing.assert_close(got, want / want.norm(), atol=tol + 1e-6, rtol=0)


def test_missing_weights_file_names_it(tmp_path):
    with pytest.raises(WeightsError, match="absent.pt"):
        build_clip("ViT-B-32", tmp_path / "absent.pt")


def test_wrong_layout_names_keys(tmp_path):
    path = tmp_path / "bad.pt"
    torch.save({"visual.conv1.weight": torch.zeros(64, 3, 16, 16)}, path)
    with pytest.raises(WeightsError, match="text_projection"):
        build_clip("ViT-B-32", path)


def test_openai_weights_offline_fail_fast_naming_the_file(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(backbone, "_cached_pretrained", lambda name, tag: None)
    with pytest.raises(WeightsError, match=r"ViT-B-32\.pt") as info:
        create_model("clip2video", clip="ViT-B-32-quickgelu", clip_weights="openai")
    assert "HF_HUB_OFFLINE" in str(info.value)


def test_unreachable_hub_fails_fast(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(backbone, "_cached_pretrained", lambda name, tag: None)
    monkeypatch.setattr(backbone, "HUB_HOST", ("192.0.2.1", 9))  # TEST-NET-1: never answers
    monkeypatch.setattr(backbone, "PROBE_TIMEOUT_S", 0.5)
    with pytest.raises(WeightsError, match="cannot be reached"):
        build_clip("ViT-B-32-quickgelu", "openai")


@pytest.mark.slow
def test_vit_b_32_random_init_builds():
    model = create_model("clip2video", clip="ViT-B-32", clip_weights="none")
    assert model.embed_dim == 512 and model.config["positions"] == 77
    assert model.transformerClip.heads == 8 and len(model.transformerClip.resblocks) == 4
    assert model.tab.weight_center.shape == (5, 512)
    ids, tmask = tiny_text(1, 32)
    with torch.no_grad():
        assert model.encode_text(ids, tmask).shape == (1, 1024)


def test_a_model_receives_only_the_options_it_declares():
    from torch import nn

    from clip2video.models.registry import MODELS, create_model_from_options, declared_options

    @register_model(name="toy-declared")
    def toy(clip: str = "tiny", center_k: int = 5) -> nn.Module:
        module = nn.Identity()
        module.config = {"clip": clip, "center_k": center_k}
        return module

    try:
        assert declared_options("toy-declared") == {"clip", "center_k"}
        model = create_model_from_options(
            "toy-declared", {"clip": "x", "center_k": 3, "tdb_proj": "selfattn"}
        )
        # tdb_proj dropped, not an error; create_model stamps the registry name
        assert model.config == {"clip": "x", "center_k": 3, "name": "toy-declared"}
        assert declared_options("meanp") is None  # a **config factory takes every option
        with pytest.raises(KeyError, match="Unknown model 'nope'"):
            declared_options("nope")
    finally:
        MODELS.unregister("toy-declared")


# ---------------------------------------------------------- the factory contract
@pytest.mark.parametrize("name", ALL)
def test_create_model_of_its_config_round_trips_with_the_same_weights(name):
    """``create_model(**model.config)`` (the contract) and ``create_model(name, **options)`` rebuild
    the same architecture; seeded alike, the same weights."""
    torch.manual_seed(0)
    model = tiny_model(name, perturb=False)
    torch.manual_seed(0)
    rebuilt = create_model(**json.loads(json.dumps(model.config)))
    assert rebuilt.config == model.config
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), rebuilt.state_dict().values(), strict=True)
    )
    options = {k: v for k, v in model.config.items() if k != "name"}
    assert create_model(name, **options).config == model.config
    with pytest.raises(ConfigError, match="two different model names"):
        create_model("meanp" if name != "meanp" else "tdb", **model.config)


def test_create_model_takes_the_suite_spellings():
    """``clip="tiny"`` with ``config=`` (a suite's [backbone.config]) and ``clip_weights="none"``."""
    model = create_model("tab", clip="tiny", config=tiny_clip_config(), clip_weights="none")
    assert model.config["clip"] == tiny_clip_config() and model.config["clip_weights"] is None
    assert create_model(**model.config).config == model.config
    with pytest.raises(WeightsError, match="clip='tiny' needs config="):
        create_model("meanp", clip="tiny")
    with pytest.raises(WeightsError, match="with clip='tiny'"):
        create_model("meanp", clip=tiny_clip_config(), config=tiny_clip_config())


def test_a_named_backbone_without_weights_warns_that_they_are_random(monkeypatch):
    """``create_model("clip2video")`` would silently be a random ViT-B-32: it warns, naming what to
    pass; ``clip_weights="none"`` (or None) says the random start is deliberate."""
    built = []
    monkeypatch.setattr(
        "clip2video.models.retrieval.build_clip",
        lambda clip, weights, quick_gelu: (
            built.append((clip, weights)) or backbone.build_clip(tiny_clip_config())
        ),
    )
    with pytest.warns(
        RandomWeightsWarning, match=r"create_model\('clip2video'\).*RANDOM.*clip_weights='openai'"
    ):
        create_model("clip2video")
    assert built[-1] == ("ViT-B-32", None)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        create_model("meanp", clip="ViT-B-32", clip_weights="none")
        create_model("meanp", clip="ViT-B-32", clip_weights=None)
    assert built[-2:] == [("ViT-B-32", None), ("ViT-B-32", None)]


def test_unknown_model_suggests_the_closest_name():
    with pytest.raises(
        UnknownNameError,
        # other tests may register a model whose name also begins with 'clip2vid': then it lists both
        match=r"Unknown model 'clip2vid'. Did you mean (one of )?'clip2video'.*\? Available: .*clip2video, meanp",
    ):
        create_model("clip2vid")
