"""Tables from run records: paper layout, intervals, published rows, significance, marked blocks."""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clip2video.cli import main as cli_main
from clip2video.engine.records import (
    RecordError,
    ranks_from_vectors,
    read_suite_info,
    read_suite_records,
    unlisted_rows,
    write_run_record,
    write_suite_info,
)
from clip2video.metrics import metrics_from_ranks
from clip2video.metrics.bootstrap import SeedRun, holm, minimum_detectable_difference, two_level_bootstrap
from clip2video.report.tables import (
    NO_PUBLISHED,
    PAPER_DIR,
    TableError,
    build_suite_table,
    load_published,
    regenerate,
    results_frame,
    suite_table,
)


def hand_metrics(t2v: np.ndarray, v2t: np.ndarray) -> dict[str, float]:
    """Metrics written out by hand (independent of the code under test)."""
    out = {}
    for d, r in (("t2v", t2v), ("v2t", v2t)):
        out.update(
            {
                f"{d}_R1": 100 * np.mean(r <= 1),
                f"{d}_R5": 100 * np.mean(r <= 5),
                f"{d}_R10": 100 * np.mean(r <= 10),
                f"{d}_MdR": float(np.median(r)),
                f"{d}_MnR": float(np.mean(r)),
            }
        )
    out["t2v_ties"], out["v2t_ties"] = 0.0, 0.0
    return out


def make_suite(runs, suite="demo", protocol="synthetic", n=300, extra_rows=(), seeds=(0,), stale=()):
    """meanp (baseline), same (= meanp's ranks), better (ranks shifted up), plus ``extra_rows``;
    one row per (model, seed) named ``<model>-s<seed>`` when there are several seeds."""
    rng = np.random.default_rng(0)
    base_t, base_v = rng.integers(1, 40, n).astype(float), rng.integers(1, 40, n).astype(float)
    rows = {
        "meanp": (base_t, base_v, {}),
        "same": (base_t.copy(), base_v.copy(), {}),
        "better": (np.maximum(1, base_t - 8), np.maximum(1, base_v - 8), {"order_acc": 71.5}),
    }
    rows.update({name: (base_t, base_v, extra) for name, extra in extra_rows})
    names = []
    for name, (t, v, extra) in rows.items():
        for seed in seeds:
            jitter = np.roll(t, seed) if seed else t  # seeds differ a little
            row = name if len(seeds) == 1 else f"{name}-s{seed}"
            row_extra = {"model": extra.get("model", name), "seed": seed, **extra}
            if "order_acc" in extra:
                row_extra["order_acc"] = extra["order_acc"] + seed
            write_run_record(
                runs / suite / row,
                name=row,
                metrics=hand_metrics(jitter, v),
                ranks_t2v=jitter,
                ranks_v2t=v,
                protocol=protocol,
                config={"eval": {"bootstrap": 200}},
                extra=row_extra,
                sim=np.zeros((2, 2)) if name == "meanp" else None,
            )
            names.append(row)
    for row in stale:  # an earlier run's row the suite no longer lists
        write_run_record(
            runs / suite / row,
            name=row,
            metrics=hand_metrics(base_t, base_v),
            ranks_t2v=base_t,
            ranks_v2t=base_v,
            protocol=protocol,
            extra={"model": row},
        )
    write_suite_info(runs, suite, protocol=protocol, rows=names, notes=["meanp ceiling: 50% by construction"])
    return rows


def test_records_round_trip_and_order(tmp_path):
    rows = make_suite(tmp_path, stale=["oldmodel"])
    records = read_suite_records(tmp_path, "demo")
    assert [r.name for r in records] == list(rows)  # the stale folder is not read
    assert unlisted_rows(tmp_path, "demo") == ["oldmodel"]
    assert records[2].extra["order_acc"] == 71.5
    np.testing.assert_array_equal(records[0].ranks_t2v, rows["meanp"][0])
    assert records[0].ranks_t2v.dtype == np.float64
    assert records[0].load_sim().shape == (2, 2)
    assert read_suite_info(tmp_path, "demo").notes == ["meanp ceiling: 50% by construction"]
    with pytest.raises(RecordError, match="nosuch"):
        read_suite_records(tmp_path, "nosuch")
    with pytest.raises(RecordError, match="row name"):
        write_run_record(tmp_path / "y", name="../y", metrics={}, ranks_t2v=[1.0], ranks_v2t=[1.0])
    with pytest.raises(RecordError, match="ranks"):
        write_run_record(tmp_path / "x", name="x", metrics={})


