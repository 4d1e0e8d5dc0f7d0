"""Parameter names: this package's layout (``tdb.*``, ``tab.*``) <-> the official CLIP2Video layout.

Everything but the TDB and TAB parameters keeps its official name, so mapping is a rename.
A leaf module: both ``retrieval`` (``official_state_dict``) and ``official`` (loading) use it.
"""

from __future__ import annotations

import torch

TDB_KEYS = ("type_position_embeddings", "trans_layernorm", "frame2t_attention", "frame2t_projection")
TAB_KEYS = ("weight_center", "emb_center", "actionClip")


def to_official_layout(
    state_dict: dict[str, torch.Tensor], clip_dtype: torch.dtype = torch.float16
) -> dict[str, torch.Tensor]:
    """Rename a model's state dict to the official layout; ``clip.*`` floats cast to ``clip_dtype``."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        value = value.detach().cpu()
        if key.startswith("clip."):
            out[key] = value.to(clip_dtype) if value.is_floating_point() else value.clone()
            continue
        official = key.removeprefix("tdb.").removeprefix("tab.")
        out[official] = value.float().clone()
    return out


def from_official_layout(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official names -> this package's names (``tdb.`` / ``tab.`` prefixes), float32."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        head = key.split(".")[0]
        prefix = "tdb." if head in TDB_KEYS else "tab." if head in TAB_KEYS else ""
        out[prefix + key] = value.float() if value.is_floating_point() else value
    return out
