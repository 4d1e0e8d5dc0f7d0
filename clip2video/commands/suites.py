"""CLI verb ``clip2video suites``: the shipped suites, what each runs and on which protocol."""

from __future__ import annotations

import argparse
import json
from typing import Any


def suite_rows() -> list[dict[str, Any]]:
    """One dict per shipped suite: name, description, protocol, rows (plain model rows, then the
    names of ``[[rows]]`` variant rows), seeds and whether it adds a zero-shot row (its settings)."""
    from clip2video.experiments.suite import load_suite, shipped_suites

    rows = []
    for name in shipped_suites():
        settings = load_suite(name).settings
        rows.append(
            {
                "name": name,
                "description": settings.description,
                "protocol": settings.protocol,
                "rows": [*settings.models, *(row.name for row in settings.rows)],
                "seeds": list(settings.seeds),
                "zero_shot": bool(settings.zero_shot),
            }
        )
    return rows


def run_suites(args: argparse.Namespace) -> int:
    """Print the shipped suites (a table, or JSON with --json)."""
    rows = suite_rows()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    width = max(len(r["name"]) for r in rows) if rows else 5
    for row in rows:
        seeds = ",".join(map(str, row["seeds"])) or "-"
        rows_text = ", ".join(row["rows"]) + (" + zero-shot" if row["zero_shot"] else "")
        print(f"{row['name']:<{width}}  {row['description']}")
        print(f"{'':<{width}}  protocol {row['protocol']}; rows {rows_text}; seeds {seeds}")
    print(f"{len(rows)} suite(s); run one with `clip2video ablation --suite NAME` (or a TOML path)")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``suites`` to the ``clip2video`` command."""
    p = subparsers.add_parser(
        "suites",
        help="list the shipped suites: description, protocol, rows, seeds",
        description=(
            "List the suites shipped with the package (clip2video ablation --suite NAME runs one; a TOML "
            "path runs your own): each with its description, protocol, rows and seeds as its file says."
        ),
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run_suites)
