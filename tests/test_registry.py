"""``clip2video.registry.Registry``: the one registry type behind models, protocols, readers,
post-processors and metrics (issue 17 §3)."""

from __future__ import annotations

import sys
from importlib import metadata
from types import SimpleNamespace

import pytest

from clip2video.errors import DuplicateNameError, PluginError, UnknownNameError
from clip2video.registry import Registry


def test_register_as_decorator_and_call_get_list_contains() -> None:
    shapes = Registry("shape")

    @shapes.register
    def circle() -> str:
        return "o"

    @shapes.register(name="sq", sides=4)
    def square() -> str:
        return "[]"

    shapes.register(lambda: "/\\", name="triangle")
    assert shapes.get("circle") is circle and shapes["sq"] is square
    assert shapes.list() == ["circle", "sq", "triangle"] and shapes.list("*i*") == ["circle", "triangle"]
    assert "sq" in shapes and "square" not in shapes and len(shapes) == 3
    assert shapes.info("sq") == {"sides": 4} and shapes.info("circle") == {}
    assert shapes.get("hexagon", None) is None
    assert shapes.unregister("sq") is square and "sq" not in shapes


def test_one_duplicate_error_and_overwrite() -> None:
    shapes = Registry("shape")
    shapes.register(str, name="a")
    shapes.register(str, name="a")  # the same object again: a no-op
    with pytest.raises(
        DuplicateNameError, match="a shape named 'a' is already registered.*overwrite=True"
    ) as err:
        shapes.register(int, name="a")
    assert isinstance(err.value, ValueError)
    shapes.register(int, name="a", overwrite=True)
    assert shapes.get("a") is int


def test_unknown_name_suggests_the_closest_and_lists_the_rest() -> None:
    shapes = Registry("shape")
    for name in ("circle", "square", "triangle"):
        shapes.register(object(), name=name)
    with pytest.raises(UnknownNameError) as err:
        shapes.get("sqare")
    assert (
        str(err.value) == "Unknown shape 'sqare'. Did you mean 'square'? Available: circle, square, triangle"
    )
    assert isinstance(err.value, KeyError) and err.value.suggestion == "square"
    with pytest.raises(KeyError, match=r"^Unknown shape 'zzz'\. Available: circle, square, triangle$"):
        shapes["zzz"]
    with pytest.raises(UnknownNameError, match="Unknown reader of x 'q'"):
        shapes.get("q", kind="reader of x")


def _entry_points(monkeypatch: pytest.MonkeyPatch, group: str, entries: dict[str, str]) -> list[str]:
    """Installed entry points of ``group`` (fakes of importlib.metadata's); returns the loaded values."""
    loaded: list[str] = []

    class Entry(SimpleNamespace):
        def load(self):
            loaded.append(self.value)
            return metadata.EntryPoint(self.name, self.value, group).load()

    def entry_points(*, group: str = "") -> list[Entry]:
        return [Entry(name=k, value=v) for k, v in entries.items()] if group == wanted else []

    wanted = group
    monkeypatch.setattr("clip2video.registry.metadata.entry_points", entry_points)
    return loaded


def test_entry_points_load_lazily_on_first_read(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """The group is read on the first get / list / in (not on register); a module entry registers by
    being imported, an object entry is registered under the entry's name."""
    (tmp_path / "c2v_fake_plugin.py").write_text(
        "from tests.test_registry import COLOURS\n"
        "COLOURS.register(lambda: 'green', name='green')\n"
        "def blue():\n    return 'blue'\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    loaded = _entry_points(
        monkeypatch, "clip2video.colours", {"mod": "c2v_fake_plugin", "navy": "c2v_fake_plugin:blue"}
    )
    COLOURS.register(lambda: "red", name="red")
    assert loaded == [], "registering does not load plugins"
    assert COLOURS.list() == ["green", "navy", "red"]
    assert loaded == ["c2v_fake_plugin", "c2v_fake_plugin:blue"]
    assert COLOURS.get("navy")() == "blue"
    COLOURS.list()
    assert len(loaded) == 2, "once per process"
    sys.modules.pop("c2v_fake_plugin", None)


COLOURS: Registry = Registry("colour", "colours")


def test_a_broken_plugin_is_one_error_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    broken = Registry("widget", "widgets")
    _entry_points(monkeypatch, "clip2video.widgets", {"bad": "c2v_no_such_module_at_all"})
    with pytest.raises(
        PluginError, match=r"plugin 'bad' \(c2v_no_such_module_at_all\) of entry-point group "
    ):
        broken.list()
