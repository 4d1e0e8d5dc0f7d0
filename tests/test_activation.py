"""open_clip's activation naming (issue 11 §5): ViT-B-32 is GELU, ViT-B-32-quickgelu is QuickGELU,
the weights' source decides, and a mismatch is one clear error."""

from __future__ import annotations

import pytest
import torch
from open_clip.transformer import QuickGELU

from clip2video.errors import WeightsError
from clip2video.models import create_model
from clip2video.models.backbone import build_clip_from_config, name_activation, resolve_activation
from tests.support.tiny_clip import tiny_clip_config


def _is_quick(model: torch.nn.Module) -> bool:
    acts = {type(block.mlp.gelu) for block in model.clip.visual.transformer.resblocks}
    acts |= {type(block.mlp.gelu) for block in model.clip.transformer.resblocks}
    assert len(acts) == 1
    return acts == {QuickGELU}


def test_open_clip_naming():
    assert name_activation("ViT-B-32") is False
    assert name_activation("ViT-B-32-quickgelu") is True
    assert resolve_activation("ViT-B-32", None) is False
    assert resolve_activation("ViT-B-32-quickgelu", "openai") is True
    assert resolve_activation("ViT-B-32", "laion2b_s34b_b79k") is False


@pytest.mark.parametrize("quick", [True, False])
def test_a_tiny_config_states_its_activation(quick):
    model = create_model("tdb", clip={**tiny_clip_config(), "quick_gelu": quick}, temporal_layers=1)
    assert _is_quick(model) is quick and model.config["quick_gelu"] is quick
    rebuilt = create_model(**model.config)
    assert _is_quick(rebuilt) is quick


def test_tiny_suites_keep_quickgelu():
    """A config dict without quick_gelu (the smoke and ablation suites) stays QuickGELU."""
    assert _is_quick(create_model("meanp", clip=tiny_clip_config()))


@pytest.mark.parametrize(
    ("clip", "weights", "use"),
    [("ViT-B-32", "openai", "ViT-B-32-quickgelu"), ("ViT-B-32-quickgelu", "laion2b_s34b_b79k", "ViT-B-32")],
)
def test_a_mismatch_is_one_clear_error(clip, weights, use):
    with pytest.raises(WeightsError) as info:
        create_model("meanp", clip=clip, clip_weights=weights)
    message = str(info.value)
    assert "\n" not in message and "activation mismatch" in message and f"clip='{use}'" in message


def test_explicit_choice_must_agree_with_the_config():
    with pytest.raises(WeightsError, match="activation mismatch"):
        create_model("meanp", clip={**tiny_clip_config(), "quick_gelu": False}, quick_gelu=True)


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_openai_torchscript_archive_is_quickgelu(tmp_path):
    path = tmp_path / "ViT-tiny.pt"
    torch.jit.script(build_clip_from_config(tiny_clip_config(), quick_gelu=True).eval()).save(str(path))
    assert _is_quick(create_model("meanp", clip="ViT-B-32-quickgelu", clip_weights=str(path)))
    with pytest.raises(WeightsError, match="ViT-B-32-quickgelu"):
        create_model("meanp", clip="ViT-B-32", clip_weights=str(path))
