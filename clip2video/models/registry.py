"""A model registry in the style of timm: ``register_model``, ``create_model``, ``list_models``.

A new model plugs in with one decorator; the function's name is the registry name::

    @register_model
    def my_model(**config) -> torch.nn.Module: ...

    model = create_model("my_model", clip="ViT-B-32")
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from typing import Any, TypeVar, overload

from torch import nn

from clip2video.errors import UnknownNameError

ModelFn = TypeVar("ModelFn", bound=Callable[..., nn.Module])

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


@overload
def register_model(fn: ModelFn) -> ModelFn: ...
@overload
def register_model(fn: None = None, *, name: str | None = None) -> Callable[[ModelFn], ModelFn]: ...


def register_model(fn: ModelFn | None = None, *, name: str | None = None) -> Any:
    """Register ``fn`` under ``name`` (default: the function's name); usable with or without arguments."""

    def add(f: ModelFn) -> ModelFn:
        key = name or f.__name__
        if key in _REGISTRY and _REGISTRY[key] is not f:
            raise ValueError(f"a model named {key!r} is already registered ({_REGISTRY[key].__module__})")
        _REGISTRY[key] = f
        return f

    return add(fn) if fn is not None else add


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a glob pattern, sorted."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def is_model(name: str) -> bool:
    """Whether ``name`` is registered."""
    return name in _REGISTRY


def create_model(name: str, **config: Any) -> nn.Module:
    """Build the registered model ``name`` with ``config`` (``create_model(**model.config)`` rebuilds one)."""
    if name not in _REGISTRY:
        raise UnknownNameError(
            "model", name, list_models()
        )  # a KeyError: "Unknown model 'x'. Available: ..."
    return _REGISTRY[name](**config)
