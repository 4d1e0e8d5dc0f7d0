"""Feasibility study for the offline ablation (issue 16 §4): power (MDE) and time of a configuration.

For one candidate configuration it generates the synthetic data, loads (or pretrains) the
backbone, computes the frozen-backbone features once, trains every row the ablation's tables need
under S seeds in worker processes (``--jobs`` at a time, 1 torch thread each, a fresh process per
row as the suite runner does), and computes with the project's own statistics
(``clip2video.metrics.bootstrap``: two-level bootstrap over seeds and test-video clusters, paired
differences, ``minimum_detectable_difference`` as ``report/tables.py`` does) the minimum
detectable t2v R@1 difference of each comparison. Every stage is timed (wall and CPU seconds) and
the machine's load is recorded beside it.

Rows (``--tables``):
  components: meanp, tdb, tab, clip2video (each vs meanp; clip2video vs tdb)
  tdb-proj:   tdb (selfattn), tdb-mlp, tdb-none (vs tdb)
  k:          clip2video (K = 5), clip2video-K1, -K3, -K7, -K9 (vs clip2video)

Modes (``--modes``): ``frozen`` (backbone frozen, heads trained on cached features) and
``finetuned`` (the paper's regime: the whole model trains, ``clip.*`` at ``lr * coef_lr``, frames
decoded from the videos). With both, the components are compared across modes (same seeds).

Example (the defaults are the recommended configuration: the shipped backbone, 1000 test pairs,
1000 train videos, 3 seeds, heads at batch 128 for 10 epochs, lr 1e-3)::

    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/ablation_design.py --out /tmp/design --json /tmp/design/result.json
    # the frozen-vs-fine-tuned comparison of the components (fine-tuned rows cost ~10x):
    ... --seeds 2 --tables components --modes frozen finetuned

Writes a JSON summary (``--json``) and prints a table. Not a test; runs from a checkout.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import multiprocessing
import os
import resource
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROWS: dict[str, tuple[str, dict[str, Any]]] = {
    "meanp": ("meanp", {}),
    "tdb": ("tdb", {}),
    "tab": ("tab", {}),
    "clip2video": ("clip2video", {}),
    "tdb-mlp": ("tdb", {"tdb_proj": "mlp"}),
    "tdb-none": ("tdb", {"tdb_proj": "none"}),
    "clip2video-K1": ("clip2video", {"center_k": 1}),
    "clip2video-K3": ("clip2video", {"center_k": 3}),
    "clip2video-K7": ("clip2video", {"center_k": 7}),
    "clip2video-K9": ("clip2video", {"center_k": 9}),
}
TABLES: dict[str, dict[str, Any]] = {
    "components": {
        "rows": ["meanp", "tdb", "tab", "clip2video"],
        "reference": "meanp",
        "compare": [("clip2video", "tdb")],
    },
    "tdb-proj": {"rows": ["tdb", "tdb-mlp", "tdb-none"], "reference": "tdb", "compare": []},
    "k": {
        "rows": ["clip2video-K1", "clip2video-K3", "clip2video", "clip2video-K7", "clip2video-K9"],
        "reference": "clip2video",
        "compare": [],
    },
}
KEYS = ("t2v_R1", "t2v_R5", "v2t_R1", "order_acc")


def load_avg() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def cpu_seconds(who: int = resource.RUSAGE_SELF) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Stage:
    name: str
    wall: float
    cpu: float
    load_before: str
    load_after: str
    extra: dict[str, Any] = field(default_factory=dict)


class Timer:
    def __init__(self) -> None:
        self.stages: list[Stage] = []

    def run(self, name: str, fn, *args, **kwargs):
        load = load_avg()
        c0, w0 = cpu_seconds(), time.perf_counter()
        out = fn(*args, **kwargs)
        stage = Stage(name, time.perf_counter() - w0, cpu_seconds() - c0, load, load_avg())
        self.stages.append(stage)
        print(
            f"[{name}] wall {stage.wall:.1f} s, cpu {stage.cpu:.1f} s (load {load} -> {stage.load_after})",
            flush=True,
        )
        return out


# ----------------------------------------------------------------------------- the worker


def _task(spec: dict[str, Any]) -> dict[str, Any]:
    """One row (model x seed x mode) in a fresh process with one torch thread."""
    import torch

    torch.set_num_threads(spec["threads"])
    wall0 = time.perf_counter()
    from clip2video.data.annotations import load_split
    from clip2video.data.order import twin_order_wins
    from clip2video.data.protocols import get_protocol
    from clip2video.data.synthetic import load_twins
    from clip2video.engine.evaluate import evaluate_embeddings
    from clip2video.engine.train import TrainConfig
    from clip2video.models import create_model

    random_seed(spec["seed"])
    torch.manual_seed(spec["seed"])
    options = {"clip": spec["clip"], "clip_weights": spec["clip_weights"], **spec["model_options"]}
    options.update(ROWS[spec["row"]][1])
    model = create_model(ROWS[spec["row"]][0], **options)
    config = TrainConfig(seed=spec["seed"], device="cpu", progress=False, num_workers=0, **spec["train"])
    out_dir = Path(spec["work"]) / "rows" / f"{spec['mode']}-{spec['row']}-s{spec['seed']}"
    protocol = get_protocol("synthetic")
    annotations = Path(spec["data"]) / "annotations"
    test = load_split(protocol, annotations, "test")
    info: dict[str, Any] = {}
    if spec["mode"] == "frozen":
        from clip2video.engine.features import (
            FeatureBank,
            FeatureModel,
            SplitFeatures,
            encode_features,
            train_heads,
        )

        t0 = time.perf_counter()
        stored = torch.load(spec["features"], map_location="cpu", weights_only=True)
        bank = FeatureBank({k: SplitFeatures.from_value(v) for k, v in stored.items()})
        info["load_features_s"] = time.perf_counter() - t0
        fm = FeatureModel(model, bank)

        def val_fn(m, epoch):
            emb = encode_features(fm, "val")
            return evaluate_embeddings(model, emb, tie_policy="mean", keep_sim=False).metrics

        t0 = time.perf_counter()
        heads = train_heads(fm, config, out_dir=out_dir, val_fn=val_fn if spec["validate"] else None)
        info["train_s"] = time.perf_counter() - t0
        info["trained"] = heads.trained
        info["reason"] = heads.reason
        info["losses"] = [h["loss"] for h in heads.result.history] if heads.result else []
        t0 = time.perf_counter()
        emb = encode_features(fm, "test")
    else:
        from clip2video.data.datasets import PairDataset
        from clip2video.data.frame_cache import FrameCache
        from clip2video.data.frames import FrameSampler
        from clip2video.data.text import CaptionTokenizer
        from clip2video.data.videos import find_videos
        from clip2video.engine.evaluate import encode_split
        from clip2video.engine.train import train

        videos = Path(spec["data"]) / "videos"
        cache = FrameCache(1024 * 2**20)
        sampler = FrameSampler(extraction_fps=5.0, stride=1, max_frames=12, image_size=32).attach_cache(cache)
        tokenizer = CaptionTokenizer(max_words=32)
        split = load_split(protocol, annotations, "train")
        pairs = [(int(v), c) for v, c in zip(split.caption_video, split.captions, strict=True)]
        train_sampler = FrameSampler(extraction_fps=5.0, stride=1, max_frames=12, image_size=32, train=True)
        train_sampler.attach_cache(cache)
        dataset = PairDataset(
            pairs,
            find_videos(videos, split.video_ids),
            split.video_ids,
            train_sampler,
            tokenizer,
            spec["seed"],
        )
        val = load_split(protocol, annotations, "val")

        def val_fn(m, epoch):
            emb = encode_split(
                m,
                val,
                protocol,
                videos,
                sampler=sampler,
                tokenizer=tokenizer,
                split_name="val",
                batch_size=64,
                progress=False,
            )
            return evaluate_embeddings(m, emb, tie_policy="mean", keep_sim=False).metrics

        t0 = time.perf_counter()
        result = train(model, dataset, config, out_dir=out_dir, val_fn=val_fn if spec["validate"] else None)
        info["train_s"] = time.perf_counter() - t0
        info["trained"] = True
        info["losses"] = [h["loss"] for h in result.history]
        t0 = time.perf_counter()
        model.eval()
        emb = encode_split(
            model, test, protocol, videos, sampler=sampler, tokenizer=tokenizer, batch_size=64, progress=False
        )
    scored = evaluate_embeddings(model, emb, tie_policy="mean", keep_sim=True)
    sim = scored.sim.float().numpy()
    wins = twin_order_wins(sim, emb.caption_video, load_twins(annotations, test.video_ids))
    info["eval_s"] = time.perf_counter() - t0
    shutil.rmtree(out_dir, ignore_errors=True)
    metrics = dict(scored.metrics)
    metrics["order_acc"] = float(100.0 * np.nanmean(wins))
    return {
        "row": spec["row"],
        "seed": spec["seed"],
        "mode": spec["mode"],
        "metrics": metrics,
        "ranks": scored.ranks,
        "caption_video": np.asarray(emb.caption_video),
        "order_wins": wins,
        "wall_s": time.perf_counter() - wall0,
        "process_cpu_s": cpu_seconds(),
        **info,
    }


def random_seed(seed: int) -> None:
    import random

    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def run_tasks(specs: list[dict[str, Any]], jobs: int) -> list[dict[str, Any]]:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "clip2video.engine.features", "clip2video.models"])
    out = []
    with cf.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, max_tasks_per_child=1) as pool:
        futures = [pool.submit(_task, s) for s in specs]
        for fut in cf.as_completed(futures):
            res = fut.result()
            print(
                f"  {res['mode']:9s} {res['row']:14s} s{res['seed']}: t2v R@1 {res['metrics']['t2v_R1']:5.1f} "
                f"order {res['metrics']['order_acc']:5.1f}  wall {res['wall_s']:.1f} s cpu {res['process_cpu_s']:.1f} s "
                f"(train {res.get('train_s', 0):.1f}) load {load_avg()}",
                flush=True,
            )
            out.append(res)
    return out


# ----------------------------------------------------------------------------- statistics


def summarise(results: list[dict[str, Any]], mode: str, n_boot: int) -> dict[str, Any]:
    from clip2video.metrics.bootstrap import (
        SeedRun,
        holm,
        minimum_detectable_difference,
        paired_difference,
        two_level_bootstrap,
    )

    by_row: dict[str, list[dict[str, Any]]] = {}
    for res in sorted((r for r in results if r["mode"] == mode), key=lambda r: r["seed"]):
        by_row.setdefault(res["row"], []).append(res)
    summaries = {}
    rows_out = {}
    for row, runs in by_row.items():
        seed_runs = [
            SeedRun(r["ranks"], r["caption_video"], shares={"order_acc": r["order_wins"]}) for r in runs
        ]
        summaries[row] = two_level_bootstrap(seed_runs, n_boot=n_boot, seed=0)
        s = summaries[row]
        rows_out[row] = {
            key: {"mean": s.point(key), "std": s.std(key), "ci": s.interval(key), "se": s.se(key)}
            for key in KEYS
        }
        rows_out[row]["per_seed_t2v_R1"] = [r["metrics"]["t2v_R1"] for r in runs]
        rows_out[row]["trained"] = runs[0].get("trained", True)
        rows_out[row]["reason"] = runs[0].get("reason", "")
    tables = {}
    for name, table in TABLES.items():
        if not all(r in summaries for r in table["rows"]):
            continue
        ref = table["reference"]
        pairs = [(r, ref) for r in table["rows"] if r != ref] + list(table["compare"])
        comps = {}
        for a, b in pairs:
            diff = paired_difference(summaries[a], summaries[b])
            comps[f"{a} vs {b}"] = {
                key: {
                    "delta": diff[key].delta,
                    "ci": (diff[key].lo, diff[key].hi),
                    "p": diff[key].p,
                    "se": diff[key].se,
                    "mde": minimum_detectable_difference(diff[key].se)
                    if np.isfinite(diff[key].se)
                    else float("nan"),
                }
                for key in KEYS
            }
        for key in KEYS:
            adjusted = holm([comps[c][key]["p"] for c in comps])
            for c, p in zip(comps, adjusted, strict=True):
                comps[c][key]["p_holm"] = float(p)
        ses = [comps[f"{r} vs {ref}"]["t2v_R1"]["se"] for r in table["rows"] if r != ref]
        ses = [s for s in ses if np.isfinite(s)]
        tables[name] = {
            "comparisons": comps,
            "table_mde_t2v_R1": minimum_detectable_difference(float(np.median(ses))) if ses else float("nan"),
            "max_mde_t2v_R1": max(c["t2v_R1"]["mde"] for c in comps.values()),
        }
    return {"rows": rows_out, "tables": tables, "summaries": summaries}


def mode_difference(results: list[dict[str, Any]], n_boot: int) -> dict[str, Any]:
    """frozen minus finetuned per component row (same seeds, same test set)."""
    from clip2video.metrics.bootstrap import SeedRun, paired_difference, two_level_bootstrap

    out = {}
    for row in TABLES["components"]["rows"]:
        sides = {}
        for mode in ("frozen", "finetuned"):
            runs = sorted(
                (r for r in results if r["mode"] == mode and r["row"] == row), key=lambda r: r["seed"]
            )
            if not runs:
                break
            sides[mode] = two_level_bootstrap(
                [
                    SeedRun(r["ranks"], r["caption_video"], shares={"order_acc": r["order_wins"]})
                    for r in runs
                ],
                n_boot=n_boot,
                seed=0,
            )
        if len(sides) == 2:
            diff = paired_difference(sides["frozen"], sides["finetuned"])
            out[row] = {
                key: {
                    "frozen": sides["frozen"].point(key),
                    "finetuned": sides["finetuned"].point(key),
                    "delta": diff[key].delta,
                    "ci": (diff[key].lo, diff[key].hi),
                    "p": diff[key].p,
                }
                for key in KEYS
            }
    return out


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="work folder (data, features, rows)")
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--num-train", type=int, default=1000)
    parser.add_argument("--num-val", type=int, default=60)
    parser.add_argument("--num-test-pairs", type=int, default=1000)
    parser.add_argument("--captions-per-video", type=int, default=2)
    parser.add_argument("--clip-weights", default="shipped", help="'shipped', a .npz/.pt path, or 'pretrain'")
    parser.add_argument(
        "--pretrain-set", nargs="*", default=[], help="recipe overrides key=value (with pretrain)"
    )
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--coef-lr", type=float, default=1e-3)
    parser.add_argument("--temporal-layers", type=int, default=2)
    parser.add_argument("--no-validate", action="store_true", help="skip the per-epoch validation")
    parser.add_argument("--modes", nargs="+", default=["frozen"], choices=["frozen", "finetuned"])
    parser.add_argument("--tables", nargs="+", default=list(TABLES), choices=list(TABLES))
    parser.add_argument("--finetuned-tables", nargs="+", default=["components"], choices=list(TABLES))
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    from clip2video.data.annotations import load_split
    from clip2video.data.frames import FrameSampler, check_decodes
    from clip2video.data.protocols import get_protocol
    from clip2video.data.synthetic import generate_synthetic
    from clip2video.data.text import CaptionTokenizer
    from clip2video.data.videos import find_videos
    from clip2video.engine.features import compute_split_features
    from clip2video.models import create_model
    from clip2video.models.shipped import TINY_SYNTHETIC_CONFIG

    timer = Timer()
    total0, cpu0 = time.perf_counter(), cpu_seconds()
    args.out.mkdir(parents=True, exist_ok=True)
    data = args.out / (
        f"synthetic-s{args.data_seed}-{args.num_train}-{args.num_val}-{args.num_test_pairs}-c{args.captions_per_video}"
    )
    timer.run(
        "generate",
        generate_synthetic,
        data,
        seed=args.data_seed,
        num_train=args.num_train,
        num_val=args.num_val,
        num_test_pairs=args.num_test_pairs,
        captions_per_video=args.captions_per_video,
    )
    protocol = get_protocol("synthetic")
    splits = {s: load_split(protocol, data / "annotations", s) for s in ("train", "val", "test")}
    test_paths = find_videos(data / "videos", splits["test"].video_ids)
    timer.run("decode-check (test videos, as preflight)", lambda: [check_decodes(p) for p in test_paths])

    clip_cfg = json.loads(json.dumps(TINY_SYNTHETIC_CONFIG))
    if args.clip_weights == "pretrain":
        from clip2video.engine.pretrain import PretrainRecipe, pretrain, save_pretrained

        values = {}
        for item in args.pretrain_set:
            key, _, value = item.partition("=")
            values[key] = json.loads(value)
        recipe = PretrainRecipe.from_dict({**PretrainRecipe().to_dict(), **values})
        result = timer.run("pretrain", pretrain, recipe)
        weights, _ = save_pretrained(result, args.out / "backbone")
        clip_weights = str(weights)
        clip = clip_cfg
    elif args.clip_weights == "shipped":
        clip, clip_weights = "tiny-synthetic", "shipped"
    else:
        clip, clip_weights = clip_cfg, args.clip_weights
    backbone_model = timer.run("backbone", create_model, "meanp", clip=clip, clip_weights=clip_weights)

    sampler = FrameSampler(extraction_fps=5.0, stride=1, max_frames=12, image_size=32)
    tokenizer = CaptionTokenizer(max_words=32)
    features_path = args.out / "features.pt"

    def features():
        feats = {
            name: compute_split_features(
                backbone_model, split, data / "videos", sampler, tokenizer, split_name=name
            )
            for name, split in splits.items()
        }
        torch.save({k: v.to_value() for k, v in feats.items()}, features_path)
        return feats

    if "frozen" in args.modes:
        timer.run("features (train+val+test, 1 thread)", features)

    train_settings = {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "coef_lr": args.coef_lr,
        "weight_decay": 0.2,
    }
    specs = []
    for mode in args.modes:
        tables = args.tables if mode == "frozen" else args.finetuned_tables
        rows = list(dict.fromkeys(r for t in tables for r in TABLES[t]["rows"]))
        for seed in range(args.seeds):
            for row in rows:
                specs.append(
                    {
                        "row": row,
                        "seed": seed,
                        "mode": mode,
                        "threads": 1,
                        "clip": clip,
                        "clip_weights": clip_weights,
                        "model_options": {"temporal_layers": args.temporal_layers},
                        "train": train_settings,
                        "work": str(args.out),
                        "data": str(data),
                        "features": str(features_path),
                        "validate": not args.no_validate,
                    }
                )
    results = []
    for mode in args.modes:
        mode_specs = [s for s in specs if s["mode"] == mode]
        results += timer.run(
            f"rows {mode} ({len(mode_specs)} rows, {args.jobs} jobs x 1 thread)",
            run_tasks,
            mode_specs,
            args.jobs,
        )

    report: dict[str, Any] = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    }
    for mode in args.modes:
        stats = timer.run(f"bootstrap {mode} (n_boot {args.n_boot})", summarise, results, mode, args.n_boot)
        stats.pop("summaries")
        report[mode] = stats
    if len(args.modes) == 2:
        report["frozen_minus_finetuned"] = timer.run("bootstrap modes", mode_difference, results, args.n_boot)

    report["stages"] = [s.__dict__ for s in timer.stages]
    report["total_wall_s"] = time.perf_counter() - total0
    report["parent_cpu_s"] = cpu_seconds() - cpu0
    per_row = {}
    for mode in args.modes:
        rs = [r for r in results if r["mode"] == mode]
        per_row[mode] = {
            "rows": len(rs),
            "sum_row_process_cpu_s": sum(r["process_cpu_s"] for r in rs),
            "sum_row_wall_s": sum(r["wall_s"] for r in rs),
            "mean_train_s": float(np.mean([r.get("train_s", 0.0) for r in rs])),
        }
    report["row_costs"] = per_row
    report["platform"] = {
        "torch": torch.__version__,
        "kernel_set": torch.backends.cpu.get_cpu_capability(),
        "cpus": os.cpu_count(),
    }
    print_report(report, args.modes)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1, default=_default) + "\n")
    return 0


def _default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def print_report(report: dict[str, Any], modes: list[str]) -> None:
    for mode in modes:
        print(f"\n== {mode}: rows (mean ± std over seeds [95% two-level CI])")
        for row, stats in report[mode]["rows"].items():
            cells = "  ".join(
                f"{k} {stats[k]['mean']:5.1f} ± {stats[k]['std']:4.1f} [{stats[k]['ci'][0]:5.1f}, {stats[k]['ci'][1]:5.1f}]"
                for k in ("t2v_R1", "order_acc")
            )
            print(f"  {row:14s} {cells}")
        for name, table in report[mode]["tables"].items():
            print(
                f"  table {name}: median-se MDE t2v R@1 {table['table_mde_t2v_R1']:.2f}, max {table['max_mde_t2v_R1']:.2f}"
            )
            for comp, c in table["comparisons"].items():
                t = c["t2v_R1"]
                o = c["order_acc"]
                print(
                    f"    {comp:30s} t2v R@1 {t['delta']:+6.2f} [{t['ci'][0]:+.2f}, {t['ci'][1]:+.2f}] "
                    f"p {t['p']:.3f} holm {t['p_holm']:.3f} MDE {t['mde']:.2f} | order {o['delta']:+6.2f} MDE {o['mde']:.2f}"
                )
    if "frozen_minus_finetuned" in report:
        print("\n== frozen minus finetuned (components)")
        for row, stats in report["frozen_minus_finetuned"].items():
            t, o = stats["t2v_R1"], stats["order_acc"]
            print(
                f"  {row:12s} t2v R@1 {t['frozen']:.1f} vs {t['finetuned']:.1f}: {t['delta']:+.2f} "
                f"[{t['ci'][0]:+.2f}, {t['ci'][1]:+.2f}]; order {o['frozen']:.1f} vs {o['finetuned']:.1f}"
            )
    print(f"\ntotal wall {report['total_wall_s']:.1f} s; row costs {json.dumps(report['row_costs'])}")


if __name__ == "__main__":
    sys.exit(main())
