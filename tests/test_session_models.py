"""A model defined in a notebook (an interactive ``__main__``, which no worker process can import)
runs its rows in the calling process, with the same record as the same model from a module; a
script that starts a suite at import time gets one clear error instead of a suite in every worker."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from clip2video.engine.records import read_run_record
from tests.support.protocol_fixtures import smoke_overrides

ROOT = Path(__file__).resolve().parents[1]
TOY = ROOT / "tests" / "support" / "toys" / "toy_model.py"


def _run_smoke_code(where: Path, tag: str) -> str:
    overrides = {**smoke_overrides(["toy_mean_colour"]), "seeds": [0]}
    return (
        "import clip2video.pipeline as pipeline\n"
        f"pipeline.run_suite('smoke', overrides={overrides!r}, runs_dir={str(where / tag / 'runs')!r}, "
        f"data_root={str(where / 'data')!r}, results_dir=None, tracking=False)\n"
    )


def _python(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests" / "support")])}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def _metrics(where: Path, tag: str) -> dict:
    """The row's metrics and per-query ranks (its record, read and checked as every reader does)."""
    record = read_run_record(where / tag / "runs" / "smoke" / "toy_mean_colour")
    return {**record.metrics, "ranks": record.ranks_t2v.tolist()}


def test_a_model_defined_in_the_session_runs_here_with_the_same_record(tmp_path):
    # `python -c`: __main__ has no file, as in a notebook; the model is defined in it
    session = _python(["-c", TOY.read_text() + "\n" + _run_smoke_code(tmp_path, "session")], tmp_path)
    assert session.returncode == 0, session.stderr[-3000:]
    assert "toy_mean_colour are defined in this session" in session.stdout
    # the same model imported from its module runs in a worker process
    module = _python(["-c", "import toys.toy_model\n" + _run_smoke_code(tmp_path, "module")], tmp_path)
    assert module.returncode == 0, module.stderr[-3000:]
    assert "defined in this session" not in module.stdout
    assert _metrics(tmp_path, "session") == _metrics(tmp_path, "module")


def test_a_script_that_starts_a_suite_at_import_time_gets_one_clear_error(tmp_path):
    script = tmp_path / "unguarded.py"
    script.write_text(TOY.read_text() + "\n" + _run_smoke_code(tmp_path, "script"))
    done = _python([str(script)], tmp_path)
    assert done.returncode != 0
    assert 'put the call under `if __name__ == "__main__":`' in done.stderr
    guarded = tmp_path / "guarded.py"
    body = _run_smoke_code(tmp_path, "guarded").replace("\n", "\n    ").rstrip()
    guarded.write_text(TOY.read_text() + '\nif __name__ == "__main__":\n    ' + body + "\n")
    assert _python([str(guarded)], tmp_path).returncode == 0
    assert 0 <= _metrics(tmp_path, "guarded")["t2v_R1"] <= 100  # a complete, checked record
