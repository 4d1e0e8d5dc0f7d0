"""Experiment suites are data: load a suite TOML, merge it over the defaults, validate everything.

The shipped suites are package data (``clip2video/suites/*.toml``, read with importlib.resources),
so an installed wheel has them; ``--suite`` takes one of their names or a path to a TOML file, which
may start from another suite (``base = "smoke"``). :func:`load_suite` checks every key, type, enum
and range, the protocol and every model name against the registries, the post-processors and the
seeds, every variant row's settings (``[[rows]]``) and every table's rows (``[[tables]]``), so a
suite that cannot run fails at once with one message naming the file and the key.

One rule resolves every setting (:func:`resolve_settings`, used by suite files, the ``eval`` verb's
one-row suite and ``--set`` on a loaded suite alike): ``defaults.toml`` < the protocol's defaults
(``Protocol.settings()``: ``[frames]``, ``[text] max_words``, ``[model] center_k``) < the suite
file < the ``--set`` overrides; a variant row's settings are the suite's plus its ``set``, by the
same rule. The result is a typed, frozen :class:`~clip2video.settings.Settings`.
"""

from __future__ import annotations

import copy
import difflib
import tomllib
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from clip2video.settings import (
    STRUCTURE_KEYS,
    RowDecl,
    Settings,
    SettingsError,
    check_values,
    deep_update,
    default_settings,
    merge,
    safe_name,
    thaw,
)

SELECT_ON = ("final", "val", "test")
# [train] backbone: the whole model trains (the paper), or only the heads over features computed once.
TRAIN_BACKBONE = ("finetune", "frozen")
TDB_PROJECTIONS = ("selfattn", "mlp", "none")
# Built-in post-processors (engine.postprocess implements them; its registry, when present, wins).
POSTPROCESSORS = ("dsl", "qbnorm")
# The zero-shot row: `meanp` with the pretrained CLIP and no training (suites with zero_shot = true).
ZERO_SHOT_ROW = "meanp-zeroshot"
ZERO_SHOT_MODEL = "meanp"
# Keys of ``[backbone.config]`` outside its two towers (``build_clip_from_config`` reads these).
BACKBONE_CONFIG_KEYS = ("embed_dim", "vision_cfg", "text_cfg", "quick_gelu")

# A suite file, --set and a variant row's ``set`` break the same rules: one error type.
SuiteError = SettingsError


@dataclass(frozen=True)
class Suite:
    """A fully resolved suite: every setting present, defaults filled in, each row's settings."""

    name: str
    path: Path | None
    settings: Settings
    # What the suite itself says (its file, or the settings given in code), before the defaults and
    # the protocol's defaults: ``--set`` on a loaded suite re-resolves from it (``protocol`` included).
    declared: dict[str, Any] | None = field(default=None, compare=False, repr=False)

    def __getitem__(self, key: str) -> Any:
        """The plain value of a top-level key or section (the dict view; new code reads
        ``suite.settings.<section>.<key>``)."""
        return self.settings[key]

    @property
    def protocol(self) -> str:
        return self.settings.protocol

    @property
    def models(self) -> list[str]:
        """The plain rows' models (``models = [...]``)."""
        return list(self.settings.models)

    @property
    def rows(self) -> list[RowDecl]:
        """Every row of one seed in table order: one per model of ``models`` (named after it, no
        ``set``), then the variant rows (``[[rows]]``)."""
        return [RowDecl(name=m, model=m) for m in self.settings.models] + list(self.settings.rows)

    def row_names(self) -> list[str]:
        """The rows' names (without seed), the zero-shot row first when the suite has one."""
        return ([ZERO_SHOT_ROW] if self.settings.zero_shot else []) + [r.name for r in self.rows]

    def row_settings(self, row: RowDecl) -> Settings:
        """A row's resolved settings: the suite's plus the row's ``set`` (same rules as ``--set``)."""
        return self.settings.for_row(row, self.source)

    @property
    def source(self) -> str:
        """How errors name this suite: its file, or ``suite 'name'``."""
        return str(self.path) if self.path is not None else f"suite {self.name!r}"

    def keep_models(self, models: Iterable[str]) -> Suite:
        """The suite with only the variant rows of ``models`` (``--models``; ``models = [...]``
        itself is replaced through the overrides)."""
        keep = set(models)
        rows = tuple(r for r in self.settings.rows if r.model in keep)
        if rows == self.settings.rows:
            return self
        return Suite(self.name, self.path, self.settings.replace(rows=rows), self.declared)


