"""The CLIP backbone, built with open_clip (ViT layouts in OpenAI naming only).

Sources (``clip_weights``):

- ``None``: random initialisation of the architecture ``clip`` names (an open_clip config name
  such as ``"ViT-B-32"``, or a config dict ``{"embed_dim", "vision_cfg", "text_cfg"}``);
- ``"openai"``: open_clip's download of OpenAI's weights for ``clip`` (cached copies are used
  offline; without network and cache it fails within seconds, naming the file to pass);
- a local path: OpenAI's archive (``ViT-B-32.pt``, TorchScript or state dict, as the official
  code takes it) or an open_clip checkpoint of the standard CLIP layout. The architecture is
  read from the tensors' shapes (heads = width // 64), as the official code does.

Every model is built in float32 (open_clip's ``build_model_from_openai_state_dict`` would cast
to fp16).

The activation follows open_clip's naming and the weights' source (see :func:`resolve_activation`):
``ViT-B-32`` is GELU (LAION's weights), ``ViT-B-32-quickgelu`` is QuickGELU (OpenAI's weights);
OpenAI's weights (the ``openai`` tag or OpenAI's TorchScript archive) are QuickGELU. When the name,
the weights and an explicit ``quick_gelu`` disagree, building fails with one error saying which
name to use. A config dict states its activation with a ``quick_gelu`` key; without one (and
without weights that say) it is QuickGELU, as OpenAI's CLIP and the temporal blocks use.
"""

from __future__ import annotations

import copy
import os
import socket
import threading
import warnings
from pathlib import Path
from typing import Any

import open_clip
import torch
from open_clip.model import CLIP

from clip2video.errors import WeightsError
from clip2video.models import shipped

# Entries of OpenAI / TorchScript archives that are not weights (attn_mask: a fixed causal-mask buffer).
NON_WEIGHT_KEYS = ("input_resolution", "context_length", "vocab_size", "attn_mask")
REQUIRED_CLIP_KEYS = (
    "visual.conv1.weight",
    "visual.positional_embedding",
    "visual.proj",
    "text_projection",
    "positional_embedding",
    "token_embedding.weight",
    "ln_final.weight",
)
HUB_HOST = ("huggingface.co", 443)
PROBE_TIMEOUT_S = 2.0


def is_url_or_tag(value: str) -> bool:
    """True for an open_clip pretrained tag (no path separator, not an existing file)."""
    return (
        not Path(value).exists()
        and os.sep not in value
        and not value.endswith((".pt", ".bin", ".npz", ".safetensors"))
    )


