"""A suite's settings as typed, frozen objects (the shared layer: every layer may import this module).

The defaults are data: ``clip2video/experiments/defaults.toml`` names every setting with its
default (the protocol fills ``[frames]``, ``[text] max_words`` and ``[model] center_k``); the
classes below give each section its fields and types and repeat no default. One rule builds a
suite's settings (``experiments.suite.resolve_settings``): ``defaults.toml`` < the protocol's
defaults < the suite file < ``--set``, merged by :func:`merge` (the key must exist, the value must
have the default's type; an integer is accepted for a float) and checked by :func:`check_values`
(ranges, finite numbers, seeds), then frozen by :meth:`Settings.from_dict`.

:meth:`Settings.to_dict` gives the plain nested dict that records (``config.json``), fingerprints
and ``suite.json`` carry, key for key and in the same order as before the objects existed.

A suite may also declare variant rows (``[[rows]]``: a name, a model and ``set``, dotted keys with
the same rules and types as ``--set``) and per-question tables (``[[tables]]``); their schema is
checked here, their names against the registries in ``experiments.suite``.

Old code may still read a :class:`Settings` like the dict it replaced (``settings["train"]["lr"]``:
it is a read-only ``Mapping`` over :meth:`Settings.to_dict`); new code reads attributes
(``settings.train.lr``).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from functools import lru_cache
from importlib import resources
from typing import Any, ClassVar

from clip2video.errors import ConfigError

# Sections whose contents are free-form (passed through as they are; the backbone's are checked
# against open_clip's config classes by experiments.suite).
FREE_SECTIONS: frozenset[tuple[str, ...]] = frozenset({("backbone", "config")})
# Keys of a suite file that are not settings: inheritance, variant rows and table declarations.
STRUCTURE_KEYS = ("base", "rows", "tables")
# The only sections a variant row's ``set`` may change: the rest is shared by every row (the data,
# the schedule) or decides which rows exist.
ROW_SECTIONS = ("backbone", "model", "frames", "text", "train", "eval")
TABLE_KINDS = ("rows", "weights")
SEED_LIMIT = 2**32  # numpy and torch take seeds below 2**32


class SettingsError(ConfigError):
    """A setting is unknown, of the wrong type, out of range or not finite (the message names it)."""


# --------------------------------------------------------------------------------------------
# defaults.toml


@lru_cache(maxsize=1)
def _defaults_text() -> str:
    return resources.files("clip2video").joinpath("experiments", "defaults.toml").read_text(encoding="utf-8")


def default_settings() -> dict[str, Any]:
    """``defaults.toml`` as a fresh nested dict (without the protocol's defaults)."""
    return tomllib.loads(_defaults_text())


def section_defaults(section: str) -> dict[str, Any]:
    """One section of ``defaults.toml`` (e.g. ``"train"``)."""
    return default_settings()[section]


# --------------------------------------------------------------------------------------------
# Frozen containers


class FrozenMapping(Mapping[str, Any]):
    """A read-only, picklable mapping (the free-form ``[backbone.config]``, a row's ``set``).

    Nested tables are FrozenMappings and arrays tuples; :func:`thaw` gives plain dicts and lists.
    """

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, Any] | None = None) -> None:
        object.__setattr__(self, "_data", {str(k): freeze(v) for k, v in (data or {}).items()})

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("FrozenMapping is read-only")

    def __getstate__(self) -> dict[str, Any]:
        return self._data

    def __setstate__(self, state: dict[str, Any]) -> None:
        object.__setattr__(self, "_data", state)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mapping) and thaw(self) == thaw(other)

    def __hash__(self) -> int:
        return hash(json.dumps(thaw(self), sort_keys=True, default=str))

    def __repr__(self) -> str:
        return f"FrozenMapping({thaw(self)!r})"