def suites_dir() -> Traversable:
    """The shipped suites (package data ``clip2video/suites``)."""
    return resources.files("clip2video").joinpath("suites")


def protocol_defaults(protocol: str) -> dict[str, Any]:
    """The settings ``protocol`` fills in a suite (``Protocol.settings()``), keyed as in a suite file."""
    from clip2video.data.protocols import get_protocol

    return get_protocol(protocol).settings()


def resolve_settings(
    declared: Mapping[str, Any], overrides: Mapping[str, Any] | None = None, source: str = "suite"
) -> Settings:
    """A suite's resolved settings, validated: ``defaults.toml`` < the protocol's defaults <
    ``declared`` (the suite file) < ``overrides`` (``--set``, as a nested dict).

    The protocol is the one ``overrides`` or else ``declared`` names; ``source`` names the suite in
    errors. ``declared`` may hold variant rows (``rows``) and tables (``tables``); each variant
    row's settings (the suite's plus its ``set``) are validated too.
    """
    overrides = dict(overrides or {})
    declared = dict(declared)
    structure = {k: declared.pop(k) for k in STRUCTURE_KEYS if k in declared}
    structure.pop("base", None)  # consumed by suite_file_settings
    for key in ("rows", "tables"):
        if key in overrides:
            raise SuiteError(f"command-line override (--set): {key!r} is declared in the suite file, not set")
    defaults = default_settings()
    where = "command-line override (--set)" if "protocol" in overrides else source
    name = overrides.get("protocol", declared.get("protocol", defaults["protocol"]))
    settings = merge(defaults, {"protocol": name}, where)  # its type, then the registry
    _check_protocol_name(settings["protocol"], where)
    for section, values in protocol_defaults(name).items():
        settings.setdefault(section, {}).update(copy.deepcopy(values))
    settings = merge(settings, declared, source)
    if overrides:
        settings = merge(settings, overrides, "command-line override (--set)")
        source = f"{source} with the --set overrides"
    for key in ("rows", "tables"):
        value = structure.get(key, [])
        if not isinstance(value, list):
            raise SuiteError(f"{source}: {key!r} must be an array of tables ([[{key}]])")
        if value:
            settings[key] = value
    if "models" in overrides and isinstance(settings.get("models"), list):
        for note in fit_to_models(settings):
            warnings.warn(f"{source}: {note}", stacklevel=2)
    check_values(settings, source)
    resolved = Settings.from_dict(settings, source)
    validate_settings(resolved, source)
    return resolved


def fit_to_models(settings: dict[str, Any]) -> list[str]:
    """Fit a suite's variant rows and declared tables to the models chosen on the command line
    (``--models``, ``--set models=[...]``), in place; returns what was left out, one note each.

    A variant row runs when its model is chosen. A declared table keeps the rows that run (and the
    ``compare`` pairs of rows that run); it is left out when its reference row does not run or fewer
    than two of its rows do; a weights table when its trained row does not run.
    """
    models = [str(m) for m in settings["models"]]
    notes: list[str] = []
    variants = [r for r in settings.get("rows") or [] if isinstance(r, Mapping)]
    kept = [r for r in variants if r.get("model") in models]
    if variants:
        settings["rows"] = kept
    running = set(models) | {str(r.get("name")) for r in kept}
    if settings.get("zero_shot"):
        running.add(ZERO_SHOT_ROW)
    tables = []
    for table in settings.get("tables") or []:
        if not isinstance(table, Mapping):
            tables.append(table)
            continue
        name = table.get("name")
        if table.get("kind", "rows") == "weights":
            if table.get("row") in running:
                tables.append(table)
            else:
                notes.append(f"table {name!r} left out: its row {table.get('row')!r} is not among --models")
            continue
        rows = [r for r in table.get("rows") or [] if r in running]
        missing = [r for r in table.get("rows") or [] if r not in running]
        reference = table.get("reference", (table.get("rows") or [None])[0])
        if reference not in running or len(rows) < 2:
            notes.append(
                f"table {name!r} left out: its row(s) {', '.join(map(str, missing))} are not among --models"
            )
            continue
        if missing:
            notes.append(
                f"table {name!r} without its row(s) {', '.join(map(str, missing))} (not among --models)"
            )
        compare = [pair for pair in table.get("compare") or [] if all(p in running for p in pair)]
        tables.append({**table, "rows": rows, **({"compare": compare} if "compare" in table else {})})
    if "tables" in settings:
        settings["tables"] = tables
    return notes


