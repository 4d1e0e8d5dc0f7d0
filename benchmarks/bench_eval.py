"""End-to-end evaluation benchmark (issue 12): today's code against a pinned commit, side by side.

The setup of a user reproducing MSR-VTT 1k-A from a released checkpoint, at a small size:

- 1,000 distinct generated test videos (3 s, 64x48, lossy H.264 at 25/29.97/30 fps);
- the real ``MSRVTT_JSFUSION_test.csv`` when ``../shared/data/splits`` (next to the repository)
  holds it, else a generated split of the same size (one caption per video);
- a small official-layout CLIP2Video checkpoint (vision width 64, text width 512, vocabulary
  49,408), loaded with ``from_official_checkpoint`` as ``--checkpoint clip2video=...`` does;
- the runner's evaluation of a row: encode captions and videos (plain and time-reversed), rank
  (default and ``legacy`` ties), bootstrap intervals, the time-reversal diagnostic; frames at
  ``frames.image_size=64``, an embedding cache.

This tree runs twice: as it runs (a causal text encoder's captions cut to their own length) and
with ``--pad-text`` (every caption at the full padded length, the baseline's arithmetic), so that
the speed of bit-for-bit identical results is reported beside the default's.

Each code version runs in its own fresh process (``--child``) on the same files: the working tree
(``data.num_workers=-1`` and ``[run] threads = 0``, the defaults of ``eval`` and the real suites:
on a CPU one loader worker per 4 cores and, for one row, a torch thread per core)
and the baseline commit checked out with ``git worktree`` (``num_workers=0`` and torch's default
threads, as its CLI ran: it did not set them). The parent reports the wall time of each process and the time
per stage (startup, decode, model, ranking, bootstrap, reversal), the ratio, and whether every
metric is identical.

    python -m benchmarks.bench_eval                          # 1,000 videos, baseline 0df3332
    python -m benchmarks.bench_eval --videos 200 --repeat 1  # quicker
    python -m benchmarks.bench_eval --baseline none          # the working tree only

Stages: ``startup`` = process start to model, sampler and tokenizer ready; ``model`` = time inside
``encode_text`` / ``encode_video`` (all passes); ``decode`` = the rest of the encoding wall time
(decoding, preprocessing, batching, waiting for loader workers); ``ranking`` = similarity, ranks and
metrics (default and legacy); ``bootstrap`` = the intervals; ``reversal`` = the diagnostic's own
ranking (its encoding is in decode and model: the baseline decodes every video twice there).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SPLITS = ROOT.parent / "shared" / "data" / "splits"
BASELINE = "0df3332"
TARGET = 1.6
STAGES = ("startup", "decode", "model", "ranking", "bootstrap", "reversal")
RATES = (25.0, 29.97, 30.0)
WORDS = (
    "a man woman dog cat car plays runs talks cooks sings in the kitchen street park on stage "
    "with red blue guitar ball video of people dancing news show game"
).split()


# ------------------------------------------------------------------------------------ the data


def make_split(n_videos: int, real: bool) -> tuple[list[str], list[str], list[int], str]:
    """(video ids, captions, caption_video, source): the real 1k-A test list or a generated one."""
    path = SPLITS / "MSRVTT_JSFUSION_test.csv"
    if real and path.is_file():
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))[:n_videos]
        ids = [r["video_id"] for r in rows]
        if len(set(ids)) == len(ids):
            return ids, [r["sentence"] for r in rows], list(range(len(ids))), f"real: {path.name}"
    import numpy as np

    rng = np.random.default_rng(0)
    ids = [f"video{7010 + i}" for i in range(n_videos)]
    captions = [" ".join(rng.choice(WORDS, size=int(rng.integers(5, 12)))) for _ in ids]
    return ids, captions, list(range(n_videos)), "generated (no ../shared/data/splits)"


def make_videos(folder: Path, ids: list[str], seconds: float, size: tuple[int, int]) -> None:
    """One distinct lossy video per id (index-coded frames with moving texture); kept if present."""
    from clip2video.data.video_writer import index_coded_frames, write_video

    folder.mkdir(parents=True, exist_ok=True)
    width, height = size
    for i, vid in enumerate(ids):
        path = folder / f"{vid}.mp4"
        if path.is_file() and path.stat().st_size > 0:
            continue
        fps = RATES[i % len(RATES)]
        frames = index_coded_frames(int(round(fps * seconds)), height, width, texture=True, seed=i)
        write_video(path, frames, fps, lossless=False)


def make_checkpoint(path: Path, seed: int = 0) -> None:
    """A small official-layout CLIP2Video checkpoint: vision width 64, text width 512, vocab 49,408."""
    import torch

    from clip2video.models import create_model

    clip = {
        "embed_dim": 512,
        "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 64},
        "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 2},
    }
    torch.manual_seed(seed)
    model = create_model("clip2video", clip=clip, clip_weights=None)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.02)
    torch.save(model.official_state_dict(), path)


# ------------------------------------------------------------------------------------ one version


def child(args: argparse.Namespace) -> None:
    """Evaluate once with whatever ``clip2video`` is importable; print one JSON line."""
    t0 = time.perf_counter()
    import numpy as np
    import torch

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    from clip2video.data.frames import FrameSampler
    from clip2video.data.text import CaptionTokenizer
    from clip2video.engine import evaluate as ev
    from clip2video.engine.cache import EmbeddingCache
    from clip2video.metrics import retrieval_metrics
    from clip2video.models import from_official_checkpoint

    spec = json.loads(Path(args.spec).read_text())
    if args.pad_text:  # this tree with every caption encoded at the full padded length, as before
        from clip2video.models.retrieval import RetrievalModel

        RetrievalModel.text_is_causal = property(lambda self: False)
    model = from_official_checkpoint(spec["checkpoint"], variant="clip2video")
    sampler = FrameSampler(extraction_fps=5.0, stride=2, max_frames=12, image_size=args.image_size)
    tokenizer = CaptionTokenizer(max_words=32)

    class Split:  # the SplitData fields the engine reads
        video_ids = spec["video_ids"]
        captions = spec["captions"]
        caption_video = np.asarray(spec["caption_video"], dtype=np.int64)
        dropped: dict = {}

    model_s = [0.0]
    for name in ("encode_text", "encode_video"):
        original = getattr(model, name)

        def timed(*a, _f=original, **k):
            start = time.perf_counter()
            try:
                return _f(*a, **k)
            finally:
                model_s[0] += time.perf_counter() - start

        setattr(model, name, timed)
    cache = EmbeddingCache(Path(args.work) / "embedding-cache") if args.cache else None
    kwargs = dict(
        sampler=sampler,
        tokenizer=tokenizer,
        cache=cache,
        batch_size=16,
        num_workers=args.workers,
        device="cpu",
        amp=False,
        progress=False,
    )
    stages: dict[str, float] = {}
    t1 = time.perf_counter()
    stages["startup"] = t1 - t0 + float(os.environ.get("BENCH_SPAWN_S", "0"))
    split, videos = Split(), spec["videos"]
    if hasattr(ev, "encode_split_pair"):
        route = "encode_split_pair (one decode per video)"
        emb, rev = ev.encode_split_pair(model, split, "msrvtt-1k-a", videos, time_reversal=True, **kwargs)
    else:
        route = "encode_split twice (the reversed pass decodes again)"
        emb = ev.encode_split(model, split, "msrvtt-1k-a", videos, reverse=False, **kwargs)
        rev = ev.encode_split(model, split, "msrvtt-1k-a", videos, reverse=True, **kwargs)
    t2 = time.perf_counter()
    stages["model"] = model_s[0]
    stages["decode"] = t2 - t1 - model_s[0]
    plain = ev.evaluate_embeddings(model, emb, keep_sim=True)
    sim = plain.sim.float().cpu().numpy()
    legacy = retrieval_metrics(sim, emb.caption_video, tie_policy="legacy")
    t3 = time.perf_counter()
    stages["ranking"] = t3 - t2
    intervals, boot_fn = bootstrap(plain.ranks, args.bootstrap)
    t4 = time.perf_counter()
    stages["bootstrap"] = t4 - t3
    diag = ev.time_reversal_diagnostic(model, split, videos, emb=emb, rev_emb=rev)
    stages["reversal"] = time.perf_counter() - t4
    out = {
        "route": route,
        "stages_s": stages,
        "in_process_s": time.perf_counter() - t0,
        "metrics": plain.metrics,
        "legacy": legacy,
        "time_reversal": diag,
        "bootstrap": intervals,
        "bootstrap_fn": boot_fn,
        "workers": args.workers,
        "threads": torch.get_num_threads(),
    }
    print("BENCH_EVAL_RESULT " + json.dumps(out, default=float))


def bootstrap(ranks: Any, n_boot: int) -> tuple[Any, str]:
    """The runner's bootstrap intervals, wherever this code version keeps them."""
    try:
        from clip2video.report.stats import bootstrap_ci

        return bootstrap_ci(ranks, n_boot=n_boot, seed=0), "report.stats.bootstrap_ci"
    except ImportError:
        pass
    try:
        from clip2video.metrics.bootstrap import bootstrap_ci

        return bootstrap_ci(ranks, n_boot=n_boot, seed=0), "metrics.bootstrap.bootstrap_ci"
    except (ImportError, TypeError) as exc:
        return None, f"unavailable ({exc})"