def test_stale_rows_are_left_out_and_named(tmp_path):
    make_suite(tmp_path / "runs", stale=["oldmodel"])
    table = suite_table(tmp_path / "runs", "demo")
    assert "oldmodel" not in table.main.index
    assert any("suite.json does not list" in f and "oldmodel" in f for f in table.footnotes)


def test_paper_layout_one_row_per_model_with_mean_std_and_interval(tmp_path):
    make_suite(tmp_path, seeds=(0, 1, 2))
    records = read_suite_records(tmp_path, "demo")
    table = build_suite_table(records, read_suite_info(tmp_path, "demo"), load_published())
    expected_cols = [f"{d} {m}" for d in ("t2v", "v2t") for m in ("R@1", "R@5", "R@10", "MdR", "MnR")]
    assert list(table.main.columns[:10]) == expected_cols
    assert list(table.main.index) == ["meanp", "same", "better"]
    meanp = [r for r in records if r.model == "meanp"]
    runs = [SeedRun(r.query_ranks(), r.caption_video) for r in meanp]
    summary = two_level_bootstrap(runs, n_boot=200, seed=0)
    per_seed = [r.metrics["t2v_R1"] for r in meanp]
    lo, hi = summary.interval("t2v_R1")
    want = f"{np.mean(per_seed):.1f} ± {np.std(per_seed, ddof=1):.1f} [{lo:.1f}, {hi:.1f}]"
    assert table.main.loc["meanp", "t2v R@1"] == want
    assert table.main.loc["meanp", "seeds"] == "0,1,2"
    order = table.main.loc["better", "order acc"]  # seed level only (no per-caption wins recorded)
    assert order.startswith("72.5 ± 1.0 [")
    lo_o, hi_o = (float(x) for x in order.split("[")[1].rstrip("]*").split(", "))
    assert 71.5 <= lo_o < 72.5 < hi_o <= 73.5
    assert (table.main["note"] == NO_PUBLISHED).all()
    assert "meanp ceiling: 50% by construction" in table.footnotes
    # per-seed values: one line per (row, seed, metric), the seed values behind the mean
    v = table.values
    seeds_r1 = v[(v.row == "meanp") & (v.metric == "t2v_R1") & (v.seed != "mean")]
    assert seeds_r1.value.tolist() == pytest.approx(per_seed) and seeds_r1.seed.tolist() == [0, 1, 2]
    mde = next(f for f in table.footnotes if f.startswith("Minimum detectable"))
    assert "3 seed(s)" in mde and "300 queries" in mde and "300 clusters" in mde
    # the single-seed per-query bootstrap is its own, labelled section
    assert list(table.per_query.index) == ["meanp (seed 0)", "same (seed 0)", "better (seed 0)"]
    assert any("Single-seed per-query bootstrap" in f for f in table.footnotes)


def test_a_row_run_once_shows_no_std_and_says_what_it_is(tmp_path):
    make_suite(tmp_path)
    table = build_suite_table(read_suite_records(tmp_path, "demo"), published=load_published())
    cell = table.main.loc["meanp", "t2v R@1"]
    assert "±" not in cell and "n/a" not in cell and cell.count("[") == 1
    assert table.main.loc["meanp", "seeds"] == "seed 0"
    # a recorded scalar of one seed has nothing to resample: no interval, no test
    assert table.main.loc["better", "order acc"] == "71.5"
    assert any("sqrt(2)" not in f and "paired difference" in f for f in table.footnotes)
    assert not any("n/a with one seed" in f for f in table.footnotes)


