"""Experiment suites are data: load a suite TOML, merge it over the defaults, validate everything.

The shipped suites are package data (``clip2video/suites/*.toml``, read with importlib.resources),
so an installed wheel has them; ``--suite`` takes one of their names or a path to a TOML file.
:func:`load_suite` checks every key, type, enum and range, the protocol and every model name
against the registries, the post-processors and the seeds, so a suite that cannot run fails at
once with one message naming the file and the key.

One rule resolves every setting (:func:`resolve_settings`, used by suite files, the ``eval`` verb's
one-row suite and ``--set`` on a loaded suite alike): ``defaults.toml`` < the protocol's defaults
(``Protocol.settings()``: ``[frames]``, ``[text] max_words``, ``[model] center_k``) < the suite
file < the ``--set`` overrides.
"""

from __future__ import annotations

import copy
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from clip2video.errors import ConfigError

# Sections whose contents are free-form (passed through as they are).
FREE_SECTIONS = {("backbone", "config")}
SELECT_ON = ("final", "val", "test")
TDB_PROJECTIONS = ("selfattn", "mlp", "none")
# Built-in post-processors (engine.postprocess implements them; its registry, when present, wins).
POSTPROCESSORS = ("dsl", "qbnorm")


class SuiteError(ConfigError):
    """A suite file is missing, malformed or names an unknown setting or value."""


@dataclass(frozen=True)
class Suite:
    """A fully resolved suite: every setting present, defaults filled in."""

    name: str
    path: Path | None
    settings: dict[str, Any] = field(default_factory=dict)
    # What the suite itself says (its file, or the settings given in code), before the defaults and
    # the protocol's defaults: ``--set`` on a loaded suite re-resolves from it (``protocol`` included).
    declared: dict[str, Any] | None = field(default=None, compare=False, repr=False)

    def __getitem__(self, key: str) -> Any:
        return self.settings[key]

    @property
    def protocol(self) -> str:
        return self.settings["protocol"]

    @property
    def models(self) -> list[str]:
        return list(self.settings["models"])


def suites_dir() -> Traversable:
    """The shipped suites (package data ``clip2video/suites``)."""
    return resources.files("clip2video").joinpath("suites")


def default_settings() -> dict[str, Any]:
    """The defaults shipped with the package (``defaults.toml``), without the protocol's defaults."""
    text = resources.files("clip2video.experiments").joinpath("defaults.toml").read_text(encoding="utf-8")
    return tomllib.loads(text)


def protocol_defaults(protocol: str) -> dict[str, Any]:
    """The settings ``protocol`` fills in a suite (``Protocol.settings()``), keyed as in a suite file."""
    from clip2video.data.protocols import get_protocol

    return get_protocol(protocol).settings()


def resolve_settings(
    declared: dict[str, Any], overrides: dict[str, Any] | None = None, source: str = "suite"
) -> dict[str, Any]:
    """A suite's resolved settings, validated: ``defaults.toml`` < the protocol's defaults <
    ``declared`` (the suite file) < ``overrides`` (``--set``, as a nested dict).

    The protocol is the one ``overrides`` or else ``declared`` names; ``source`` names the suite in
    errors.
    """
    overrides = overrides or {}
    defaults = default_settings()
    where = "command-line override (--set)" if "protocol" in overrides else source
    name = overrides.get("protocol", declared.get("protocol", defaults["protocol"]))
    settings = _merge(defaults, {"protocol": name}, "top level", where)  # its type, then the registry
    _check_protocol(settings, where)
    for section, values in protocol_defaults(name).items():
        settings.setdefault(section, {}).update(copy.deepcopy(values))
    settings = _merge(settings, declared, "top level", source)
    if overrides:
        settings = _merge(settings, overrides, "top level", "command-line override (--set)")
        source = f"{source} with the --set overrides"
    validate_settings(settings, source)
    return settings


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
            if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
                raise SuiteError(
                    f"{source}: {'.'.join(here)!r} must be {expected.__name__}, got "
                    f"{type(value).__name__} {value!r}"
                )
            merged[key] = value
    return merged


def resolve_suite_path(name_or_path: str | Path) -> Path | Traversable:
    """A shipped suite's name (``clip2video/suites/<name>.toml``) or a path to a TOML file."""
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml" or candidate.parent != Path("."):
        if not candidate.is_file():
            raise SuiteError(
                f"suite file {candidate} does not exist (shipped suites: {', '.join(list_suites())})"
            )
        return candidate
    path = suites_dir().joinpath(f"{name_or_path}.toml")
    if not path.is_file():
        raise SuiteError(
            f"Unknown suite {str(name_or_path)!r}. Available: {', '.join(list_suites())} "
            "(or pass the path of a .toml file)"
        )
    return path


