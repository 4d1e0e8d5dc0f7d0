"""Feasibility study for the offline ablation (issue 16 §4): power (MDE) and time of a configuration.

For one candidate configuration it runs the ``ablation`` suite's rows and tables with the
candidate's settings through the real pipeline (:func:`clip2video.pipeline.run`: data generation,
the check before work, the frozen-backbone features once per suite, one worker process per row
with one torch thread, the records), once per mode, then computes with the project's own
statistics (``clip2video.metrics.bootstrap``: two-level bootstrap over seeds and test-video
clusters, paired differences, ``minimum_detectable_difference`` as ``report/tables.py`` does) the
minimum detectable t2v R@1 difference of each comparison. Every stage is timed (wall and CPU
seconds) and the machine's load is recorded beside it.

Tables (``--tables``): the ``ablation`` suite's row tables (``components``, ``tdb-projection``,
``centers``), each with its rows, reference and ``compare`` pairs.

Modes (``--modes``): ``frozen`` (``[train] backbone = "frozen"``: backbone features computed once
per suite, heads trained) and ``finetuned`` (``"finetune"``, the paper's regime: the whole model
trains, ``clip.*`` at ``lr * coef_lr``, frames decoded from the videos). With both, the components
are compared across modes (same seeds).

Example (the defaults are the recommended configuration, i.e. the ``ablation`` suite: the shipped
backbone, 1000 test pairs, 1000 train videos, 3 seeds, heads at batch 128 for 10 epochs, lr 1e-3)::

    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/ablation_design.py --out /tmp/design --json /tmp/design/result.json
    # the frozen-vs-fine-tuned comparison of the components (fine-tuned rows cost ~10x):
    ... --seeds 2 --tables components --modes frozen finetuned

Writes a JSON summary (``--json``) and prints a table. Not a test; runs from a checkout.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

MODES = {"frozen": "frozen", "finetuned": "finetune"}  # --modes -> [train] backbone
KEYS = ("t2v_R1", "t2v_R5", "v2t_R1", "order_acc")


def load_avg() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def cpu_seconds(who: int = resource.RUSAGE_SELF) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def all_cpu_seconds() -> float:
    """This process and its finished children (the row workers)."""
    return cpu_seconds() + cpu_seconds(resource.RUSAGE_CHILDREN)


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
        c0, w0 = all_cpu_seconds(), time.perf_counter()
        out = fn(*args, **kwargs)
        stage = Stage(name, time.perf_counter() - w0, all_cpu_seconds() - c0, load, load_avg())
        self.stages.append(stage)
        print(
            f"[{name}] wall {stage.wall:.1f} s, cpu {stage.cpu:.1f} s (load {load} -> {stage.load_after})",
            flush=True,
        )
        return out


# ----------------------------------------------------------------------------- the suite


def design_tables(names: list[str]) -> dict[str, dict[str, Any]]:
    """The ``ablation`` suite's row tables named ``names``: rows, reference, compare pairs."""
    from clip2video.experiments.suite import load_suite

    tables = {t.name: t for t in load_suite("ablation").settings.tables if t.kind == "rows"}
    return {
        n: {
            "rows": list(tables[n].rows),
            "reference": tables[n].reference,
            "compare": list(tables[n].compare),
        }
        for n in names
    }


def design_suite(args: argparse.Namespace, mode: str, tables: list[str], clip: str, clip_weights: str) -> Any:
    """The ``ablation`` suite with the candidate's settings, the rows of ``tables`` and ``mode``."""
    from clip2video.experiments.suite import load_suite, suite_file_settings, suite_from_settings

    base = load_suite("ablation").settings
    wanted = list(dict.fromkeys(r for t in design_tables(tables).values() for r in t["rows"]))
    declared = suite_file_settings("ablation")
    declared.pop("tables", None)
    declared.update(
        models=[m for m in base.models if m in wanted],
        rows=[r.to_dict() for r in base.rows if r.name in wanted],
        seeds=list(range(args.seeds)),
    )
    declared["synthetic"] = {
        **declared.get("synthetic", {}),
        "seed": args.data_seed,
        "num_train": args.num_train,
        "num_val": args.num_val,
        "num_test_pairs": args.num_test_pairs,
        "captions_per_video": args.captions_per_video,
    }
    declared["backbone"] = {"clip": clip, "clip_weights": clip_weights}
    declared["model"] = {"temporal_layers": args.temporal_layers}
    declared["train"] = {
        **declared.get("train", {}),
        "backbone": MODES[mode],
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "coef_lr": args.coef_lr,
    }
    return suite_from_settings(f"design-{mode}", declared, f"ablation design ({mode})")


