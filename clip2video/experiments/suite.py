"""Experiment suites are data: load a suite TOML, merge it over the defaults, validate every key."""

from __future__ import annotations

import copy
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from clip2video.errors import Clip2VideoError

SUITES_DIR = Path(__file__).resolve().parents[2] / "benchmarks" / "suites"
# Sections whose contents are free-form (passed through as they are).
FREE_SECTIONS = {("backbone", "config")}


class SuiteError(Clip2VideoError):
    """A suite file is missing, malformed or names an unknown setting."""


@dataclass(frozen=True)
class Suite:
    """A fully resolved suite: every setting present, defaults filled in."""

    name: str
    path: Path | None
    settings: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        return self.settings[key]

    @property
    def protocol(self) -> str:
        return self.settings["protocol"]

    @property
    def models(self) -> list[str]:
        return list(self.settings["models"])


def default_settings() -> dict[str, Any]:
    """The defaults shipped with the package (``defaults.toml``)."""
    text = resources.files("clip2video.experiments").joinpath("defaults.toml").read_text()
    return tomllib.loads(text)


def _merge(defaults: dict, override: dict, where: str, source: str, path: tuple[str, ...] = ()) -> dict:
    merged = copy.deepcopy(defaults)
    for key, value in override.items():
        here = (*path, key)
        if path in FREE_SECTIONS:
            merged[key] = value
            continue
        if key not in defaults:
            known = ", ".join(sorted(defaults)) or "(none)"
            raise SuiteError(f"{source}: unknown setting {'.'.join(here)!r}; known in [{where}]: {known}")
        if isinstance(defaults[key], dict):
            if not isinstance(value, dict):
                raise SuiteError(f"{source}: {'.'.join(here)!r} must be a table")
            merged[key] = _merge(defaults[key], value, ".".join(here), source, here)
        else:
            expected = type(defaults[key])
            if expected is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not isinstance(value, expected):
                raise SuiteError(
                    f"{source}: {'.'.join(here)!r} must be {expected.__name__}, got {type(value).__name__}"
                )
            merged[key] = value
    return merged


def resolve_suite_path(name_or_path: str | Path) -> Path:
    """A suite name (``benchmarks/suites/<name>.toml``) or a path to a TOML file."""
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml":
        if not candidate.is_file():
            raise SuiteError(f"suite file {candidate} does not exist")
        return candidate
    path = SUITES_DIR / f"{name_or_path}.toml"
    if not path.is_file():
        raise SuiteError(
            f"no suite {name_or_path!r}: {path} does not exist; known: {', '.join(list_suites())}"
        )
    return path


def list_suites() -> list[str]:
    """Names of the suites in ``benchmarks/suites``."""
    return sorted(p.stem for p in SUITES_DIR.glob("*.toml"))


def load_suite(name_or_path: str | Path, overrides: dict[str, Any] | None = None) -> Suite:
    """Load, merge over the defaults, and validate a suite (``overrides`` as a nested dict)."""
    path = resolve_suite_path(name_or_path)
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise SuiteError(f"{path}: not valid TOML ({exc})") from exc
    settings = _merge(default_settings(), data, "top level", str(path))
    if overrides:
        settings = _merge(settings, overrides, "top level", "command-line override")
    _validate(settings, str(path))
    return Suite(name=settings["name"] or path.stem, path=path, settings=settings)


def _validate(settings: dict[str, Any], source: str) -> None:
    if not settings["protocol"]:
        raise SuiteError(f"{source}: 'protocol' is required")
    if not settings["models"]:
        raise SuiteError(f"{source}: 'models' must name at least one model")
    if settings["train"]["select_on"] not in ("final", "val", "test"):
        raise SuiteError(f"{source}: train.select_on must be final, val or test")
    if settings["backbone"]["clip"] == "tiny" and not settings["backbone"]["config"]:
        raise SuiteError(f"{source}: backbone.clip = 'tiny' needs a [backbone.config] table")
