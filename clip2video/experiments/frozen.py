"""Frozen-backbone rows (``[train] backbone = "frozen"``): the suite's features step and what a row reads.

With a frozen backbone, the frame and caption features (:mod:`clip2video.engine.features`) are the
same for every row, seed and epoch of a suite that shares the backbone, the frame settings and the
text settings. So the parent computes them ONCE, after the data is prepared and before the rows
start (``experiments.runner.prepare_features``), for the rows left to run (``--resume`` may keep them all: then
nothing is computed):

* one computation per distinct backbone among those rows (its ``[backbone]`` with the resolved
  ``--clip-weights``, plus ``[frames]`` and ``[text]``, which a variant row may change), of every
  split the rows read (train, val, test);
* on the CPU, with torch's thread count set to the rows' resolved ``run.threads`` (the number the
  rows' fingerprints carry), so that the features, like the rows' numbers, do not depend on the
  machine's core count;
* cached on disk in ``<runs>/.feature-cache/`` (:class:`~clip2video.engine.cache.EmbeddingCache`)
  under H1's key (the backbone's weights digest and config, the data's ids, files and captions, the
  frame and text settings) plus the thread count, the CPU kernel set and the torch version (they
  change the floats): a second suite run, or another suite on the same data and backbone, reads them.

Each frozen row's spec carries the cache keys (:class:`FrozenFeatures`); its worker reads them
(:func:`load_feature_bank`) and checks that its own model's backbone is the one they were computed
from, then trains only the heads (:mod:`clip2video.experiments.row`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from clip2video import fingerprint as fp
from clip2video.errors import Clip2VideoError
from clip2video.settings import FrozenMapping, thaw

if TYPE_CHECKING:
    from torch import nn

    from clip2video.engine.features import FeatureBank
    from clip2video.experiments.row import RowSpec

FEATURE_CACHE = ".feature-cache"  # under the runs folder
FROZEN = "frozen"
FROZEN_UNTRAINED = (
    "no trainable parameters with a frozen backbone: evaluated as is (the pretrained backbone's "
    "retrieval), not trained"
)


@dataclass(frozen=True)
class FrozenFeatures:
    """Where a frozen row finds its features: the cache folder and each split's cache key."""

    cache: str
    keys: Mapping[str, Any] = field(default_factory=FrozenMapping)

    def plain_keys(self) -> dict[str, dict[str, Any]]:
        return {name: thaw(key) for name, key in self.keys.items()}


def is_frozen(spec: RowSpec) -> bool:
    """Whether the row trains its heads over a frozen backbone's features."""
    return bool(spec.trained) and spec.settings.train.backbone == FROZEN


def backbone_group(spec: RowSpec) -> str:
    """What decides a row's features: its backbone (with ``--clip-weights``), frames and text."""
    from clip2video.experiments.preflight import model_kwargs

    options = model_kwargs(spec.settings, spec.clip_weights)
    key = {
        "clip": options["clip"],
        "clip_weights": options["clip_weights"],
        "frames": spec.settings.frames.to_dict(),
        "text": spec.settings.text.to_dict(),
    }
    return fp.digest(key)


def run_key(threads: int) -> dict[str, Any]:
    """The parts of the features' cache key that are not the data's or the backbone's: what the
    floats depend on (thread count, CPU kernel set, torch version; computed on the CPU)."""
    import torch

    return {
        "device": "cpu",
        "threads": int(threads),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch": str(torch.__version__),  # a TorchVersion does not load with weights_only
    }


def load_feature_bank(spec: RowSpec, model: nn.Module) -> FeatureBank:
    """A frozen row's features (every split its suite computed), read from the cache; the row's
    model must have the backbone they were computed from. One-line errors otherwise."""
    from clip2video.engine.cache import EmbeddingCache, cache_key
    from clip2video.engine.features import FeatureBank, backbone_digest, cached_split_features

    if spec.features is None:
        raise Clip2VideoError(
            f"row {spec.row!r}: train.backbone = 'frozen' but the suite computed no features for it; run the "
            "suite through the pipeline (clip2video ablation / clip2video.pipeline.run), which computes them first"
        )
    keys = spec.features.plain_keys()
    own = cache_key(backbone_digest(model))
    cache = EmbeddingCache(spec.features.cache)
    splits = {}
    for name, key in keys.items():
        if cache_key(key.get("backbone") or {}) != own:
            raise Clip2VideoError(
                f"row {spec.row!r}: the frozen features of split {name!r} come from another backbone than the "
                "row's model; rerun the suite (its features step computes them for this backbone)"
            )
        feats = cached_split_features(cache, key, name)
        if feats is None:
            raise Clip2VideoError(
                f"row {spec.row!r}: the frozen features of split {name!r} are gone from {cache.root} (deleted "
                "while the suite ran?); rerun the suite, which computes them again"
            )
        splits[name] = feats
    return FeatureBank(splits)


__all__ = [
    "FEATURE_CACHE",
    "FROZEN_UNTRAINED",
    "FrozenFeatures",
    "backbone_group",
    "is_frozen",
    "load_feature_bank",
    "run_key",
]
