"""benchmarks/run_all.py aggregation on fake benchmark JSON: summary rows, met logic, GPU rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import run_all

ROOT = Path(__file__).resolve().parents[1]


def ranking_json(time_exponent: float = 1.0, memory_exponent: float = 1.0) -> dict:
    """1k: 20 ms vs 2 ms (10x); 4k: 500 ms vs 100 ms (5x); growth time ~ (N^2)^e, memory ~ N^m."""

    def growth(n: int) -> dict:
        pairs = n * n
        return {
            "size": [n, n],
            "chunk_size": 1024,
            "device": "cpu",
            "time_s": 1e-8 * pairs**time_exponent,
            "ns_per_pair": 1e-8 * pairs**time_exponent / pairs * 1e9,
            "peak_rss_delta_mib": 0.01 * n**memory_exponent,
            "full_matrix_mib": pairs * 4 / 2**20,
        }

    compare = [
        {"size": [1000, 1000], "sort_baseline_s": {"best": 0.020}, "core_s": {"best": 0.002}, "target": 5.0},
        {"size": [4000, 4000], "sort_baseline_s": {"best": 0.500}, "core_s": {"best": 0.100}, "target": 10.0},
    ]
    return {
        "command": "python benchmarks/bench_ranking.py",
        "machine": {"cpu_count": 2, "load_average_at_start": [1.0, 1.0, 1.0]},
        "comparison": compare,
        "growth": [growth(n) for n in (1000, 4000, 16000)],
    }


DECODE = {
    "command": "python benchmarks/bench_decode.py --videos 8",
    "machine": {"cpu": "test cpu", "cpu_count": 2},
    "note": "ffmpeg uses its own threads",
    "settings": {"videos": 8},
    # per core: 1 / 0.1 s vs 1 / 0.4 s -> 4x; wall: 0.2 s vs 0.4 s -> 2x
    "summary": {
        "decord_wall_s_per_video": 0.2,
        "official_wall_s_per_video": 0.4,
        "decord_videos_per_cpu_s": 10.0,
        "official_videos_per_cpu_s": 2.5,
        "target": 3.0,
    },
    "dataloader": [{"workers": 0, "videos": 8, "wall_s": 1.0, "videos_per_s": 8.0}],
}

CACHE = {
    "command": "python benchmarks/bench_cache.py",
    "machine": {"cpu_count": 2},
    "first_s": 1.0,
    "second_s": 0.04,  # 25x
    "second_runs_s": [0.04, 0.05, 0.04],
    "target": 20.0,
}


def gpu_json(
    size: str = "full", device: str = "cuda", fps=(20_000.0, 30_000.0), compile_fps=None, seconds=(3.0, 6.0)
):
    variants = [
        {"name": name, "status": "ok", "frames_per_s": f, "ratio_to_reference": f / 21_400}
        for name, f in zip(("float32", "bf16 weights"), fps, strict=True)
    ]
    compiled = {"name": "bf16 weights + torch.compile", "status": "timeout: after 150 s (cap)"}
    if compile_fps is not None:
        compiled = {"name": compiled["name"], "status": "ok", "frames_per_s": compile_fps}
    metrics = {"t2v_R1": 1.0, "v2t_R1": 2.0}
    return {
        "check": "gpu",
        "card": "NVIDIA H100 80GB HBM3",
        "date": "2026-01-02",
        "size": size,
        "device_type": device,
        "phases": {
            "encoder": {"variants": variants},
            "compile": compiled,
            "msvd": {
                "runs": [
                    {"precision": p, "status": "ok", "total_s": s, "best_pass": {"total_s": s}}
                    for p, s in zip(("bf16", "float32"), seconds, strict=True)
                ]
            },
            "parity": {
                "status": "ok",
                "sim_max_abs_diff": 0.05,
                "sim_max_rel_diff": 0.002,
                "metrics_bf16": metrics,
                "metrics_float32": {"t2v_R1": 1.2, "v2t_R1": 2.0},
            },
        },
    }


def write_results(folder: Path, *, ranking=None, decode=DECODE, cache=CACHE, gpu: dict | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in (("ranking", ranking or ranking_json()), ("decode", decode), ("cache", cache)):
        if data is not None:
            (folder / f"perf_{name}.json").write_text(json.dumps(data))
    if gpu is not None:
        (folder / "gpu").mkdir(exist_ok=True)
        (folder / "gpu" / f"check-{gpu['size']}-{gpu['date']}.json").write_text(json.dumps(gpu))
    return folder


def rows_by_what(rows: list[dict]) -> dict[str, dict]:
    return {r["what"]: r for r in rows}


def summary(folder: Path, runs=()) -> list[dict]:
    return run_all.aggregate(folder, list(runs), [1.0, 1.0, 1.0], "python benchmarks/run_all.py")["summary"]


# ----------------------------------------------------------------------------------- tests


def test_one_row_per_target_in_the_issue_order(tmp_path: Path) -> None:
    rows = summary(write_results(tmp_path))
    whats = [r["what"] for r in rows]
    assert len(whats) == 11
    assert whats[0].startswith("eval end to end")
    assert whats[1].endswith("(wall)") and whats[2].endswith("(per core)")
    assert whats[3].startswith("ranking 1k") and whats[4].startswith("ranking 4k")
    assert whats[5].startswith("ranking growth") and whats[6].startswith("ranking peak memory")
    assert whats[7].startswith("cache") and all(w.startswith("GPU") for w in whats[8:])


def test_ratios_come_from_the_pairs_of_timings_and_decide_met(tmp_path: Path) -> None:
    rows = summary(write_results(tmp_path))
    _, wall, per_core, r1k, r4k, _, _, cache = rows[:8]
    assert r1k["ratio"] == pytest.approx(10.0) and r1k["met"] is True  # 20 ms / 2 ms >= 5x
    assert r4k["ratio"] == pytest.approx(5.0) and r4k["met"] is False  # 500 / 100 < 10x
    assert per_core["ratio"] == pytest.approx(4.0) and per_core["met"] is True
    assert wall["ratio"] == pytest.approx(2.0) and wall["met"] is False
    assert cache["ratio"] == pytest.approx(25.0) and cache["met"] is True
    assert [run_all.met_text(r) for r in (r1k, r4k)] == ["met", "NOT met"]


@pytest.mark.parametrize(
    ("time_exp", "mem_exp", "time_met", "mem_met"),
    [(1.0, 1.0, True, True), (1.1, 0.5, True, True), (1.5, 1.0, False, True), (1.0, 2.0, True, False)],
)
def test_growth_and_memory_exponents(tmp_path: Path, time_exp, mem_exp, time_met, mem_met) -> None:
    rows = summary(write_results(tmp_path, ranking=ranking_json(time_exp, mem_exp)))
    growth, memory = rows[5], rows[6]
    assert growth["ratio"] == pytest.approx(time_exp)  # fitted s of time ~ (N*M)^s
    assert growth["met"] is time_met
    peak = 0.01 * 16000**mem_exp
    assert memory["ratio"] == pytest.approx(peak / (16000 * 16000 * 4 / 2**20))
    assert memory["met"] is mem_met
    assert f"~ N^{mem_exp:.2f}" in memory["value"]


def test_memory_above_the_full_matrix_is_not_met(tmp_path: Path) -> None:
    data = ranking_json()
    data["growth"][-1]["peak_rss_delta_mib"] = 2 * data["growth"][-1]["full_matrix_mib"]
    memory = summary(write_results(tmp_path, ranking=data))[6]
    assert memory["ratio"] == pytest.approx(2.0) and memory["met"] is False


def test_gpu_rows_say_not_run_without_a_gpu_report(tmp_path: Path) -> None:
    rows = summary(write_results(tmp_path))
    for row in rows[8:]:
        assert row["value"] == "not run: no GPU was available"
        assert row["met"] is None and run_all.met_text(row) == "not run"


def test_tiny_or_cpu_gpu_checks_are_ignored(tmp_path: Path) -> None:
    folder = write_results(tmp_path, gpu=gpu_json(size="tiny", device="cpu"))
    assert run_all.newest_gpu_check(folder / "gpu") is None
    assert summary(folder)[8]["value"] == "not run: no GPU was available"


def test_gpu_rows_from_a_full_size_report(tmp_path: Path) -> None:
    rows = summary(write_results(tmp_path, gpu=gpu_json()))
    encoder, evaluation, parity = rows[8:]
    assert encoder["ratio"] == pytest.approx(30_000 / 21_400) and encoder["met"] is False  # < 1.5x
    assert "bf16 weights" in encoder["value"] and "NVIDIA H100" in encoder["value"]
    assert evaluation["ratio"] == pytest.approx(3.0) and evaluation["met"] is True  # best precision, <= 5 s
    assert "bf16" in evaluation["value"]
    assert parity["met"] is None and "0.05" in parity["value"] and run_all.met_text(parity) == "n/a"


def test_gpu_compiled_encoder_counts_when_fastest(tmp_path: Path) -> None:
    rows = summary(write_results(tmp_path, gpu=gpu_json(compile_fps=40_000.0, seconds=(5.5, 7.0))))
    encoder, evaluation = rows[8], rows[9]
    assert encoder["ratio"] == pytest.approx(40_000 / 21_400) and encoder["met"] is True
    assert "torch.compile" in encoder["value"]
    assert evaluation["met"] is False


def test_newest_gpu_report_wins(tmp_path: Path) -> None:
    folder = write_results(tmp_path, gpu=gpu_json())
    newer = gpu_json(fps=(1.0, 50_000.0))
    newer["date"] = "2026-02-01"
    (folder / "gpu" / "newer.json").write_text(json.dumps(newer))
    path, report = run_all.newest_gpu_check(folder / "gpu")
    assert path.name == "newer.json" and report["date"] == "2026-02-01"


def test_missing_benchmark_json_gives_not_run_rows(tmp_path: Path) -> None:
    rows = summary(write_results(tmp_path, decode=None, cache=None))
    for row in (rows[0], rows[1], rows[2], rows[7]):
        assert row["value"].startswith("not run: no results/perf_") and row["met"] is None


def test_failed_rerun_marks_its_rows_stale(tmp_path: Path) -> None:
    runs = [{"name": "cache", "command": "x", "returncode": 1, "wall_s": 1.0}]
    cache = summary(write_results(tmp_path), runs)[7]
    assert cache["value"].endswith("(from an earlier run: this run failed)")


def test_skip_run_writes_markdown_opening_with_the_table_and_json(tmp_path: Path, capsys) -> None:
    folder = write_results(tmp_path, gpu=gpu_json())
    result = run_all.main(["--skip-run", "--results", str(folder)])
    assert result["runs"] == []
    md = (folder / "perf.md").read_text().splitlines()
    assert md[0].startswith("# ")
    assert md[2].startswith("| what was compared") and "| met" in md[2]
    table = md[4 : 4 + 11]
    assert all(line.startswith("|") for line in table) and not md[15].startswith("|")
    assert md[4].startswith("| eval end to end") and "not run" in md[4]
    assert md[8].startswith("| ranking 4k") and "NOT met" in md[8]
    text = "\n".join(md)
    for expected in ("load average", "## Ranking core", "## Decoding", "## Embedding cache", "## GPU check"):
        assert expected in text
    assert "python benchmarks/bench_decode.py --videos 8" in text  # each exact command
    assert "Note: ffmpeg uses its own threads" in text  # why the wall target is missed
    saved = json.loads((folder / "perf.json").read_text())
    assert saved["summary"] == json.loads(json.dumps(result["summary"]))
    assert set(saved["benchmarks"]) == {"ranking", "decode", "cache"}
    assert saved["gpu"]["data"]["card"] == "NVIDIA H100 80GB HBM3"
    assert "| what was compared" in capsys.readouterr().out


def test_commands_write_into_the_results_folder(tmp_path: Path) -> None:
    command = run_all.BENCHMARKS["decode"].command(tmp_path)
    assert command[1:3] == ["-m", "benchmarks.bench_decode"]
    assert command[-2:] == ["--out", str((tmp_path / "perf_decode.json").resolve())]
    assert run_all.BENCHMARKS["ranking"].command(ROOT / "results")[-1] == "results/perf_ranking.json"


EVAL = {
    "setup": {"videos": 1000},
    "target": 1.6,
    "baseline_commit": "0df3332",
    "metrics_identical": True,
    "identical": {"metrics": True, "legacy": True, "time_reversal": True, "bootstrap": True},
    "baseline": {
        "wall_s": 60.0,
        "walls_s": [60.0],
        "stages_s": dict.fromkeys(("startup", "decode", "model", "ranking", "bootstrap", "reversal"), 1.0),
        "route": "two passes",
        "workers": 0,
        "threads": 1,
    },
    "new": {
        "wall_s": 30.0,
        "walls_s": [30.0],
        "stages_s": dict.fromkeys(("startup", "decode", "model", "ranking", "bootstrap", "reversal"), 0.5),
        "route": "pair",
        "workers": 2,
        "threads": 1,
    },
}


@pytest.mark.parametrize(
    ("new_wall", "identical", "met"), [(30.0, True, True), (50.0, True, False), (30.0, False, False)]
)
def test_eval_row_needs_the_ratio_and_identical_metrics(tmp_path: Path, new_wall, identical, met) -> None:
    data = json.loads(json.dumps(EVAL))
    data["new"]["wall_s"], data["metrics_identical"] = new_wall, identical
    folder = write_results(tmp_path)
    (folder / "perf_eval.json").write_text(json.dumps(data))
    row = summary(folder)[0]
    assert row["ratio"] == pytest.approx(60.0 / new_wall) and row["met"] is met
    assert ("identical metrics" in row["value"]) is identical
    md = run_all.render(run_all.aggregate(folder, [], [1.0] * 3, "x"))
    assert "## End-to-end evaluation" in md and "| end to end | 60.00 s | " in md


def test_decode_row_uses_the_all_cores_ratio_when_present(tmp_path: Path) -> None:
    data = json.loads(json.dumps(DECODE))
    data["summary"].update(
        loader_all_cores_wall_s=1.0, official_all_cores_wall_s=3.5, all_cores_workers=2, speedup_wall=3.5
    )
    wall = summary(write_results(tmp_path, decode=data))[1]
    assert wall["what"].endswith("(wall, all cores)")
    assert wall["ratio"] == pytest.approx(3.5) and wall["met"] is True
    assert "one at a time: 2.00x" in wall["value"]