def test_an_evaluated_checkpoint_row_reads_1_checkpoint(tmp_path):
    rng = np.random.default_rng(1)
    t, v = rng.integers(1, 20, 60).astype(float), rng.integers(1, 20, 60).astype(float)
    for name, row in (("clip2video", {"checkpoint": "pytorch_model.bin.2", "trained": False}), ("meanp", {})):
        write_run_record(
            tmp_path / "ev" / name,
            name=name,
            metrics=hand_metrics(t, v),
            ranks_t2v=t,
            ranks_v2t=v,
            protocol="msvd",
            config={"eval": {"bootstrap": 50}, "row": row},
            extra={"model": name, "seed": 0, "trained": not row},
        )
    write_suite_info(tmp_path, "ev", protocol="msvd", rows=["clip2video", "meanp"])
    table = build_suite_table(read_suite_records(tmp_path, "ev"), published=load_published())
    assert table.main.loc["clip2video", "seeds"] == "1 checkpoint"
    assert table.main.loc["meanp", "seeds"] == "seed 0"
    assert not table.main.apply(lambda col: col.astype(str).str.contains("n/a \\[", regex=True)).any().any()


def test_significance_marks_after_holm_only(tmp_path):
    make_suite(tmp_path, seeds=(0, 1))
    table = build_suite_table(read_suite_records(tmp_path, "demo"), published=load_published())
    assert table.main.loc["better", "t2v R@1"].endswith("*")
    assert table.main.loc["better", "v2t MnR"].endswith("*")
    assert not any(str(c).endswith("*") for c in table.main.loc["same"])
    assert not any(str(c).endswith("*") for c in table.main.loc["meanp"])
    assert list(table.significance.index) == ["same", "better"]
    assert table.significance.loc["same", "t2v R@1"].startswith("+0.0 [+0.0, +0.0] p=1.000 (Holm p=1.000)")
    v = table.values[table.values.seed == "mean"]
    tested = v[v.p.notna()]
    assert len(tested) == 20  # 2 models x 10 metrics (meanp has no order accuracy to compare)
    np.testing.assert_allclose(np.sort(tested.p_holm.to_numpy()), np.sort(holm(tested.p.to_numpy())))
    assert (tested.significant == (tested.p_holm < 0.05) & (tested["delta_vs_meanp"] != 0)).all()
    assert any("Holm" in f and "20 comparisons" in f for f in table.footnotes)
    mde = next(f for f in table.footnotes if f.startswith("Minimum detectable"))
    se = v[(v.row == "better") | (v.row == "same")]
    se = se[se.metric == "t2v_R1"].delta_se.median()
    assert f"t2v R@1 {minimum_detectable_difference(se):.1f} points" in mde


def test_published_row_beside_reproduced_with_difference(tmp_path):
    make_suite(tmp_path, protocol="msrvtt-1k-a", extra_rows=[("clip2video", {})])
    records = read_suite_records(tmp_path, "demo")
    table = build_suite_table(records, published=load_published())
    idx = list(table.main.index)
    at = idx.index("clip2video")
    assert idx[at + 1 : at + 3] == ["clip2video (published)", "clip2video (ours - published)"]
    assert table.main.loc["clip2video (published)", "t2v R@1"] == "45.6"
    assert table.main.loc["clip2video (published)", "v2t MnR"] == "10.2"
    ours = 100 * np.mean(records[-1].ranks_t2v <= 1)
    assert table.main.loc["clip2video (ours - published)", "t2v R@1"] == f"{ours - 45.6:+.1f}"
    assert table.main.loc["meanp", "note"] == NO_PUBLISHED


def test_legacy_value_beside_published_and_footnote(tmp_path):
    legacy = {"t2v_R1": 45.0, "v2t_R1": 44.0}
    make_suite(tmp_path, protocol="msrvtt-1k-a", extra_rows=[("clip2video", {"legacy": legacy})])
    table = build_suite_table(read_suite_records(tmp_path, "demo"), published=load_published())
    assert table.main.loc["clip2video (legacy ties)", "t2v R@1"] == "45.0"
    assert table.main.loc["clip2video (legacy - published)", "t2v R@1"] == "-0.6"
    assert table.main.loc["clip2video (legacy - published)", "v2t R@1"] == "+0.5"
    assert any("differ from `legacy`" in f and "t2v_R1" in f for f in table.footnotes)