# ------------------------------------------------------------------------------------ the parent


def baseline_tree(commit: str, tmp: Path) -> Path:
    """Check ``commit`` out into a detached worktree under ``tmp`` (removed by the caller)."""
    where = tmp / f"baseline-{commit}"
    done = subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(where), commit],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"bench_eval: cannot check out baseline {commit}: {done.stderr.strip()}")
    return where


def run_child(
    code_root: Path,
    spec: Path,
    work: Path,
    workers: int,
    threads: int,
    args: argparse.Namespace,
    pad_text: bool = False,
) -> dict:
    """One evaluation in a fresh process importing ``clip2video`` from ``code_root``."""
    work.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(work / "embedding-cache", ignore_errors=True)
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        "--spec",
        str(spec),
        "--work",
        str(work),
        "--workers",
        str(workers),
        "--threads",
        str(threads),
        "--image-size",
        str(args.image_size),
        "--bootstrap",
        str(args.bootstrap),
        *([] if args.cache else ["--no-cache"]),
        *(["--pad-text"] if pad_text else []),
    ]
    env = {**os.environ, "PYTHONPATH": str(code_root)}
    for key in ("CLIP2VIDEO_DECODER", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.pop(key, None)
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"bench_eval: the run in {code_root} failed:\n{done.stderr[-3000:]}")
    line = next(x for x in done.stdout.splitlines() if x.startswith("BENCH_EVAL_RESULT "))
    result = json.loads(line.split(" ", 1)[1])
    result["wall_s"] = wall
    # process start (interpreter + imports before the child's clock) counts as startup
    result["stages_s"]["startup"] += max(wall - result["in_process_s"], 0.0)
    return result


