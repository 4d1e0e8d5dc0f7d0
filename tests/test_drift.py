"""The metric-drift gate: identical passes, any perturbation or omission fails naming the metric."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from clip2video.cli import main as cli_main
from clip2video.engine.records import write_run_record, write_suite_info
from clip2video.errors import Clip2VideoError
from clip2video.report.drift import EXACT_TOLERANCE, compare, load_locked, write_locked

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
        metrics = {"t2v_R1": 100 * float(np.mean(t2v <= 1)) + shift, "v2t_R1": 100 * float(np.mean(v2t <= 1))}
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


def test_cli_gate_end_to_end(tmp_path, capsys):
    runs, baseline = tmp_path / "runs", tmp_path / "smoke.json"
    _record_suite(runs)
    common = ["drift", "--suite", "smoke", "--runs", str(runs), "--baseline", str(baseline)]
    assert cli_main(common) == 1  # no baseline yet: clear error
    assert "--update" in capsys.readouterr().err
    assert cli_main([*common, "--update"]) == 1  # --update needs --message
    assert "--message" in capsys.readouterr().err
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
