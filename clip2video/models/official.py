"""The official CLIP2Video / CLIP4Clip checkpoint layout: reading and writing it.

A released checkpoint (``pytorch_model.bin.N``) is ``torch.save`` of the official model's state
dict: ``clip.*`` in OpenAI naming (fp16), ``frame_position_embeddings.weight``,
``transformerClip.resblocks.{i}.*``, and for CLIP2Video ``type_position_embeddings.weight``,
``frame2t_attention.resblocks.0.*`` or ``frame2t_projection``, ``trans_layernorm.*``,
``weight_center``, ``emb_center``, ``actionClip.resblocks.0.*``. CLIP4Clip's ``meanP`` and
``seqTransf`` checkpoints use the same names. Here the TDB and TAB parameters live under
``tdb.`` and ``tab.``; everything else keeps its official name, so mapping is a rename.

Parity: loading in float32 reproduces the official computation done in float32. Two
documented differences: the official model runs CLIP in fp16 on the GPU (its released logits
carry fp16 rounding), and its temporal blocks pair masks with heads across samples (see
``blocks.py``), which only matters for batches mixing videos of different lengths.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from clip2video.errors import WeightsError
from clip2video.models.backbone import clean_state_dict, infer_clip_config, unreadable_reason
from clip2video.models.layout import TAB_KEYS, TDB_KEYS, from_official_layout, to_official_layout
from clip2video.models.registry import create_model
from clip2video.models.retrieval import RetrievalModel

VARIANT_ALIASES = {"meanP": "meanp", "seqTransf": "seqtransf"}


def is_own_layout(state_dict: dict[str, Any]) -> bool:
    """Whether a state dict uses this package's names (``tdb.*`` / ``tab.*``) rather than the official ones."""
    return any(k.removeprefix("module.").startswith(("tdb.", "tab.")) for k in state_dict)


def unwrap_checkpoint(state: Any, source: str) -> dict[str, torch.Tensor]:
    """The model tensors of any checkpoint the harness or the official code writes.

    Accepts an official state dict (``pytorch_model.bin.N``), ``model.official_state_dict()``,
    ``model.state_dict()`` (``tdb.*`` / ``tab.*`` names) and the trainer's ``last.pt`` / ``best.pt``
    (``{"format": 1, "model": state_dict, ...}``); returns official-layout tensors in float32.
    """
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]  # a training checkpoint written by clip2video.engine.train
    if isinstance(state, torch.Tensor) or not isinstance(state, dict):
        raise WeightsError(
            f"{source} holds a {type(state).__name__}, not a model state dict: pass a checkpoint written "
            "by torch.save(model.state_dict()), the trainer's last.pt / best.pt, or an official pytorch_model.bin.N"
        )
    tensors = clean_state_dict(state, source)
    if not tensors:
        raise WeightsError(f"{source} holds no tensors: it is not a model checkpoint")
    if is_own_layout(tensors):
        tensors = to_official_layout(tensors, clip_dtype=torch.float32)
    return tensors


def read_checkpoint(path_or_state_dict: str | Path | dict[str, Any]) -> tuple[dict[str, torch.Tensor], str]:
    """The checkpoint's tensors in the official layout (``module.`` stripped, float32) and a name for messages."""
    if isinstance(path_or_state_dict, dict):
        return unwrap_checkpoint(path_or_state_dict, "the in-memory state dict"), "the in-memory state dict"
    path = Path(path_or_state_dict)
    if not path.is_file():
        raise WeightsError(f"checkpoint {path} does not exist: pass the path of a pytorch_model.bin.N file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a file that is not a checkpoint
        raise WeightsError(
            f"checkpoint {path} is not a readable torch checkpoint ({unreadable_reason(path, exc)}); pass a file "
            "written by torch.save (pytorch_model.bin.N, last.pt, best.pt)"
        ) from exc
    return unwrap_checkpoint(state, f"checkpoint {path}"), f"checkpoint {path}"


def _count_blocks(state: dict[str, torch.Tensor], prefix: str) -> int:
    return len({k[len(prefix) :].split(".")[0] for k in state if k.startswith(prefix)})


def infer_options(state: dict[str, torch.Tensor], variant: str, tdb_proj: str | None) -> dict[str, Any]:
    """Head options read from the tensors (defaults where a key is absent; the key check names it)."""
    options: dict[str, Any] = {}
    layers = _count_blocks(state, "transformerClip.resblocks.")
    if layers:
        options["temporal_layers"] = layers
    if "frame_position_embeddings.weight" in state:
        options["positions"] = state["frame_position_embeddings.weight"].shape[0]
    if "weight_center" in state:
        options["center_k"] = state["weight_center"].shape[0]
    if variant in ("tdb", "clip2video"):
        if tdb_proj is None:
            has_attn = any(k.startswith("frame2t_attention.") for k in state)
            tdb_proj = "selfattn" if has_attn else "mlp" if "frame2t_projection" in state else "none"
        options["tdb_proj"] = tdb_proj
    return options


def load_official_weights(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load official-layout tensors into ``model``: missing keys are an error naming them,
    keys the model does not use are listed in one warning, shapes must match."""
    expected = model.official_state_dict(clip_dtype=torch.float32)
    missing = sorted(set(expected) - set(state))
    if missing:
        raise WeightsError(
            f"{source} lacks {len(missing)} key(s) that model {model.config['name']!r} needs: "
            f"{', '.join(missing[:12])}{' ...' if len(missing) > 12 else ''} "
            "(is it a checkpoint of another variant? pass variant=...)"
        )
    unused = sorted(set(state) - set(expected))
    if unused:
        warnings.warn(
            f"{source}: {len(unused)} key(s) not used by model {model.config['name']!r} were ignored: "
            f"{', '.join(unused)}",
            stacklevel=3,
        )
    wrong = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if state[k].shape != v.shape
    ]
    if wrong:
        raise WeightsError(f"{source}: tensors of unexpected shape: {'; '.join(wrong[:8])}")
    model.load_state_dict(from_official_layout({k: state[k] for k in expected}), strict=True)


def from_official_checkpoint(
    path_or_state_dict: str | Path | dict[str, Any],
    variant: str = "clip2video",
    center_weight: float = 0.5,
    *,
    tdb_proj: str | None = None,
    quick_gelu: bool = True,
) -> nn.Module:
    """Build ``variant`` with the architecture read from a checkpoint's tensors and load it.

    Works for released CLIP2Video checkpoints, CLIP4Clip ``meanP`` / ``seqTransf`` ones
    (variants ``meanp`` / ``seqtransf``, or their CLIP4Clip names), tiny checkpoints of the same
    layout, and files written by ``model.official_state_dict()``. ``tdb_proj`` is read from the
    keys when not given.
    """
    variant = VARIANT_ALIASES.get(variant, variant)
    state, source = read_checkpoint(path_or_state_dict)
    clip_cfg = infer_clip_config(state, prefix="clip.")
    options = infer_options(state, variant, tdb_proj)
    if variant in ("tab", "clip2video"):
        options["center_weight"] = center_weight
    model = create_model(variant, clip=clip_cfg, clip_weights=None, quick_gelu=quick_gelu, **options)
    load_official_weights(model, state, source)
    return model.eval()


__all__ = [
    "TAB_KEYS",
    "TDB_KEYS",
    "RetrievalModel",
    "from_official_checkpoint",
    "from_official_layout",
    "read_checkpoint",
    "to_official_layout",
    "unwrap_checkpoint",
]
