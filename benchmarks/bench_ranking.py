"""Benchmark the ranking core ("Performance and scale: ranking that scales").

1. Side by side, one run: ``clip2video.metrics.retrieval_metrics`` (counting) against a numpy sort
   baseline written the way the official code ranks (sort each row, find where the ground truth
   lands; t2v on ``sim`` and v2t on ``sim.T``) on N x N matrices, asserting identical numbers.
   Targets: >= 5x at 1,000 x 1,000 and >= 10x at 4,000 x 4,000.
2. Growth: ``ranks_from_scores`` on N captions x N videos whose scores are computed on demand, in
   chunks, from random normalised embeddings (D = 512). Each size runs in its own subprocess;
   "peak_rss_delta_mib" is the rise of the process's peak resident set size over the ranking call
   (Linux: VmHWM reset through /proc/self/clear_refs just before, minus VmRSS then), i.e. the host
   memory the call needed beyond the embeddings (GPU memory is not in it: on CUDA the script
   reports ``torch.cuda.max_memory_allocated``).
   ``ns_per_pair`` = time / (N * M) shows how time grows with N * M.

    python -m benchmarks.bench_ranking                       # 1k/4k comparison, growth 1k, 4k, 16k
    python -m benchmarks.bench_ranking --with-64k            # growth also at 64k x 64k
    python -m benchmarks.bench_ranking --sizes 1000 4000 --out results/perf_ranking.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clip2video.metrics import ranks_from_scores, retrieval_metrics

TARGETS = {1000: 5.0, 4000: 10.0}  # speed-up targets of the core over the sort baseline
KS = (1, 5, 10)


def sort_baseline(sim: np.ndarray) -> dict[str, float]:
    """Both directions the way the official single-caption code ranks: sort every row's negated
    scores, find the position(s) equal to the negated ground truth, average the positions."""
    out: dict[str, float] = {}
    for direction, matrix in (("t2v", sim), ("v2t", sim.T)):
        ordered = np.sort(-matrix, axis=1)
        positions = np.nonzero(ordered == -np.diag(matrix)[:, None])[1]
        for k in KS:
            out[f"{direction}_R{k}"] = float(np.sum(positions < k)) * 100 / len(positions)
        out[f"{direction}_MdR"] = float(np.median(positions) + 1)
        out[f"{direction}_MnR"] = float(np.mean(positions) + 1)
    return out


def random_embeddings(n: int, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised random text and video embeddings (float32), fixed seed."""
    generator = torch.Generator().manual_seed(seed)
    text = torch.nn.functional.normalize(torch.randn(n, dim, generator=generator), dim=1)
    video = torch.nn.functional.normalize(torch.randn(n, dim, generator=generator), dim=1)
    return text, video


def best_and_median(fn, repeat: int) -> tuple[float, float, Any]:
    """(best, median) wall seconds over ``repeat`` calls, and the last result."""
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), float(np.median(times)), result


def compare(n: int, repeat: int, seed: int) -> dict[str, Any]:
    """Core vs sort baseline on one n x n float32 similarity matrix (single caption per video)."""
    text, video = random_embeddings(n, 512, seed)
    sim_torch = text @ video.T
    sim = sim_torch.numpy()
    captions = np.arange(n)
    base_best, base_median, expected = best_and_median(lambda: sort_baseline(sim), repeat)
    core_best, core_median, got = best_and_median(lambda: retrieval_metrics(sim_torch, captions), repeat)
    legacy = retrieval_metrics(sim_torch, captions, tie_policy="legacy")
    assert {k: legacy[k] for k in expected} == expected, "legacy differs from the sort baseline"
    if got["t2v_ties"] == 0 and got["v2t_ties"] == 0:  # tie-free: the default must match exactly
        assert {k: got[k] for k in expected} == expected, "default policy differs on a tie-free matrix"
    ratio = base_best / core_best
    target = TARGETS.get(n)
    return {
        "size": [n, n],
        "repeat": repeat,
        "sort_baseline_s": {"best": base_best, "median": base_median},
        "core_s": {"best": core_best, "median": core_median},
        "ratio_best": ratio,
        "ratio_median": base_median / core_median,
        "target": target,
        "met": None if target is None else bool(ratio >= target),
        "identical_numbers": True,
        "ties": {"t2v": got["t2v_ties"], "v2t": got["v2t_ties"]},
        "t2v_R1": got["t2v_R1"],
    }


