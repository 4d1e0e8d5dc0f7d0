"""The model registry (one :class:`~clip2video.registry.Registry`): ``register_model``,
``create_model``, ``list_models``, in the style of timm.

A new model plugs in with one decorator; the function's name is the registry name::

    @register_model
    def my_model(dim: int = 16) -> torch.nn.Module: ...

    model = create_model("my_model", dim=8)

The factory contract: a model's ``config`` holds its registry name under ``"name"`` (``create_model``
adds it when the factory did not) and the keyword arguments that rebuild it, so
``create_model(**model.config)`` rebuilds the same architecture; ``create_model(name, **options)``
is the same call with the name given first. Installed packages register through the entry-point
group ``clip2video.models``, loaded the first time the registry is read (``list_models``,
``create_model``, ``is_model``), from Python as from the command line.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, overload

from torch import nn

from clip2video.errors import ConfigError
from clip2video.registry import Registry

ModelFn = TypeVar("ModelFn", bound=Callable[..., nn.Module])


def _adopt_factory(registry: Registry[Callable[..., nn.Module]], name: str, obj: Any) -> None:
    """An entry point that names a callable registers it as a factory under the entry's name."""
    if callable(obj) and name not in registry._entries:
        register_model(obj, name=name)


MODELS: Registry[Callable[..., nn.Module]] = Registry("model", "models", adopt=_adopt_factory)


@overload
def register_model(
    fn: ModelFn, *, name: str | None = None, options: tuple[str, ...] | None = None
) -> ModelFn: ...
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
        declared = frozenset(options) if options is not None else _signature_options(f)
        return MODELS.register(f, name=name, options=declared)

    return add(fn) if fn is not None else add


def _signature_options(fn: Callable[..., Any]) -> frozenset[str] | None:
    """Named keyword parameters of ``fn``, or None when it takes ``**kwargs`` and nothing named."""
    params = inspect.signature(fn).parameters.values()
    named = frozenset(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
    if not named and any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return named


def declared_options(name: str) -> frozenset[str] | None:
    """The options model ``name`` declares (None: it takes any option); ``UnknownNameError`` for
    an unknown model. (Formerly ``model_options``.)"""
    return MODELS.info(name).get("options")


def create_model_from_options(name: str, options: Mapping[str, Any]) -> nn.Module:
    """``create_model`` with only the suite options that model ``name`` declares (like timm, the
    rest are dropped), so one suite ``[model]`` table serves every model."""
    declared = declared_options(name)
    taken = dict(options) if declared is None else {k: v for k, v in options.items() if k in declared}
    return create_model(name, **taken)


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a glob pattern, sorted (installed plugins included)."""
    return MODELS.list(pattern)


def is_model(name: str) -> bool:
    """Whether ``name`` is registered."""
    return name in MODELS


def create_model(model_name: str | None = None, /, **config: Any) -> nn.Module:
    """Build the registered model ``model_name`` with ``config``.

    The name may also come as ``name=`` (what ``model.config`` holds), so
    ``create_model(**model.config)`` and ``create_model(model.config["name"], **options)`` both
    rebuild a model; a name given both ways must agree. An unknown name raises
    ``UnknownNameError`` (a ``KeyError``): ``Unknown model 'x'. Did you mean 'y'? Available: ...``.
    """
    given = config.pop("name", None)
    if model_name is None:
        model_name = given
    elif given is not None and given != model_name:
        raise ConfigError(f"create_model({model_name!r}, name={given!r}): two different model names")
    if model_name is None:
        raise TypeError("create_model() needs a model name: create_model('meanp', ...) or name='meanp'")
    factory = MODELS.get(model_name)
    model = factory(**config)
    stamped = getattr(model, "config", None)
    if isinstance(stamped, dict) and "name" not in stamped:
        stamped["name"] = model_name
    return model
