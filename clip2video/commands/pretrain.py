"""CLI verb ``clip2video pretrain``: (re)build the synthetic world's pretrained tiny CLIP."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from clip2video.errors import ConfigError


def parse_settings(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs; a value is read as JSON where it parses (numbers, lists), else a string."""
    from clip2video.engine.pretrain import PretrainRecipe

    known = set(PretrainRecipe().to_dict())
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or key not in known:
            raise ConfigError(
                f"--set {item!r}: expected KEY=VALUE with KEY one of {', '.join(sorted(known))}"
            )
        try:
            out[key] = json.loads(text)
        except json.JSONDecodeError:
            out[key] = text
    return out


def run_pretrain(args: argparse.Namespace) -> int:
    from clip2video.engine.pretrain import PretrainRecipe, pretrain, save_pretrained
    from clip2video.errors import check_writable_dir
    from clip2video.fingerprint import file_sha256
    from clip2video.models.shipped import SHIPPED_BACKBONES

    check_writable_dir(args.out, "output folder", "--out")
    try:
        recipe = PretrainRecipe.from_dict({**PretrainRecipe().to_dict(), **parse_settings(args.set or [])})
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"--set: {exc}") from None
    result = pretrain(recipe, progress=False if args.no_progress else f"pretrain {recipe.name}")
    command = ["clip2video", "pretrain", "--out", str(args.out), *(["--set", *args.set] if args.set else [])]
    weights, recipe_path = save_pretrained(result, args.out, command=command)
    digest = file_sha256(weights)
    print(f"{weights} ({weights.stat().st_size / 2**20:.1f} MiB, sha256 {digest})")
    print(
        f"{recipe_path} (recipe; epoch losses {result.losses[0]:.3f} -> {result.losses[-1]:.3f}, "
        f"{result.seconds['total']:.0f} s)"
    )
    shipped = SHIPPED_BACKBONES.get(recipe.name)
    if shipped is not None:
        same = digest == shipped.sha256
        print(
            f"{'identical to' if same else 'differs from'} the shipped {recipe.name!r} "
            f"({shipped.sha256[:16]}...)" + ("" if same else ": another recipe, torch build or kernel set")
        )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``pretrain`` to the ``clip2video`` command."""
    p = subparsers.add_parser(
        "pretrain",
        help="build the pretrained tiny CLIP of the synthetic world (the shipped 'tiny-synthetic' backbone)",
        description=(
            "Contrastive CLIP training on single frames and their captions, drawn by the synthetic "
            "generator with a seed no suite uses (1000), deterministic for a kernel set (1 torch thread). "
            "Writes OUT/<name>.npz (weights, no pickle) and OUT/<name>.json (the recipe, sha256, size, "
            "platform) and says whether the file is identical to the shipped one."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--out", type=Path, required=True, help="folder for <name>.npz and <name>.json")
    p.add_argument(
        "--set",
        nargs="+",
        metavar="KEY=VALUE",
        help="recipe settings (e.g. epochs=10 num_clips=2000); the defaults build the shipped backbone",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run_pretrain)


__all__ = ["parse_settings", "register", "run_pretrain"]
