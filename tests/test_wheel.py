"""A wheel installed non-editable runs the smoke ablation from an empty folder (issue 9 §5).

The wheel is built with ``pip wheel --no-deps`` from a copy of the project's packaging inputs
(``pyproject.toml``, ``README.md``, ``clip2video/``; no build folders land in the checkout) and
installed with ``--no-deps`` into a fresh venv. The new venv reaches the test environment's
dependencies (torch, open_clip, ...) through a ``.pth`` file holding that site-packages folder as a
plain path line: the folder joins ``sys.path`` but its own ``.pth`` files are not run, so the
editable ``clip2video`` finder of a development install stays off and ``clip2video`` is imported
from the wheel. Nothing is downloaded.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGING_INPUTS = ("pyproject.toml", "README.md", "LICENSE")

pytestmark = pytest.mark.slow


def _run(
    cmd: list[str], *, cwd: Path, env: dict[str, str], timeout: float = 600
) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _clean_env(tmp: Path) -> dict[str, str]:
    """The environment without anything that points Python at the checkout."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PIP_NO_INDEX"] = "1"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp / 'unused-mlflow.db'}"
    return env


def _source_copy(dest: Path) -> Path:
    """The files the wheel is built from, copied so the build leaves the checkout untouched."""
    dest.mkdir()
    for name in PACKAGING_INPUTS:
        if (REPO / name).is_file():
            shutil.copy2(REPO / name, dest / name)
    shutil.copytree(
        REPO / "clip2video", dest / "clip2video", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    return dest


def _fail(step: str, proc: subprocess.CompletedProcess, hint: str = "") -> None:
    pytest.fail(
        f"{step} failed (exit {proc.returncode}){': ' + hint if hint else ''}\n"
        f"--- stdout (tail)\n{proc.stdout[-4000:]}\n--- stderr (tail)\n{proc.stderr[-4000:]}",
        pytrace=False,
    )


def test_wheel_runs_the_smoke_ablation_from_an_empty_folder(tmp_path: Path) -> None:
    env = _clean_env(tmp_path)
    src = _source_copy(tmp_path / "src")
    wheels = tmp_path / "wheels"
    build = _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(wheels),
            str(src),
        ],
        cwd=tmp_path,
        env=env,
    )
    if build.returncode:
        _fail("pip wheel", build)
    (wheel,) = wheels.glob("clip2video_bench-*.whl")

    venv = tmp_path / "venv"
    made = _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path, env=env)
    if made.returncode:
        _fail("python -m venv", made)
    python = venv / "bin" / "python"
    new_site = Path(
        _run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            cwd=tmp_path,
            env=env,
        ).stdout.strip()
    )
    # The test environment's site-packages as a plain path line: dependencies resolve, its .pth
    # files (the editable finder of a development install) are not executed.
    (new_site / "zz_test_env_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    install = _run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", str(wheel)],
        cwd=tmp_path,
        env=env,
    )
    if install.returncode:
        _fail("pip install --no-deps the wheel", install)

    empty = tmp_path / "empty"
    empty.mkdir()
    where = _run([str(python), "-c", "import clip2video; print(clip2video.__file__)"], cwd=empty, env=env)
    assert where.returncode == 0, where.stderr
    location = Path(where.stdout.strip()).resolve()
    assert location.is_relative_to(venv.resolve()), (
        f"clip2video was imported from {location}, not from the wheel installed in {venv}"
    )

    script = venv / "bin" / "clip2video"
    assert script.is_file(), "the wheel installs no `clip2video` console script"
    # One model of the smoke suite keeps this test to about a minute; the suite file, defaults,
    # data generation, records and tables all go through the installed package.
    command = ["ablation", "--suite", "smoke", "--no-tracking", "--models", "meanp"]
    run = _run([str(script), *command], cwd=empty, env=env)
    if run.returncode:
        _fail(
            f"`clip2video {' '.join(command)}` from the installed wheel",
            run,
            "the suites (and defaults, paper rows) must ship inside the package as package data, read "
            "with importlib.resources, not from the source tree (issue 9 §5; H5 moves them to "
            "clip2video/suites/)",
        )
    assert (empty / "runs").is_dir() and any((empty / "runs").iterdir()), (
        "no runs/ written in the working folder"
    )
    assert (empty / "results").is_dir() and any((empty / "results").rglob("*")), "no results/ written"
    assert not (venv / "runs").exists(), "runs/ landed in the venv instead of the working folder"
    # `tox -e ablation` needs the shipped backbone's weights beside the suites: the installed wheel
    # passes the ablation suite's check before work (shipped weights present, checksum right).
    check = _run(
        [
            str(python),
            "-c",
            "from clip2video.pipeline import RunOptions, check; "
            "c = check(RunOptions(suite='ablation', results_dir=None, tracking=False)); "
            "print(len(c.plan), sorted({p.settings.train.backbone for p in c.plan}))",
        ],
        cwd=empty,
        env=env,
    )
    assert check.returncode == 0, check.stderr
    assert check.stdout.split() == ["30", "['frozen']"], check.stdout
    suites = _run([str(script), "suites"], cwd=empty, env=env)
    assert "ablation-scratch" in suites.stdout and "clip2video-K9" in suites.stdout, suites.stdout