def freeze(value: Any) -> Any:
    """Dicts -> FrozenMapping, lists -> tuples (recursively); anything else as it is."""
    if isinstance(value, FrozenMapping):
        return value
    if isinstance(value, Mapping):
        return FrozenMapping(value)
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """The plain value of a frozen one: mappings -> dicts, tuples -> lists (recursively)."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [thaw(v) for v in value]
    return value


class _Section:
    """A section of the settings: a frozen dataclass whose fields are the section's keys."""

    SECTION: ClassVar[str] = ""

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str = "settings") -> Any:
        names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
        unknown = [k for k in values if k not in names]
        missing = [k for k in names if k not in values]
        if unknown or missing:
            what = "; ".join(
                x
                for x in (
                    f"unknown {', '.join(f'{cls.SECTION}.{k}' for k in unknown)}" if unknown else "",
                    f"missing {', '.join(f'{cls.SECTION}.{k}' for k in missing)}" if missing else "",
                )
                if x
            )
            raise SettingsError(f"{source}: [{cls.SECTION}] does not match its settings ({what})")
        return cls(**{k: freeze(values[k]) for k in names})

    @classmethod
    def defaults(cls) -> Any:
        """The section's defaults from ``defaults.toml`` (sections the protocol completes: KeyError)."""
        return cls.from_dict(section_defaults(cls.SECTION), "defaults.toml")

    def to_dict(self) -> dict[str, Any]:
        return {f.name: thaw(getattr(self, f.name)) for f in fields(self)}  # type: ignore[arg-type]

    def replace(self, **changes: Any) -> Any:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


@dataclass(frozen=True)
class RunSettings(_Section):
    """``[run]``: rows at once (``jobs``, 0 = automatic) and torch threads per row (0 = automatic)."""

    SECTION: ClassVar[str] = "run"
    jobs: int
    threads: int


@dataclass(frozen=True)
class DataSettings(_Section):
    """``[data]``: folders (relative to --data-root), missing videos, links out of the videos
    folder, decoding workers, frame cache."""

    SECTION: ClassVar[str] = "data"
    annotations: str
    videos: str
    allow_missing: bool
    allow_outside_links: bool
    num_workers: int
    frame_cache_mb: int


@dataclass(frozen=True)
class SyntheticSettings(_Section):
    """``[synthetic]``: the generated protocol's seed, sizes and frame size."""

    SECTION: ClassVar[str] = "synthetic"
    seed: int
    num_train: int
    num_val: int
    num_test_pairs: int
    captions_per_video: int
    height: int
    width: int


@dataclass(frozen=True)
class BackboneSettings(_Section):
    """``[backbone]``: the open_clip architecture, its weights and the free-form ``config``."""

    SECTION: ClassVar[str] = "backbone"
    clip: str
    clip_weights: str
    config: FrozenMapping

    @property
    def pretrained(self) -> bool:
        """Whether the backbone starts from weights (not a random initialisation)."""
        return self.clip_weights not in ("", "none")


@dataclass(frozen=True)
class ModelSettings(_Section):
    """``[model]``: the temporal heads' options (``center_k``: the protocol's)."""

    SECTION: ClassVar[str] = "model"
    tdb_proj: str
    center_weight: float
    temporal_layers: int
    center_k: int


@dataclass(frozen=True)
class FrameSettings(_Section):
    """``[frames]``: the frame sampler's settings (the protocol's unless a suite changes them)."""

    SECTION: ClassVar[str] = "frames"
    decode: str
    extraction_fps: float
    stride: int
    max_frames: int
    image_size: int


@dataclass(frozen=True)
class TextSettings(_Section):
    """``[text]``: the tokenizer's caption length (the protocol's)."""

    SECTION: ClassVar[str] = "text"
    max_words: int


@dataclass(frozen=True)
class TrainSettings(_Section):
    """``[train]``: CLIP4Clip's recipe, model selection and whether the backbone trains."""

    SECTION: ClassVar[str] = "train"
    epochs: int
    batch_size: int
    grad_accum: int
    lr: float
    coef_lr: float
    weight_decay: float
    warmup: float
    clip_grad: float
    select_on: str
    val_every: int
    backbone: str  # "finetune" | "frozen" (features once per suite, heads only)


