"""The drift gate, end to end: what ``clip2video drift`` runs, callable from Python.

It sits in the pipeline layer, beside :mod:`clip2video.pipeline`, and sequences: the experiments
layer, which runs (:mod:`clip2video.experiments.drift_runs`: the evaluation layer's seeded models,
the seed-spread plan of ``--update``), the pipeline, which runs the suite (``--rerun`` and the
seed-spread run: :func:`clip2video.pipeline.check`, then :func:`clip2video.pipeline.run` without
tables), and the report layer, which reads and writes the locks, compares and words the result
(:mod:`clip2video.report.eval_drift`, :mod:`clip2video.report.drift`). The verb only parses its
flags into :class:`GateOptions` and prints.

Before any work, :func:`run_gate` reads the suite once (with ``--set``) and runs the check before
work of every suite run it will make (the rerun and the seed-spread run), loads the locks it
compares with, and reads the records it compares (without ``--rerun``). The rerun and the seed runs
go to the gate's own runs folder (``rerun_dir``, default ``runs-drift``), untracked: the user's
``runs/`` and MLflow are never written, so they keep agreeing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clip2video.errors import ConfigError, DriftError
from clip2video.experiments.options import RunOptions
from clip2video.experiments.preflight import resolve_suite
from clip2video.experiments.suite import Suite
from clip2video.pipeline import Checked, check, run
from clip2video.settings import FrozenMapping, thaw

LAYERS = ("eval", "train", "both")
MODES = ("auto", "exact", "tolerance", "interval")
DEFAULT_BASELINES = Path("baselines") / "locked"
DEFAULT_RERUN_DIR = Path("runs-drift")


@dataclass(frozen=True)
class GateOptions:
    """Everything a gate run needs.

    ``suite``: a shipped suite's name or a TOML path; ``overrides``: ``--set`` as a nested dict.
    ``runs_dir``: the recorded runs the training layer compares without ``rerun``. ``rerun``: run
    the suite first, into ``rerun_dir`` (also where ``update``'s seed-spread run goes), and compare
    that run. ``baseline``: the training lock (default ``<baselines>/<suite>.json``). ``argv``: the
    command line after ``clip2video`` (stored in the locks, and the base of the relock command).
    """

    suite: Any = "smoke"
    overrides: Mapping[str, Any] = field(default_factory=FrozenMapping)
    layer: str = "both"
    baselines: Path = DEFAULT_BASELINES
    baseline: Path | None = None
    runs_dir: Path = Path("runs")
    rerun: bool = False
    rerun_dir: Path = DEFAULT_RERUN_DIR
    mode: str = "auto"
    data_root: Path = Path("data")
    device: str = "cpu"
    jobs: int | None = None
    update: bool = False
    message: str | None = None
    argv: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "overrides", FrozenMapping(thaw(self.overrides or {})))
        for name in ("baselines", "runs_dir", "rerun_dir", "data_root"):
            set_(self, name, Path(getattr(self, name)))
        set_(self, "baseline", Path(self.baseline) if self.baseline is not None else None)
        set_(self, "argv", tuple(self.argv))

    @property
    def layers(self) -> tuple[str, ...]:
        return ("eval", "train") if self.layer == "both" else (self.layer,)

    def run_options(self) -> RunOptions:
        """How the gate runs the suite: into ``rerun_dir``, untracked, no tables, no progress bars."""
        return RunOptions(
            suite=self.suite,
            overrides=self.overrides,
            data_root=self.data_root,
            device=self.device,
            runs_dir=self.rerun_dir,
            results_dir=None,
            tracking=False,
            progress=False,
            jobs=self.jobs,
            reference=None,
        )

    def command_argv(self) -> list[str]:
        """``argv``, or (called from Python) the equivalent command line."""
        if self.argv:
            return list(self.argv)
        argv = ["drift", "--suite", str(self.suite), "--layer", self.layer]
        argv += ["--baselines", str(self.baselines)]
        for key, value in _dotted(thaw(self.overrides)):
            argv += ["--set", f"{key}={value}"]
        return argv + (["--rerun"] if self.rerun else ["--runs-dir", str(self.runs_dir)])


@dataclass
class GateResult:
    """What the gate found: the number of drifts per layer run, and the relock command when any moved."""

    moved: dict[str, int] = field(default_factory=dict)
    relock: str | None = None

    @property
    def exit_code(self) -> int:
        return 1 if any(self.moved.values()) else 0


def check_options(options: GateOptions) -> None:
    """Misuse of the gate's flags: one error before anything is read."""
    if options.layer not in LAYERS:
        raise ConfigError(f"--layer {options.layer!r}: expected one of {', '.join(LAYERS)}")
    if options.mode not in MODES:
        raise ConfigError(f"--mode {options.mode!r}: expected one of {', '.join(MODES)}")
    if options.update and not (options.message and options.message.strip()):
        raise DriftError('--update relocks the baseline: say why with --message "..."')
    if options.rerun and options.rerun_dir.resolve() == options.runs_dir.resolve():
        raise ConfigError(
            f"--rerun-dir {options.rerun_dir} is your runs folder ({options.runs_dir}): the gate keeps its "
            f"runs apart from your records; pick another --rerun-dir (default {DEFAULT_RERUN_DIR})"
        )


# ----------------------------------------------------------------------------- before work


@dataclass
class _Prepared:
    """What the check before work resolved: the suite (read once), the checked runs, the locks
    compared with, and the records compared (without --rerun)."""

    suite: Suite
    rerun: Checked | None = None
    spread: Checked | None = None
    eval_lock: dict[str, Any] | None = None
    train_lock: dict[str, Any] | None = None
    records: list[Any] | None = None


def train_lock_path(options: GateOptions, suite: Suite) -> Path:
    """``--baseline``, or ``<baselines>/<suite>.json``."""
    from clip2video.fileio import safe_name

    return options.baseline or options.baselines / f"{safe_name(suite.name, 'suite name')}.json"


def prepare(options: GateOptions) -> _Prepared:
    """Everything before work (see the module docstring); raises on the first problem."""
    from clip2video.engine.records import read_suite_records
    from clip2video.experiments import drift_runs
    from clip2video.report import drift as rd
    from clip2video.report import eval_drift as ed

    check_options(options)
    run_options = options.run_options()
    rerun = check(run_options) if "train" in options.layers and options.rerun else None
    suite = rerun.suite if rerun is not None else resolve_suite(run_options)
    prepared = _Prepared(suite=suite, rerun=rerun)
    if "eval" in options.layers:
        drift_runs.eval_settings(suite.settings)  # a suite the layer cannot run: refused now
        if not options.update:
            prepared.eval_lock = ed.load_eval_lock(ed.eval_lock_path(options.baselines, suite.name))
    if "train" in options.layers:
        if not options.update:
            prepared.train_lock = rd.load_locked(train_lock_path(options, suite))
        if not options.rerun:
            prepared.records = read_suite_records(options.runs_dir, suite.name)
        if options.update:
            have = suite.settings.seeds if options.rerun else [r.seed for r in prepared.records or []]
            spread = drift_runs.seed_spread_options(run_options, suite, have, rd.TOLERANCE_SEEDS)
            prepared.spread = check(spread) if spread is not None else None
    return prepared


def run_records(checked: Checked) -> list[Any]:
    """Run a checked suite through the pipeline (untracked, no tables) and read back its records."""
    from clip2video.engine.records import read_suite_records

    run(checked.options, checked)
    return read_suite_records(checked.options.runs_dir, checked.suite.name)


# ----------------------------------------------------------------------------- the layers


def eval_layer(options: GateOptions, prepared: _Prepared, echo: Callable[[str], Any]) -> int:
    """Run (and with ``update`` lock) the evaluation layer; returns the number of drifts."""
    from clip2video.experiments import drift_runs
    from clip2video.report import eval_drift as ed

    suite = prepared.suite
    path = ed.eval_lock_path(options.baselines, suite.name)
    settings = suite.settings
    if options.update:
        run = drift_runs.run_eval_layer(settings, options.data_root)
        ed.write_eval_lock(
            path, run, message=options.message or "", suite=suite.name, command=_command(options)
        )
        echo(ed.locked_line(path, run, suite.name))
        return 0
    locked = prepared.eval_lock or {}
    seeds = (locked.get("settings") or {}).get("weights_seeds")
    run = drift_runs.run_eval_layer(
        settings, options.data_root, seeds=seeds if isinstance(seeds, dict) else None
    )
    drifts = ed.compare_eval(locked, run)
    for line in ed.report_lines(path, locked, run, drifts, suite.name):
        echo(line)
    return len(drifts)


def train_layer(options: GateOptions, prepared: _Prepared, echo: Callable[[str], Any]) -> int:
    """Run (and with ``update`` lock) the training layer; returns the number of drifts."""
    import torch

    from clip2video.experiments import drift_runs
    from clip2video.fingerprint import platform_fingerprint
    from clip2video.report import drift as rd
    from clip2video.report.tables import resamples_of

    suite = prepared.suite
    path = train_lock_path(options, suite)
    records = run_records(prepared.rerun) if prepared.rerun is not None else prepared.records or []
    platform = rd.record_platform(records) or platform_fingerprint(
        options.device, threads=torch.get_num_threads()
    )
    n_boot = resamples_of(records)
    new = rd.suite_metrics(records, n_boot=n_boot)
    settings = suite.settings.to_dict()
    if options.update:
        others = run_records(prepared.spread) if prepared.spread is not None else []
        spread = drift_runs.seed_spread(records, rd.TOLERANCE_SEEDS, others)
        rd.write_locked(
            path,
            new,
            options.message or "",
            suite=suite.name,
            mode="auto",
            command=_command(options),
            n_boot=n_boot,
            fingerprint=platform,
            tolerances=rd.lock_tolerances(records, spread),
            tolerance_rule=rd.tolerance_rule(),
            settings=settings,
        )
        echo(rd.locked_line(path, new, suite.name, options.message or ""))
        return 0
    locked = prepared.train_lock or {"models": {}}
    mode = options.mode if options.mode != "auto" else rd.default_mode(locked, platform)
    drifts = rd.compare(locked, new, mode=mode)
    lines = rd.report_lines(
        path, locked, new, drifts, suite=suite.name, mode=mode, platform=platform, settings=settings
    )
    for line in lines:
        echo(line)
    return len(drifts)


def run_gate(options: GateOptions, echo: Callable[[str], Any] = print) -> GateResult:
    """The gate: everything checked before work (:func:`prepare`), then the evaluation layer, then
    the training layer (the rerun first), each ``echo``-ing its verdict; with ``update`` each
    chosen layer is relocked instead. The result names the relock command when anything moved."""
    from clip2video.report.drift import relock_command

    prepared = prepare(options)
    result = GateResult()
    if "eval" in options.layers:
        result.moved["eval"] = eval_layer(options, prepared, echo)
    if "train" in options.layers:
        result.moved["train"] = train_layer(options, prepared, echo)
    moved = [layer for layer, n in result.moved.items() if n]
    if moved:
        result.relock = relock_command(options.command_argv(), moved, options.layer)
    return result


def _command(options: GateOptions) -> str:
    """The command stored in a lock: the command line as typed."""
    import shlex

    return shlex.join(["clip2video", *options.command_argv()])


def _dotted(tree: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """A nested ``--set`` dict as ``(dotted key, JSON value)`` pairs."""
    import json

    out: list[tuple[str, str]] = []
    for key, value in tree.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            out += _dotted(value, name)
        else:
            out.append((name, json.dumps(value)))
    return out


__all__ = ["DEFAULT_BASELINES", "DEFAULT_RERUN_DIR", "GateOptions", "GateResult", "check_options", "run_gate"]
