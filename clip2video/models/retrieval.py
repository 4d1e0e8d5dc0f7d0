"""The retrieval model shared by every registry name, and the five registered variants.

``encode_text`` and ``encode_video`` each see one modality only, so an evaluation encodes every
caption and every video once and ``similarity`` is matrix products. Embeddings are plain
tensors: ``[N, D]`` (normalised global embedding) for models without TAB, ``[N, 2D]``
(``[normalised global | normalised aligned]``) with TAB.

Parameter names: the CLIP backbone lives under ``clip.`` (an open_clip ``CLIP``, OpenAI naming);
new modules are ``frame_position_embeddings``, ``transformerClip``, ``tdb.*`` and ``tab.*``
(the official names, the last two under a prefix). An optimizer gives ``clip.*`` its own lr.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from open_clip.model import CLIP
from open_clip.utils import to_2tuple
from torch import nn

from clip2video.models.backbone import NOT_GIVEN, backbone_source, build_clip
from clip2video.models.blocks import TemporalTransformer, init_new_module
from clip2video.models.heads import (
    TemporalAlignmentBlock,
    TemporalDifferenceBlock,
    mean_pool,
    normalize,
    temporal_pool,
)
from clip2video.models.layout import to_official_layout
from clip2video.models.registry import register_model


class RetrievalModel(nn.Module):
    """CLIP frames + an optional temporal transformer, TDB and TAB (see models.md).

    Args:
        clip_model: the open_clip backbone (float32).
        config: the resolved, JSON-serialisable config; ``create_model(**config)`` rebuilds it.
        temporal: use the temporal transformer (seqtransf) for the global embedding.
        tdb_proj: ``None`` (no TDB) or the difference projection ``selfattn`` | ``mlp`` | ``none``.
        tab: add TAB's aligned similarity; ``tab_tdb``: TAB's temporal tokens go through TDB.
        temporal_layers: depth of the temporal transformer (4 in the paper).
        positions: rows of the frame position embedding (default: CLIP's text context length).
        center_k, center_weight, center_init_std: TAB's K, w and center init std (D^-0.5).
    """

    def __init__(
        self,
        clip_model: CLIP,
        config: dict[str, Any],
        *,
        temporal: bool = False,
        tdb_proj: str | None = None,
        tab: bool = False,
        tab_tdb: bool = False,
        temporal_layers: int = 4,
        positions: int | None = None,
        center_k: int = 5,
        center_weight: float = 0.5,
        center_init_std: float | None = None,
    ) -> None:
        super().__init__()
        self.clip = clip_model
        self.config = dict(config)
        self.center_weight = float(center_weight)
        self.tab_tdb = tab_tdb
        dim = self.embed_dim
        self.frame_position_embeddings: nn.Embedding | None = None
        self.transformerClip: TemporalTransformer | None = None
        self.tdb: TemporalDifferenceBlock | None = None
        self.tab: TemporalAlignmentBlock | None = None
        if temporal or tdb_proj is not None or tab:
            self.frame_position_embeddings = nn.Embedding(positions or self.clip.context_length, dim)
            self.transformerClip = TemporalTransformer(dim, temporal_layers)
        if tdb_proj is not None:
            self.tdb = TemporalDifferenceBlock(dim, tdb_proj)
        if tab:
            self.tab = TemporalAlignmentBlock(dim, center_k, center_init_std)
        for module in (self.frame_position_embeddings, self.transformerClip, self.tdb):
            if module is not None:
                init_new_module(module)
        if self.tab is not None:
            init_new_module(self.tab.actionClip)
        self.init_from_clip()

    # ----------------------------------------------------------------- properties
    @property
    def embed_dim(self) -> int:
        """D, the CLIP embedding width."""
        return int(self.clip.visual.output_dim)

    @property
    def logit_scale(self) -> nn.Parameter:
        """CLIP's (log) logit scale; logits use ``logit_scale.exp()``."""
        return self.clip.logit_scale

    @property
    def has_tab(self) -> bool:
        return self.tab is not None

    @property
    def text_is_causal(self) -> bool:
        """True when no text token attends to a later one (CLIP's causal mask), so that the
        padding after EOT never changes a caption's embedding (the engine then skips it)."""
        return self.clip.attn_mask is not None

    # ------------------------------------------------------------ initialisation
    def init_from_clip(self) -> None:
        """Initialise new modules from CLIP's text transformer, as models.md says.

        Position embedding <- text ``positional_embedding`` (the first ``positions`` rows);
        temporal transformer <- text blocks 0..n-1 (when the text tower has fewer blocks than
        ``temporal_layers``, the extra blocks keep the default init, as the official loader
        leaves them); TDB's and TAB's 1-layer transformers <- text block 0; TDB's type
        embedding <- text positional rows 0..1; TDB's mlp W <- the first D rows of
        ``visual.proj``. Skipped, with a warning, when the text width differs from D.
        """
        text_pos = self.clip.positional_embedding
        text_blocks = self.clip.transformer.resblocks
        dim = self.embed_dim
        if text_pos.shape[1] != dim:
            warnings.warn(
                f"CLIP text width {text_pos.shape[1]} != embedding width {dim}: new modules keep "
                "their default initialisation instead of copies of the text transformer",
                stacklevel=2,
            )
            return
        with torch.no_grad():
            if self.frame_position_embeddings is not None:
                rows = min(self.frame_position_embeddings.num_embeddings, text_pos.shape[0])
                self.frame_position_embeddings.weight[:rows].copy_(text_pos[:rows])
                _copy_blocks(text_blocks, self.transformerClip.resblocks)
            if self.tdb is not None:
                self.tdb.type_position_embeddings.weight.copy_(text_pos[0:2])
                if self.tdb.proj == "selfattn":
                    _copy_blocks(text_blocks, self.tdb.frame2t_attention.resblocks)
                elif self.tdb.proj == "mlp" and self.clip.visual.proj.shape[0] >= dim:
                    self.tdb.frame2t_projection.copy_(self.clip.visual.proj[:dim])
            if self.tab is not None:
                _copy_blocks(text_blocks, self.tab.actionClip.resblocks)

    # ----------------------------------------------------------------------- text
    def text_hidden(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Projected hidden state of every token (``ln_final`` then ``text_projection``) -> [N, L, D]."""
        clip = self.clip
        length = input_ids.shape[1]
        if length > clip.context_length:
            raise ValueError(
                f"captions of {length} tokens exceed CLIP's context length {clip.context_length}"
            )
        cast = clip.transformer.get_cast_dtype()
        x = clip.token_embedding(input_ids).to(cast) + clip.positional_embedding[:length].to(cast)
        mask = clip.attn_mask[:length, :length] if clip.attn_mask is not None else None
        x = clip.ln_final(clip.transformer(x, attn_mask=mask))
        proj = clip.text_projection
        return proj(x) if isinstance(proj, nn.Linear) else x @ proj

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Caption embeddings [N, E]; the EOT token is the one with the largest id.

        The backbone part (:meth:`text_hidden`) then the head part (:meth:`text_head`), so a
        frozen backbone's hidden states can be computed once and fed to the head alone.
        """
        return self.text_head(self.text_hidden(input_ids), eot_index(input_ids), attention_mask)

    def text_head(
        self, hidden: torch.Tensor, eot: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """Caption embeddings [N, E] from the projected hidden states [N, L, D] (no backbone call).

        ``eot`` [N] is the EOT position of each caption (:func:`eot_index` of its ids); the
        global part is the normalised EOT state, TAB adds its aligned text embedding (which reads
        every token's state and ``attention_mask``).
        """
        out = normalize(hidden[torch.arange(hidden.shape[0], device=hidden.device), eot])
        if self.tab is not None:
            out = torch.cat((out, self.tab.text(hidden, attention_mask)), dim=-1)
        return out

    # ---------------------------------------------------------------------- video
    def frame_embeddings(self, frames: torch.Tensor, video_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Raw CLIP image embeddings x (after ``ln_post`` and ``proj``) -> [M, F, D].

        With ``video_mask``, only real frames go through CLIP; padded slots hold zeros (which
        ``pool_video`` replaces anyway).
        """
        m, f = frames.shape[:2]
        flat = frames.flatten(0, 1)
        if video_mask is None:
            return self.clip.encode_image(flat).view(m, f, -1)
        keep = video_mask.flatten().bool()
        if not bool(keep.any()):
            return flat.new_zeros(m, f, self.embed_dim)
        real = self.clip.encode_image(flat[keep])
        out = real.new_zeros(m * f, real.shape[-1])
        out[keep] = real
        return out.view(m, f, -1)

    def pad_embedding(self, device: torch.device | None = None) -> torch.Tensor:
        """Embedding of an all-zero frame: what the official loader feeds in padded slots -> [D]."""
        size = to_2tuple(self.clip.visual.image_size)
        zeros = torch.zeros(1, 3, *size, device=device or self.logit_scale.device)
        return self.clip.encode_image(zeros)[0]

    def fill_padding(
        self, x: torch.Tensor, video_mask: torch.Tensor, pad: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Replace padded slots so that their pixels never matter.

        TDB's difference ``x_{f+1} - x_f`` at the last real frame reads the first padded slot
        (the official model sees an all-zero frame there), so TDB models get the zero frame's
        embedding (``pad`` when given, e.g. stored with frozen features; else
        :meth:`pad_embedding`, one backbone call); other heads ignore padded slots and get zeros.
        """
        real = video_mask.bool().unsqueeze(-1)
        if bool(real.all()):
            return x
        if self.tdb is None:
            pad = x.new_zeros(())
        elif pad is None:
            pad = self.pad_embedding(x.device).to(x.dtype)
        else:
            pad = pad.to(device=x.device, dtype=x.dtype)
        return torch.where(real, x, pad)

    def pool_video(
        self, x: torch.Tensor, video_mask: torch.Tensor, pad: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Video embeddings [M, E] from frame embeddings x [M, F, D] (the heads only; ``pad``:
        the zero frame's embedding, see :meth:`fill_padding`)."""
        x = self.fill_padding(x, video_mask, pad)
        if self.transformerClip is None:
            out = mean_pool(x, video_mask)
        else:
            positions = self.frame_position_embeddings.weight
            if x.shape[1] > positions.shape[0]:
                raise ValueError(f"{x.shape[1]} frames exceed the {positions.shape[0]} frame positions")
            out = temporal_pool(x, video_mask, positions, self.transformerClip, self.tdb)
        if self.tab is not None:
            tdb = self.tdb if self.tab_tdb else None
            aligned = self.tab.video(x, video_mask, self.frame_position_embeddings.weight, tdb)
            out = torch.cat((out, aligned), dim=-1)
        return out

    def encode_video(self, frames: torch.Tensor, video_mask: torch.Tensor) -> torch.Tensor:
        """Video embeddings [M, E] from frames [M, F, 3, H, W] and mask [M, F]."""
        return self.pool_video(self.frame_embeddings(frames, video_mask), video_mask)

    # ----------------------------------------------------------------- similarity
    def similarity_parts(self, text: torch.Tensor, video: torch.Tensor) -> list[tuple[float, torch.Tensor]]:
        """(weight, logits) pairs: ``(1, global)``, or ``(w, global), (1 - w, aligned)`` with TAB."""
        scale = self.logit_scale.exp()
        dim = self.embed_dim
        glob = scale * (text[:, :dim] @ video[:, :dim].t())
        if self.tab is None:
            return [(1.0, glob)]
        aligned = scale * (text[:, dim:] @ video[:, dim:].t())
        return [(self.center_weight, glob), (1.0 - self.center_weight, aligned)]

    def similarity(self, text: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
        """Logits [N, M], logit scale included: ``w * global + (1 - w) * aligned`` with TAB."""
        parts = self.similarity_parts(text, video)
        if len(parts) == 1:
            return parts[0][1]
        (w_g, glob), (w_a, aligned) = parts
        return glob * w_g + aligned * w_a

    # ---------------------------------------------------------------- checkpoints
    def official_state_dict(self, clip_dtype: torch.dtype = torch.float16) -> dict[str, torch.Tensor]:
        """The state dict in the official CLIP2Video / CLIP4Clip layout (``clip.*`` in ``clip_dtype``)."""
        return to_official_layout(self.state_dict(), clip_dtype=clip_dtype)


def eot_index(input_ids: torch.Tensor) -> torch.Tensor:
    """Position of each caption's EOT token: the one with the largest id (CLIP's rule) -> [N]."""
    return input_ids.argmax(dim=-1)


def _copy_blocks(source: nn.ModuleList, target: nn.ModuleList) -> None:
    """Copy the first min(len) residual blocks of ``source`` into ``target`` (same names)."""
    for src, dst in zip(source, target, strict=False):
        dst.load_state_dict(src.state_dict())


# ------------------------------------------------------------------ registry
_TEMPORAL_OPTIONS = ("temporal_layers", "positions")
_TAB_OPTIONS = ("center_k", "center_weight", "center_init_std")


def _build(
    name: str,
    *,
    temporal: bool,
    tdb: bool,
    tab: bool,
    clip: str | dict[str, Any] = "ViT-B-32",
    clip_weights: str | None = NOT_GIVEN,
    config: dict[str, Any] | None = None,
    quick_gelu: bool | None = None,
    temporal_layers: int = 4,
    positions: int | None = None,
    tdb_proj: str = "selfattn",
    center_k: int = 5,
    center_weight: float = 0.5,
    center_init_std: float | None = None,
) -> RetrievalModel:
    """Shared builder. Options a variant does not use are accepted and ignored (so that one
    suite ``[model]`` table serves every model) and left out of ``model.config``. ``clip`` /
    ``clip_weights`` / ``config`` take the suite's spellings too (:func:`backbone_source`)."""
    clip, clip_weights = backbone_source(clip, clip_weights, config, model=name)
    clip_model, arch = build_clip(clip, clip_weights, quick_gelu)
    options = {
        "temporal_layers": int(temporal_layers),
        "positions": int(positions or clip_model.context_length),
        "tdb_proj": tdb_proj,
        "center_k": int(center_k),
        "center_weight": float(center_weight),
        "center_init_std": center_init_std,
    }
    config: dict[str, Any] = {
        "name": name,
        "clip": clip,
        "clip_weights": None if clip_weights is None else str(clip_weights),
        "quick_gelu": bool(arch["quick_gelu"]),
    }
    used = (
        (_TEMPORAL_OPTIONS if temporal else ())
        + (("tdb_proj",) if tdb else ())
        + (_TAB_OPTIONS if tab else ())
    )
    config.update({k: options[k] for k in used})
    return RetrievalModel(
        clip_model,
        config,
        temporal=temporal,
        tdb_proj=tdb_proj if tdb else None,
        tab=tab,
        tab_tdb=tab and tdb,
        temporal_layers=options["temporal_layers"],
        positions=options["positions"],
        center_k=options["center_k"],
        center_weight=options["center_weight"],
        center_init_std=center_init_std,
    )


def _strip_name(config: dict[str, Any], name: str) -> dict[str, Any]:
    given = config.pop("name", name)
    if given != name:
        raise ValueError(f"config names model {given!r} but {name!r} was asked for")
    return config


@register_model
def meanp(**config: Any) -> RetrievalModel:
    """Mean of L2-normalised frame embeddings (CLIP4Clip meanP)."""
    return _build("meanp", temporal=False, tdb=False, tab=False, **_strip_name(config, "meanp"))


@register_model
def seqtransf(**config: Any) -> RetrievalModel:
    """Temporal transformer over frames + position embedding, residual (CLIP4Clip seqTransf)."""
    return _build("seqtransf", temporal=True, tdb=False, tab=False, **_strip_name(config, "seqtransf"))


@register_model
def tdb(**config: Any) -> RetrievalModel:
    """Temporal transformer over frames interleaved with difference tokens (TDB)."""
    return _build("tdb", temporal=True, tdb=True, tab=False, **_strip_name(config, "tdb"))


@register_model
def tab(**config: Any) -> RetrievalModel:
    """seqtransf + TAB's aligned similarity (TAB without difference tokens)."""
    return _build("tab", temporal=True, tdb=False, tab=True, **_strip_name(config, "tab"))


@register_model
def clip2video(**config: Any) -> RetrievalModel:
    """Full CLIP2Video: TDB for the global embedding, TAB whose temporal tokens also use TDB."""
    return _build("clip2video", temporal=True, tdb=True, tab=True, **_strip_name(config, "clip2video"))
