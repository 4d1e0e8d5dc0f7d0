"""A plugin (``--import tests.support.die_mid_record``) that SIGKILLs a row's worker while it writes
its record: right after ``ranks.npz`` (and ``sim.npz``), as ``config.json`` is about to be written.

Only rows whose folder name is in ``$CLIP2VIDEO_TEST_DIE_ROWS`` (comma-separated) die, and only in
a worker process (the variable is read when the record is written). It patches the records
module's JSON writer ``_dump``, which every version of the harness has, so the same plugin shows
the old behaviour on an older checkout.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from clip2video.engine import records

ENV = "CLIP2VIDEO_TEST_DIE_ROWS"
_original = records._dump


def _dump_or_die(path: Path, data: Any) -> None:
    rows = {r for r in os.environ.get(ENV, "").split(",") if r}
    if Path(path).name == records.CONFIG_FILE and Path(path).parent.name in rows:
        os.kill(os.getpid(), signal.SIGKILL)  # as the out-of-memory killer would, mid-record
    _original(path, data)


records._dump = _dump_or_die
