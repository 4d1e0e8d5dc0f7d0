"""The metric-drift gate: identical passes, any perturbation or omission fails naming the metric."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from clip2video.cli import main as cli_main
from clip2video.engine.records import write_run_record, write_suite_info
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


def _record_suite(runs, shift: float = 0.0) -> None:
    rng = np.random.default_rng(0)
    for name in ("meanp", "tab"):
        t2v = rng.integers(1, 8, 16).astype(float)
        v2t = rng.integers(1, 8, 16).astype(float)
        if shift:  # a changed run: its ranks (and so its metrics, which must agree with them) move
            t2v[0] = 1.0 if t2v[0] > 1 else 7.0
        metrics = {"t2v_R1": 100 * float(np.mean(t2v <= 1)), "v2t_R1": 100 * float(np.mean(v2t <= 1))}
        write_run_record(
            runs / "smoke" / name,
            name=name,
            metrics=metrics,
            ranks_t2v=t2v,
            ranks_v2t=v2t,
            protocol="synthetic",
            config={"eval": {"bootstrap": 50}},
            extra={"order_acc": 50.0},
        )
    write_suite_info(runs, "smoke", protocol="synthetic", rows=["meanp", "tab"])


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
    monkeypatch.setattr("clip2video.commands.drift.measure_tolerances", lambda suite, args: {})
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
    monkeypatch.setattr(
        "clip2video.commands.drift.measure_tolerances", lambda suite, args: {"meanp": {"t2v_R1": 0.1}}
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


def test_update_measures_the_spread_over_three_seeds(tmp_path, monkeypatch):
    """``measure_tolerances`` runs the suite with seeds 0, 1, 2 and keeps max(3 x std, floor)."""
    import argparse

    from clip2video.commands import drift as cmd
    from clip2video.experiments.suite import load_suite

    calls = []

    def fake_run(suite, runs, args, overrides=None):
        calls.append(overrides)
        rows = []
        for seed in overrides["seeds"]:
            name = f"tdb-s{seed}"
            write_run_record(
                runs / "smoke" / name,
                name=name,
                metrics={"t2v_R1": 100.0 * (seed + 1) / 16},  # what the ranks give (records check it)
                ranks_t2v=np.concatenate([np.ones(seed + 1), np.arange(2.0, 17.0 - seed)]),
                ranks_v2t=np.arange(1, 9, dtype=float),
                caption_video=np.repeat(np.arange(8), 2),
                protocol="synthetic",
                config={},
                extra={"model": "tdb", "seed": seed, "order_acc": 50.0},
            )
            rows.append(name)
        write_suite_info(runs, "smoke", protocol="synthetic", rows=rows)

    monkeypatch.setattr(cmd, "_run_suite", fake_run)
    args = argparse.Namespace(suite="smoke", runs=tmp_path / "runs", data_root=tmp_path, device="cpu")
    tol = cmd.measure_tolerances(load_suite("smoke"), args)
    assert calls == [{"seeds": [0, 1, 2]}]
    assert tol == {"tdb": {"t2v_R1": pytest.approx(18.75), "order_acc": 100.0 / 16}}


def test_an_unwritable_lock_target_is_one_clear_error(tmp_path):
    from clip2video.report.eval_drift import EvalRun, write_eval_lock

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
            commit=None,
        )
