"""The w table: a two-part model's similarity re-weighted at inference, from its records alone.

CLIP2Video's similarity is ``w * global + (1 - w) * aligned`` (``RetrievalModel.similarity``:
``glob * w_g + aligned * w_a`` with ``w_g = w``, ``w_a = 1 - w``, float32). A two-part model's
record keeps both parts (``sim.npz``: ``sim_global``, ``sim_aligned``: the float32 matrices its
``sim`` was made from), so every w of a ``kind = "weights"`` table is computed without the model:

1. combine the parts with the model's own operations, in the same order, in float32 torch;
2. rank through the one metrics core (``query_ranks``) with the record's tie policy and v2t
   convention, and ``metrics_from_ranks`` with its recall cut-offs;
3. order accuracy through the protocol's ``extra_metrics`` hook (the synthetic twins) where the
   row recorded one and the caller gives the hook (``order_hook``, see ``protocol_order_hook`` and
   ``find_annotations``).

Each w becomes a row ``w=<w>`` over the source row's seeds, and the table is a question table
(``report.questions``) with the reference w. At the trained weight the combined matrix must equal
the recorded ``sim`` bit for bit (and the hook's order wins the recorded ones), else the table
refuses: the w = 0.5 row of a model trained with w = 0.5 IS that model's recorded row.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clip2video.engine.records import RunRecord
from clip2video.fingerprint import file_digest
from clip2video.metrics import metrics_from_ranks, query_ranks
from clip2video.report.groups import ORDER_KEY, ORDER_WINS, group_records, recall_ks_of, row_name, summarise
from clip2video.report.questions import QuestionTable, assemble
from clip2video.report.tables import TableError
from clip2video.settings import TableDecl

# (sim, caption_video) -> the protocol's extra metrics: order_acc & co. and arrays.order_wins.
OrderHook = Callable[[np.ndarray, np.ndarray], Mapping[str, Any]]
PARTS = ("global", "aligned")
DEFAULT_WEIGHT = 0.5  # the model's default center_weight


def weight_row(w: float) -> str:
    """The row name of weight ``w`` (``w=0.25``)."""
    return f"w={float(w):g}"


def combine_parts(glob: Any, aligned: Any, w: float) -> torch.Tensor:
    """``glob * w + aligned * (1 - w)`` exactly as ``RetrievalModel.similarity`` computes it
    (float32 tensors times Python floats, then the sum), so the trained weight gives its ``sim``
    bit for bit."""
    w_g = float(w)
    w_a = 1.0 - w_g
    g = torch.from_numpy(np.ascontiguousarray(glob, dtype=np.float32))
    a = torch.from_numpy(np.ascontiguousarray(aligned, dtype=np.float32))
    return g * w_g + a * w_a


def trained_weight(rec: RunRecord) -> float:
    """The weight the row was evaluated with (its settings' ``model.center_weight``)."""
    for section in ("model", "model_config"):
        value = rec.config.get(section, {}).get("center_weight") if isinstance(rec.config, Mapping) else None
        if value is not None:
            return float(value)
    return DEFAULT_WEIGHT


def source_records(records: Sequence[RunRecord], row: str) -> list[RunRecord]:
    """The plain (not post-processed) records of ``row``, seeds ascending."""
    found = [r for r in records if row_name(r) == row and not r.postprocess]
    return sorted(found, key=lambda r: (r.seed is None, r.seed or 0, r.name))


def _parts(rec: RunRecord, table: str) -> tuple[np.ndarray, np.ndarray]:
    parts = rec.load_sim_parts()
    if not all(p in parts for p in PARTS):
        where = rec.sim_path or (rec.path / "sim.npz" if rec.path else rec.name)
        raise TableError(
            f"table {table!r}: {where} holds no sim_global/sim_aligned (record {rec.name!r}); a weights table "
            "needs a two-part model (TAB) recorded with its similarity parts: rerun the row"
        )
    return parts["global"], parts["aligned"]


def _recorded_order(rec: RunRecord) -> bool:
    return ORDER_KEY in rec.metrics or rec.extra.get(ORDER_KEY) is not None


def _dropped(rec: RunRecord) -> bool:
    dropped = rec.extra.get("dropped")
    return bool(dropped and any(dropped.values() if isinstance(dropped, Mapping) else [dropped]))


def weights_records(
    spec: TableDecl, records: Sequence[RunRecord], *, order_hook: OrderHook | None = None
) -> tuple[list[RunRecord], list[str]]:
    """One in-memory record per (w, seed) of ``spec.row``, and what the footnotes must say."""
    source = source_records(records, str(spec.row))
    if not source:
        known = ", ".join(dict.fromkeys(row_name(r) for r in records))
        raise TableError(f"table {spec.name!r}: no records of row {spec.row!r} (recorded rows: {known})")
    with_order = order_hook is not None and any(_recorded_order(r) for r in source)
    if with_order and any(_dropped(r) for r in source):
        with_order = False  # the split the hook would load is not the one the row was ranked on
    out: list[RunRecord] = []
    trained: set[float] = set()
    for rec in source:
        glob, aligned = _parts(rec, spec.name)
        w0 = trained_weight(rec)
        trained.add(w0)
        _check_trained(rec, glob, aligned, w0, spec.name, order_hook if with_order else None)
        for w in spec.weights:
            sim = combine_parts(glob, aligned, w)
            ranks = query_ranks(
                sim, rec.caption_video, tie_policy=rec.tie_policy, v2t=rec.ranks.v2t_convention
            )
            extra: dict[str, Any] = {
                "row": weight_row(w),
                "model": rec.model,
                "seed": rec.seed,
                "weight": float(w),
                "source_record": rec.name,
            }
            arrays: dict[str, np.ndarray] = {}
            if with_order and order_hook is not None:
                found = dict(order_hook(sim.numpy(), rec.caption_video))
                arrays = {k: np.asarray(v) for k, v in dict(found.pop("arrays", {}) or {}).items()}
                extra.update(found)
            for key in ("selected_on_test", "dropped"):
                if key in rec.extra:
                    extra[key] = rec.extra[key]
            name = weight_row(w) if len(source) == 1 else f"{weight_row(w)}-s{rec.seed}"
            out.append(
                RunRecord(
                    name=name,
                    metrics=metrics_from_ranks(ranks, recall_ks=recall_ks_of(rec)),
                    ranks=ranks,
                    caption_video=rec.caption_video,
                    protocol=rec.protocol,
                    extra=extra,
                    config=rec.config,
                    fingerprint=rec.fingerprint,
                    arrays=arrays,
                )
            )
    seeds = ",".join(str(r.seed) for r in source)
    policy = f"tie policy `{source[0].tie_policy}`, v2t `{source[0].ranks.v2t_convention}`"
    weights_text = " and ".join(f"{w:g}" for w in sorted(trained))
    notes = [
        f"Rows w: the similarity w x global + (1 - w) x aligned of `{spec.row}` (seeds {seeds}), combined from "
        f"the parts its records keep (sim.npz: sim_global, sim_aligned) with the model's own float32 operations "
        f"and ranked by the metrics core ({policy}); no model was rebuilt or retrained. At the trained "
        f"w = {weights_text} the combined similarity equals the recorded one bit for bit (checked for every seed), "
        f"so that row is the trained model's own."
    ]
    if any(_recorded_order(r) for r in source):
        if with_order:
            notes.append(
                "order acc: the protocol's extra_metrics hook on each combined similarity; at the trained w its "
                "per-caption order wins equal the recorded ones (checked)."
            )
        elif any(_dropped(r) for r in source):
            notes.append("order acc: not recomputed (the row was ranked without missing test items).")
        else:
            notes.append(
                "order acc: not recomputed: the test split's annotations were not found (pass the data folder "
                "the suite ran on: `clip2video tables --data-root DIR`)."
            )
    return out, notes


def _check_trained(
    rec: RunRecord, glob: np.ndarray, aligned: np.ndarray, w0: float, table: str, hook: OrderHook | None
) -> None:
    """The parts at the trained weight give the recorded similarity (and order wins) exactly."""
    sim = combine_parts(glob, aligned, w0).numpy()
    stored = rec.load_sim()
    if stored.shape != sim.shape or not np.array_equal(stored, sim):
        raise TableError(
            f"table {table!r}: record {rec.name!r} ({rec.sim_path}): its sim_global/sim_aligned at the trained "
            f"w = {w0:g} do not give its recorded sim bit for bit; the parts are not the ones its similarity "
            "was made from: rerun the row"
        )
    if hook is not None and ORDER_WINS in rec.arrays:
        found = dict(hook(sim, rec.caption_video))
        wins = np.asarray((found.get("arrays") or {}).get(ORDER_WINS, []), dtype=np.float64)
        recorded = np.asarray(rec.arrays[ORDER_WINS], dtype=np.float64)
        if wins.shape != recorded.shape or not np.array_equal(wins, recorded, equal_nan=True):
            raise TableError(
                f"table {table!r}: record {rec.name!r}: the protocol's order wins on these annotations differ "
                "from the recorded ones at the trained w; pass the data folder the suite ran on (--data-root)"
            )


def build_weights_table(
    spec: TableDecl,
    records: Sequence[RunRecord],
    *,
    suite: str,
    protocol: str,
    n_boot: int,
    seed: int = 0,
    order_hook: OrderHook | None = None,
    notes: Sequence[str] = (),
) -> QuestionTable | None:
    """The ``kind = "weights"`` table: a row per w, paired comparisons against the reference w
    (None when the row was not recorded: a partial run)."""
    if not source_records(records, str(spec.row)):
        return None  # the row was not recorded (a partial run)
    made, own_notes = weights_records(spec, records, order_hook=order_hook)
    groups = summarise(group_records(made), n_boot=n_boot, seed=seed)
    by_name = {g.model: g for g in groups}
    ordered = [by_name[weight_row(w)] for w in spec.weights]
    return assemble(
        spec, ordered, weight_row(float(spec.reference)), (), suite=suite, protocol=protocol, n_boot=n_boot,
        notes=[*own_notes, *notes],
    )  # fmt: skip


# ----------------------------------------------------------------------------------------------
# Where the order hook gets its annotations
# ----------------------------------------------------------------------------------------------


def protocol_order_hook(protocol: str, annotations: str | Path, split: Any = None) -> OrderHook | None:
    """The protocol's ``extra_metrics`` hook bound to its test split under ``annotations`` (loaded
    when ``split`` is not given); None for a protocol without the hook."""
    from clip2video.data.annotations import load_split
    from clip2video.data.protocols import get_protocol

    proto = get_protocol(protocol)
    hook = proto.hook("extra_metrics")
    if hook is None:
        return None
    test = split if split is not None else load_split(proto, annotations, "test")

    def bound(sim: np.ndarray, caption_video: np.ndarray) -> Mapping[str, Any]:
        return hook(sim, caption_video, annotations, test)

    return bound


def find_annotations(records: Sequence[RunRecord], data_root: str | Path) -> Path | None:
    """The annotations folder under ``data_root`` (itself, ``*/annotations`` or ``*/*/annotations``)
    whose files have the content hashes the records' data fingerprint names; None if none does."""
    digests: Mapping[str, str] | None = None
    for rec in records:
        data = rec.fingerprint.get("data") if isinstance(rec.fingerprint, Mapping) else None
        if isinstance(data, Mapping) and isinstance(data.get("annotations"), Mapping) and data["annotations"]:
            digests = data["annotations"]
            break
    root = Path(data_root)
    if digests is None or not root.is_dir():
        return None
    candidates = [
        root / "annotations",
        *sorted(root.glob("*/annotations")),
        *sorted(root.glob("*/*/annotations")),
    ]
    for folder in candidates:
        if folder.is_dir() and all(
            (folder / name).is_file() and file_digest(folder / name) == digest
            for name, digest in digests.items()
        ):
            return folder
    return None


def order_hook_from_data(records: Sequence[RunRecord], data_root: str | Path | None) -> OrderHook | None:
    """``protocol_order_hook`` for the records' protocol and the annotations ``find_annotations``
    finds under ``data_root`` (None when there is no data root, no match or no hook)."""
    if data_root is None or not records:
        return None
    folder = find_annotations(records, data_root)
    if folder is None:
        return None
    return protocol_order_hook(records[0].protocol, folder)


__all__ = [
    "DEFAULT_WEIGHT",
    "OrderHook",
    "build_weights_table",
    "combine_parts",
    "find_annotations",
    "order_hook_from_data",
    "protocol_order_hook",
    "source_records",
    "trained_weight",
    "weight_row",
    "weights_records",
]