def list_suites() -> list[str]:
    """Names of the shipped suites."""
    return sorted(p.name[: -len(".toml")] for p in suites_dir().iterdir() if p.name.endswith(".toml"))


def suite_file_settings(name_or_path: str | Path) -> dict[str, Any]:
    """What a suite file says (a shipped name or a path), before any defaults: its parsed TOML."""
    return _read_toml(resolve_suite_path(name_or_path))


def _read_toml(path: Path | Traversable) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise SuiteError(f"{path}: not valid TOML ({exc})") from exc
    except UnicodeDecodeError as exc:
        raise SuiteError(f"{path}: not UTF-8 text (byte {exc.start}); re-save it as UTF-8") from exc


def load_suite(name_or_path: str | Path | Suite, overrides: dict[str, Any] | None = None) -> Suite:
    """Load and validate a suite: :func:`resolve_settings` of its file and ``overrides`` (a nested dict).

    A :class:`Suite` (e.g. from :func:`suite_from_settings`) passes through, with ``overrides`` applied
    by the same rule.
    """
    if isinstance(name_or_path, Suite):
        suite = name_or_path
        if not overrides:
            return suite
        source = str(suite.path) if suite.path is not None else f"suite {suite.name!r}"
        if suite.declared is None:  # a Suite built by hand: its settings are all it says
            settings = _merge(suite.settings, overrides, "top level", "command-line override (--set)")
            validate_settings(settings, f"{source} with the --set overrides")
        else:
            settings = resolve_settings(suite.declared, overrides, source)
        return Suite(name=suite.name, path=suite.path, settings=settings, declared=suite.declared)
    path = resolve_suite_path(name_or_path)
    declared = _read_toml(path)
    settings = resolve_settings(declared, overrides, str(path))
    stem = Path(str(path)).stem
    return Suite(name=settings["name"] or stem, path=Path(str(path)), settings=settings, declared=declared)


def suite_from_settings(name: str, settings: dict[str, Any], source: str = "") -> Suite:
    """A suite built in code (``settings`` as a suite file would say them), resolved by the same rule
    as a file, e.g. the ``eval`` verb's row."""
    declared = {**copy.deepcopy(settings), "name": name}
    resolved = resolve_settings(declared, None, source or f"suite {name!r}")
    return Suite(name=name, path=None, settings=resolved, declared=declared)


# --------------------------------------------------------------------------------------------
# Validation: every value a row will use, checked before any work.

# (section, key) -> (lowest allowed, highest allowed or None); both inclusive.
RANGES: dict[tuple[str, str], tuple[float, float | None]] = {
    ("run", "jobs"): (0, None),
    ("run", "threads"): (0, None),  # 0 = automatic (the cores shared among the rows at once)
    ("data", "num_workers"): (-1, None),  # -1 = automatic (the available cores, capped)
    ("data", "frame_cache_mb"): (0, None),
    ("synthetic", "seed"): (0, None),
    ("synthetic", "num_train"): (1, None),
    ("synthetic", "num_val"): (0, None),
    ("synthetic", "num_test_pairs"): (1, None),
    ("synthetic", "captions_per_video"): (1, None),
    ("synthetic", "height"): (16, None),
    ("synthetic", "width"): (16, None),
    ("model", "center_k"): (1, None),
    ("model", "center_weight"): (0.0, 1.0),
    ("model", "temporal_layers"): (1, None),
    ("frames", "extraction_fps"): (0.0, None),
    ("frames", "stride"): (1, None),
    ("frames", "max_frames"): (1, None),
    ("frames", "image_size"): (1, None),
    ("text", "max_words"): (3, None),
    ("train", "epochs"): (1, None),
    ("train", "batch_size"): (1, None),
    ("train", "grad_accum"): (1, None),
    ("train", "lr"): (0.0, None),
    ("train", "coef_lr"): (0.0, None),
    ("train", "weight_decay"): (0.0, None),
    ("train", "warmup"): (0.0, 1.0),
    ("train", "clip_grad"): (0.0, None),
    ("train", "val_every"): (1, None),
    ("eval", "bootstrap"): (0, None),
    ("eval", "batch_size"): (1, None),
}
# Strictly positive (a zero learning rate trains nothing; a zero frame rate extracts nothing).
POSITIVE: set[tuple[str, str]] = {("train", "lr"), ("train", "coef_lr"), ("frames", "extraction_fps")}


def _enums() -> dict[tuple[str, ...], tuple[str, ...]]:
    from clip2video.data.frames import DECODE_MODES
    from clip2video.metrics import TIE_POLICIES, V2T_CONVENTIONS

    return {
        ("train", "select_on"): SELECT_ON,
        ("eval", "tie_policy"): TIE_POLICIES,
        ("eval", "v2t"): V2T_CONVENTIONS,
        ("model", "tdb_proj"): TDB_PROJECTIONS,
        ("frames", "decode"): DECODE_MODES,
    }


