"""benchmarks/bench_eval.py: the end-to-end evaluation benchmark runs at a tiny size and its
comparison helpers are exact."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from benchmarks import bench_eval

ROOT = Path(__file__).resolve().parents[1]


def test_same_is_exact_equality():
    assert bench_eval.same({"a": [1.0, float("nan")]}, {"a": [1.0, float("nan")]})
    assert not bench_eval.same({"a": 1.0}, {"a": 1.0 + 1e-12})
    assert not bench_eval.same({"a": 1.0}, {"a": 1.0, "b": 2.0})


def test_generated_split_has_one_caption_per_video():
    ids, captions, cv, source = bench_eval.make_split(12, real=False)
    assert len(set(ids)) == len(captions) == 12 and cv == list(range(12)) and "generated" in source


def test_tiny_run_reports_every_stage(tmp_path):
    out = tmp_path / "perf_eval.json"
    cmd = [sys.executable, "-m", "benchmarks.bench_eval", "--videos", "4", "--seconds", "1.2"]
    cmd += ["--baseline", "none", "--bootstrap", "10", "--generated-split", "--out", str(out)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    assert set(report["new"]["stages_s"]) == set(bench_eval.STAGES)
    assert report["new"]["route"].startswith("encode_split_pair")
    assert report["setup"]["videos"] == 4 and "baseline" not in report
    metrics = report["new"]["results"]["metrics"]
    assert 0 <= metrics["t2v_R1"] <= 100
    assert "| end to end |" in done.stdout