def test_postprocessed_rows_are_a_separate_marked_block(tmp_path):
    make_suite(tmp_path, extra_rows=[("meanp-dsl", {"postprocess": "dsl", "model": "meanp"})])
    table = build_suite_table(read_suite_records(tmp_path, "demo"), published=load_published())
    assert "meanp-dsl ‡" not in table.main.index
    assert list(table.postprocessed.index) == ["meanp-dsl ‡"]
    assert "meanp-dsl" not in table.significance.index
    assert any(f.startswith("‡") for f in table.footnotes)


def test_published_csv_holds_the_spec_numbers():
    pub = load_published(PAPER_DIR).set_index("protocol")
    assert set(pub.index) == {"msvd", "msrvtt-1k-a", "msrvtt-full", "vatex-1k5", "vatex-hgr"}
    assert pub.loc["msrvtt-full", "t2v_MnR"] == 45.5 and "45.4" in pub.loc["msrvtt-full", "note"]
    assert "released later, not in the paper" in pub.loc["vatex-hgr", "note"]
    assert pub.loc["vatex-1k5", "v2t_R10"] == 99.9 and pub.loc["msvd", "t2v_MnR"] == 9.6


def test_bad_published_csv_names_the_file(tmp_path):
    (tmp_path / "mine.csv").write_text("protocol,model,t2v_R@1\nmsvd,x,1\n")
    with pytest.raises(TableError, match=r"mine\.csv.*t2v_R@1"):
        load_published(tmp_path)


def test_cli_tables_writes_md_tex_csv(tmp_path):
    make_suite(tmp_path / "runs")
    out = tmp_path / "results"
    assert cli_main(["tables", "--runs", str(tmp_path / "runs"), "--out", str(out), "--no-plots"]) == 0
    md = (out / "demo" / "table.md").read_text()
    assert "| meanp" in md and "t2v R@1" in md and "Paired two-level bootstrap" in md
    assert r"\begin{tabular}" in (out / "demo" / "table.tex").read_text()
    csv = pd.read_csv(out / "demo" / "table.csv", index_col=0)
    assert list(csv.index) == ["meanp", "same", "better"]
    assert not (out / "demo" / "recall_at_k.png").exists()


def test_regenerate_without_runs_is_a_clear_error(tmp_path):
    with pytest.raises(TableError, match="no recorded suites"):
        regenerate(tmp_path / "runs", tmp_path / "results")


def test_results_frame_is_one_numeric_row_per_model(tmp_path):
    make_suite(tmp_path, seeds=(0, 1, 2), stale=["oldmodel"])
    frame = results_frame(tmp_path, "demo")
    assert list(frame.index) == ["meanp", "same", "better"]
    records = [r for r in read_suite_records(tmp_path, "demo") if r.model == "better"]
    assert frame.loc["better", "t2v_R1"] == pytest.approx(np.mean([r.metrics["t2v_R1"] for r in records]))
    assert (
        frame["n_seeds"].dtype.kind == "i"
        and frame.loc["better", "n_seeds"] == 3
        and frame.loc["better", "order_acc"] == pytest.approx(72.5)
    )
    assert frame.loc["meanp", "t2v_R1_lo"] <= frame.loc["meanp", "t2v_R1"] <= frame.loc["meanp", "t2v_R1_hi"]
    assert frame["t2v_R1_std"].dtype == float


def test_latex_escapes_specials():
    from clip2video.report.tables import latex_escape

    text = latex_escape("p<0.001 | a_b `meanp` 1.0 ± 0.2 ‡ §")
    assert text == (r"p\textless{}0.001 \textbar{} a\_b \texttt{meanp} 1.0 $\pm$ 0.2 \ddag{} \S{}")
    assert latex_escape("x`y") == r"x\textasciigrave{}y"


# ----------------------------------------------------------------------------------------------
# LaTeX in a real paper: pdflatex, a two-column article, every generated .tex
# ----------------------------------------------------------------------------------------------

FILLER = " ".join(["Each model is trained under three seeds and evaluated on the test split."] * 14)
LOG_PROBLEMS = re.compile(
    r"(Overfull \\[hv]box.*|Float too large.*|Float\(s\) lost|Label `[^']*' multiply defined"
    r"|There were multiply-defined labels|Reference `[^']*' on page \d+ undefined)"
)


