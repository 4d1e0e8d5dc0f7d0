"""One registry type for every extension point: models, protocols, readers, post-processors, metrics.

In the spirit of timm's ``_registry.py`` and lm-evaluation-harness's ``api/registry.py``: a
``Registry[T]`` maps names to objects, is filled by ``register`` (a decorator or a call) and read by
``get`` / ``list`` (a glob) / ``in``. Each registry may name an entry-point group: the installed
packages' entry points of that group are imported lazily, the first time the registry is read
(``get``, ``list``, ``in``, iteration), so ``clip2video.list_models()`` in a notebook sees an
installed plugin exactly as the command line does. Registering never loads entry points (the
built-ins register while their module is imported; a plugin may import that module).

Errors: a name registered twice with a different object is a :class:`DuplicateNameError`
(``overwrite=True`` replaces); an unknown name is an :class:`UnknownNameError` (also a ``KeyError``)
reading ``Unknown model 'clip2vid'. Did you mean 'clip2video'? Available: ...``; an entry point that
fails to import is a :class:`PluginError` naming it.

>>> colours = Registry("colour")
>>> @colours.register
... def red():
...     return "#f00"
>>> colours.register(lambda: "#00f", name="blue")  # doctest: +ELLIPSIS
<function <lambda> at ...>
>>> colours.list(), colours.list("b*"), "red" in colours
(['blue', 'red'], ['blue'], True)
>>> colours.get("red")()
'#f00'
>>> colours.get("rde")
Traceback (most recent call last):
clip2video.errors.UnknownNameError: Unknown colour 'rde'. Did you mean 'red'? Available: blue, red
"""

from __future__ import annotations

import fnmatch
import sys
from collections.abc import Callable, Iterator, Mapping
from importlib import metadata
from typing import Any, Generic, TypeVar, overload

from clip2video.errors import DuplicateNameError, PluginError, UnknownNameError

T = TypeVar("T")
F = TypeVar("F")

__all__ = ["Registry", "all_registries"]

_REGISTRIES: list[Registry[Any]] = []
ENTRY_POINT_PREFIX = "clip2video."


