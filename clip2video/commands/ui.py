"""CLI verb ``clip2video ui``: the MLflow UI on the harness' store, experiments opening in their runs.

MLflow 3.x's UI opens every experiment in the view of the browser's *workflow type* (the sidebar's
"GenAI | Model training" switch), which is "GenAI" until the user switches it. ``clip2video ui``
runs ``mlflow server --app-name clip2video``: MLflow's own server with every option it has, whose
page starts a browser that has never chosen on "Model training", so clicking an experiment in the
list opens its runs table (:data:`clip2video.tracking.ui_app`).
"""

from __future__ import annotations

import argparse
import subprocess
import sys


def ui_command(uri: str, host: str, port: int, workers: int) -> list[str]:
    """The ``mlflow server`` command line ``clip2video ui`` runs."""
    from clip2video.tracking import UI_APP_NAME

    return [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--app-name",
        UI_APP_NAME,
        "--backend-store-uri",
        uri,
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]


def run_ui(args: argparse.Namespace) -> int:
    """Check the store, then serve the UI until Ctrl-C."""
    from urllib.parse import urlparse

    from clip2video.tracking import (
        TrackingError,
        check_store,
        default_tracking_uri,
        sqlite_path,
        ui_app_registered,
    )

    uri = args.tracking_uri or default_tracking_uri()
    if urlparse(uri).scheme in ("http", "https"):
        raise TrackingError(
            f"--tracking-uri {uri} is a server already: open it in a browser (its UI's sidebar switch "
            "'Model training' makes experiments open in their runs table); `clip2video ui` serves an SQLite store"
        )
    db = sqlite_path(uri)
    if db is not None and not db.exists():
        raise TrackingError(
            f"no tracking store at {db}: run `clip2video ablation` in this folder first, or pass --tracking-uri "
            "sqlite:///path/to/mlruns.db"
        )
    check_store(uri)
    if not ui_app_registered():
        raise TrackingError(
            "MLflow does not find the `clip2video` app (entry point group mlflow.app of the installed package); "
            "reinstall the package (pip install -e .) or run `mlflow ui --backend-store-uri "
            f"{uri}` and switch its sidebar to 'Model training'"
        )
    url = f"http://{args.host}:{args.port}/#/experiments"
    print(f"clip2video: MLflow UI at {url} (store {uri}); Ctrl-C stops it", flush=True)
    try:
        return subprocess.call(ui_command(uri, args.host, args.port, args.workers))
    except KeyboardInterrupt:
        return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``ui`` to the ``clip2video`` command."""
    p = subparsers.add_parser(
        "ui",
        help="browse the MLflow store: experiments open in their runs table",
        description=(
            "Serve the MLflow UI for the tracking store (mlflow server --app-name clip2video): MLflow's "
            "own server and UI, except that a browser which never chose a workflow type starts on "
            "'Model training', so clicking an experiment in the list opens its runs table (MLflow 3.x "
            "otherwise opens its GenAI overview). Open the printed URL; Ctrl-C stops the server."
        ),
    )
    p.add_argument(
        "--tracking-uri",
        default=None,
        help="the store to browse (unset: $MLFLOW_TRACKING_URI or sqlite:///mlruns.db in this folder)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=5000, help="port to listen on")
    p.add_argument("--workers", type=int, default=1, help="server worker processes")
    p.set_defaults(func=run_ui)
