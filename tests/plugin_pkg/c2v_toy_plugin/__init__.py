"""A plugin package: importing it registers one model and one protocol (entry points name it);
``negate`` is a post-processor factory that the ``clip2video.postprocessors`` entry point names."""

from __future__ import annotations

from torch import Tensor, nn

from clip2video.data.protocols import Protocol, register_protocol
from clip2video.models import register_model


class PluginModel(nn.Module):
    """The smallest retrieval model: one linear map for each modality (enough to be registered)."""

    def __init__(self, dim: int = 8) -> None:
        super().__init__()
        self.config = {"dim": dim}
        self.text = nn.Embedding(49408, dim)
        self.video = nn.Linear(3, dim)

    def encode_text(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return self.text(input_ids).mean(1)

    def encode_video(self, frames: Tensor, video_mask: Tensor) -> Tensor:
        return self.video(frames.float().mean(dim=(1, 3, 4)))

    def similarity(self, text: Tensor, video: Tensor) -> Tensor:
        return text @ video.t()


@register_model
def toy_plugin_model(dim: int = 8) -> PluginModel:
    return PluginModel(dim)


# A built-in layout (VATEX's JSON schema), so that this protocol needs no reader of its own.
register_protocol(
    Protocol(
        name="toy-plugin",
        layout="vatex",
        stride=1,
        center_k=2,
        train_split="train_list.txt",
        test_split="test_list.txt",
        captions_file="vatex_data.json",
        description="registered by the c2v_toy_plugin entry point",
    ),
    overwrite=True,
)


class Negate:
    """A post-processed row: the negated similarity (what an installed post-processor looks like)."""

    row_name = "+negate"
    directions = ("t2v", "v2t")

    def apply(self, sim: Tensor, score_texts=None) -> Tensor:
        return -sim


def negate(ctx, model) -> Negate:
    """``factory(ctx, model)``: registered under the entry point's name by the post-processor registry."""
    return Negate()