def paper_suites(runs: Path) -> None:
    """Suites that give every kind of table: published + legacy + difference rows, post-processed
    rows, paired tests, the per-query section, two seeds; and a second suite in the same paper."""
    make_suite(
        runs,
        protocol="msrvtt-1k-a",
        seeds=(0, 1),
        extra_rows=[
            ("clip2video", {"legacy": {"t2v_R1": 45.0}}),
            ("meanp-dsl", {"postprocess": "dsl", "model": "meanp"}),
        ],
    )
    make_suite(runs, suite="ablation-2", protocol="synthetic", seeds=(0, 1, 2))


def compile_paper(
    folder: Path, inputs: list[Path], *, twocolumn: bool, wide: bool = False
) -> tuple[str, Path]:
    """pdflatex (twice, for the references) on an article that inputs ``inputs`` between body text;
    returns the log and the PDF."""
    folder.mkdir(parents=True, exist_ok=True)
    body = [
        "\\documentclass" + ("[twocolumn]" if twocolumn else "") + "{article}",
        "\\usepackage{booktabs}",
        "\\usepackage{graphicx}",
        *(["\\newcommand{\\ClipVideoTableEnv}{table*}"] if wide else []),
        "\\begin{document}",
        "\\section{Results}",
        FILLER,
    ]
    for path in inputs:
        body += ["", "\\input{" + str(path) + "}", "", FILLER, "", FILLER]
    body.append("\\end{document}")
    (folder / "paper.tex").write_text("\n".join(body) + "\n")
    for _ in range(2):
        run = subprocess.run(
            ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "paper.tex"],
            cwd=folder,
            capture_output=True,  # bytes: TeX's terminal output is not always UTF-8
            timeout=180,
        )
    log = (folder / "paper.log").read_text(errors="replace")
    assert run.returncode == 0, log[-3000:]
    return log, folder / "paper.pdf"