def resolve_suite_path(name_or_path: str | Path) -> Path | Traversable:
    """A shipped suite's name (``clip2video/suites/<name>.toml``) or a path to a TOML file."""
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml" or candidate.parent != Path("."):
        if not candidate.is_file():
            raise SuiteError(
                f"suite file {candidate} does not exist (shipped suites: {', '.join(shipped_suites())})"
            )
        return candidate
    path = suites_dir().joinpath(f"{name_or_path}.toml")
    if not path.is_file():
        raise SuiteError(
            f"Unknown suite {str(name_or_path)!r}. Available: {', '.join(shipped_suites())} "
            "(or pass the path of a .toml file)"
        )
    return path


def shipped_suites() -> list[str]:
    """Names of the shipped suites (``clip2video/suites/*.toml``; the records' suites are
    ``engine.records``')."""
    return sorted(p.name[: -len(".toml")] for p in suites_dir().iterdir() if p.name.endswith(".toml"))


def suite_file_settings(name_or_path: str | Path) -> dict[str, Any]:
    """What a suite file says (a shipped name or a path), before any defaults: its parsed TOML,
    over its ``base`` suite's when it names one (``base = "smoke"`` or a path relative to the file)."""
    return _declared(resolve_suite_path(name_or_path), ())


def _declared(path: Path | Traversable, seen: tuple[str, ...]) -> dict[str, Any]:
    declared = _read_toml(path)
    base = declared.pop("base", None)
    if base is None:
        return declared
    if not isinstance(base, str) or not base:
        raise SuiteError(f"{path}: 'base' must name a shipped suite or a suite file, e.g. base = \"smoke\"")
    target = Path(base)
    if (target.suffix == ".toml" or target.parent != Path(".")) and not target.is_absolute():
        if isinstance(path, Path):
            target = path.parent / target
    try:
        base_path = resolve_suite_path(target if target.suffix == ".toml" else base)
    except SuiteError as exc:
        raise SuiteError(f"{path}: base: {exc}") from None
    key = str(base_path)
    if key in seen or key == str(path):
        raise SuiteError(f"{path}: base {base!r} inherits from itself ({' -> '.join((*seen, key))})")
    inherited = _declared(base_path, (*seen, str(path)))
    inherited.pop("name", None)  # the child is its own suite: its file name unless it says one
    merged = deep_update(inherited, {k: v for k, v in declared.items() if k not in ("rows", "tables")})
    for key in ("rows", "tables"):  # by name: the child's entries replace the base's, or are added
        if key in declared:
            merged[key] = _merge_named(inherited.get(key), declared[key])
    return merged


def _merge_named(base: Any, child: Any) -> Any:
    """``[[rows]]`` / ``[[tables]]`` of a suite over its base's: an entry of the child with the name
    of a base entry replaces it in place, the others follow (anything else: the child's, as is)."""
    if not isinstance(base, list) or not isinstance(child, list):
        return child
    merged = list(base)
    names = [e.get("name") if isinstance(e, Mapping) else None for e in merged]
    for entry in child:
        name = entry.get("name") if isinstance(entry, Mapping) else None
        if name is not None and name in names:
            merged[names.index(name)] = entry
        else:
            merged.append(entry)
            names.append(name)
    return merged


def _read_toml(path: Path | Traversable) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise SuiteError(f"{path}: not valid TOML ({exc})") from exc
    except UnicodeDecodeError as exc:
        raise SuiteError(f"{path}: not UTF-8 text (byte {exc.start}); re-save it as UTF-8") from exc


def load_suite(name_or_path: str | Path | Suite, overrides: Mapping[str, Any] | None = None) -> Suite:
    """Load and validate a suite: :func:`resolve_settings` of its file and ``overrides`` (a nested dict).

    A :class:`Suite` (e.g. from :func:`suite_from_settings`) passes through, with ``overrides`` applied
    by the same rule.
    """
    if isinstance(name_or_path, Suite):
        suite = name_or_path
        if not overrides:
            return suite
        if suite.declared is None:  # a Suite built by hand: its settings are all it says
            settings = suite.settings.with_overrides(overrides, f"{suite.source} with the --set overrides")
            validate_settings(settings, f"{suite.source} with the --set overrides")
        else:
            settings = resolve_settings(suite.declared, overrides, suite.source)
        return Suite(name=suite.name, path=suite.path, settings=settings, declared=suite.declared)
    path = resolve_suite_path(name_or_path)
    declared = _declared(path, ())
    settings = resolve_settings(declared, overrides, str(path))
    stem = Path(str(path)).stem
    name = safe_name(settings.name or stem, "suite name", str(path))
    return Suite(name=name, path=Path(str(path)), settings=settings, declared=declared)


