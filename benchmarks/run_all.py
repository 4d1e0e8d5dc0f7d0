"""Run the speed benchmarks and write ``results/perf.md`` and ``results/perf.json`` (``tox -e bench``).

Each benchmark script writes its own ``results/perf_<name>.json``; this script runs them with
defaults sized for a 2-core machine (a few minutes in all), then reads every ``perf_<name>.json``
and the newest full-size GPU check under ``results/gpu/`` (``benchmarks/gpu/check.py``, run by
hand on a GPU) and writes:

- ``results/perf.md``: a table first (what was compared, ratio or value, target, met or not), one
  row per target; then one section per benchmark with the machine, each pair of timings, the ratio
  and the exact command;
- ``results/perf.json``: the same summary plus every source JSON, the runs and the load average.

The end-to-end evaluation (``bench_eval``) and decode rows come first. After the benchmarks it
runs the pytest benchmarks ``benchmarks/test_bench_*.py`` once (``--benchmark-disable``: each
test runs once as a plain test) and records their outcome.

    python -m benchmarks.run_all                 # run all, then aggregate
    python -m benchmarks.run_all --only cache    # rerun one, aggregate all
    python -m benchmarks.run_all --skip-run      # only aggregate the existing JSON
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_FPS = 21_400.0  # official fp16 ViT-B/32 encoder on an H200, batch 768
GPU_FPS_RATIO = 1.5
GPU_EVAL_S = 5.0
GROWTH_EXPONENT_MAX = 1.2  # time ~ (N*M)^s and peak memory ~ N^s: s <= 1.2 (linear, allowing noise)
NO_GPU = "not run: no GPU was available"


@dataclass(frozen=True)
class Benchmark:
    """One benchmark script, its modest default arguments and the JSON it writes."""

    name: str
    module: str
    args: tuple[str, ...]

    def output(self, results: Path) -> Path:
        return results / f"perf_{self.name}.json"

    def command(self, results: Path) -> list[str]:
        out = self.output(results).resolve()
        shown = out.relative_to(ROOT) if out.is_relative_to(ROOT) else out
        return [sys.executable, "-m", self.module, *self.args, "--out", str(shown)]


BENCHMARKS = {
    b.name: b
    for b in (
        Benchmark("eval", "benchmarks.bench_eval", ()),
        Benchmark("decode", "benchmarks.bench_decode", ("--videos", "8")),
        Benchmark("ranking", "benchmarks.bench_ranking", ("--sizes", "1000", "4000", "16000")),
        Benchmark("cache", "benchmarks.bench_cache", ()),
    )
}


# ------------------------------------------------------------------------------------- running


def load_average() -> list[float] | None:
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def run_benchmarks(names: list[str], results: Path) -> list[dict[str, Any]]:
    """Run each named benchmark script (from the project root); a failure is recorded, not raised."""
    runs = []
    for name in names:
        command = BENCHMARKS[name].command(results)
        print(f"== {name}: {shlex.join(command)}", flush=True)
        start = time.perf_counter()
        done = subprocess.run(command, cwd=ROOT, check=False)
        wall = time.perf_counter() - start
        runs.append(
            {"name": name, "command": shlex.join(command), "returncode": done.returncode, "wall_s": wall}
        )
        status = "ok" if done.returncode == 0 else f"FAILED (exit {done.returncode})"
        print(f"== {name}: {status} in {wall:.0f} s", flush=True)
    return runs


def run_pytest_benchmarks() -> dict[str, Any]:
    """``benchmarks/test_bench_*.py`` once each, as plain tests (pytest-benchmark disabled)."""
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "--benchmark-disable",
        "benchmarks",
    ]
    print(f"== pytest benchmarks: {shlex.join(command)}", flush=True)
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, check=False)
    wall = time.perf_counter() - start
    return {
        "name": "pytest benchmarks",
        "command": shlex.join(command),
        "returncode": done.returncode,
        "wall_s": wall,
    }


# ------------------------------------------------------------------------------------- reading


def load_results(results: Path) -> dict[str, dict[str, Any] | None]:
    """Each benchmark's JSON (None where the file is absent)."""
    out: dict[str, dict[str, Any] | None] = {}
    for name, bench in BENCHMARKS.items():
        path = bench.output(results)
        out[name] = json.loads(path.read_text()) if path.exists() else None
    return out