@dataclass(frozen=True)
class EvalSettings(_Section):
    """``[eval]``: tie policy, v2t convention, diagnostics, bootstrap, batch size, post-processors."""

    SECTION: ClassVar[str] = "eval"
    tie_policy: str
    v2t: str
    recall_ks: tuple[int, ...]
    legacy: bool
    time_reversal: bool
    bootstrap: int
    batch_size: int
    save_sim: bool
    postprocess: tuple[str, ...]


SECTIONS: dict[str, type[_Section]] = {
    cls.SECTION: cls
    for cls in (
        RunSettings,
        DataSettings,
        SyntheticSettings,
        BackboneSettings,
        ModelSettings,
        FrameSettings,
        TextSettings,
        TrainSettings,
        EvalSettings,
    )
}


@dataclass(frozen=True)
class RowDecl:
    """A variant row: ``name`` (unique among the suite's rows), its ``model`` and ``set``, the
    overrides of the suite's settings as a nested table (``{"model": {"center_k": 3}}``)."""

    name: str
    model: str
    set: FrozenMapping = field(default_factory=FrozenMapping)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "model": self.model, "set": dotted(thaw(self.set))}


@dataclass(frozen=True)
class TableDecl:
    """A per-question table. ``kind = "rows"``: ``rows`` compared with ``reference`` (a row), plus the
    pairs in ``compare``. ``kind = "weights"``: the weight ``w`` of the global against the aligned
    similarity of ``row``, for each of ``weights``; ``reference`` is one of them."""

    name: str
    title: str = ""
    kind: str = "rows"
    rows: tuple[str, ...] = ()
    reference: str | float | None = None
    compare: tuple[tuple[str, str], ...] = ()
    row: str | None = None
    weights: tuple[float, ...] = ()

    @property
    def caption(self) -> str:
        """The title, or the name where the suite gave none."""
        return self.title or self.name

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "title": self.title, "kind": self.kind}
        if self.kind == "weights":
            out.update(row=self.row, weights=list(self.weights), reference=self.reference)
        else:
            out.update(
                rows=list(self.rows), reference=self.reference, compare=[list(p) for p in self.compare]
            )
        return out


# --------------------------------------------------------------------------------------------
# The whole suite


@dataclass(frozen=True)
class Settings(Mapping[str, Any]):
    """A whole resolved suite: the top-level keys, one object per section, rows and tables."""

    name: str
    description: str
    protocol: str
    models: tuple[str, ...]
    seeds: tuple[int, ...]
    zero_shot: bool
    run: RunSettings
    data: DataSettings
    synthetic: SyntheticSettings
    backbone: BackboneSettings
    model: ModelSettings
    frames: FrameSettings
    text: TextSettings
    train: TrainSettings
    eval: EvalSettings
    rows: tuple[RowDecl, ...] = ()
    tables: tuple[TableDecl, ...] = ()

    TOP_LEVEL: ClassVar[tuple[str, ...]] = ("name", "description", "protocol", "models", "seeds", "zero_shot")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str = "settings") -> Settings:
        """Freeze a merged settings dict (every key present: ``defaults.toml``'s and the protocol's).

        ``rows`` and ``tables`` (lists of tables, as a suite file says them) are optional.
        """
        known = set(cls.TOP_LEVEL) | set(SECTIONS) | {"rows", "tables"}
        unknown = sorted(k for k in values if k not in known)
        if unknown:
            raise SettingsError(
                f"{source}: unknown setting {unknown[0]!r}; known: {', '.join(sorted(known))}"
            )
        missing = [k for k in (*cls.TOP_LEVEL, *SECTIONS) if k not in values]
        if missing:
            raise SettingsError(f"{source}: missing setting(s) {', '.join(missing)}")
        sections = {name: kind.from_dict(values[name], source) for name, kind in SECTIONS.items()}
        rows = tuple(row_decl(entry, i, source) for i, entry in enumerate(values.get("rows") or ()))
        tables = tuple(table_decl(entry, i, source) for i, entry in enumerate(values.get("tables") or ()))
        return cls(
            **{k: freeze(values[k]) for k in cls.TOP_LEVEL},
            **sections,
            rows=rows,
            tables=tables,
        )

    def to_dict(self) -> dict[str, Any]:
        """The plain nested dict records and fingerprints carry (rows and tables only when declared)."""
        out: dict[str, Any] = {k: thaw(getattr(self, k)) for k in self.TOP_LEVEL}
        out.update({name: getattr(self, name).to_dict() for name in SECTIONS})
        if self.rows:
            out["rows"] = [r.to_dict() for r in self.rows]
        if self.tables:
            out["tables"] = [t.to_dict() for t in self.tables]
        return out

    def with_overrides(self, overrides: Mapping[str, Any], source: str) -> Settings:
        """These settings with ``overrides`` (a nested dict, as ``--set`` gives) merged and checked
        by the same rules (no protocol change: the protocol's defaults are already in)."""
        merged = merge(self.to_dict(), overrides, source)
        check_values(merged, source)
        return Settings.from_dict(merged, source)

    def for_row(self, row: RowDecl, source: str = "suite") -> Settings:
        """A variant row's settings: these settings plus its ``set`` (same rules and types as --set)."""
        if not row.set:
            return self
        where = f"{source}: rows[{row.name!r}].set"
        return self.with_overrides(thaw(row.set), where)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    # A read-only Mapping over to_dict(), so that code written for the plain dict keeps working.
    def __getitem__(self, key: str) -> Any:
        if key in self.TOP_LEVEL:
            return thaw(getattr(self, key))
        if key in SECTIONS:
            return getattr(self, key).to_dict()
        if key in ("rows", "tables") and getattr(self, key):
            return self.to_dict()[key]
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_dict())

    def __len__(self) -> int:
        return len(self.to_dict())

    __hash__ = None  # type: ignore[assignment]


