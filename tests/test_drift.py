"""The metric-drift gate: identical passes, any perturbation or omission fails naming the metric."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from clip2video.cli import main as cli_main
from clip2video.engine.records import read_run_record, write_run_record, write_suite_info
from clip2video.errors import Clip2VideoError
from clip2video.report.drift import (
    EXACT_TOLERANCE,
    compare,
    default_mode,
    load_locked,
    seed_tolerances,
    write_locked,
)

LOCKED = {
    "models": {
        "meanp": {
            "metrics": {"t2v_R1": 25.0, "v2t_R1": 12.5, "t2v_ties": 0.0},
            "intervals": {"t2v_R1": [12.5, 37.5], "v2t_R1": [0.0, 25.0]},
        },
        "tab": {"metrics": {"t2v_R1": 37.5}, "intervals": {"t2v_R1": [25.0, 50.0]}},
    }
}


def test_identical_passes():
    assert compare(LOCKED, copy.deepcopy(LOCKED)) == []
    assert compare(LOCKED, copy.deepcopy(LOCKED), mode="interval") == []


def test_exact_mode_catches_a_tiny_perturbation():
    new = copy.deepcopy(LOCKED)
    new["models"]["tab"]["metrics"]["t2v_R1"] += 1e-6
    drifts = compare(LOCKED, new)
    assert [(d.model, d.metric) for d in drifts] == [("tab", "t2v_R1")]
    assert drifts[0].locked == 37.5 and drifts[0].new == pytest.approx(37.5 + 1e-6)
    assert "1e-09" in drifts[0].tolerance and "tab/t2v_R1" in str(drifts[0])
    new["models"]["tab"]["metrics"]["t2v_R1"] = 37.5 + EXACT_TOLERANCE / 2
    assert compare(LOCKED, new) == []


def test_interval_mode_uses_the_locked_interval():
    new = copy.deepcopy(LOCKED)
    new["models"]["tab"]["metrics"]["t2v_R1"] = 49.0  # inside [25, 50]
    new["models"]["meanp"]["metrics"]["t2v_ties"] = 3.0  # no interval: not checked in this mode
    assert compare(LOCKED, new, mode="interval") == []
    new["models"]["meanp"]["metrics"]["v2t_R1"] = 25.5  # outside [0, 25]
    drifts = compare(LOCKED, new, mode="interval")
    assert [(d.model, d.metric) for d in drifts] == [("meanp", "v2t_R1")]
    assert "[0, 25]" in drifts[0].tolerance
    assert [(d.model, d.metric) for d in compare(LOCKED, new, mode="exact")] == [
        ("meanp", "v2t_R1"),
        ("meanp", "t2v_ties"),
        ("tab", "t2v_R1"),
    ]


def test_missing_model_or_metric_and_unlocked_model_fail():
    new = copy.deepcopy(LOCKED)
    del new["models"]["tab"]
    del new["models"]["meanp"]["metrics"]["v2t_R1"]
    new["models"]["tdb"] = {"metrics": {"t2v_R1": 1.0}}
    found = {(d.model, d.metric, d.new) for d in compare(LOCKED, new)}
    assert found == {("tab", "(model)", None), ("meanp", "v2t_R1", None), ("tdb", "(model)", None)}
    with pytest.raises(Clip2VideoError, match="drift mode"):
        compare(LOCKED, new, mode="fuzzy")


def test_write_locked_stores_the_reason(tmp_path):
    path = write_locked(tmp_path / "b.json", LOCKED["models"], "  first lock  ", suite="smoke", command="cmd")
    data = load_locked(path)
    assert data["message"] == "first lock" and data["command"] == "cmd" and data["suite"] == "smoke"
    assert data["date"] and "git_commit" in data
    assert data["models"] == LOCKED["models"]
    with pytest.raises(Clip2VideoError, match="message"):
        write_locked(tmp_path / "c.json", LOCKED["models"], " ")
    with pytest.raises(Clip2VideoError, match="--update"):
        load_locked(tmp_path / "absent.json")


def _record_suite(runs, shift: float = 0.0, suite: str = "smoke") -> None:
    rng = np.random.default_rng(0)
    for name in ("meanp", "tab"):
        t2v = rng.integers(1, 8, 16).astype(float)
        v2t = rng.integers(1, 8, 16).astype(float)
        if shift:  # a changed run: its ranks (and so its metrics, which must agree with them) move
            t2v[0] = 1.0 if t2v[0] > 1 else 7.0
        metrics = {"t2v_R1": 100 * float(np.mean(t2v <= 1)), "v2t_R1": 100 * float(np.mean(v2t <= 1))}
        write_run_record(
            runs / suite / name,
            name=name,
            metrics=metrics,
            ranks_t2v=t2v,
            ranks_v2t=v2t,
            protocol="synthetic",
            config={"eval": {"bootstrap": 50}},
            extra={"order_acc": 50.0, "model": name, "row": name, "seed": 0},
        )
    write_suite_info(runs, suite, protocol="synthetic", rows=["meanp", "tab"])


def no_seed_runs(monkeypatch) -> None:
    """--update measures the spread from the recorded seed 0 alone (no suite run for seeds 1, 2)."""
    monkeypatch.setattr("clip2video.experiments.drift_runs.seed_spread_options", lambda *a, **k: None)


def _train_gate(tmp_path):
    """A recorded smoke suite and the ``drift --layer train`` argv against a baseline beside it."""
    runs, baseline = tmp_path / "runs", tmp_path / "smoke.json"
    _record_suite(runs)
    argv = ["drift", "--suite", "smoke", "--layer", "train", "--runs", str(runs), "--baseline", str(baseline)]
    return runs, baseline, argv


def test_cli_gate_end_to_end(tmp_path, capsys, monkeypatch):
    runs, baseline, common = _train_gate(tmp_path)
    assert cli_main(common) == 1  # no baseline yet: clear error
    assert "--update" in capsys.readouterr().err
    assert cli_main([*common, "--update"]) == 1  # --update needs --message
    assert "--message" in capsys.readouterr().err
    no_seed_runs(monkeypatch)
    assert cli_main([*common, "--update", "--message", "initial lock"]) == 0
    assert json.loads(baseline.read_text())["message"] == "initial lock"
    capsys.readouterr()
    assert cli_main(common) == 0
    assert "matches" in capsys.readouterr().out

    # A perturbed baseline must fail the gate, naming model, metric, both values and the tolerance.
    data = json.loads(baseline.read_text())
    locked_value = data["models"]["tab"]["metrics"]["v2t_R1"]
    data["models"]["tab"]["metrics"]["v2t_R1"] = locked_value + 1e-6
    baseline.write_text(json.dumps(data))
    assert cli_main(common) == 1
    out = capsys.readouterr().out
    assert "tab/v2t_R1" in out and repr(locked_value + 1e-6) in out and repr(locked_value) in out
    assert "1e-09" in out and "meanp" not in out.split("moved")[1].split("If the change")[0]

    # A changed run (new records) fails against the relocked baseline too.
    assert cli_main([*common, "--update", "--message", "relock"]) == 0
    _record_suite(runs, shift=0.5)
    assert cli_main(common) == 1
    assert "meanp/t2v_R1" in capsys.readouterr().out


PLATFORM = {
    "cpu_model": "cpu A",
    "cpu_capability": "AVX2",
    "torch": "2.14.1",
    "numpy": "2.0",
    "open_clip": "3.3.0",
    "python": "3.11",
    "threads": 1,
    "device": "cpu",
}


def test_the_rule_exact_on_the_lock_platform_else_tolerance():
    locked = {"fingerprint": PLATFORM, "models": {}}
    assert default_mode(locked, dict(PLATFORM)) == "exact"
    for key, value in (
        ("cpu_capability", "AVX512"),
        ("threads", 2),
        ("torch", "2.15"),
        ("cpu_model", "cpu B"),
    ):
        assert default_mode(locked, {**PLATFORM, key: value}) == "tolerance", key
    assert default_mode(locked, {**PLATFORM, "device": "cuda"}) == "tolerance"
    assert default_mode({"models": {}}, PLATFORM) == "tolerance"  # an old lock without a fingerprint


def test_tolerances_from_the_seed_spread_with_a_floor():
    by_model = {
        "tdb": [
            {"t2v_R1": 10.0, "t2v_MnR": 5.0},
            {"t2v_R1": 20.0, "t2v_MnR": 5.0},
            {"t2v_R1": 30.0, "t2v_MnR": 5.1},
        ]
    }
    tol = seed_tolerances(by_model, {"tdb": 32})["tdb"]
    assert tol["t2v_R1"] == pytest.approx(3 * 10.0)  # 3 x sample std of 10, 20, 30
    assert tol["t2v_MnR"] == 1.0  # 3 x std = 0.17 < the floor of one rank
    flat = seed_tolerances({"m": [{"v2t_R1": 50.0}] * 3}, {"m": 16})["m"]
    assert flat["v2t_R1"] == 100.0 / 16  # no spread: one query's share


def test_tolerance_mode_names_metric_values_and_tolerance():
    locked = {
        "models": {
            "tdb": {"metrics": {"t2v_R1": 30.0, "v2t_R1": 20.0}, "tolerances": {"t2v_R1": 5.0, "v2t_R1": 2.0}}
        }
    }
    new = {"models": {"tdb": {"metrics": {"t2v_R1": 34.0, "v2t_R1": 23.0}}}}
    drifts = compare(locked, new, mode="tolerance")
    assert [(d.model, d.metric, d.locked, d.new) for d in drifts] == [("tdb", "v2t_R1", 20.0, 23.0)]
    assert "<= 2" in drifts[0].tolerance
    assert len(compare(locked, new, mode="exact")) == 2


def test_a_failure_prints_both_fingerprints(tmp_path, capsys, monkeypatch):
    runs, baseline, common = _train_gate(tmp_path)
    no_seed_runs(monkeypatch)
    monkeypatch.setattr(
        "clip2video.report.drift.lock_tolerances", lambda records, spread: {"meanp": {"t2v_R1": 0.1}}
    )
    assert cli_main([*common, "--update", "--message", "lock"]) == 0
    data = json.loads(baseline.read_text())
    assert data["fingerprint"]["cpu_capability"] and data["models"]["meanp"]["tolerances"] == {"t2v_R1": 0.1}
    assert "std over seeds" in data["tolerance_rule"]
    data["fingerprint"]["cpu_capability"] = "SOMETHING_ELSE"
    baseline.write_text(json.dumps(data))
    _record_suite(runs, shift=0.5)  # meanp t2v_R1 moves by 6.25 > its tolerance 0.1
    capsys.readouterr()
    assert cli_main(common) == 1
    out = capsys.readouterr().out
    assert "tolerance mode" in out and "meanp/t2v_R1" in out and "<= 0.1" in out
    assert "locked platform:" in out and "this platform:" in out and "SOMETHING_ELSE" in out
    assert "cpu_capability: SOMETHING_ELSE ->" in out


def test_an_unwritable_lock_target_is_one_clear_error(tmp_path):
    from clip2video.experiments.drift_runs import EvalRun
    from clip2video.report.eval_drift import write_eval_lock

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(Clip2VideoError, match="cannot write the baseline") as info:
        write_locked(blocker / "smoke.json", LOCKED["models"], "why")
    assert "\n" not in str(info.value) and str(blocker / "smoke.json") in str(info.value)
    with pytest.raises(Clip2VideoError, match="cannot write the lock"):
        write_eval_lock(
            blocker / "eval-smoke.json",
            EvalRun(settings={}),
            message="m",
            suite="s",
            command="c",
        )


# ----------------------------------------------------------------------------- the verb (issue 17 §2, issue 19 §5)


def test_help_shows_the_two_layer_paragraphs_as_written(capsys):
    """cli.py keeps drift's raw description: each layer is its own indented paragraph."""
    from clip2video import drift_gate
    from clip2video.commands import drift as verb
    from clip2video.commands.drift import HELP

    assert (verb.DEFAULT_BASELINES, verb.DEFAULT_RERUN_DIR) == (
        drift_gate.DEFAULT_BASELINES,
        drift_gate.DEFAULT_RERUN_DIR,
    )

    with pytest.raises(SystemExit) as info:
        cli_main(["drift", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for paragraph in HELP.strip().split("\n\n"):
        assert paragraph in out, paragraph
    assert "\n\nevaluation drift (--layer eval;" in out and "\n\ntraining drift (--layer train;" in out
    assert "\n  gets a tiny checkpoint" in out
    flat = " ".join(out.split()).replace("- ", "-")  # argparse wraps at hyphens
    assert "(default: runs-drift)" in flat and "--jobs" in flat and "--set KEY=VALUE" in flat


def test_rerun_with_a_runs_dir_is_one_clear_error(tmp_path, capsys):
    code = cli_main(["drift", "--suite", "smoke", "--rerun", "--runs-dir", str(tmp_path / "runs")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "--rerun-dir" in err[0] and "runs-drift" in err[0]
    code = cli_main(["drift", "--suite", "smoke", "--rerun", "--rerun-dir", "runs"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "is your runs folder" in err[0]


def _lock_entry(baseline, model: str, metric: str, delta: float) -> float:
    """Move one locked metric by ``delta`` (the run then differs from its lock); returns the old value."""
    data = json.loads(baseline.read_text())
    old = data["models"][model]["metrics"][metric]
    data["models"][model]["metrics"][metric] = old + delta
    baseline.write_text(json.dumps(data))
    return old


def test_the_lock_stores_the_settings_and_a_failure_names_those_that_differ(tmp_path, capsys, monkeypatch):
    from clip2video.experiments.suite import load_suite

    runs, baseline, common = _train_gate(tmp_path)
    no_seed_runs(monkeypatch)
    assert cli_main([*common, "--update", "--message", "lock"]) == 0
    data = json.loads(baseline.read_text())
    assert data["version"] == 3 and data["settings"] == load_suite("smoke").settings.to_dict()
    assert data["settings"]["train"]["batch_size"] == 16
    _lock_entry(baseline, "tab", "v2t_R1", 1.0)
    capsys.readouterr()
    assert cli_main([*common, "--set", "train.batch_size=8", "--set", "train.lr=0.01"]) == 1
    lines = capsys.readouterr().out.splitlines()
    settings = next(i for i, line in enumerate(lines) if "settings (locked -> now)" in line)
    metric = next(i for i, line in enumerate(lines) if "tab/v2t_R1" in line)
    assert settings < metric, lines  # the settings come before the metrics
    assert "train.batch_size: 16 -> 8" in lines[settings] and "train.lr: 0.001 -> 0.01" in lines[settings]
    assert cli_main(common) == 1  # same settings: said so
    assert "settings (locked -> now): identical" in capsys.readouterr().out

    # An old lock (version 2, no settings) still loads and says so.
    data = json.loads(baseline.read_text())
    del data["settings"]
    data["version"] = 2
    baseline.write_text(json.dumps(data))
    assert cli_main(common) == 1
    out = capsys.readouterr().out
    assert "the lock holds no settings" in out and "tab/v2t_R1" in out


def test_the_relock_command_is_the_command_as_typed_and_runs_as_printed(tmp_path, capsys, monkeypatch):
    """--import, --baselines, a --suite path, --set and --layer survive; it relocks as printed."""
    import shlex

    suite = tmp_path / "suites" / "mine.toml"
    suite.parent.mkdir()
    suite.write_text('base = "smoke"\nname = "mine"\n')
    plugin = tmp_path / "plugins" / "drift_probe_plugin.py"
    plugin.parent.mkdir()
    plugin.write_text("LOADED = True\n")
    baselines, runs = tmp_path / "locks", tmp_path / "runs"
    _record_suite(runs, suite="mine")
    monkeypatch.chdir(tmp_path)  # relative paths, as a user types them
    argv = ["--import", "plugins/drift_probe_plugin.py", "drift", "--suite", "suites/mine.toml"]
    argv += ["--layer", "train", "--baselines", "locks", "--runs-dir", "runs", "--set", "train.epochs=2"]
    no_seed_runs(monkeypatch)
    assert cli_main([*argv, "--update", "--message", "first"]) == 0
    lock = baselines / "mine.json"
    assert json.loads(lock.read_text())["command"] == shlex.join(
        ["clip2video", *argv, "--update", "--message", "first"]
    )
    _lock_entry(lock, "meanp", "t2v_R1", 1e-6)
    capsys.readouterr()
    assert cli_main(argv) == 1
    out = capsys.readouterr().out
    hint = next(line for line in out.splitlines() if line.startswith("If the change is intended, relock: "))
    command = shlex.split(hint.split("relock: ", 1)[1])
    assert command == ["clip2video", *argv, "--update", "--message", "why"], command
    assert cli_main(command[1:]) == 0  # as printed
    assert json.loads(lock.read_text())["message"] == "why"
    assert cli_main(argv) == 0


def test_the_relock_command_names_only_the_layer_that_moved():
    from clip2video.report.drift import relock_command

    argv = ["drift", "--suite", "my suite.toml", "--message", "old", "--update", "--rerun"]
    assert relock_command(argv, ["train"], "both") == (
        "clip2video drift --suite 'my suite.toml' --rerun --layer train --update --message \"why\""
    )
    argv = ["drift", "--layer=both", "--message=x"]
    assert relock_command(argv, ["eval", "train"], "both") == (
        'clip2video drift --layer=both --update --message "why"'
    )
    assert relock_command(argv, ["eval"], "both") == 'clip2video drift --layer eval --update --message "why"'


def test_update_runs_only_the_seeds_the_locked_run_lacks(tmp_path, monkeypatch, capsys):
    """--update reuses the recorded seed 0 and runs seeds 1 and 2 alone, into <rerun-dir>/seed-spread,
    with --set and --jobs; the tolerances come from all three seeds."""
    from types import SimpleNamespace

    from clip2video import drift_gate

    runs, baseline, common = _train_gate(tmp_path)
    asked = []

    def fake_check(options):
        asked.append(options)
        return SimpleNamespace(options=options, suite=SimpleNamespace(name="smoke"))

    def fake_run(checked):
        options, records = checked.options, []
        for name in ("meanp", "tab"):
            for seed in options.overrides["seeds"]:
                row = f"{name}-s{seed}"
                hits = seed + 1  # seed s: s + 1 of 16 captions at rank 1
                write_run_record(
                    options.runs_dir / "smoke" / row,
                    name=row,
                    metrics={"t2v_R1": 100.0 * hits / 16, "v2t_R1": 0.0},
                    ranks_t2v=np.concatenate([np.ones(hits), np.full(16 - hits, 2.0)]),
                    ranks_v2t=np.full(16, 2.0),
                    protocol="synthetic",
                    config={},
                    extra={"model": name, "row": name, "seed": seed, "order_acc": 50.0},
                )
                records.append(read_run_record(options.runs_dir / "smoke" / row))
        return records

    monkeypatch.setattr(drift_gate, "check", fake_check)
    monkeypatch.setattr(drift_gate, "run_records", fake_run)
    rerun_dir = tmp_path / "gate-runs"
    extra = ["--set", "train.epochs=1", "--jobs", "2", "--rerun-dir", str(rerun_dir)]
    assert cli_main([*common, *extra, "--update", "--message", "lock"]) == 0, capsys.readouterr().err
    (options,) = asked  # one suite run, for the seeds the recorded run lacks
    assert list(options.overrides["seeds"]) == [1, 2] and options.overrides["train"]["epochs"] == 1
    assert options.jobs == 2 and options.runs_dir == rerun_dir / "seed-spread" and options.tracking is False
    locked = json.loads(baseline.read_text())["models"]
    for rec in _records(runs):  # the recorded seed 0, then seeds 1 and 2 of the fake run
        values = [100.0 * float(np.mean(rec.ranks_t2v <= 1)), 100.0 * 2 / 16, 100.0 * 3 / 16]
        expected = max(3 * float(np.std(values, ddof=1)), 100.0 / 16)
        assert locked[rec.name]["tolerances"]["t2v_R1"] == pytest.approx(expected), rec.name


def _records(runs):
    from clip2video.engine.records import read_suite_records

    return read_suite_records(runs, "smoke")


def _tree_bytes(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_rerun_writes_its_own_runs_folder_and_keeps_the_users_records(tmp_path, monkeypatch, capsys):
    """drift --rerun (and --update's seed runs) write runs-drift/, untracked: the user's runs/smoke/
    stays byte-identical and no MLflow store appears; --update runs seed 0 once; the suite file is
    read once per command."""
    from clip2video.experiments import suite as suite_module
    from tests.support.protocol_fixtures import SMOKE_SETTINGS

    reads = []
    declared = suite_module._declared
    monkeypatch.setattr(
        suite_module, "_declared", lambda path, seen: reads.append(path) or declared(path, seen)
    )
    monkeypatch.chdir(tmp_path)
    _record_suite(tmp_path / "runs")  # the user's own records of the smoke suite
    before = _tree_bytes(tmp_path / "runs")
    argv = ["drift", "--suite", "smoke", "--layer", "train", "--rerun", "--baselines", "locks", "--jobs", "2"]
    argv += ["--set", 'models=["meanp"]']
    for section, values in SMOKE_SETTINGS.items():
        argv += [
            item
            for key, value in values.items()
            for item in ("--set", f"{section}.{key}={json.dumps(value)}")
        ]
    assert cli_main([*argv, "--update", "--message", "first lock"]) == 0, capsys.readouterr().err
    assert len(reads) == 1, reads  # the rerun, its check and the seed-spread run share one reading
    assert sorted(p.name for p in (tmp_path / "runs-drift" / "smoke").iterdir() if p.is_dir()) == ["meanp"]
    spread = tmp_path / "runs-drift" / "seed-spread" / "smoke"
    assert sorted(p.name for p in spread.iterdir() if p.is_dir()) == ["meanp-s1", "meanp-s2"]  # no seed 0
    capsys.readouterr()
    assert cli_main(argv) == 0
    out = capsys.readouterr().out
    assert "matches" in out and "exact mode" in out, out
    assert _tree_bytes(tmp_path / "runs") == before
    assert not any(tmp_path.glob("mlruns*")) and not (tmp_path / "mlflow.db").exists()