def newest_gpu_check(gpu_dir: Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest full-size CUDA report of ``benchmarks/gpu/check.py`` (tiny CPU runs are ignored)."""
    found = []
    for path in gpu_dir.glob("*.json") if gpu_dir.is_dir() else []:
        try:
            report = json.loads(path.read_text())
        except json.JSONDecodeError:
            continue
        if (
            report.get("check") == "gpu"
            and report.get("size") == "full"
            and report.get("device_type") == "cuda"
        ):
            found.append((report.get("date", ""), path.stat().st_mtime, path, report))
    if not found:
        return None
    _, _, path, report = max(found, key=lambda item: (item[0], item[1]))
    return path, report


# ------------------------------------------------------------------------------------- summary


def _row(what: str, value: str, target: str, met: bool | None, ratio: float | None = None) -> dict[str, Any]:
    return {"what": what, "value": value, "ratio": ratio, "target": target, "met": met}


def _not_run(what: str, target: str, why: str) -> dict[str, Any]:
    return _row(what, why, target, None)


def _exponent(x: list[float], y: list[float]) -> float:
    """Least-squares slope of log y against log x."""
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def ranking_rows(data: dict[str, Any] | None) -> list[dict[str, Any]]:
    rows = []
    for n, target in ((1000, 5.0), (4000, 10.0)):
        what = f"ranking {n // 1000}k x {n // 1000}k: metrics core vs official-style numpy sort"
        row = next((r for r in (data or {}).get("comparison", []) if r["size"] == [n, n]), None)
        if row is None:
            rows.append(_not_run(what, f">= {target:g}x", "not run: no results/perf_ranking.json row"))
            continue
        base, core = row["sort_baseline_s"]["best"], row["core_s"]["best"]
        ratio = base / core
        value = f"{ratio:.1f}x ({base * 1e3:.1f} ms vs {core * 1e3:.2f} ms)"
        rows.append(_row(what, value, f">= {target:g}x", ratio >= target, ratio))
    growth = sorted((data or {}).get("growth", []), key=lambda r: r["size"][0] * r["size"][1])
    what_time, what_mem = "ranking growth: time vs N x M (chunked)", "ranking peak memory (chunked)"
    target_time = f"time ~ (N*M)^s, s <= {GROWTH_EXPONENT_MAX}"
    target_mem = f"< the N x M matrix, ~ N^s with s <= {GROWTH_EXPONENT_MAX}"
    if len(growth) < 2:
        why = "not run: fewer than 2 growth sizes in results/perf_ranking.json"
        return rows + [_not_run(what_time, target_time, why), _not_run(what_mem, target_mem, why)]
    pairs = [r["size"][0] * r["size"][1] for r in growth]
    sizes = ", ".join(f"{r['size'][0] // 1000}k" for r in growth)
    s_time = _exponent(pairs, [r["time_s"] for r in growth])
    ns = [r["ns_per_pair"] for r in growth]
    value = f"s = {s_time:.2f} over N = {sizes} ({min(ns):.0f}-{max(ns):.0f} ns/pair)"
    rows.append(_row(what_time, value, target_time, s_time <= GROWTH_EXPONENT_MAX, s_time))
    largest = growth[-1]
    peak, full = largest["peak_rss_delta_mib"], largest["full_matrix_mib"]
    s_mem = _exponent([r["size"][0] for r in growth], [max(r["peak_rss_delta_mib"], 1e-3) for r in growth])
    value = (
        f"+{peak:.0f} MiB at {largest['size'][0] // 1000}k ({peak / full:.0%} of the {full:.0f} MiB matrix), "
        f"~ N^{s_mem:.2f}"
    )
    rows.append(_row(what_mem, value, target_mem, peak < full and s_mem <= GROWTH_EXPONENT_MAX, peak / full))
    return rows


def eval_rows(data: dict[str, Any] | None) -> list[dict[str, Any]]:
    """One row per run of this tree against the baseline: as it runs (captions cut to their length)
    and, when measured, with captions at the full padded length (the baseline's arithmetic)."""
    what = "eval end to end: MSR-VTT 1k-A size, this tree{} vs {} (same metrics)"
    if data is None or "baseline" not in data:
        why = "not run: no results/perf_eval.json with a baseline"
        return [_not_run(what.format("", "the pinned commit"), ">= 1.6x, identical metrics", why)]
    target = float(data.get("target", 1.6))
    setup = data.get("setup", {})
    rows = []
    for name, prefix, label in (("new", "", ""), ("padded", "padded_", ", captions padded to 32 tokens")):
        if name not in data:
            continue
        base, new = data["baseline"]["wall_s"], data[name]["wall_s"]
        ratio = base / new
        identical = bool(data.get(prefix + "metrics_identical"))
        diffs = data.get(prefix + "differences") or {}
        same = (
            "identical metrics"
            if identical
            else "METRICS DIFFER: "
            + "; ".join(f"{k} {a:g} -> {b:g}" for k, (a, b) in list(diffs.items())[:4])
        )
        value = (
            f"{ratio:.2f}x ({base:.1f} s vs {new:.1f} s; {same}; {setup.get('videos')} videos, "
            f"data.num_workers={data[name].get('workers')}, {data[name].get('threads')} torch threads)"
        )
        met = ratio >= target and identical
        rows.append(
            _row(
                what.format(label, data.get("baseline_commit", "baseline")),
                value,
                f">= {target:g}x, identical metrics",
                met,
                ratio,
            )
        )
    return rows


def decode_rows(data: dict[str, Any] | None) -> list[dict[str, Any]]:
    what = "decode: decord sampler vs ffmpeg -> JPEG -> load ({})"
    if data is None:
        why = "not run: no results/perf_decode.json"
        return [_not_run(what.format(k), ">= 3x", why) for k in ("wall, all cores", "per core")]
    s = data["summary"]
    target = float(s.get("target", 3.0))
    per_core = s["decord_videos_per_cpu_s"] / s["official_videos_per_cpu_s"]
    cpu_a, cpu_b = 1 / s["decord_videos_per_cpu_s"], 1 / s["official_videos_per_cpu_s"]
    rows = []
    if "loader_all_cores_wall_s" in s:
        a, b = s["loader_all_cores_wall_s"], s["official_all_cores_wall_s"]
        wall = b / a
        serial = s["official_wall_s_per_video"] / s["decord_wall_s_per_video"]
        value = (
            f"{wall:.2f}x ({a:.2f} s vs {b:.2f} s for {data['settings']['videos']} videos, "
            f"{s.get('all_cores_workers')} loader workers vs one ffmpeg per core; one at a time: {serial:.2f}x)"
        )
        rows.append(_row(what.format("wall, all cores"), value, f">= {target:g}x", wall >= target, wall))
    else:
        wall = s["official_wall_s_per_video"] / s["decord_wall_s_per_video"]
        wall_a, wall_b = s["decord_wall_s_per_video"], s["official_wall_s_per_video"]
        value = f"{wall:.2f}x ({wall_a * 1e3:.0f} vs {wall_b * 1e3:.0f} ms/video)"
        rows.append(_row(what.format("wall"), value, f">= {target:g}x", wall >= target, wall))
    rows.append(
        _row(
            what.format("per core"),
            f"{per_core:.2f}x ({cpu_a * 1e3:.0f} vs {cpu_b * 1e3:.0f} CPU ms/video)",
            f">= {target:g}x",
            per_core >= target,
            per_core,
        )
    )
    if "official_jpeg_mode_cost_vs_direct_per_core" in s:
        cost, diff = (
            s["official_jpeg_mode_cost_vs_direct_per_core"],
            s["official_jpeg_mode_max_abs_diff_vs_ffmpeg"],
        )
        rows.append(
            _row(
                "decode: frames.decode = official-jpeg vs the ffmpeg -q 0 JPEG folders (pixels), and its CPU vs direct",
                f"largest pixel difference {diff:g}; {s['official_jpeg_mode_cpu_s_per_video'] * 1e3:.0f} CPU ms/video, "
                f"{cost:.2f}x the direct mode's {cpu_a * 1e3:.0f}",
                "bit-identical (0)",
                diff == 0,
                cost,
            )
        )
    return rows


def cache_rows(data: dict[str, Any] | None) -> list[dict[str, Any]]:
    what = "cache: second evaluation (cache hit) vs first"
    if data is None:
        return [_not_run(what, ">= 20x", "not run: no results/perf_cache.json")]
    target = float(data.get("target", 20.0))
    ratio = data["first_s"] / data["second_s"]
    value = f"{ratio:.1f}x ({data['first_s']:.3f} s vs {data['second_s']:.4f} s)"
    return [_row(what, value, f">= {target:g}x", ratio >= target, ratio)]


def gpu_rows(gpu: dict[str, Any] | None) -> list[dict[str, Any]]:
    target_fps = REFERENCE_FPS * GPU_FPS_RATIO
    what_enc = f"GPU image encoder ViT-B/32, batch 768 vs official fp16 ({REFERENCE_FPS:,.0f} frames/s)"
    what_eval = "GPU MSVD-size encode-once eval (670 videos x 12 frames, 27,763 captions)"
    what_parity = "GPU bf16 vs float32 parity (same inputs)"
    target_enc = f">= {GPU_FPS_RATIO:g}x ({target_fps:,.0f} frames/s)"
    target_eval = f"<= {GPU_EVAL_S:g} s model-side"
    if gpu is None:
        return [
            _not_run(what_enc, target_enc, NO_GPU),
            _not_run(what_eval, target_eval, NO_GPU),
            _not_run(what_parity, "state the difference", NO_GPU),
        ]
    card = gpu["card"]
    phases = gpu["phases"]
    variants = [v for v in phases.get("encoder", {}).get("variants", []) + [phases.get("compile", {})] if v]
    ok = [v for v in variants if v.get("status") == "ok"]
    rows = []
    if ok:
        best = max(ok, key=lambda v: v["frames_per_s"])
        ratio = best["frames_per_s"] / REFERENCE_FPS
        value = f"{ratio:.2f}x: {best['frames_per_s']:,.0f} frames/s ({best['name']}, {card})"
        rows.append(_row(what_enc, value, target_enc, ratio >= GPU_FPS_RATIO, ratio))
    else:
        rows.append(_not_run(what_enc, target_enc, f"not run: no encoder variant succeeded on {card}"))
    runs = [r for r in phases.get("msvd", {}).get("runs", []) if r.get("status") == "ok"]
    if runs:
        best = min(runs, key=lambda r: r["total_s"])
        value = f"{best['total_s']:.2f} s ({best['precision']}, {card})"
        rows.append(_row(what_eval, value, target_eval, best["total_s"] <= GPU_EVAL_S, best["total_s"]))
    else:
        rows.append(_not_run(what_eval, target_eval, f"not run: the MSVD phase did not finish on {card}"))
    parity = phases.get("parity", {})
    if parity.get("status") == "ok":
        m16, m32 = parity["metrics_bf16"], parity["metrics_float32"]
        value = (
            f"sim max abs diff {parity['sim_max_abs_diff']:.3g} (rel {parity['sim_max_rel_diff']:.2g}); "
            f"t2v R@1 {m16['t2v_R1']:.2f} vs {m32['t2v_R1']:.2f}"
        )
        rows.append(_row(what_parity, value, "state the difference", None))
    else:
        rows.append(_not_run(what_parity, "state the difference", parity.get("status", "not run")))
    return rows


def summary_rows(
    results: dict[str, dict[str, Any] | None], gpu: dict[str, Any] | None
) -> list[dict[str, Any]]:
    """One row per target, in the order of the issue."""
    return (
        eval_rows(results.get("eval"))
        + decode_rows(results.get("decode"))
        + ranking_rows(results.get("ranking"))
        + cache_rows(results.get("cache"))
        + gpu_rows(gpu)
    )


def met_text(row: dict[str, Any]) -> str:
    if row["met"] is None:
        return "not run" if row["value"].startswith("not run") else "n/a"
    return "met" if row["met"] else "NOT met"


# ------------------------------------------------------------------------------------ markdown


def table(rows: list[dict[str, Any]] | pd.DataFrame) -> str:
    frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows)
    return frame.to_markdown(index=False, floatfmt=".4g") if len(frame) else "(none)"


def _machine_line(machine: dict[str, Any] | None) -> str:
    if not machine:
        return "machine: not recorded"
    keys = ("cpu", "processor", "cpu_count", "torch_threads", "torch", "platform", "load_average_at_start")
    return "machine: " + "; ".join(f"{k} {machine[k]}" for k in keys if machine.get(k) is not None)


def ranking_section(data: dict[str, Any]) -> list[str]:
    compare = [
        {
            "size": f"{r['size'][0]} x {r['size'][1]}",
            "numpy sort best (ms)": r["sort_baseline_s"]["best"] * 1e3,
            "core best (ms)": r["core_s"]["best"] * 1e3,
            "ratio": r["sort_baseline_s"]["best"] / r["core_s"]["best"],
            "target": r.get("target"),
            "identical numbers": r.get("identical_numbers"),
        }
        for r in data.get("comparison", [])
    ]
    growth = [
        {
            "N x M": f"{r['size'][0]} x {r['size'][1]}",
            "time (s)": r["time_s"],
            "ns/pair": r["ns_per_pair"],
            "peak RSS rise (MiB)": r["peak_rss_delta_mib"],
            "full matrix (MiB)": r["full_matrix_mib"],
            "chunk": r["chunk_size"],
            "device": r["device"],
        }
        for r in data.get("growth", [])
    ]
    return ["Side by side (best of the repeats):", "", table(compare), "", "Growth:", "", table(growth)]


def decode_section(data: dict[str, Any]) -> list[str]:
    s = data["summary"]
    pairs = [
        {
            "measure": "wall s/video",
            "decord": s["decord_wall_s_per_video"],
            "ffmpeg->JPEG": s["official_wall_s_per_video"],
            "ratio": s["official_wall_s_per_video"] / s["decord_wall_s_per_video"],
        },
        {
            "measure": "CPU s/video (per core)",
            "decord": 1 / s["decord_videos_per_cpu_s"],
            "ffmpeg->JPEG": 1 / s["official_videos_per_cpu_s"],
            "ratio": s["decord_videos_per_cpu_s"] / s["official_videos_per_cpu_s"],
        },
        {
            "measure": "cores busy (CPU s / wall s)",
            "decord": 1 / s["decord_videos_per_cpu_s"] / s["decord_wall_s_per_video"],
            "ffmpeg->JPEG": 1 / s["official_videos_per_cpu_s"] / s["official_wall_s_per_video"],
            "ratio": "",
        },
    ]
    lines = [f"Settings: {data.get('settings', {})}", "", table(pairs)]
    if "loader_all_cores_wall_s" in s:
        lines += [
            "",
            f"All cores, all videos: DataLoader ({s['all_cores_workers']} workers) "
            f"{s['loader_all_cores_wall_s']:.2f} s vs one ffmpeg -> JPEG -> load job per core "
            f"{s['official_all_cores_wall_s']:.2f} s: {s['speedup_wall']:.2f}x.",
        ]
    if data.get("dataloader"):
        lines += ["", "DataLoader scaling:", "", table(data["dataloader"])]
    if data.get("note"):
        lines += ["", f"Note: {data['note']}"]
    return lines


def eval_section(data: dict[str, Any]) -> list[str]:
    from benchmarks.bench_eval import stage_table

    lines = [f"Setup: {data.get('setup', {})}", "", stage_table(data), ""]
    for name in ("baseline", "new"):
        if name in data:
            d = data[name]
            lines.append(
                f"- {name}: {d['route']}; {d['workers']} loader workers, {d['threads']} torch thread(s); "
                f"walls {', '.join(f'{w:.1f}' for w in d['walls_s'])} s"
            )
    if "identical" in data:
        lines.append(f"- identical results (exact): {data['identical']}")
    if data.get("note"):
        lines.append(f"- note: {data['note']}")
    load = (data.get("machine") or {}).get("load_avg_before")
    if load:
        lines.append(
            f"- load average before the run: {', '.join(f'{x:.1f}' for x in load)} on "
            f"{data['machine'].get('cpus')} cores (other jobs running make the baseline's multi-threaded "
            "model much slower than on a quiet machine; rerun there)"
        )
    return lines


def cache_section(data: dict[str, Any]) -> list[str]:
    pair = [
        {
            "first (s)": data["first_s"],
            "second, median (s)": data["second_s"],
            "ratio": data["first_s"] / data["second_s"],
            "second runs (s)": ", ".join(f"{t:.4f}" for t in data.get("second_runs_s", [])),
            "videos": data.get("videos"),
            "captions": data.get("captions"),
        }
    ]
    return [f"Second-run settings: {data.get('second_settings')}", "", table(pair)]


def gpu_section(path: Path | None, gpu: dict[str, Any] | None) -> list[str]:
    if gpu is None:
        return [
            f"{NO_GPU} to this run. Run `python -m benchmarks.gpu.check` on an H100/H200-class GPU "
            "(<= 5 minutes); its report lands in `results/gpu/` and the next `tox -e bench` picks it up."
        ]
    phases = gpu["phases"]
    variants = phases.get("encoder", {}).get("variants", []) + [phases.get("compile", {})]
    cols = ("name", "status", "frames_per_s", "ratio_to_reference", "tflops", "median_s")
    lines = [
        f"Card: {gpu['card']}, {gpu['date']}, report `{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}`.",
        "",
        "Encoder (reference 21,400 frames/s):",
        "",
        table([{k: v.get(k, "") for k in cols} for v in variants if v]),
        "",
    ]
    runs = phases.get("msvd", {}).get("runs", [])
    lines += [
        "MSVD-size evaluation:",
        "",
        table([{"precision": r["precision"], **r.get("best_pass", {})} for r in runs]),
    ]
    return lines


def summary_table(summary: list[dict[str, Any]]) -> str:
    """The opening table: what was compared, ratio or value, target, met or not."""
    rows = [
        {
            "what was compared": r["what"],
            "ratio / value": r["value"],
            "target": r["target"],
            "met": met_text(r),
        }
        for r in summary
    ]
    return table(rows)


def render(aggregate: dict[str, Any]) -> str:
    """``results/perf.md``: summary table first, then one section per benchmark."""
    load = aggregate["load_average"]
    lines = [
        "# Performance: side-by-side benchmarks",
        "",
        summary_table(aggregate["summary"]),
        "",
        f"Generated {aggregate['generated_at']} by `{aggregate['command']}` (`tox -e bench` runs this "
        f"script). Host {_machine_line(aggregate['machine'])}.",
        "",
        f"This machine is shared with other jobs and noisy: load average (1, 5, 15 min) {load['start']} at "
        f"the start and {load['end']} at the end. Ratios compare two routes measured in the same run, "
        "so they are steadier than the absolute times.",
    ]
    missed = [r for r in aggregate["summary"] if r["met"] is False]
    if missed:
        lines += [
            "",
            "Targets missed (the benchmark's own note, where it has one, says what to read into it):",
            "",
        ]
        for r in missed:
            name = r["what"].split(":")[0].split()[0]
            note = ((aggregate["benchmarks"].get(name) or {}).get("data") or {}).get("note")
            lines.append(f"- {r['what']}: {r['value']}" + (f". Note: {note}" if note else ""))
    sections = (
        ("eval", "End-to-end evaluation", eval_section),
        ("decode", "Decoding", decode_section),
        ("ranking", "Ranking core", ranking_section),
        ("cache", "Embedding cache", cache_section),
    )
    for name, title, section in sections:
        source = aggregate["benchmarks"].get(name)
        lines += ["", f"## {title}", ""]
        if source is None:
            lines.append(f"not run: no results/perf_{name}.json")
            continue
        data = source["data"]
        lines += [
            f"Command: `{data.get('command', '(not recorded)')}`  ",
            _machine_line(data.get("machine")),
            "",
            *section(data),
        ]
    gpu = aggregate.get("gpu")
    lines += ["", "## GPU check", ""]
    lines += gpu_section(Path(gpu["source"]) if gpu else None, gpu["data"] if gpu else None)
    if aggregate["runs"]:
        lines += ["", "## Runs of this aggregation", "", table(aggregate["runs"])]
    return "\n".join(lines) + "\n"


def host_machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        cpu = next(
            (
                line.split(":", 1)[1].strip()
                for line in cpuinfo.read_text().splitlines()
                if "model name" in line
            ),
            cpu,
        )
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def aggregate(
    results: Path, runs: list[dict[str, Any]], load_start: list[float] | None, command: str
) -> dict[str, Any]:
    """Read every source JSON and build the aggregate (what ``perf.json`` holds)."""
    data = load_results(results)
    found = newest_gpu_check(results / "gpu")
    gpu = found[1] if found else None
    failed = {r["name"] for r in runs if r["returncode"] != 0}
    summary = summary_rows(data, gpu)
    for row in summary:
        name = next((n for n in failed if row["what"].startswith(n)), None)
        if name and not row["value"].startswith("not run"):
            row["value"] += " (from an earlier run: this run failed)"
    return {
        "generated_at": dt.datetime.now().isoformat(timespec="seconds"),
        "command": command,
        "machine": host_machine(),
        "load_average": {"start": load_start, "end": load_average()},
        "runs": runs,
        "summary": summary,
        "benchmarks": {
            name: {"source": str(BENCHMARKS[name].output(results)), "data": d}
            for name, d in data.items()
            if d is not None
        },
        "gpu": {"source": str(found[0]), "data": gpu} if found else None,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-run", action="store_true", help="only aggregate the existing JSON files")
    parser.add_argument(
        "--only", action="append", choices=sorted(BENCHMARKS), help="run only NAME (repeatable)"
    )
    parser.add_argument(
        "--results", type=Path, default=ROOT / "results", help="folder of the perf_*.json files"
    )
    parser.add_argument("--no-pytest", action="store_true", help="skip benchmarks/test_bench_*.py")
    args = parser.parse_args(argv)
    command = shlex.join(["python", "-m", "benchmarks.run_all", *(sys.argv[1:] if argv is None else argv)])
    load_start = load_average()
    names = [] if args.skip_run else (args.only or list(BENCHMARKS))
    args.results.mkdir(parents=True, exist_ok=True)
    runs = run_benchmarks(names, args.results)
    if not args.skip_run and not args.only and not args.no_pytest:
        runs.append(run_pytest_benchmarks())
    result = aggregate(args.results, runs, load_start, command)
    (args.results / "perf.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    (args.results / "perf.md").write_text(render(result))
    print(summary_table(result["summary"]))
    print(f"wrote {args.results / 'perf.md'} and {args.results / 'perf.json'}")
    return result


if __name__ == "__main__":
    main()
