"""Hand-made suite records for the per-question tables and the verdict (tests/test_questions.py,
tests/test_verdict.py): rows of several seeds with row names, declared tables, platforms."""

from __future__ import annotations

import numpy as np

from clip2video.engine.records import read_suite_records, write_run_record, write_suite_info

N_BOOT = 200
PLATFORM = {
    "cpu_model": "Test CPU",
    "cpu_capability": "AVX512",
    "torch": "9.9",
    "threads": 2,
    "device": "cpu",
}
OTHER = {**PLATFORM, "cpu_model": "Other CPU", "cpu_capability": "AVX2"}


def hand_suite(runs, suite="q", *, seeds=(0, 1, 2), n=150, tables=None, platforms=None, shift=None):
    """Rows (name -> model): meanp; tdb and tdb-mlp (two rows of one model: grouped apart by row
    name); clip2video (ranks shifted up by 6: better than meanp); ``shift`` overrides a row's shift."""
    rng = np.random.default_rng(0)
    base_t, base_v = rng.integers(1, 40, n).astype(float), rng.integers(1, 40, n).astype(float)
    rows = {"meanp": ("meanp", 0), "tdb": ("tdb", 2), "tdb-mlp": ("tdb", 0), "clip2video": ("clip2video", 6)}
    for name, value in (shift or {}).items():
        rows[name] = (rows[name][0], value)
    names = []
    for name, (model, up) in rows.items():
        for seed in seeds:
            t = np.maximum(1, np.roll(base_t, seed) - up)
            v = np.maximum(1, np.roll(base_v, 2 * seed) - up)
            record = f"{name}-s{seed}"
            write_run_record(
                runs / suite / record,
                name=record,
                metrics={},
                ranks_t2v=t,
                ranks_v2t=v,
                protocol="synthetic",
                config={"eval": {"bootstrap": N_BOOT}},
                extra={"row": name, "model": model, "seed": seed, "order_acc": 50.0 + up + seed},
                fingerprint={"platform": (platforms or {}).get(name, PLATFORM)},
            )
            names.append(record)
    settings = {"tables": tables} if tables is not None else {}
    write_suite_info(runs, suite, protocol="synthetic", rows=names, notes=["a suite note"],
                     extra={"settings": settings})  # fmt: skip
    return read_suite_records(runs, suite)


COMPONENTS = {
    "name": "components",
    "title": "Does each temporal block help?",
    "rows": ["meanp", "tdb", "clip2video"],
    "reference": "meanp",
    "compare": [["clip2video", "tdb"]],
}
PROJECTION = {"name": "projection", "title": "TDB projection", "rows": ["tdb", "tdb-mlp"], "reference": "tdb"}
