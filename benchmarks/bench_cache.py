"""Benchmark the embedding cache: first evaluation (decode + encode) vs a second one (cache hit).

The second evaluation changes only settings that act on the similarity (another tie policy by
default), so it must skip all decoding and encoding. Target: second >= 20x faster than first.

    python -m benchmarks.bench_cache                          # ~40 generated videos, tiny model
    python -m benchmarks.bench_cache --pairs 20 --model tdb --out results/perf_cache.json

From Python (e.g. pointed at the smoke suite's model and test split later)::

    from benchmarks.bench_cache import run_cache_benchmark
    report = run_cache_benchmark(model, split, videos_dir, protocol, cache_root="...")
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from clip2video.engine.cache import EmbeddingCache
from clip2video.engine.evaluate import evaluate

TARGET = 20.0

# The smoke suite's tiny backbone (benchmarks/suites/smoke.toml) as an open_clip config.
SMOKE_CLIP = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16, "head_width": 64},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 1},
}


def machine() -> dict[str, Any]:
    """Where the numbers were measured."""
    return {
        "host": platform.node(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def run_cache_benchmark(
    model: torch.nn.Module,
    split: Any,
    videos_dir: str | Path,
    protocol: Any,
    *,
    cache_root: str | Path,
    second_kwargs: dict[str, Any] | None = None,
    repeats: int = 3,
    device: str | None = None,
    num_workers: int = 0,
    target: float = TARGET,
) -> dict[str, Any]:
    """Time a cold-cache evaluation, then ``repeats`` warm ones (median reported) with ``second_kwargs``.

    ``cache_root`` must be empty or absent (the first run must miss). Returns a JSON-ready dict
    with both timings, the ratio, the target and whether it was met; metrics of both runs are
    checked to be identical when the second run keeps the first's ranking settings.
    """
    cache_root = Path(cache_root)
    if cache_root.exists() and any(cache_root.iterdir()):
        raise ValueError(f"cache folder {cache_root} is not empty: the first evaluation must miss")
    second_kwargs = dict(second_kwargs if second_kwargs is not None else {"tie_policy": "mean"})
    cache = EmbeddingCache(cache_root)
    common = dict(protocol=protocol, cache=cache, device=device, num_workers=num_workers, progress=False)

    start = time.perf_counter()
    first = evaluate(model, split, videos_dir, **common)
    first_s = time.perf_counter() - start
    if cache.misses != 2:
        raise RuntimeError(f"the first evaluation should miss twice (text, video), missed {cache.misses}")

    warm: list[float] = []
    second = None
    for _ in range(repeats):
        start = time.perf_counter()
        second = evaluate(model, split, videos_dir, **common, **second_kwargs)
        warm.append(time.perf_counter() - start)
    if cache.misses != 2:
        raise RuntimeError("a second evaluation missed the cache; the benchmark is void")
    same = evaluate(model, split, videos_dir, **common)  # same settings: identical metrics
    if same.metrics != first.metrics:
        raise RuntimeError("cached embeddings gave different metrics from the first evaluation")
    second_s = statistics.median(warm)
    ratio = first_s / second_s
    return {
        "benchmark": "embedding cache: second evaluation vs first",
        "machine": machine(),
        "videos": len(split.video_ids),
        "captions": len(split.captions),
        "model": type(model).__name__,
        "model_config": {k: v for k, v in getattr(model, "config", {}).items() if not isinstance(v, dict)},
        "first_s": round(first_s, 4),
        "second_s": round(second_s, 4),
        "second_runs_s": [round(t, 4) for t in warm],
        "second_settings": second_kwargs,
        "ratio": round(ratio, 2),
        "target": target,
        "met": bool(ratio >= target),
        "first_t2v_R1": first.metrics["t2v_R1"],
        "second_t2v_R1": second.metrics["t2v_R1"] if second is not None else None,
    }


def _synthetic(root: Path, pairs: int, seed: int):
    from clip2video.data.annotations import load_split
    from clip2video.data.protocols import get_protocol
    from clip2video.data.synthetic import generate_synthetic

    data = generate_synthetic(root, seed=seed, num_train=0, num_val=0, num_test_pairs=pairs)
    proto = get_protocol("synthetic")
    return proto, load_split(proto, data / "annotations", "test"), data / "videos"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--pairs", type=int, default=20, help="test clip pairs: 2 x pairs videos (default 40)"
    )
    parser.add_argument("--model", default="clip2video", help="registry model name (tiny smoke backbone)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--out", default="results/perf_cache.json")
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    from clip2video.models import create_model

    work = Path(tempfile.mkdtemp(prefix="bench_cache_"))
    try:
        proto, split, videos = _synthetic(work / "synthetic", args.pairs, args.seed)
        torch.manual_seed(args.seed)
        options = {"temporal_layers": 1} if args.model != "meanp" else {}
        model = create_model(args.model, clip=SMOKE_CLIP, **options).eval()
        report = run_cache_benchmark(
            model, split, videos, proto, cache_root=work / "cache", repeats=args.repeats
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report["command"] = shlex.join(
        [sys.executable, *(sys.argv if argv is None else ["benchmarks/bench_cache.py", *argv])]
    )
    report["load_average"] = os.getloadavg()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"first {report['first_s']:.3f} s, second {report['second_s']:.4f} s: {report['ratio']:.1f}x "
        f"(target >= {report['target']:.0f}x: {'met' if report['met'] else 'NOT met'}) -> {out}"
    )
    return report


if __name__ == "__main__":
    main()
