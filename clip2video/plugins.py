"""Plugins: models and protocols from other packages, loaded once.

An external package registers its models or protocols by naming a module (or an object in it)
under the entry-point groups ``clip2video.models`` / ``clip2video.protocols`` in its
``pyproject.toml``::

    [project.entry-points."clip2video.models"]
    my_model = "my_package.models"            # importing the module runs its @register_model
    other = "my_package.models:build_other"   # a factory, registered under the entry's name

    [project.entry-points."clip2video.protocols"]
    my_protocol = "my_package.protocols:PROTOCOL"   # a Protocol (registered) or a callable

Importing is what registers (the module's ``@register_model`` / ``register_protocol`` run); an
entry point that resolves to a :class:`~clip2video.data.protocols.Protocol` is registered, and one
that resolves to a callable is called once
(a protocol factory); in ``clip2video.models`` a callable is registered as a model factory. Every verb also takes ``--import MODULE`` (repeatable)
for a module that is not installed as a package: it is imported before the command runs.
"""

from __future__ import annotations

import importlib
import os
import sys
from importlib import metadata

from clip2video.errors import Clip2VideoError

GROUPS: tuple[str, ...] = ("clip2video.models", "clip2video.protocols")
# The --import modules, passed on to worker processes (row workers call load_plugins() first).
ENV_VAR = "CLIP2VIDEO_IMPORT"
_loaded: set[str] = set()


class PluginError(Clip2VideoError):
    """A plugin module or entry point failed to import."""


def load_entry_points(groups: tuple[str, ...] = GROUPS) -> list[str]:
    """Import every installed entry point of ``groups`` (each group once per process); their names."""
    names: list[str] = []
    for group in groups:
        if group in _loaded:
            continue
        _loaded.add(group)
        for entry in metadata.entry_points(group=group):
            try:
                obj = entry.load()
            except Exception as exc:
                raise PluginError(
                    f"plugin {entry.name!r} ({entry.value}) of entry-point group {group!r} failed to "
                    f"import: {type(exc).__name__}: {exc}"
                ) from exc
            _register(group, entry.name, obj)
            names.append(entry.name)
    return names


def _register(group: str, name: str, obj: object) -> None:
    """A module registered itself on import; a model factory or a Protocol is registered here."""
    if isinstance(obj, type(sys)):
        return
    if group == "clip2video.models":
        from clip2video.models.registry import is_model, register_model

        if callable(obj) and not is_model(name):
            register_model(obj, name=name)
        return
    from clip2video.data.protocols import Protocol, register_protocol

    if callable(obj) and not isinstance(obj, Protocol):
        obj = obj()
    if isinstance(obj, Protocol):
        register_protocol(obj)


def load_plugins() -> None:
    """Everything a process needs before it looks up a model or protocol: the installed entry
    points, then the ``--import`` modules of the command that started it (``$CLIP2VIDEO_IMPORT``).
    Worker processes call this first."""
    load_entry_points()
    import_modules(imported_modules(), export=False)


def imported_modules() -> tuple[str, ...]:
    """The ``--import`` modules of the running command (``$CLIP2VIDEO_IMPORT``), for worker processes."""
    return tuple(m for m in os.environ.get(ENV_VAR, "").split(",") if m)


def import_modules(modules: list[str] | tuple[str, ...], *, export: bool = True) -> None:
    """Import each user module (``--import MODULE``); its registrations run on import. With
    ``export`` the names are also put in ``$CLIP2VIDEO_IMPORT`` for worker processes."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            raise PluginError(
                f"--import {name}: no module named {exc.name!r} (is it installed or on PYTHONPATH?)"
            ) from exc
        except Exception as exc:
            raise PluginError(f"--import {name}: importing it failed: {type(exc).__name__}: {exc}") from exc
    if export and modules:
        known = [m for m in os.environ.get(ENV_VAR, "").split(",") if m]
        os.environ[ENV_VAR] = ",".join(dict.fromkeys([*known, *modules]))