def growth_child(n: int, chunk_size: int, seed: int, device: str) -> dict[str, Any]:
    """One growth point, meant to run in a fresh process (``--_child``)."""
    text, video = random_embeddings(n, 512, seed)
    text, video = text.to(device), video.to(device)
    captions = torch.arange(n)
    video_t = video.T.contiguous()

    def score_rows(start: int, stop: int) -> torch.Tensor:
        return text[start:stop] @ video_t

    _sync(device)
    memory = PeakRss()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    ranks = ranks_from_scores(score_rows, captions, n, chunk_size=chunk_size)
    _sync(device)
    elapsed = time.perf_counter() - start
    peak_rise_mib = memory.rise_mib()
    gpu_peak = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None
    start = time.perf_counter()  # one pass of score computation alone, for the breakdown
    for a in range(0, n, chunk_size):
        score_rows(a, min(a + chunk_size, n))
    _sync(device)
    scores_once = time.perf_counter() - start
    return {
        "size": [n, n],
        "chunk_size": chunk_size,
        "device": device,
        "time_s": elapsed,
        "ns_per_pair": elapsed / (n * n) * 1e9,
        "score_pass_s": scores_once,
        "counting_s_estimate": elapsed - 2 * scores_once,
        "peak_rss_delta_mib": peak_rise_mib,
        "peak_rss_method": memory.method,
        "full_matrix_mib": n * n * 4 / 2**20,
        "gpu_peak_allocated_mib": gpu_peak,
        "t2v_median_rank": float(np.median(ranks.t2v)),
    }


class PeakRss:
    """Rise of this process's peak resident set size from now on, in MiB.

    On Linux the peak (VmHWM) is first reset to the current RSS through /proc/self/clear_refs, so
    the rise is exactly the extra host memory the measured call needed at its peak. Elsewhere it
    falls back to the rise of ``ru_maxrss``, which under-counts when an earlier peak (say, while
    importing torch) was higher.
    """

    def __init__(self) -> None:
        self.method = "VmHWM (peak reset via /proc/self/clear_refs) - VmRSS before"
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.before_kib = _proc_status_kib("VmRSS")
        except OSError:
            self.method = "ru_maxrss rise (under-counts if an earlier peak was higher)"
            self.before_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def rise_mib(self) -> float:
        if self.method.startswith("VmHWM"):
            return (_proc_status_kib("VmHWM") - self.before_kib) / 1024
        return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - self.before_kib) / 1024


def _proc_status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise OSError(f"{field} not in /proc/self/status")


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def growth(n: int, chunk_size: int, seed: int, device: str) -> dict[str, Any]:
    """Run ``growth_child`` in a subprocess so that its max RSS is its own."""
    command = [sys.executable, __file__, "--_child", str(n), "--chunk-size", str(chunk_size)]
    command += ["--seed", str(seed), "--device", device, "--threads", str(torch.get_num_threads())]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"growth run at {n} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def machine() -> dict[str, Any]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "load_average_at_start": load,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "numpy": np.__version__,
        "python": platform.python_version(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[1000, 4000, 16000], help="growth sizes N (N x N)"
    )
    parser.add_argument("--compare-sizes", type=int, nargs="+", default=[1000, 4000])
    parser.add_argument("--with-64k", action="store_true", help="also run growth at 64,000 x 64,000")
    parser.add_argument("--chunk-size", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=0, help="timing repeats (0: 5 at <= 1k, else 3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="device for the growth runs (cpu, cuda)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: numpy's sort is single-threaded, so the ratio compares "
        "algorithms, not thread counts; 0 keeps torch's default)",
    )
    parser.add_argument("--out", type=Path, default=Path("results/perf_ranking.json"))
    parser.add_argument("--_child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    if args._child is not None:
        print(json.dumps(growth_child(args._child, args.chunk_size, args.seed, args.device)))
        return 0

    report: dict[str, Any] = {
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "machine": machine(),
        "comparison": [],
        "growth": [],
    }
    for n in args.compare_sizes:
        repeat = args.repeat or (5 if n <= 1000 else 3)
        row = compare(n, repeat, args.seed)
        report["comparison"].append(row)
        print(
            f"{n} x {n}: sort {row['sort_baseline_s']['best'] * 1e3:.1f} ms, core "
            f"{row['core_s']['best'] * 1e3:.1f} ms, ratio {row['ratio_best']:.1f}x "
            f"(target {row['target']}, met {row['met']}), ties {row['ties']}",
            flush=True,
        )
    sizes = list(args.sizes) + ([64000] if args.with_64k and 64000 not in args.sizes else [])
    for n in sizes:
        row = growth(n, args.chunk_size, args.seed, args.device)
        report["growth"].append(row)
        print(
            f"growth {n} x {n}: {row['time_s']:.2f} s, {row['ns_per_pair']:.2f} ns/pair, score pass "
            f"{row['score_pass_s']:.2f} s, peak RSS +{row['peak_rss_delta_mib']:.0f} MiB "
            f"(full matrix would be {row['full_matrix_mib']:.0f} MiB)",
            flush=True,
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