def word_boxes(pdf: Path) -> dict[int, np.ndarray]:
    """Every word's box (xmin, ymin, xmax, ymax) per page, from ``pdftotext -bbox``."""
    html = subprocess.run(
        ["pdftotext", "-bbox", str(pdf), "-"], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    pages: dict[int, np.ndarray] = {}
    for n, page in enumerate(html.split("<page ")[1:]):
        boxes = re.findall(r'xMin="([\d.]+)" yMin="([\d.]+)" xMax="([\d.]+)" yMax="([\d.]+)"', page)
        pages[n] = np.array(boxes, dtype=float).reshape(-1, 4)
    return pages


def overlapping_words(boxes: np.ndarray, min_share: float = 0.3) -> int:
    """Pairs of words whose boxes overlap by more than ``min_share`` of the smaller one (text drawn
    over text: a float over another float or over the body)."""
    if len(boxes) < 2:
        return 0
    x0, y0, x1, y1 = (boxes[:, i] for i in range(4))
    w = np.clip(np.minimum(x1[:, None], x1[None]) - np.maximum(x0[:, None], x0[None]), 0, None)
    h = np.clip(np.minimum(y1[:, None], y1[None]) - np.maximum(y0[:, None], y0[None]), 0, None)
    area = (x1 - x0) * (y1 - y0)
    share = w * h / np.maximum(np.minimum(area[:, None], area[None]), 1e-9)
    np.fill_diagonal(share, 0)
    return int(np.count_nonzero(np.triu(share > min_share)))


needs_pdflatex = pytest.mark.skipif(
    shutil.which("pdflatex") is None,
    reason="pdflatex is absent (Debian: texlive-latex-base texlive-latex-recommended)",
)


@needs_pdflatex
@pytest.mark.slow
@pytest.mark.parametrize("layout", ["twocolumn", "twocolumn-wide", "onecolumn"])
def test_every_generated_table_drops_into_a_paper(tmp_path, layout):
    """Every generated .tex of two suites, \\input into an article (two-column, two-column with
    page-wide table* floats, one-column): it compiles with no overfull box, no float too large or
    lost, one label per table and no undefined reference."""
    paper_suites(tmp_path / "runs")
    out = tmp_path / "results"
    regenerate(tmp_path / "runs", out, plots=False)
    inputs = sorted(out.rglob("*.tex"))
    assert [p.relative_to(out).as_posix() for p in inputs] == ["ablation-2/table.tex", "demo/table.tex"]
    log, pdf = compile_paper(
        tmp_path / "paper", inputs, twocolumn=layout.startswith("twocolumn"), wide=layout.endswith("wide")
    )
    assert pdf.stat().st_size > 1000
    assert not LOG_PROBLEMS.findall(log), LOG_PROBLEMS.findall(log)
    for path in inputs:
        tex = path.read_text()
        floats = tex.count("\\begin{\\ClipVideoTableEnv}")
        labels = re.findall(r"\\label\{([^}]+)\}", tex)
        assert floats >= 3 and len(labels) == floats == len(set(labels))  # one label per table
        assert "\\textwidth" not in tex and "\\resizebox{\\ifdim\\width>\\linewidth\\linewidth" in tex
        assert "itemize" not in tex  # the notes are table notes inside the floats, not body text
        captions = re.findall(r"\\caption\{(.*)\}\\label", tex)
        assert captions and all(c[0].isupper() for c in captions), captions
        assert not any("(protocol" in c for c in captions)  # words, not "suite x (protocol y): t2v"
    notes = (out / "demo" / "table.tex").read_text().split("\\end{\\ClipVideoTableEnv}")[0]
    assert (
        "\\end{tabular}}" in notes and "Minimum detectable difference" in notes.split("\\end{tabular}}")[-1]
    )


@needs_pdflatex
@pytest.mark.slow
@pytest.mark.skipif(shutil.which("pdftotext") is None, reason="pdftotext is absent (Debian: poppler-utils)")
def test_no_float_is_drawn_over_another_in_a_two_column_paper(tmp_path):
    """The words of the rendered two-column PDF (pdftotext -bbox) never overlap: no table is
    drawn over another table or over the text of the other column."""
    paper_suites(tmp_path / "runs")
    out = tmp_path / "results"
    regenerate(tmp_path / "runs", out, plots=False)
    _, pdf = compile_paper(tmp_path / "paper", sorted(out.rglob("*.tex")), twocolumn=True)
    pages = word_boxes(pdf)
    assert len(pages) >= 3 and sum(len(b) for b in pages.values()) > 1000
    assert {n: overlapping_words(b) for n, b in pages.items()} == dict.fromkeys(pages, 0)


def test_overlap_check_sees_a_table_drawn_over_the_other_column(tmp_path):
    """The overlap measure itself: two boxes over each other count, neighbours do not."""
    boxes = np.array([[0, 0, 10, 5], [11, 0, 20, 5], [5, 1, 15, 4], [0, 6, 10, 11]], dtype=float)
    assert overlapping_words(boxes) == 2  # the third box lies over the first and the second


def test_order_accuracy_from_per_caption_wins_is_cluster_resampled(tmp_path):
    rng = np.random.default_rng(3)
    cv = np.repeat(np.arange(50), 2)
    ranks = rng.integers(1, 20, 100).astype(float)
    names = []
    for model in ("meanp", "tdb"):
        for seed in (0, 1):
            wins = np.where(cv % 2 == 0, np.nan, 0.5) if model == "meanp" else rng.integers(0, 2, 100) * 1.0
            name = f"{model}-s{seed}"
            qr = ranks_from_vectors(ranks, ranks[::2])
            qr = dataclasses.replace(qr, single_caption=False)
            write_run_record(
                tmp_path / "s" / name,
                name=name,
                metrics=metrics_from_ranks(qr),
                ranks=qr,
                caption_video=cv,
                extra={"model": model, "seed": seed, "order_acc": 100 * float(np.nanmean(wins))},
                arrays={"order_wins": wins},
            )
            names.append(name)
    write_suite_info(tmp_path, "s", protocol="synthetic", rows=names)
    table = build_suite_table(read_suite_records(tmp_path, "s"), published=load_published(), n_boot=200)
    assert table.main.loc["meanp", "order acc"] == "50.0 ± 0.0 [50.0, 50.0]"
    cell = table.main.loc["tdb", "order acc"]
    lo, hi = (float(x) for x in cell.split("[")[1].rstrip("]*").split(", "))
    assert hi - lo > 5  # per-caption wins resampled with their videos, not a seed-only interval
    assert "[" in table.per_query.loc["tdb (seed 0)", "order acc"]
    assert not any("seed level only" in f for f in table.footnotes)
