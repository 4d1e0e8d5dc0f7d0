"""CLI verb ``clip2video models``: the registered models and the options each takes.

Plugins count: entry-point packages (``clip2video.models``) and ``--import MODULE`` modules are
loaded before the parser is built, so their models are listed beside the shipped ones.
"""

from __future__ import annotations

import argparse
import inspect
import json
from typing import Any


def model_rows() -> list[dict[str, Any]]:
    """One dict per registered model: name, where it comes from, its options with their defaults
    (``None`` options list: the model takes any option) and the first line of its docstring."""
    from clip2video.models import registry

    # the registry API before and after the shared Registry type (MODELS, declared_options)
    factories: Any = getattr(registry, "MODELS", None) or getattr(registry, "_REGISTRY", {})
    options_of = getattr(registry, "declared_options", None) or registry.model_options
    rows = []
    for name in registry.list_models():
        factory = factories.get(name) if name in factories else None
        declared = options_of(name)
        defaults: dict[str, Any] = {}
        if factory is not None:
            for param in inspect.signature(factory).parameters.values():
                if param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY):
                    defaults[param.name] = None if param.default is param.empty else param.default
        options = None if declared is None else {k: defaults.get(k) for k in sorted(declared)}
        module = getattr(factory, "__module__", "") or ""
        doc = (inspect.getdoc(factory) or "") if factory is not None else ""
        rows.append(
            {
                "name": name,
                "source": "shipped" if module.startswith("clip2video.") else f"plugin ({module})",
                "options": options,
                "description": doc.splitlines()[0] if doc else "",
            }
        )
    return rows


def suite_model_options() -> dict[str, Any]:
    """The ``[model]`` options every suite passes, with their defaults (defaults.toml)."""
    from clip2video.experiments.suite import default_settings

    return dict(default_settings().get("model", {}))


def _options_text(options: dict[str, Any] | None) -> str:
    if options is None:
        shared = ", ".join(f"{k}={v!r}" for k, v in suite_model_options().items())
        return f"any option (**config); a suite passes its [model] table: {shared}"
    return ", ".join(f"{k}={v!r}" for k, v in options.items()) or "none"


def run_models(args: argparse.Namespace) -> int:
    """Print the models (a table, or JSON with --json)."""
    rows = model_rows()
    if args.json:
        print(json.dumps(rows, indent=2, default=repr))
        return 0
    width = max(len(r["name"]) for r in rows) if rows else 5
    for row in rows:
        print(f"{row['name']:<{width}}  {row['source']}")
        if row["description"]:
            print(f"{'':<{width}}  {row['description']}")
        print(f"{'':<{width}}  options: {_options_text(row['options'])}")
    print(
        f"{len(rows)} model(s); set an option for a suite with --set model.<option>=VALUE (e.g. model.center_k=3)",
    )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``models`` to the ``clip2video`` command."""
    p = subparsers.add_parser(
        "models",
        help="list the registered models (plugins included) and their options",
        description=(
            "List every registered model: the shipped ones, those of installed plugin packages (entry "
            "point group clip2video.models) and those of --import MODULE, with the options each takes "
            "and their defaults (a suite's [model] table or --set model.<option>=VALUE sets them)."
        ),
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run_models)