def run_mode(
    args: argparse.Namespace, suite: Any, data_root: Path, runs: Path, timer: Timer
) -> list[dict[str, Any]]:
    """The suite through the real pipeline (check, data, features, rows), then its records."""
    from clip2video.engine.records import read_suite_records
    from clip2video.pipeline import RunOptions, check, run

    options = RunOptions(
        suite=suite,
        data_root=data_root,
        runs_dir=runs,
        results_dir=None,
        tracking=False,
        progress=False,
        jobs=args.jobs,
        reference=None,
    )
    checked = timer.run(f"{suite.name}: check before work", check, options)
    timer.run(f"{suite.name}: data, features and {len(checked.plan)} rows", run, options, checked)
    results = []
    for rec in read_suite_records(runs, suite.name):
        results.append(
            {
                "row": rec.extra["row"],
                "seed": rec.seed,
                "mode": suite.name.removeprefix("design-"),
                "metrics": {**rec.metrics, "order_acc": rec.extra["order_acc"]},
                "ranks": rec.ranks,
                "caption_video": rec.caption_video,
                "order_wins": rec.arrays["order_wins"],
                "trained": rec.extra.get("trained", True),
                "reason": rec.extra.get("frozen_untrained", ""),
            }
        )
    return results


# ----------------------------------------------------------------------------- statistics


def summarise(
    results: list[dict[str, Any]], mode: str, n_boot: int, tables_of: dict[str, dict[str, Any]]
) -> dict[str, Any]:
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
    for name, table in tables_of.items():
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
    for row in design_tables(["components"])["components"]["rows"]:
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
    table_names = ["components", "tdb-projection", "centers"]
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="work folder (data, runs, backbone)")
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
    parser.add_argument("--modes", nargs="+", default=["frozen"], choices=list(MODES))
    parser.add_argument("--tables", nargs="+", default=table_names, choices=table_names)
    parser.add_argument("--finetuned-tables", nargs="+", default=["components"], choices=table_names)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    timer = Timer()
    total0, cpu0 = time.perf_counter(), all_cpu_seconds()
    args.out.mkdir(parents=True, exist_ok=True)
    clip, clip_weights = "tiny-synthetic", args.clip_weights
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

    results: list[dict[str, Any]] = []
    tables_of = {}
    for mode in args.modes:
        tables = args.tables if mode == "frozen" else args.finetuned_tables
        tables_of[mode] = design_tables(tables)
        suite = design_suite(args, mode, tables, clip, clip_weights)
        results += run_mode(args, suite, args.out / "data", args.out / "runs", timer)

    report: dict[str, Any] = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    }
    for mode in args.modes:
        stats = timer.run(
            f"bootstrap {mode} (n_boot {args.n_boot})", summarise, results, mode, args.n_boot, tables_of[mode]
        )
        stats.pop("summaries")
        report[mode] = stats
    if len(args.modes) == 2:
        report["frozen_minus_finetuned"] = timer.run("bootstrap modes", mode_difference, results, args.n_boot)

    report["stages"] = [s.__dict__ for s in timer.stages]
    report["total_wall_s"] = time.perf_counter() - total0
    report["cpu_s_with_workers"] = all_cpu_seconds() - cpu0
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
    print(
        f"\ntotal wall {report['total_wall_s']:.1f} s, cpu {report['cpu_s_with_workers']:.1f} s (with the row workers)"
    )


if __name__ == "__main__":
    sys.exit(main())
