"""Build (once) the one virtual environment that every tox env runs in.

tox 4 recreates an environment whenever a different env name uses it, so sharing ``env_dir``
would reinstall a 5.5 GB torch per env. Instead each tox env is an empty shell that calls this
script: it creates ``<work_dir>/shared-venv`` with ``pip install -e .[test] -c constraints.txt`` and
rebuilds it only when ``pyproject.toml`` or ``constraints.txt`` change (a hash stamp).
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INPUTS = ("pyproject.toml", "constraints.txt")


def stamp() -> str:
    """Hash of the files that decide what the environment holds."""
    digest = hashlib.sha256()
    for name in INPUTS:
        digest.update((ROOT / name).read_bytes())
    return digest.hexdigest()


def ensure(env_dir: Path) -> Path:
    """Create or update ``env_dir``; return its python."""
    python = env_dir / "bin" / "python"
    stamp_file = env_dir / ".clip2video-stamp"
    wanted = stamp()
    if python.exists() and stamp_file.exists() and stamp_file.read_text() == wanted:
        return python
    if not python.exists():
        print(f"shared_env: creating {env_dir}", flush=True)
        venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    constraints = ROOT / "constraints.txt"
    cmd = [str(python), "-m", "pip", "install", "-q", "-c", str(constraints), "-e", f"{ROOT}[test]"]
    print("shared_env: " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    stamp_file.write_text(wanted)
    return python


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python tools/shared_env.py ENV_DIR")
    print(ensure(Path(sys.argv[1]).resolve()))