class Registry(Mapping[str, T], Generic[T]):
    """Names -> objects of one kind, with an optional entry-point group loaded on first read.

    Args:
        kind: what an entry is, for messages (``"model"``, ``"protocol"``, ``"reader"``).
        group: the entry-point group of installed plugins, named by its suffix: ``"models"`` is the
            group ``clip2video.models`` (the full name is ``registry.group``); None for no group.
        unknown_error: the ``UnknownNameError`` subclass an unknown name raises (e.g. one that is
            also a ``ProtocolError``).
        adopt: ``adopt(registry, name, obj)`` registers an entry point that resolved to an object
            (not a module); the default registers ``obj`` under the entry's name.
        name_of: the name an entry is registered under when ``register`` is given none (default:
            its ``__name__``).

    Each entry may carry keyword metadata (``register(fn, options=...)``), read with :meth:`info`.
    """

    def __init__(
        self,
        kind: str,
        group: str | None = None,
        *,
        unknown_error: type[UnknownNameError] = UnknownNameError,
        adopt: Callable[[Registry[T], str, Any], None] | None = None,
        name_of: Callable[[Any], str] | None = None,
    ) -> None:
        self.kind = kind
        self.group = f"{ENTRY_POINT_PREFIX}{group}" if group else None
        self._unknown_error = unknown_error
        self._adopt = adopt
        self._name_of = name_of
        self._entries: dict[str, T] = {}
        self._info: dict[str, dict[str, Any]] = {}
        self._plugins_loaded = group is None
        _REGISTRIES.append(self)

    # ------------------------------------------------------------------ writing
    @overload
    def register(self, obj: F, *, name: str | None = None, overwrite: bool = False, **info: Any) -> F: ...
    @overload
    def register(
        self, obj: None = None, *, name: str | None = None, overwrite: bool = False, **info: Any
    ) -> Callable[[F], F]: ...

    def register(
        self, obj: Any = None, *, name: str | None = None, overwrite: bool = False, **info: Any
    ) -> Any:
        """Register ``obj`` under ``name`` (default: ``name_of(obj)``, else its ``__name__``).

        A decorator with or without arguments (``@r.register``, ``@r.register(name="x")``) or a
        call (``r.register(obj, name="x")``); returns ``obj``. Registering the same (or an equal)
        object again is a no-op; another object under a taken name is a DuplicateNameError unless
        ``overwrite``. Keyword ``info`` is stored beside the entry (:meth:`info`).
        """

        def add(item: Any) -> Any:
            key = name or self._default_name(item)
            old = self._entries.get(key)
            if old is not None and not overwrite and old is not item and old != item:
                raise DuplicateNameError(self.kind, key, _origin(old))
            self._entries[key] = item
            self._info[key] = dict(info)
            return item

        return add(obj) if obj is not None else add

    def unregister(self, name: str) -> T | None:
        """Remove ``name`` (tests, notebooks); returns its entry, or None when absent."""
        self._info.pop(name, None)
        return self._entries.pop(name, None)

    def pop(self, name: str, default: Any = None) -> Any:
        """``dict.pop``: remove ``name`` and return its entry (``default`` when absent)."""
        return self._entries.pop(name, default) if name in self._entries else default

    # ------------------------------------------------------------------ reading
    def get(self, name: str, default: Any = ..., *, kind: str | None = None) -> T:  # type: ignore[override]
        """The entry ``name``; an unknown name raises ``UnknownNameError`` (naming ``kind`` when
        given, e.g. ``"reader (layout of protocol 'x')"``) unless a ``default`` is given."""
        self.load_plugins()
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            if default is not ...:
                return default
            raise self._unknown_error(kind or self.kind, str(name), self.list()) from None

    def list(self, pattern: str = "*") -> list[str]:
        """Registered names matching the glob ``pattern``, sorted."""
        self.load_plugins()
        return sorted(n for n in self._entries if fnmatch.fnmatchcase(n, pattern))

    def info(self, name: str) -> dict[str, Any]:
        """The metadata ``name`` was registered with (``UnknownNameError`` when not registered)."""
        self.get(name)
        return dict(self._info.get(name, {}))

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __contains__(self, name: object) -> bool:
        self.load_plugins()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        self.load_plugins()
        return iter(list(self._entries))

    def __len__(self) -> int:
        self.load_plugins()
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, group={self.group!r}, {len(self._entries)} entries)"

    # ------------------------------------------------------------------ plugins
    def load_plugins(self) -> list[str]:
        """Import the installed entry points of ``group`` (once per process); their names.

        An entry point naming a module registers by being imported; one naming an object is
        handed to ``adopt`` (default: registered under the entry's name). A failure is a
        ``PluginError`` naming the entry point.
        """
        if self._plugins_loaded:
            return []
        self._plugins_loaded = True  # before importing: a plugin may read the registry
        names: list[str] = []
        for entry in metadata.entry_points(group=str(self.group)):
            try:
                obj = entry.load()
            except Exception as exc:
                raise PluginError(
                    f"plugin {entry.name!r} ({entry.value}) of entry-point group {self.group!r} failed to "
                    f"import: {type(exc).__name__}: {exc}"
                ) from exc
            if not isinstance(obj, type(sys)):
                (self._adopt or _adopt_under_entry_name)(self, entry.name, obj)
            names.append(entry.name)
        return names

    def _default_name(self, item: Any) -> str:
        if self._name_of is not None:
            return self._name_of(item)
        name = getattr(item, "__name__", None)
        if not isinstance(name, str):
            raise TypeError(f"register a {self.kind} with name=...: {item!r} has no __name__")
        return name


def _adopt_under_entry_name(registry: Registry[Any], name: str, obj: Any) -> None:
    if name not in registry._entries:
        registry.register(obj, name=name)


def _origin(obj: Any) -> str:
    """Where a registered function or class comes from (empty for other objects)."""
    qualname = getattr(obj, "__qualname__", None)
    module = getattr(obj, "__module__", None)
    return f"by {module}.{qualname}" if isinstance(qualname, str) and module else ""


def all_registries() -> list[Registry[Any]]:
    """Every registry created so far (those of the modules imported), in creation order."""
    return list(_REGISTRIES)