def infer_clip_config(state_dict: dict[str, torch.Tensor], prefix: str = "") -> dict[str, Any]:
    """open_clip config dict of a ViT CLIP state dict in OpenAI naming, read from tensor shapes."""
    missing = [prefix + k for k in REQUIRED_CLIP_KEYS if prefix + k not in state_dict]
    if missing:
        raise WeightsError(
            f"not a ViT CLIP state dict in OpenAI naming: missing {', '.join(missing)} "
            "(pass OpenAI's ViT-B-32.pt or an open_clip checkpoint of the standard CLIP layout)"
        )

    def get(key: str) -> torch.Tensor:
        return state_dict[prefix + key]

    def count_blocks(tower: str) -> int:
        start = prefix + tower + "resblocks."
        return len({k[len(start) :].split(".")[0] for k in state_dict if k.startswith(start)})

    vision_width = get("visual.conv1.weight").shape[0]
    patch = get("visual.conv1.weight").shape[-1]
    grid = round((get("visual.positional_embedding").shape[0] - 1) ** 0.5)
    text_width = get("ln_final.weight").shape[0]
    return {
        "embed_dim": int(get("text_projection").shape[1]),
        "vision_cfg": {
            "image_size": int(patch * grid),
            "layers": count_blocks("visual.transformer."),
            "width": int(vision_width),
            "patch_size": int(patch),
            "head_width": 64,
        },
        "text_cfg": {
            "context_length": int(get("positional_embedding").shape[0]),
            "vocab_size": int(get("token_embedding.weight").shape[0]),
            "width": int(text_width),
            "heads": max(1, text_width // 64),
            "layers": count_blocks("transformer."),
        },
    }


def named_clip_config(name: str) -> dict[str, Any]:
    """open_clip's config dict for a model name such as ``ViT-B-32`` (or a shipped backbone's)."""
    if shipped.is_shipped_name(name):
        return copy.deepcopy(dict(shipped.get_shipped(name).config))
    cfg = open_clip.get_model_config(name)
    if cfg is None:
        vits = [m for m in open_clip.list_models() if m.startswith("ViT-B")]
        raise WeightsError(f"unknown open_clip model {name!r}; ViT-B examples: {', '.join(vits[:8])}")
    if "custom_text" in cfg or "timm_model_name" in cfg.get("vision_cfg", {}):
        raise WeightsError(f"open_clip model {name!r} is not a ViT CLIP in OpenAI layout")
    return {k: copy.deepcopy(cfg[k]) for k in ("embed_dim", "vision_cfg", "text_cfg")}


def build_clip_from_config(cfg: dict[str, Any], quick_gelu: bool = True) -> CLIP:
    """A float32 open_clip ``CLIP`` from a config dict (random init)."""
    text_width = cfg["text_cfg"].get("width", 512)
    text_cfg = {"heads": max(1, text_width // 64), **cfg["text_cfg"]}
    model = CLIP(
        cfg["embed_dim"], vision_cfg=dict(cfg["vision_cfg"]), text_cfg=text_cfg, quick_gelu=quick_gelu
    )
    return model.float()


def read_clip_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a CLIP file: TorchScript archive, torch.save'd state dict, safetensors or ``.npz``."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(
            f"CLIP weights file {path} does not exist: pass OpenAI's ViT-B-32.pt or an open_clip checkpoint"
        )
    what = (
        "pass OpenAI's ViT-B-32.pt (TorchScript archive), a torch.save'd CLIP state dict, an open_clip "
        "checkpoint or a .safetensors file"
    )
    if path.suffix == ".npz":  # a zip of .npy arrays, read without pickle (clip2video pretrain writes these)
        return clean_state_dict(shipped.read_npz(path), source=f"CLIP weights {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except Exception as exc:  # noqa: BLE001 - any failure means the file is not safetensors
            raise WeightsError(
                f"CLIP weights {path} are not a readable safetensors file ({type(exc).__name__}); {what}"
            ) from exc
    else:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                state = torch.jit.load(str(path), map_location="cpu").state_dict()
        except Exception:  # noqa: BLE001 - not TorchScript: try a plain torch.save file next
            try:
                with warnings.catch_warnings():  # torch warns about pickle protocols over many lines
                    warnings.simplefilter("ignore")
                    state = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as exc:  # noqa: BLE001 - torch raises many types for a non-checkpoint
                raise WeightsError(
                    f"CLIP weights {path} are not a readable checkpoint ({unreadable_reason(path, exc)}); {what}"
                ) from exc
    return clean_state_dict(state, source=f"CLIP weights {path}")


def unreadable_reason(path: str | Path, exc: BaseException | None = None) -> str:
    """Why ``torch.load`` refused ``path``, in a few words (torch's own advice runs over many lines)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(4)
    except OSError as error:
        return f"it cannot be read: {error.strerror or error}"
    if not head:
        return "the file is empty"
    said = " ".join(str(exc or "").split())
    if "Unsupported global" in said:  # torch.save'd, but holding classes or functions
        return "a torch.save file holding Python objects other than tensors, not a state dict"
    if head.startswith(b"PK"):
        return "a zip archive that torch cannot load (truncated, or not written by torch.save)"
    if head[:1] == b"\x80" or head[:1] in (b"(", b"]", b"}"):  # pickle protocol >= 2, or 0/1
        return "a plain Python pickle (pickle.dump), not a file written by torch.save"
    return "its bytes are not a torch.save file"


def clean_state_dict(state: Any, source: str) -> dict[str, torch.Tensor]:
    """Unwrap ``{"state_dict": ...}``, strip ``module.``, drop non-weight entries, cast to float32."""
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsError(
            f"{source}: expected a state dict of tensors, found a {type(state).__name__}; "
            "save one with torch.save(model.state_dict(), path)"
        )
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        if key.split(".")[-1] in NON_WEIGHT_KEYS or not isinstance(value, torch.Tensor):
            continue
        out[key] = value.float() if value.is_floating_point() else value
    return out


def load_clip_weights(model: CLIP, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """Load a CLIP state dict strictly, naming missing / unexpected / mis-shaped keys."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    wrong = [k for k in own if k in state_dict and own[k].shape != state_dict[k].shape]
    if missing or unexpected or wrong:
        raise WeightsError(
            f"{source} does not match the CLIP architecture: missing {missing[:8]}, "
            f"unexpected {unexpected[:8]}, wrong shape {wrong[:8]}"
        )
    model.load_state_dict(state_dict)


def _probe(host: tuple[str, int], timeout: float) -> bool:
    """Whether a TCP connection to ``host`` opens within ``timeout`` seconds (DNS included)."""
    result: list[bool] = []

    def target() -> None:
        try:
            with socket.create_connection(host, timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def _cached_pretrained(name: str, tag: str) -> str | None:
    """Path of open_clip's cached download of ``name``/``tag``, if any."""
    cfg = open_clip.get_pretrained_cfg(name, tag)
    hub = cfg.get("hf_hub", "")
    if not hub:
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    repo, filename = os.path.split(hub)  # a trailing slash means open_clip's default file names
    names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
    for fname in names:
        found = try_to_load_from_cache(repo, fname)
        if isinstance(found, str):
            return found
    return None


def _offline_reason() -> str | None:
    """Why a download cannot work now, or None when the hub answers."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return "HF_HUB_OFFLINE is set"
    if not _probe(HUB_HOST, PROBE_TIMEOUT_S):
        return f"{HUB_HOST[0]} cannot be reached"
    return None


def check_pretrained(name: str, tag: str) -> str | None:
    """The cached file of open_clip's pretrained ``tag`` for ``name`` (None: not cached, but the hub
    answers); WeightsError naming what to pass when it cannot be had now. Downloads nothing."""
    if not open_clip.get_pretrained_cfg(name, tag):
        raise WeightsError(f"open_clip has no pretrained weights {tag!r} for {name!r}")
    cached = _cached_pretrained(name, tag)
    if cached:
        return cached
    reason = _offline_reason()
    if reason:
        raise WeightsError(
            f"cannot download CLIP weights {name}/{tag} ({reason}). Pass a local file instead: "
            f"clip_weights='/path/to/{name}.pt' (OpenAI's archive, {open_clip.get_pretrained_url(name, tag)}) "
            "or an open_clip checkpoint"
        )
    return None


def fetch_pretrained(name: str, tag: str) -> str:
    """Local path of open_clip's pretrained ``tag`` for ``name``; fails fast when offline."""
    cached = check_pretrained(name, tag)
    if cached:
        return cached
    path = open_clip.pretrained.download_pretrained(open_clip.get_pretrained_cfg(name, tag))
    if not path:
        raise WeightsError(f"open_clip could not download {name}/{tag}: pass a local file as clip_weights")
    return path


def name_activation(clip: str | dict[str, Any]) -> bool | None:
    """QuickGELU (True) or GELU (False) as the model name or config dict states it (None: unstated)."""
    if shipped.is_shipped_name(clip):
        return shipped.get_shipped(clip).quick_gelu
    if isinstance(clip, str):
        cfg = open_clip.get_model_config(clip)
        return bool(cfg.get("quick_gelu", False)) if cfg is not None else None
    value = clip.get("quick_gelu") if isinstance(clip, dict) else None
    return None if value is None else bool(value)


def weights_activation(clip: str | dict[str, Any], clip_weights: str | Path | None) -> bool | None:
    """The activation the weights were trained with, where their source says (None: unknown).

    The ``openai`` tag and OpenAI's TorchScript archive (``ViT-B-32.pt``) are QuickGELU; other
    open_clip tags say it in their pretrained config; a plain state-dict file does not say.
    """
    if clip_weights is None:
        return None
    name = shipped.shipped_weights_name(clip, clip_weights)
    if name is not None:
        return shipped.get_shipped(name).quick_gelu
    weights = str(clip_weights)
    if is_url_or_tag(weights):
        if weights == "openai":
            return True
        if not isinstance(clip, str):
            return None
        base = clip.removesuffix("-quickgelu")
        for name in (clip, base, base + "-quickgelu"):  # open_clip files each tag under its activation's name
            cfg = open_clip.get_pretrained_cfg(name, weights)
            if cfg:
                return bool(cfg.get("quick_gelu", name_activation(name)))
        return None
    return True if _is_torchscript(Path(weights)) else None


def _is_torchscript(path: Path) -> bool:
    """Whether ``path`` is a TorchScript archive (OpenAI's release format for CLIP)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("constants.pkl") or "/code/" in name for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def resolve_activation(
    clip: str | dict[str, Any], clip_weights: str | Path | None, quick_gelu: bool | None = None
) -> bool:
    """QuickGELU or GELU from the name, the weights' source and an explicit choice; refuse a mismatch."""
    act = {True: "QuickGELU", False: "GELU"}
    stated: list[tuple[bool, str]] = []
    named = name_activation(clip)
    if named is not None:
        what = f"clip={clip!r}" if isinstance(clip, str) else "the config's quick_gelu"
        stated.append((named, f"{what} builds {act[named]}"))
    trained = weights_activation(clip, clip_weights)
    if trained is not None:
        stated.append((trained, f"the weights {clip_weights} were trained with {act[trained]}"))
    if quick_gelu is not None:
        stated.append((bool(quick_gelu), f"quick_gelu={bool(quick_gelu)} asks for {act[bool(quick_gelu)]}"))
    for value, reason in stated[1:]:
        if value != stated[0][0]:
            hint = ""
            if isinstance(clip, str):
                base = clip.removesuffix("-quickgelu")
                hint = f"; use clip='{base + '-quickgelu' if value else base}' (open_clip's naming) for these weights"
                if trained is not None:
                    right = base + "-quickgelu" if trained else base
                    hint = f"; use clip='{right}' (open_clip's naming) for these weights"
            raise WeightsError(f"activation mismatch: {stated[0][1]} but {reason}{hint}")
    return stated[0][0] if stated else True


def build_clip(
    clip: str | dict[str, Any] = "ViT-B-32",
    clip_weights: str | Path | None = None,
    quick_gelu: bool | None = None,
) -> tuple[CLIP, dict[str, Any]]:
    """The CLIP backbone and its architecture dict (JSON-serialisable, with its ``quick_gelu``).

    With weights from a file, the architecture comes from the file's tensors. The activation comes
    from :func:`resolve_activation`. A shipped backbone (:mod:`clip2video.models.shipped`) is
    ``clip="tiny-synthetic"`` (its architecture) with ``clip_weights="shipped"`` (its checked
    weights), or ``clip_weights="shipped:tiny-synthetic"`` with any ``clip``.
    """
    act = resolve_activation(clip, clip_weights, quick_gelu)
    if clip_weights is None:
        cfg = named_clip_config(clip) if isinstance(clip, str) else copy.deepcopy(clip)
        cfg.pop("quick_gelu", None)
        return build_clip_from_config(cfg, act), {**cfg, "quick_gelu": act}
    name = shipped.shipped_weights_name(clip, clip_weights)
    if name is not None:
        state = shipped.shipped_state_dict(name)
        cfg = infer_clip_config(state)
        model = build_clip_from_config(cfg, act)
        load_clip_weights(model, state, f"shipped backbone {name!r} ({shipped.get_shipped(name).path})")
        return model, {**cfg, "quick_gelu": act}
    weights = str(clip_weights)
    if is_url_or_tag(weights):
        if not isinstance(clip, str):
            raise WeightsError(
                f"clip_weights={weights!r} is a pretrained tag: name the model, e.g. clip='ViT-B-32-quickgelu'"
            )
        weights = fetch_pretrained(clip, weights)
    state = read_clip_state_dict(weights)
    cfg = infer_clip_config(state)
    model = build_clip_from_config(cfg, act)
    load_clip_weights(model, state, weights)
    return model, {**cfg, "quick_gelu": act}


class RandomWeightsWarning(UserWarning):
    """A named pretrained backbone is being built with random weights (no ``clip_weights`` given)."""


NOT_GIVEN: Any = type("NotGiven", (), {"__repr__": lambda self: "NOT_GIVEN"})()
"""The default of ``clip_weights`` in the model factories: no weights named (see :func:`backbone_source`)."""


def backbone_source(
    clip: str | dict[str, Any],
    clip_weights: Any = NOT_GIVEN,
    config: dict[str, Any] | None = None,
    *,
    model: str = "",
) -> tuple[str | dict[str, Any], str | None]:
    """``(clip, clip_weights)`` for :func:`build_clip` from the spellings of a suite's ``[backbone]``.

    ``clip="tiny"`` with ``config={...}`` (the suite's ``[backbone.config]`` table) is that config;
    ``clip_weights="none"`` (or ``""``, or None) is a deliberate random initialisation. A named
    architecture (``clip="ViT-B-32"``) without any ``clip_weights`` gets random weights too, but
    with a :class:`RandomWeightsWarning`: the published models start from pretrained CLIP.
    """
    if clip == "tiny":
        if not config:
            raise WeightsError(
                "clip='tiny' needs config={...}: the tiny backbone's open_clip config (a suite's "
                "[backbone.config] table), e.g. {'embed_dim': 64, 'vision_cfg': {...}, 'text_cfg': {...}}"
            )
        clip = copy.deepcopy(dict(config))
    elif config:
        raise WeightsError(
            f"config=... describes the tiny backbone: pass it with clip='tiny', not clip={clip!r}"
        )
    if clip_weights is NOT_GIVEN:
        if isinstance(clip, str):
            who = f"create_model({model!r})" if model else "the model"
            warnings.warn(
                RandomWeightsWarning(
                    f"{who}: the backbone {clip!r} gets RANDOM weights (no clip_weights given); pass "
                    "clip_weights='openai' (downloads), a local ViT-B-32.pt, or clip_weights='none' for a "
                    "deliberate random initialisation"
                ),
                stacklevel=5,
            )
        return clip, None
    if clip_weights is None or (
        isinstance(clip_weights, str) and clip_weights.strip().lower() in ("", "none")
    ):
        return clip, None
    return clip, str(clip_weights)