def validate_settings(settings: dict[str, Any], source: str) -> None:
    """Raise :class:`SuiteError` naming ``source`` and the key of the first value that cannot run."""
    checks: list[Callable[[dict[str, Any], str], None]] = [
        _check_protocol,
        _check_models,
        _check_seeds,
        _check_ranges,
        _check_enums,
        _check_postprocess,
        _check_backbone,
    ]
    for check in checks:
        check(settings, source)


def _check_protocol(settings: dict[str, Any], source: str) -> None:
    from clip2video.data.protocols import get_protocol

    if not settings["protocol"]:
        raise SuiteError(f"{source}: 'protocol' is required")
    try:
        get_protocol(settings["protocol"])
    except Exception as exc:
        raise SuiteError(f"{source}: protocol: {exc}") from exc


def _check_models(settings: dict[str, Any], source: str) -> None:
    from clip2video.models import list_models

    models = settings["models"]
    if not models:
        raise SuiteError(f"{source}: 'models' must name at least one model")
    known = list_models()
    for name in models:
        if not isinstance(name, str) or name not in known:
            raise SuiteError(
                f"{source}: models: Unknown model {name!r}. Available: {', '.join(known)} "
                "(a plugin's models need its package installed or --import MODULE)"
            )
    repeated = sorted({m for m in models if models.count(m) > 1})
    if repeated:
        raise SuiteError(f"{source}: models: {', '.join(repeated)} listed more than once")


def _check_seeds(settings: dict[str, Any], source: str) -> None:
    seeds = settings["seeds"]
    if not seeds:
        raise SuiteError(f"{source}: 'seeds' must hold at least one integer seed, e.g. seeds = [0]")
    bad = [s for s in seeds if not isinstance(s, int) or isinstance(s, bool) or s < 0]
    if bad:
        raise SuiteError(f"{source}: seeds: {bad[0]!r} is not a non-negative integer; e.g. seeds = [0, 1, 2]")
    if len(set(seeds)) != len(seeds):
        raise SuiteError(f"{source}: seeds: {seeds} repeats a seed")


def _check_ranges(settings: dict[str, Any], source: str) -> None:
    for (section, key), (low, high) in RANGES.items():
        value = settings[section][key]
        positive = (section, key) in POSITIVE
        if value < low or (high is not None and value > high) or (positive and value <= 0):
            if positive:
                want = "> 0"
            elif high is None:
                want = f">= {low}"
            else:
                want = f"in [{low}, {high}]"
            raise SuiteError(f"{source}: {section}.{key} = {value!r} is out of range: it must be {want}")


def _check_enums(settings: dict[str, Any], source: str) -> None:
    for (section, key), allowed in _enums().items():
        value = settings[section][key]
        if value not in allowed:
            raise SuiteError(f"{source}: {section}.{key} = {value!r}: choose one of {', '.join(allowed)}")
    e = settings["eval"]
    if e["tie_policy"] == "legacy" and e["v2t"] != "official":
        raise SuiteError(f"{source}: eval.tie_policy = 'legacy' needs eval.v2t = 'official'")
    if e["legacy"] and e["v2t"] != "official":
        raise SuiteError(f"{source}: eval.legacy = true needs eval.v2t = 'official' (the official code's)")
    from clip2video.metrics import check_recall_ks

    try:
        check_recall_ks(e["recall_ks"])
    except ValueError as exc:
        raise SuiteError(f"{source}: {exc}") from None


def known_postprocessors() -> list[str]:
    """The post-processor registry's names (engine.postprocess), or the built-in ones."""
    from clip2video.engine import postprocess

    registry = getattr(postprocess, "list_postprocessors", None)
    return list(registry()) if registry is not None else list(POSTPROCESSORS)


def _check_postprocess(settings: dict[str, Any], source: str) -> None:
    known = known_postprocessors()
    for name in settings["eval"]["postprocess"]:
        if name not in known:
            raise SuiteError(
                f"{source}: eval.postprocess: Unknown post-processor {name!r}. Available: {', '.join(known)}"
            )


def _check_backbone(settings: dict[str, Any], source: str) -> None:
    backbone = settings["backbone"]
    if backbone["clip"] == "tiny" and not backbone["config"]:
        raise SuiteError(f"{source}: backbone.clip = 'tiny' needs a [backbone.config] table")
    if not backbone["clip"]:
        raise SuiteError(f"{source}: backbone.clip must name a CLIP architecture, e.g. 'ViT-B-32'")
    from clip2video.data.protocols import get_protocol

    if get_protocol(settings["protocol"]).val_split is None and settings["train"]["select_on"] == "val":
        raise SuiteError(
            f"{source}: train.select_on = 'val' but protocol {settings['protocol']!r} has no validation "
            "split; use 'final'"
        )
