"""A model registry in the style of timm: ``register_model``, ``create_model``, ``list_models``.

A new model plugs in with one decorator; the function's name is the registry name::

    @register_model
    def my_model(**config) -> torch.nn.Module: ...

    model = create_model("my_model", clip="ViT-B-32")
"""

from __future__ import annotations

import fnmatch
import inspect
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, overload

from torch import nn

from clip2video.errors import UnknownNameError

ModelFn = TypeVar("ModelFn", bound=Callable[..., nn.Module])

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
_OPTIONS: dict[str, frozenset[str] | None] = {}


@overload
def register_model(fn: ModelFn) -> ModelFn: ...
@overload
def register_model(
    fn: None = None, *, name: str | None = None, options: tuple[str, ...] | None = None
) -> Callable[[ModelFn], ModelFn]: ...


def register_model(
    fn: ModelFn | None = None, *, name: str | None = None, options: tuple[str, ...] | None = None
) -> Any:
    """Register ``fn`` under ``name`` (default: the function's name); usable with or without arguments.

    ``options`` names the settings the model takes; by default they come from the factory's
    signature (its named parameters; a factory with only ``**config`` takes every option).
    """

    def add(f: ModelFn) -> ModelFn:
        key = name or f.__name__
        if key in _REGISTRY and _REGISTRY[key] is not f:
            raise ValueError(f"a model named {key!r} is already registered ({_REGISTRY[key].__module__})")
        _REGISTRY[key] = f
        _OPTIONS[key] = frozenset(options) if options is not None else _signature_options(f)
        return f

    return add(fn) if fn is not None else add


def _signature_options(fn: Callable[..., Any]) -> frozenset[str] | None:
    """Named keyword parameters of ``fn``, or None when it takes ``**kwargs`` and nothing named."""
    params = inspect.signature(fn).parameters.values()
    named = frozenset(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
    if not named and any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return named


def model_options(name: str) -> frozenset[str] | None:
    """The options model ``name`` declares (None: it takes any option)."""
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; registered: {', '.join(list_models()) or 'none'}")
    return _OPTIONS.get(name)


def create_model_from_options(name: str, options: Mapping[str, Any]) -> nn.Module:
    """``create_model`` with only the suite options that model ``name`` declares (like timm, the
    rest are dropped), so one suite ``[model]`` table serves every model."""
    declared = model_options(name)
    taken = dict(options) if declared is None else {k: v for k, v in options.items() if k in declared}
    return create_model(name, **taken)


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