# --------------------------------------------------------------------------------------------
# Merging (the one rule for suite files, --set and a row's set)


def merge(
    base: Mapping[str, Any],
    override: Mapping[str, Any],
    source: str,
    where: str = "top level",
    path: tuple[str, ...] = (),
) -> dict[str, Any]:
    """``override`` over ``base``: every key must exist in ``base`` and keep its type (an integer
    is accepted for a float); tables merge key by key; ``[backbone.config]`` is free-form (any key,
    any value; its tables merge key by key too)."""
    merged = copy.deepcopy(thaw(base))
    for key, value in override.items():
        here = (*path, key)
        if path in FREE_SECTIONS or any(path[: len(f)] == f for f in FREE_SECTIONS):
            if isinstance(value, Mapping) and isinstance(merged.get(key), dict):  # free, but key by key
                merged[key] = merge(merged[key], value, source, ".".join(here), here)
            else:
                merged[key] = copy.deepcopy(thaw(value))
            continue
        if key not in merged:
            known = ", ".join(sorted(merged)) or "(none)"
            raise SettingsError(f"{source}: unknown setting {'.'.join(here)!r}; known in [{where}]: {known}")
        default = merged[key]
        if isinstance(default, dict):
            if not isinstance(value, Mapping):
                raise SettingsError(f"{source}: {'.'.join(here)!r} must be a table")
            merged[key] = merge(default, value, source, ".".join(here), here)
            continue
        expected = type(default)
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise SettingsError(
                f"{source}: {'.'.join(here)!r} must be {expected.__name__}, got {type(value).__name__} {value!r}"
            )
        merged[key] = copy.deepcopy(value)
    return merged


def parse_assignment(text: str) -> dict[str, Any]:
    """``train.epochs=3`` -> ``{"train": {"epochs": 3}}`` (the value is parsed as JSON when it can be)."""
    if "=" not in text:
        raise SettingsError(f"--set {text!r}: expected KEY=VALUE, e.g. train.epochs=3")
    key, raw = text.split("=", 1)
    try:
        value: Any = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return nested({key.strip(): value})