def suite_from_settings(name: str, settings: Mapping[str, Any], source: str = "") -> Suite:
    """A suite built in code (``settings`` as a suite file would say them), resolved by the same rule
    as a file, e.g. the ``eval`` verb's row."""
    source = source or f"suite {name!r}"
    declared = {**copy.deepcopy(thaw(settings)), "name": safe_name(name, "suite name", source)}
    resolved = resolve_settings(declared, None, source)
    return Suite(name=name, path=None, settings=resolved, declared=declared)


# --------------------------------------------------------------------------------------------
# Validation against the registries: every value a row will use, checked before any work. (Types,
# ranges, finite numbers and seeds: clip2video.settings.check_values.)


def _enums() -> dict[tuple[str, str], tuple[str, ...]]:
    from clip2video.data.frames import DECODE_MODES
    from clip2video.metrics import TIE_POLICIES, V2T_CONVENTIONS

    return {
        ("train", "select_on"): SELECT_ON,
        ("train", "backbone"): TRAIN_BACKBONE,
        ("eval", "tie_policy"): TIE_POLICIES,
        ("eval", "v2t"): V2T_CONVENTIONS,
        ("model", "tdb_proj"): TDB_PROJECTIONS,
        ("frames", "decode"): DECODE_MODES,
    }


def validate_settings(settings: Settings | Mapping[str, Any], source: str) -> None:
    """Raise :class:`SuiteError` naming ``source`` and the key of the first value that cannot run:
    the protocol, every row's model, enums, post-processors, the backbone, the variant rows'
    settings (each checked like the suite's) and the tables' rows."""
    if not isinstance(settings, Settings):
        check_values(settings, source)
        settings = Settings.from_dict(settings, source)
    _check_protocol_name(settings.protocol, source)
    _check_rows(settings, source)
    checks: list[Callable[[Settings, str], None]] = [_check_enums, _check_postprocess, _check_backbone]
    for check in checks:
        check(settings, source)
    for row in settings.rows:
        row_settings = settings.for_row(row, source)
        for check in checks:
            check(row_settings, f"{source}: rows[{row.name!r}] (with its set)")
    _check_tables(settings, source)


def _check_protocol_name(name: str, source: str) -> None:
    from clip2video.data.protocols import get_protocol

    if not name:
        raise SuiteError(f"{source}: 'protocol' is required")
    try:
        get_protocol(name)
    except Exception as exc:
        raise SuiteError(f"{source}: protocol: {exc}") from exc


def _check_model_name(name: Any, where: str) -> None:
    from clip2video.models import list_models

    known = list_models()
    if not isinstance(name, str) or name not in known:
        raise SuiteError(
            f"{where}: Unknown model {name!r}. Available: {', '.join(known)} "
            "(a plugin's models need its package installed or --import MODULE)"
        )


def _check_rows(settings: Settings, source: str) -> None:
    """Models exist; at least one row; row names unique (the zero-shot row's included). A seed suffix
    cannot make two folders collide: ``-s<int>`` is added to every row's name or to none."""
    models = list(settings.models)
    if not models and not settings.rows:
        raise SuiteError(f"{source}: 'models' (or [[rows]]) must name at least one model")
    for name in models:
        _check_model_name(name, f"{source}: models")
    repeated = sorted({m for m in models if models.count(m) > 1})
    if repeated:
        raise SuiteError(f"{source}: models: {', '.join(repeated)} listed more than once")
    for name in models:
        safe_name(name, "model name (a plain row is named after its model)", f"{source}: models")
    names = ([ZERO_SHOT_ROW] if settings.zero_shot else []) + models
    for row in settings.rows:
        _check_model_name(row.model, f"{source}: rows[{row.name!r}].model")
        if row.name in names:
            what = (
                "the zero-shot row"
                if row.name == ZERO_SHOT_ROW
                else "another row (a plain row is named after its model)"
            )
            raise SuiteError(f"{source}: rows: the name {row.name!r} is already taken by {what}; rename it")
        names.append(row.name)