def same(a: Any, b: Any) -> bool:
    """Exact equality of two JSON-like results (floats compared exactly, NaN equal to NaN)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return True
    return a == b


def median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def summarise(runs: list[dict]) -> dict:
    """Median wall and per-stage times over repeats, plus the first run's results."""
    return {
        "wall_s": median([r["wall_s"] for r in runs]),
        "walls_s": [r["wall_s"] for r in runs],
        "stages_s": {s: median([r["stages_s"][s] for r in runs]) for s in STAGES},
        "route": runs[0]["route"],
        "workers": runs[0]["workers"],
        "threads": runs[0]["threads"],
        "bootstrap_fn": runs[0]["bootstrap_fn"],
        "results": {k: runs[0][k] for k in ("metrics", "legacy", "time_reversal", "bootstrap")},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--videos", type=int, default=1000, help="test videos (1,000 = MSR-VTT 1k-A)")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--size", type=int, nargs=2, default=(64, 48), metavar=("W", "H"))
    parser.add_argument("--image-size", type=int, default=64, help="frames.image_size")
    parser.add_argument("--baseline", default=BASELINE, help="commit to compare with ('none': skip)")
    parser.add_argument("--workers", type=int, default=-1, help="data.num_workers of the new run")
    parser.add_argument("--baseline-workers", type=int, default=0)
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch threads of the new run ([run] threads; 0: automatic, as the runner resolves it for one row)",
    )
    parser.add_argument(
        "--baseline-threads",
        type=int,
        default=0,
        help="torch threads of the baseline run (0: torch's default, one per core, as its CLI ran)",
    )
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each version (median reported)")
    parser.add_argument("--generated-split", action="store_true", help="never use the real 1k-A list")
    parser.add_argument("--work", type=Path, default=None, help="keep videos and checkpoint here")
    parser.add_argument("--no-cache", dest="cache", action="store_false", help="no embedding cache")
    parser.add_argument(
        "--no-padded",
        dest="padded",
        action="store_false",
        help="skip the run of this tree with captions at the full padded length (the baseline's arithmetic)",
    )
    parser.add_argument("--pad-text", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "perf_eval.json")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--spec", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return

    tmp = Path(tempfile.mkdtemp(prefix="bench-eval-"))
    work = args.work or tmp
    try:
        t = time.perf_counter()
        ids, captions, cv, source = make_split(args.videos, real=not args.generated_split)
        videos = work / f"videos-{args.videos}-{args.size[0]}x{args.size[1]}-{args.seconds:g}s"
        make_videos(videos, ids, args.seconds, tuple(args.size))
        checkpoint = work / "clip2video-small.bin"
        if not checkpoint.is_file():
            make_checkpoint(checkpoint)
        setup_s = time.perf_counter() - t
        spec = work / "spec.json"
        spec.write_text(
            json.dumps(
                {
                    "video_ids": ids,
                    "captions": captions,
                    "caption_video": cv,
                    "videos": str(videos),
                    "checkpoint": str(checkpoint),
                }
            )
        )
        from clip2video.experiments.runner import resolve_threads

        new_threads = resolve_threads(args.threads, 1, "cpu", 1)
        versions = {"new": (ROOT, args.workers, new_threads, False)}
        if args.padded:
            versions["padded"] = (ROOT, args.workers, new_threads, True)
        if args.baseline != "none":
            tree = baseline_tree(args.baseline, tmp)
            versions["baseline"] = (tree, args.baseline_workers, args.baseline_threads, False)
        runs: dict[str, list[dict]] = {name: [] for name in versions}
        for _ in range(args.repeat):  # interleaved, so that load changes hit both alike
            for name, (code_root, workers, threads, pad) in versions.items():
                runs[name].append(
                    run_child(code_root, spec, tmp / f"run-{name}", workers, threads, args, pad)
                )
        summary = {name: summarise(r) for name, r in runs.items()}
        report: dict[str, Any] = {
            "benchmark": "eval",
            "setup": {
                "videos": args.videos,
                "seconds": args.seconds,
                "size": list(args.size),
                "image_size": args.image_size,
                "captions": len(captions),
                "split": source,
                "checkpoint": "clip2video, vision width 64, text width 512, vocab 49,408, 2+2 layers",
                "bootstrap": args.bootstrap,
                "threads": {"new": new_threads, "baseline": args.baseline_threads},
                "embedding_cache": args.cache,
                "setup_s": setup_s,
            },
            "machine": {
                "cpus": os.cpu_count(),
                "load_avg_before": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
                "python": platform.python_version(),
                "platform": platform.platform(),
            },
            "new": summary["new"],
            **({"padded": summary["padded"]} if "padded" in summary else {}),
            "command": "python -m benchmarks.bench_eval " + shlex.join(argv or sys.argv[1:]),
            "target": TARGET,
        }
        if "baseline" in summary:
            report.update(baseline=summary["baseline"], baseline_commit=args.baseline)
            for name, prefix in (("new", ""), ("padded", "padded_")):
                if name in summary:
                    report.update(
                        {prefix + k: v for k, v in compare(summary["baseline"], summary[name]).items()}
                    )
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2, default=float) + "\n")
        print(stage_table(report))
        print(f"wrote {args.out}")
    finally:
        for line in subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "list", "--porcelain"], capture_output=True, text=True
        ).stdout.splitlines():
            if line.startswith("worktree ") and line.split(" ", 1)[1].startswith(str(tmp)):
                subprocess.run(
                    ["git", "-C", str(ROOT), "worktree", "remove", "--force", line.split(" ", 1)[1]],
                    capture_output=True,
                )
        if args.work is None:
            shutil.rmtree(tmp, ignore_errors=True)