def merge_assignments(items: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Fold several ``--set KEY=VALUE`` items into one nested dict."""
    merged: dict[str, Any] = {}
    for item in items:
        deep_update(merged, parse_assignment(item))
    return merged


def nested(values: Mapping[str, Any]) -> dict[str, Any]:
    """Dotted keys to nested tables: ``{"model.center_k": 3}`` -> ``{"model": {"center_k": 3}}``
    (nested tables, as TOML's ``model.center_k = 3`` gives them, are kept)."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        parts = str(key).split(".")
        node: dict[str, Any] = {}
        leaf = node
        for part in parts[:-1]:
            leaf = leaf.setdefault(part, {})
        leaf[parts[-1]] = nested(value) if isinstance(value, Mapping) else thaw(value)
        deep_update(out, node)
    return out


def dotted(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested tables to dotted keys (the inverse of :func:`nested`)."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(dotted(value, name + "."))
        else:
            out[name] = thaw(value)
    return out


def deep_update(base: dict[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """``new`` into ``base`` in place, tables key by key; returns ``base``."""
    for key, value in new.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            deep_update(base[key], value)
        else:
            base[key] = thaw(value)
    return base


# --------------------------------------------------------------------------------------------
# Values: ranges, finite numbers, seeds


@dataclass(frozen=True)
class Range:
    """Allowed values of a numeric setting: ``low <= v``, ``v <= high`` (``v < high`` when
    ``high_open``), ``v > 0`` when ``positive``."""

    low: float
    high: float | None = None
    high_open: bool = False
    positive: bool = False

    def allows(self, value: float) -> bool:
        if value < self.low or (self.positive and value <= 0):
            return False
        if self.high is None:
            return True
        return value < self.high if self.high_open else value <= self.high

    def describe(self) -> str:
        if self.positive:
            return "> 0"
        if self.high is None:
            return f">= {self.low}"
        return f"in [{self.low}, {self.high}{')' if self.high_open else ']'}"


RANGES: dict[tuple[str, str], Range] = {
    ("run", "jobs"): Range(0),
    ("run", "threads"): Range(0),  # 0 = automatic (the cores shared among the rows at once)
    ("data", "num_workers"): Range(-1),  # -1 = automatic (the available cores, capped)
    ("data", "frame_cache_mb"): Range(0),
    ("synthetic", "seed"): Range(0, SEED_LIMIT, high_open=True),
    ("synthetic", "num_train"): Range(1),
    ("synthetic", "num_val"): Range(0),
    ("synthetic", "num_test_pairs"): Range(1),
    ("synthetic", "captions_per_video"): Range(1),
    ("synthetic", "height"): Range(16),
    ("synthetic", "width"): Range(16),
    ("model", "center_k"): Range(1),
    ("model", "center_weight"): Range(0.0, 1.0),
    ("model", "temporal_layers"): Range(1),
    ("frames", "extraction_fps"): Range(0.0, positive=True),
    ("frames", "stride"): Range(1),
    ("frames", "max_frames"): Range(1),
    ("frames", "image_size"): Range(1),
    ("text", "max_words"): Range(3),
    ("train", "epochs"): Range(1),
    ("train", "batch_size"): Range(1),
    ("train", "grad_accum"): Range(1),
    ("train", "lr"): Range(0.0, positive=True),  # a zero learning rate trains nothing
    ("train", "coef_lr"): Range(0.0, positive=True),
    ("train", "weight_decay"): Range(0.0),
    ("train", "warmup"): Range(0.0, 1.0, high_open=True),  # a fraction of the run: the trainer needs < 1
    ("train", "clip_grad"): Range(0.0),
    ("train", "val_every"): Range(1),
    ("eval", "bootstrap"): Range(0),
    ("eval", "batch_size"): Range(1),
}


def check_values(settings: Mapping[str, Any], source: str) -> None:
    """Every number finite, every ranged setting in its range, the seeds usable; SettingsError
    naming ``source`` and the key of the first value that cannot run."""
    for key, value in _numbers(thaw(settings)):
        if isinstance(value, float) and not math.isfinite(value):
            raise SettingsError(
                f"{source}: {key} = {value!r} is not a finite number; give a number (NaN and Infinity "
                "cannot run and are not JSON)"
            )
    for (section, key), allowed in RANGES.items():
        value = settings[section][key]
        if not allowed.allows(value):
            raise SettingsError(
                f"{source}: {section}.{key} = {value!r} is out of range: it must be {allowed.describe()}"
            )
    check_seeds(settings["seeds"], source)


def check_seeds(seeds: Any, source: str) -> None:
    """At least one seed, each an integer in [0, 2**32), none repeated."""
    seeds = list(seeds)
    if not seeds:
        raise SettingsError(f"{source}: 'seeds' must hold at least one integer seed, e.g. seeds = [0]")
    for seed in seeds:
        if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < SEED_LIMIT:
            raise SettingsError(
                f"{source}: seeds: {seed!r} is not an integer in [0, 2**32); e.g. seeds = [0, 1, 2]"
            )
    if len(set(seeds)) != len(seeds):
        raise SettingsError(f"{source}: seeds: {seeds} repeats a seed")


def _numbers(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every number inside ``value``, lists and tables included."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from _numbers(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from _numbers(item, f"{path}[{i}]")
    elif isinstance(value, int | float) and not isinstance(value, bool):
        yield path, value


def safe_name(value: Any, what: str, source: str) -> str:
    """``value`` when it can name a folder (:func:`clip2video.fileio.safe_name`'s rule); a
    SettingsError naming ``source`` and ``what`` otherwise."""
    from clip2video import fileio

    if not isinstance(value, str):
        raise SettingsError(f"{source}: {what} must be a string, got {type(value).__name__} {value!r}")
    try:
        return fileio.safe_name(value, what)
    except ConfigError as exc:
        raise SettingsError(f"{source}: {exc}") from None


# --------------------------------------------------------------------------------------------
# Rows and tables (the schema; names against the registries: experiments.suite)


def row_decl(entry: Any, index: int, source: str) -> RowDecl:
    """A ``[[rows]]`` entry: ``name``, ``model`` and an optional ``set`` of dotted keys."""
    where = f"{source}: rows[{index}]"
    if isinstance(entry, RowDecl):
        return entry
    if not isinstance(entry, Mapping):
        raise SettingsError(f"{where} must be a table with name, model and set")
    unknown = sorted(set(entry) - {"name", "model", "set"})
    if unknown:
        raise SettingsError(f"{where}: unknown key {unknown[0]!r}; a row has name, model and set")
    for key in ("name", "model"):
        if not isinstance(entry.get(key), str) or not entry.get(key):
            raise SettingsError(f"{where}: {key!r} must be a non-empty string")
    name = safe_name(entry["name"], "row name", where)
    if "+" in name:
        raise SettingsError(f"{where}: row name {name!r} may not hold '+' (it marks post-processed rows)")
    changes = entry.get("set", {})
    if not isinstance(changes, Mapping):
        raise SettingsError(
            f"{where} ({name}): 'set' must be a table of dotted keys, e.g. set = {{ \"model.center_k\" = 3 }}"
        )
    overrides = nested(changes)
    outside = [k for k in overrides if k not in ROW_SECTIONS]
    if outside:
        raise SettingsError(
            f"{where} ({name}): set: {outside[0]!r} is shared by every row of the suite; a row may set "
            f"keys of {', '.join(f'[{s}]' for s in ROW_SECTIONS)}"
        )
    return RowDecl(name=name, model=entry["model"], set=FrozenMapping(overrides))


_TABLE_KEYS = {
    "rows": {"name", "title", "kind", "rows", "reference", "compare"},
    "weights": {"name", "title", "kind", "row", "weights", "reference"},
}


RESERVED_TABLE_NAMES = frozenset(
    {"table", "values", "verdict"}
)  # the all-rows table's and the verdict's files


def table_decl(entry: Any, index: int, source: str) -> TableDecl:
    """A ``[[tables]]`` entry (its schema; the rows it names are checked against the suite's)."""
    where = f"{source}: tables[{index}]"
    if isinstance(entry, TableDecl):
        return entry
    if not isinstance(entry, Mapping):
        raise SettingsError(f"{where} must be a table")
    kind = entry.get("kind", "rows")
    if kind not in TABLE_KINDS:
        raise SettingsError(f"{where}: kind = {kind!r}: choose one of {', '.join(TABLE_KINDS)}")
    unknown = sorted(set(entry) - _TABLE_KEYS[kind])
    if unknown:
        raise SettingsError(
            f"{where}: unknown key {unknown[0]!r} for a {kind!r} table; it takes {', '.join(sorted(_TABLE_KEYS[kind]))}"
        )
    name = safe_name(entry.get("name"), "table name", where)
    if name in RESERVED_TABLE_NAMES:
        raise SettingsError(
            f"{where}: table name {name!r} is taken by the suite's own files "
            f"(results/<suite>/<name>.*): not one of {', '.join(sorted(RESERVED_TABLE_NAMES))}"
        )
    title = entry.get("title", "")
    if not isinstance(title, str):
        raise SettingsError(f"{where} ({name}): 'title' must be a string")
    if kind == "weights":
        return _weights_table(entry, name, title, f"{where} ({name})")
    rows = entry.get("rows")
    if not isinstance(rows, list | tuple) or not rows or not all(isinstance(r, str) for r in rows):
        raise SettingsError(f"{where} ({name}): 'rows' must list the row names the table compares")
    if len(set(rows)) != len(rows):
        raise SettingsError(f"{where} ({name}): rows: {list(rows)} repeats a row")
    reference = entry.get("reference", rows[0])
    if reference not in rows:
        raise SettingsError(
            f"{where} ({name}): reference {reference!r} is not one of its rows ({', '.join(rows)})"
        )
    compare = entry.get("compare", [])
    pairs: list[tuple[str, str]] = []
    for pair in compare if isinstance(compare, list | tuple) else [compare]:
        if not (isinstance(pair, list | tuple) and len(pair) == 2 and all(isinstance(p, str) for p in pair)):
            raise SettingsError(f'{where} ({name}): compare holds pairs of row names, e.g. [["a", "b"]]')
        absent = [p for p in pair if p not in rows]
        if absent:
            raise SettingsError(f"{where} ({name}): compare: {absent[0]!r} is not one of the table's rows")
        pairs.append((pair[0], pair[1]))
    return TableDecl(
        name=name, title=title, kind="rows", rows=tuple(rows), reference=reference, compare=tuple(pairs)
    )


def _weights_table(entry: Mapping[str, Any], name: str, title: str, where: str) -> TableDecl:
    row = entry.get("row")
    if not isinstance(row, str) or not row:
        raise SettingsError(f"{where}: a weights table names the 'row' whose similarities it reweights")
    weights = entry.get("weights")
    if not isinstance(weights, list | tuple) or not weights:
        raise SettingsError(f"{where}: 'weights' must list the weights w, e.g. [0.0, 0.25, 0.5, 0.75, 1.0]")
    values: list[float] = []
    for w in weights:
        if isinstance(w, bool) or not isinstance(w, int | float) or not math.isfinite(w) or not 0 <= w <= 1:
            raise SettingsError(f"{where}: weights: {w!r} is not a number in [0, 1]")
        values.append(float(w))
    if len(set(values)) != len(values):
        raise SettingsError(f"{where}: weights {values} repeat a value")
    reference = entry.get("reference", 0.5 if 0.5 in values else values[0])
    if (
        isinstance(reference, bool)
        or not isinstance(reference, int | float)
        or float(reference) not in values
    ):
        raise SettingsError(f"{where}: reference {reference!r} is not one of its weights {values}")
    return TableDecl(
        name=name, title=title, kind="weights", row=row, weights=tuple(values), reference=float(reference)
    )


__all__ = [
    "BackboneSettings",
    "DataSettings",
    "EvalSettings",
    "FrameSettings",
    "FrozenMapping",
    "ModelSettings",
    "RANGES",
    "Range",
    "RowDecl",
    "RunSettings",
    "SECTIONS",
    "Settings",
    "SettingsError",
    "SyntheticSettings",
    "TableDecl",
    "TextSettings",
    "TrainSettings",
    "check_seeds",
    "check_values",
    "default_settings",
    "deep_update",
    "dotted",
    "freeze",
    "merge",
    "merge_assignments",
    "nested",
    "parse_assignment",
    "safe_name",
    "section_defaults",
    "thaw",
]
