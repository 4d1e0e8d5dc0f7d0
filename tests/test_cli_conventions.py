"""The conventions of the neighbouring harnesses (issue 19 §9), driven through the command line:
``--version``, ``models`` (plugins included), ``suites``, ``result.json`` and ``build``."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import clip2video
from clip2video.cli import main
from clip2video.experiments.suite import shipped_suites, suite_file_settings
from clip2video.report.tables import regenerate
from tests.test_tables import compile_paper, make_suite

TESTS = Path(__file__).resolve().parent


def run_cli(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The installed console script's module, in a fresh process (as a user types it)."""
    return subprocess.run(
        [sys.executable, "-m", "clip2video", *argv],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS.parent), *(env or {}).values()])},
    )


def test_version_names_the_package_and_what_decides_the_numbers():
    done = run_cli("--version")
    assert done.returncode == 0, done.stderr
    line = done.stdout.strip()
    assert line.startswith(f"clip2video {clip2video.__version__} ") and "torch" in line and "mlflow" in line


@pytest.mark.parametrize("verb", ["models", "suites", "build", "ui"])
def test_new_verbs_have_help(verb, capsys):
    with pytest.raises(SystemExit) as info:
        main([verb, "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert f"usage: clip2video {verb}" in text and len(text) > 300


def test_models_lists_shipped_models_and_an_installed_plugin_package():
    done = run_cli("models", "--json", env={"plugin": str(TESTS / "plugin_pkg")})
    assert done.returncode == 0, done.stderr
    rows = {r["name"]: r for r in json.loads(done.stdout)}
    assert {"meanp", "seqtransf", "tdb", "tab", "clip2video"} <= set(rows)
    assert rows["clip2video"]["source"] == "shipped" and rows["clip2video"]["description"]
    assert rows["toy_plugin_model"]["source"] == "plugin (c2v_toy_plugin)"
    assert rows["toy_plugin_model"]["options"] == {"dim": 8}
    text = run_cli("models", env={"plugin": str(TESTS / "plugin_pkg")}).stdout
    assert "toy_plugin_model" in text and "temporal_layers" in text and "options: dim=8" in text


def test_models_lists_an_import_module_with_its_options(capsys):
    assert main(["--import", "tests.support.toys.toy_model", "models"]) == 0
    out = capsys.readouterr().out
    # the name column is as wide as the longest registered name (other tests may register long ones)
    assert re.search(r"toy_mean_colour +plugin \(tests\.support\.toys\.toy_model\)", out) and "dim=16" in out


def test_suites_lists_each_shipped_suite_with_protocol_rows_and_seeds(capsys):
    assert main(["suites", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == set(shipped_suites())
    for name, row in rows.items():
        settings = suite_file_settings(name)
        assert row["protocol"] == settings["protocol"] and row["description"] == settings["description"]
        assert row["rows"][: len(settings["models"])] == settings["models"]
    assert main(["suites"]) == 0
    text = capsys.readouterr().out
    assert re.search(
        r"ablation-scratch +[^\n]*\n +protocol synthetic; rows meanp, seqtransf, tdb, tab, clip2video; seeds 0,1,2",
        text,
    )
    assert re.search(
        r"(?m)^ablation +[^\n]*\n +protocol synthetic; rows meanp, tdb, tab, clip2video, tdb-mlp, tdb-none, clip2video-K1, "
        r"clip2video-K3, clip2video-K7, clip2video-K9; seeds 0,1,2",
        text,
    )


def two_results(tmp_path: Path) -> list[Path]:
    make_suite(tmp_path / "runs", suite="first", protocol="msrvtt-1k-a", seeds=(0, 1))
    make_suite(tmp_path / "runs", suite="second", protocol="synthetic")
    regenerate(tmp_path / "runs", tmp_path / "results", plots=False)
    return [tmp_path / "results" / "first" / "result.json", tmp_path / "results" / "second"]


def test_tables_write_a_result_file_per_suite(tmp_path):
    first, _ = two_results(tmp_path)
    data = json.loads(first.read_text())
    assert data["format"] == "clip2video-result/1" and data["suite"] == "first"
    assert data["package"] == {"name": "clip2video-bench", "version": clip2video.__version__}
    assert [r["row"] for r in data["rows"]] == ["meanp", "same", "better"]
    better = next(r for r in data["rows"] if r["row"] == "better")
    assert better["runs"] == "0,1" and better["seeds"] == [0, 1]
    r1 = better["metrics"]["t2v_R1"]
    assert r1["lo"] <= r1["mean"] <= r1["hi"] and len(r1["per_seed"]) == 2 and r1["std"] >= 0


def test_build_merges_result_files_into_markdown_csv_and_latex(tmp_path, capsys):
    files = two_results(tmp_path)
    out = tmp_path / "merged"
    assert (
        main(["build", *map(str, files), "--out", str(out), "--metrics", "t2v_R1", "v2t_R1", "order_acc"])
        == 0
    )
    assert "6 row(s) from 2 file(s)" in capsys.readouterr().out
    md = (out / "results.md").read_text()
    assert "first/better" in md and "second/meanp" in md and "[1] " in md and "[2] " in md
    tidy = pd.read_csv(out / "results.csv")
    assert set(tidy.suite) == {"first", "second"} and set(tidy.metric) == {"t2v_R1", "v2t_R1", "order_acc"}
    first = json.loads(files[0].read_text())
    mean = next(r for r in first["rows"] if r["row"] == "better")["metrics"]["t2v_R1"]["mean"]
    line = tidy[(tidy.suite == "first") & (tidy.row == "better") & (tidy.metric == "t2v_R1")].iloc[0]
    assert line["mean"] == pytest.approx(mean) and line.version == clip2video.__version__
    tex = (out / "results.tex").read_text()
    assert "\\label{tab:build-t2v}" in tex and "\\label{tab:build-v2t}" in tex
    if shutil.which("pdflatex"):
        log, _ = compile_paper(tmp_path / "paper", [out / "results.tex"], twocolumn=True)
        assert "Overfull" not in log and "Float too large" not in log


def test_build_errors_are_one_line_naming_the_file(tmp_path, capsys):
    not_result = tmp_path / "other.json"
    not_result.write_text(json.dumps({"rows": {}}))
    for path, reason in (
        (tmp_path / "none.json", "does not exist"),
        (not_result, "not a clip2video result file"),
    ):
        assert main(["build", str(path), "--out", str(tmp_path / "m")]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and str(path) in err and reason in err
    files = two_results(tmp_path)
    assert main(["build", str(files[0]), "--out", str(tmp_path / "m"), "--metrics", "t2v_R99"]) == 1
    assert "t2v_R99" in capsys.readouterr().err