def compare(base: dict, new: dict) -> dict[str, Any]:
    """Speed ratio and result identity of one run against the baseline, with every differing value."""
    ratio = base["wall_s"] / new["wall_s"]
    identical = {k: same(base["results"][k], new["results"][k]) for k in base["results"]}
    metrics_identical = all(v for k, v in identical.items() if k != "bootstrap")
    differences = {
        f"{group}.{key}": [base["results"][group][key], new["results"][group].get(key)]
        for group in ("metrics", "legacy", "time_reversal")
        for key in base["results"][group]
        if not same(base["results"][group][key], new["results"][group].get(key))
    }
    return {
        "ratio": ratio,
        "identical": identical,
        "metrics_identical": metrics_identical,
        "differences": differences,
        "met": ratio >= TARGET and metrics_identical,
    }


def stage_table(report: dict) -> str:
    """The per-stage Markdown table (seconds), baseline beside new when there is one."""
    names = {
        "baseline": f"baseline ({report.get('baseline_commit', '')})",
        "padded": "this tree, padded captions",
        "new": "this tree",
    }
    cols = [c for c in names if c in report]
    with_ratio = "baseline" in cols and len(cols) > 1
    rated = [c for c in cols if c != "baseline"] if with_ratio else []
    head = (
        "| stage | " + " | ".join(names[c] for c in cols) + "".join(f" | ratio ({names[c]})" for c in rated)
    )
    lines = [head + " |", "|---" * (len(cols) + 1 + len(rated)) + "|"]
    for stage in (*STAGES, "end to end"):
        vals = {
            c: report[c]["wall_s"] if stage == "end to end" else report[c]["stages_s"][stage] for c in cols
        }
        cells = " | ".join(f"{vals[c]:.2f} s" for c in cols)
        ratios = "".join(f" | {vals['baseline'] / vals[c]:.2f}x" if vals[c] > 0 else " | -" for c in rated)
        lines.append(f"| {stage} | {cells}{ratios} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
