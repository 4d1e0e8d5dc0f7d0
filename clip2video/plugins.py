"""Plugins: models, protocols, readers, post-processors and metrics from other packages and files.

Every registry (:class:`clip2video.registry.Registry`) names an entry-point group and loads it the
first time it is read, so an installed package is seen from Python (``clip2video.list_models()``)
as from the command line. The groups, one per registry::

    [project.entry-points."clip2video.models"]
    my_model = "my_package.models"            # importing the module runs its @register_model
    other = "my_package.models:build_other"   # a factory, registered under the entry's name

    [project.entry-points."clip2video.protocols"]
    my_protocol = "my_package.protocols:PROTOCOL"   # a Protocol (registered) or a callable returning one

    # also "clip2video.readers" (a reader, under the entry's name = its layout),
    # "clip2video.postprocessors" (a factory(ctx, model)) and "clip2video.metrics" (a Metric)

Importing is what registers; an entry point that resolves to an object is registered by its
registry. Every verb also takes ``--import`` (repeatable) for code that is not installed: a module
name, looked up on ``sys.path`` and then in the current folder (``--import my_models`` from the folder
that holds ``my_models.py``), or a file path (``--import ./my_models.py``). It is imported before the
command runs, and again in each row worker (``$CLIP2VIDEO_IMPORT``).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path

from clip2video.errors import PluginError
from clip2video.registry import all_registries

__all__ = [
    "ENV_VAR",
    "GROUPS",
    "PluginError",
    "import_modules",
    "imported_modules",
    "load_entry_points",
    "load_plugins",
]

# The entry-point groups of the registries (models, protocols, readers, post-processors, metrics).
GROUPS: tuple[str, ...] = (
    "clip2video.models",
    "clip2video.protocols",
    "clip2video.readers",
    "clip2video.postprocessors",
    "clip2video.metrics",
)
# The --import modules, passed on to worker processes (row workers call load_plugins() first).
ENV_VAR = "CLIP2VIDEO_IMPORT"


def load_entry_points(groups: tuple[str, ...] = GROUPS) -> list[str]:
    """Load the installed entry points of ``groups`` now (each group once per process); their names.

    The registries would load them on first read anyway; the command line loads them up front so
    that plugin names are valid choices and a broken plugin stops the command before any work. The
    model, protocol, reader and metric registries are created here; the post-processor registry
    lives in the engine and loads its group itself when it is first read.
    """
    import clip2video.data.protocols
    import clip2video.metrics.definitions
    import clip2video.models.registry  # noqa: F401  (the registries exist once imported)

    names: list[str] = []
    for registry in all_registries():
        if registry.group in groups:
            names += registry.load_plugins()
    return names


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
    """Import each user module or file (``--import``); its registrations run on import.

    A value ending in ``.py`` or naming an existing file is imported from that file (its folder is
    put on ``sys.path`` so it can import its neighbours); any other value is a module name, looked
    up on ``sys.path`` and then in the current folder. With ``export`` the values are also put in
    ``$CLIP2VIDEO_IMPORT`` for worker processes (files as absolute paths; a worker starts in the
    same folder, so a module found there is found again).
    """
    exported: list[str] = []
    for name in modules:
        exported.append(_import_one(name))
    if export and exported:
        known = [m for m in os.environ.get(ENV_VAR, "").split(",") if m]
        os.environ[ENV_VAR] = ",".join(dict.fromkeys([*known, *exported]))


def _is_file(value: str) -> bool:
    return value.endswith(".py") or os.sep in value or (os.altsep or os.sep) in value or Path(value).is_file()


def _import_one(value: str) -> str:
    """Import one ``--import`` value; returns how a worker process imports it again."""
    if _is_file(value):
        return str(_import_file(value))
    top = value.split(".")[0]
    cwd = os.getcwd()
    here = (Path(cwd) / f"{top}.py").is_file() or (Path(cwd) / top / "__init__.py").is_file()
    if here and cwd not in sys.path and importlib.util.find_spec(top) is None:
        sys.path.append(cwd)  # after installed packages: the current folder never shadows them
    try:
        importlib.import_module(value)
    except ModuleNotFoundError as exc:
        if exc.name in (top, value) or value.startswith(f"{exc.name}."):
            raise PluginError(
                f"--import {value}: no module named {exc.name!r} (not installed, not on PYTHONPATH, not in the "
                f"current folder {cwd}); pass an importable module name or a file path (--import ./{top}.py)"
            ) from exc
        raise PluginError(f"--import {value}: importing it failed: ModuleNotFoundError: {exc}") from exc
    except Exception as exc:
        raise PluginError(f"--import {value}: importing it failed: {type(exc).__name__}: {exc}") from exc
    return value


def _import_file(value: str) -> Path:
    """Import the Python file ``value`` as the module named after its stem."""
    path = Path(value).expanduser().resolve()
    if not path.is_file():
        raise PluginError(
            f"--import {value}: no such file ({path}); pass an existing .py file or a module name"
        )
    if path.suffix != ".py":
        raise PluginError(f"--import {value}: not a Python file (.py); pass a .py file or a module name")
    name = path.stem
    if not name.isidentifier():
        raise PluginError(f"--import {value}: {name!r} is not a valid module name; rename the file")
    loaded = sys.modules.get(name)
    if loaded is not None:
        origin = getattr(loaded, "__file__", None)
        if origin and Path(origin).resolve() == path:
            return path
        raise PluginError(
            f"--import {value}: a module named {name!r} is already imported (from {origin or 'built-in'}); "
            "rename the file"
        )
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.append(folder)  # the file may import its neighbours
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:  # pragma: no cover - a .py file always has a loader
        raise PluginError(f"--import {value}: cannot be imported as a module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise PluginError(f"--import {value}: importing it failed: {type(exc).__name__}: {exc}") from exc
    return path
