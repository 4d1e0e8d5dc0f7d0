"""Backbones shipped as package data: a name -> CLIP config + a weights file with its checksum.

A suite names one in two lines::

    [backbone]
    clip = "tiny-synthetic"      # the architecture (random init with clip_weights = "none")
    clip_weights = "shipped"     # its shipped weights (``"shipped:tiny-synthetic"`` works with any clip)

The weights are a ``.npz`` (a zip of ``.npy`` arrays, one per state-dict entry in open_clip's
naming, float32), read with ``numpy.load(..., allow_pickle=False)``: no pickle is ever loaded.
:func:`write_npz` writes it byte-for-byte deterministically (fixed zip timestamps, sorted keys),
so the same weights give the same sha256 on every machine. Beside it, ``<name>.json`` is the
recipe: the exact command and settings that built it, the torch version and kernel set it was
built with, its sha256 and size (``clip2video pretrain`` writes both). Loading checks the file's
sha256 against the registry entry below and fails with one line naming the file when it is
missing, modified or corrupt.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clip2video.errors import WeightsError
from clip2video.fileio import atomic_write_bytes
from clip2video.fingerprint import file_sha256

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
SHIPPED_TAG = "shipped"  # clip_weights = "shipped" (with clip = a shipped name) or "shipped:<name>"
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed member timestamps: the file's bytes depend on the weights only

TINY_SYNTHETIC_CONFIG: dict[str, Any] = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "layers": 2},
}


@dataclass(frozen=True)
class ShippedBackbone:
    """One shipped backbone: its CLIP config, activation, weights file and that file's sha256."""

    name: str
    config: Mapping[str, Any]
    file: str  # under WEIGHTS_DIR
    sha256: str
    quick_gelu: bool = True
    description: str = ""
    recipe: str = field(default="")  # the JSON recipe beside the weights (under WEIGHTS_DIR)

    @property
    def path(self) -> Path:
        return WEIGHTS_DIR / self.file

    @property
    def recipe_path(self) -> Path:
        return WEIGHTS_DIR / (self.recipe or Path(self.file).with_suffix(".json").name)


SHIPPED_BACKBONES: dict[str, ShippedBackbone] = {
    "tiny-synthetic": ShippedBackbone(
        name="tiny-synthetic",
        config=TINY_SYNTHETIC_CONFIG,
        file="tiny-synthetic.npz",
        sha256="6aca68d178fd001f3fc117883a3b5469218e288c715f475d84cfaccdc8e9afd7",
        description=(
            "tiny CLIP (embed 64; ViT 2 layers, width 64, patch 8, 32 px; text 2 layers, width 64, "
            "context 32) pretrained contrastively on single frames of 8000 synthetic clips (seed 1000, "
            "half of them the clip's last frame), 60 epochs: `clip2video pretrain` with its defaults"
        ),
    ),
}


def is_shipped_name(clip: Any) -> bool:
    """Whether ``clip`` (a backbone.clip value) names a shipped backbone."""
    return isinstance(clip, str) and clip in SHIPPED_BACKBONES


def shipped_weights_name(clip: Any, clip_weights: Any) -> str | None:
    """The shipped backbone that ``clip_weights`` asks for, or None when it asks for none.

    ``"shipped:<name>"`` names it; plain ``"shipped"`` takes the name from ``clip``. Raises
    WeightsError for an unknown name or a plain ``"shipped"`` without a shipped ``clip``.
    """
    if not isinstance(clip_weights, str | Path):
        return None
    text = str(clip_weights)
    if text == SHIPPED_TAG:
        if not is_shipped_name(clip):
            raise WeightsError(
                f"clip_weights = 'shipped' needs backbone.clip to name a shipped backbone "
                f"({', '.join(SHIPPED_BACKBONES)}), got clip = {clip!r}; or write clip_weights = "
                f"'shipped:<name>'"
            )
        return str(clip)
    if text.startswith(SHIPPED_TAG + ":"):
        name = text.split(":", 1)[1]
        if name not in SHIPPED_BACKBONES:
            raise WeightsError(
                f"clip_weights = {text!r}: no shipped backbone {name!r}; shipped: {', '.join(SHIPPED_BACKBONES)}"
            )
        return name
    return None


def get_shipped(name: str) -> ShippedBackbone:
    try:
        return SHIPPED_BACKBONES[name]
    except KeyError:
        raise WeightsError(f"no shipped backbone {name!r}; shipped: {', '.join(SHIPPED_BACKBONES)}") from None


def shipped_state_dict(name: str, *, path: str | Path | None = None) -> dict[str, torch.Tensor]:
    """The checked float32 state dict of shipped backbone ``name`` (``path`` overrides its file,
    e.g. a rebuilt copy; the checksum is then not compared with the registry's)."""
    return read_npz(checked_weights_file(name, path=path))


def checked_weights_file(name: str, *, path: str | Path | None = None) -> Path:
    """The weights file of shipped backbone ``name``, present and with the registry's sha256
    (``path`` overrides the file and skips the checksum); WeightsError in one line otherwise.
    Reads no array (the check before work calls this)."""
    entry = get_shipped(name)
    file = Path(path) if path is not None else entry.path
    rebuild = (
        f"reinstall clip2video, or rebuild it with `clip2video pretrain --out {file.parent}` "
        f"(recipe: {entry.recipe_path.name})"
    )
    if not file.is_file():
        raise WeightsError(f"shipped backbone {name!r}: weights file {file} is missing; {rebuild}")
    if path is None:
        digest = file_sha256(file)
        if digest != entry.sha256:
            raise WeightsError(
                f"shipped backbone {name!r}: {file} has sha256 {digest[:16]}..., expected "
                f"{entry.sha256[:16]}... (corrupt or modified); {rebuild}"
            )
    return file


def read_npz(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a ``.npz`` of arrays (no pickle: ``allow_pickle=False``)."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: torch.from_numpy(np.array(archive[key])) for key in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise WeightsError(
            f"{path} is not a readable .npz of weights ({type(exc).__name__}: {str(exc)[:120]}); "
            "rebuild it with `clip2video pretrain`"
        ) from exc


def write_npz(path: str | Path, state_dict: Mapping[str, torch.Tensor]) -> Path:
    """Write ``state_dict`` (tensors, float32 kept as is) as a deterministic ``.npz``: keys in
    sorted order, fixed member timestamps, stored (uncompressed) ``.npy`` members."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for key in sorted(state_dict):
            array = state_dict[key].detach().cpu().contiguous().numpy()
            member = io.BytesIO()
            np.lib.format.write_array(member, array, allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_DATE)
            info.external_attr = 0o644 << 16
            archive.writestr(info, member.getvalue())
    atomic_write_bytes(path, buffer.getvalue())
    return path


def read_recipe(name: str) -> dict[str, Any]:
    """The JSON recipe shipped beside backbone ``name``'s weights."""
    entry = get_shipped(name)
    try:
        return json.loads(entry.recipe_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise WeightsError(
            f"shipped backbone {name!r}: cannot read its recipe {entry.recipe_path} ({exc})"
        ) from exc