def _check_enums(settings: Settings, source: str) -> None:
    for (section, key), allowed in _enums().items():
        value = getattr(getattr(settings, section), key)
        if value not in allowed:
            raise SuiteError(f"{source}: {section}.{key} = {value!r}: choose one of {', '.join(allowed)}")
    e = settings.eval
    if e.tie_policy == "legacy" and e.v2t != "official":
        raise SuiteError(f"{source}: eval.tie_policy = 'legacy' needs eval.v2t = 'official'")
    if e.legacy and e.v2t != "official":
        raise SuiteError(f"{source}: eval.legacy = true needs eval.v2t = 'official' (the official code's)")
    from clip2video.metrics import check_recall_ks

    try:
        check_recall_ks(list(e.recall_ks))
    except ValueError as exc:
        raise SuiteError(f"{source}: {exc}") from None


def known_postprocessors() -> list[str]:
    """The post-processor registry's names (engine.postprocess), or the built-in ones."""
    from clip2video.engine import postprocess

    registry = getattr(postprocess, "list_postprocessors", None)
    return list(registry()) if registry is not None else list(POSTPROCESSORS)


def _check_postprocess(settings: Settings, source: str) -> None:
    known = known_postprocessors()
    for name in settings.eval.postprocess:
        if name not in known:
            raise SuiteError(
                f"{source}: eval.postprocess: Unknown post-processor {name!r}. Available: {', '.join(known)}"
            )


def _check_backbone(settings: Settings, source: str) -> None:
    backbone = settings.backbone
    if backbone.clip == "tiny" and not backbone.config:
        raise SuiteError(f"{source}: backbone.clip = 'tiny' needs a [backbone.config] table")
    if not backbone.clip:
        raise SuiteError(f"{source}: backbone.clip must name a CLIP architecture, e.g. 'ViT-B-32'")
    if backbone.clip == "tiny":
        check_backbone_config(thaw(backbone.config), source)
    from clip2video.data.protocols import get_protocol

    if get_protocol(settings.protocol).val_split is None and settings.train.select_on == "val":
        raise SuiteError(
            f"{source}: train.select_on = 'val' but protocol {settings.protocol!r} has no validation "
            "split; use 'final'"
        )


def check_backbone_config(config: Mapping[str, Any], source: str) -> None:
    """``[backbone.config]`` keys against open_clip's config classes: ``embed_dim``, ``quick_gelu``,
    ``vision_cfg`` (``CLIPVisionCfg``'s fields) and ``text_cfg`` (``CLIPTextCfg``'s). Whether the
    values build a CLIP is the dry build's question (the check before work)."""
    import dataclasses

    from open_clip.model import CLIPTextCfg, CLIPVisionCfg

    _known_keys(config, BACKBONE_CONFIG_KEYS, "backbone.config", source)
    for key, cls in (("vision_cfg", CLIPVisionCfg), ("text_cfg", CLIPTextCfg)):
        if key not in config:
            continue  # a model without a CLIP (a plugin's) needs none; a CLIP model's dry build says so
        tower = config[key]
        if not isinstance(tower, Mapping):
            raise SuiteError(f"{source}: backbone.config.{key} must be a table ([backbone.config.{key}])")
        _known_keys(
            tower, [f.name for f in dataclasses.fields(cls)], f"backbone.config.{key}", source, cls.__name__
        )


def _known_keys(
    values: Mapping[str, Any], known: Iterable[str], where: str, source: str, what: str = ""
) -> None:
    known = list(known)
    for key in values:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            of = f" (open_clip's {what})" if what else ""
            raise SuiteError(
                f"{source}: unknown setting '{where}.{key}'{hint} Known{of}: {', '.join(sorted(known))}"
            )


def _check_tables(settings: Settings, source: str) -> None:
    """Table names unique; every row a table names is a row of the suite."""
    rows = (
        ([ZERO_SHOT_ROW] if settings.zero_shot else [])
        + list(settings.models)
        + [r.name for r in settings.rows]
    )
    seen: set[str] = set()
    for table in settings.tables:
        where = f"{source}: tables[{table.name!r}]"
        if table.name in seen:
            raise SuiteError(f"{source}: tables: the name {table.name!r} is used twice")
        seen.add(table.name)
        named = [table.row] if table.kind == "weights" else list(table.rows)
        for row in named:
            if row not in rows:
                raise SuiteError(f"{where}: {row!r} is not a row of the suite (its rows: {', '.join(rows)})")


__all__ = [
    "Suite",
    "SuiteError",
    "ZERO_SHOT_ROW",
    "check_backbone_config",
    "load_suite",
    "resolve_settings",
    "shipped_suites",
    "suite_file_settings",
    "suite_from_settings",
    "validate_settings",
]
