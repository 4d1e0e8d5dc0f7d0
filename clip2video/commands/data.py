"""``clip2video data ...``: verify a protocol's files and videos; convert MSVD's captions pickle."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``data`` verb and its sub-verbs (``verify``, ``convert-msvd``, ``protocols``)."""
    from clip2video.data.protocols import list_protocols

    data = subparsers.add_parser("data", help="check annotations and videos; convert annotation files")
    verbs = data.add_subparsers(dest="data_command", metavar="VERB")
    data.set_defaults(func=lambda args: _help(data))

    verify = verbs.add_parser(
        "verify",
        help="count a protocol's videos and captions, check its split files and open every test video",
        description=(
            "Print the numbers of train/val/test videos and captions the protocol will use, compare "
            "each split file with the public one (id count, sha256), and find and open every test "
            "video. Exits 1 listing every missing or unreadable id unless --allow-missing."
        ),
    )
    verify.add_argument("--protocol", required=True, choices=list_protocols())
    verify.add_argument("--annotations", required=True, type=Path, help="folder with the split/caption files")
    verify.add_argument("--videos", required=True, type=Path, help="folder with <id>.mp4 ... or <id>/ frames")
    verify.add_argument(
        "--allow-missing",
        action="store_true",
        help="drop missing/unreadable test videos instead of failing (changes the protocol; recorded)",
    )
    verify.add_argument("--no-open", action="store_true", help="only check that each test video exists")
    verify.add_argument("--captions", type=Path, help="captions file to use instead of the protocol's")
    verify.add_argument(
        "--allow-pickle",
        action="store_true",
        help="let --captions name MSVD's raw-captions.pkl (read by a restricted unpickler: dicts, lists, strings)",
    )
    verify.add_argument(
        "--allow-outside-links",
        action="store_true",
        help="accept video files that are symbolic links to a place outside --videos (refused by default)",
    )
    verify.add_argument("--json", type=Path, help="also write the report as JSON here")
    verify.add_argument("--no-progress", action="store_true", help="no progress bar")
    verify.set_defaults(func=_verify)

    convert = verbs.add_parser(
        "convert-msvd",
        help="turn MSVD's raw-captions.pkl into JSON {video_id: [caption, ...]} (once)",
        description=(
            "Load raw-captions.pkl ({id: [[token, ...], ...]}) and write {id: ['caption text', ...]} "
            "with tokens joined by single spaces. The pickle is read by a restricted unpickler that loads "
            "only dicts, lists and strings: a pickle that would run code is refused."
        ),
    )
    convert.add_argument("--pickle", required=True, type=Path, help="path to raw-captions.pkl")
    convert.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON file to write (default: raw-captions.json beside the pickle, the file the msvd protocol reads)",
    )
    convert.set_defaults(func=_convert_msvd)

    listing = verbs.add_parser("protocols", help="list the registered protocols and their settings")
    listing.set_defaults(func=_protocols)

    syn = verbs.add_parser(
        "synthetic",
        help="generate the offline synthetic protocol (real video files + VATEX-style annotations)",
        description=(
            "Write ROOT/annotations/{train,val,test}_list.txt, synthetic_data.json, synthetic_meta.json and "
            "ROOT/videos/<id>.mp4 deterministically from --seed. Every test clip's exact time reversal is "
            "in the test gallery, with captions that differ only in the order/direction word."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    syn.add_argument("root", type=Path, help="output folder")
    syn.add_argument("--seed", type=int, default=0)
    syn.add_argument("--num-train", type=int, default=600)
    syn.add_argument("--num-val", type=int, default=60)
    syn.add_argument("--num-test-pairs", type=int, default=60)
    syn.add_argument("--captions-per-video", type=int, default=2)
    syn.add_argument("--size", type=int, nargs=2, default=(32, 32), metavar=("H", "W"))
    syn.add_argument("--overwrite", action="store_true", help="replace a different dataset in ROOT")
    syn.set_defaults(func=_synthetic)


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _verify(args: argparse.Namespace) -> int:
    from clip2video.data.verify import format_report, verify

    report = verify(
        args.protocol,
        args.annotations,
        args.videos,
        allow_missing=args.allow_missing,
        open_videos=not args.no_open,
        progress=False if args.no_progress else None,  # None: bars only on a terminal
        captions_path=args.captions,
        allow_pickle=args.allow_pickle,
        allow_outside_links=args.allow_outside_links,
    )
    print(format_report(report))
    if args.json:
        from clip2video.fileio import atomic_write_text

        atomic_write_text(args.json, json.dumps(report.to_dict(), indent=2))
    if not report.ok:
        print(f"clip2video: error: {verify_failure(report)}", file=sys.stderr)
    return 0 if report.ok else 1


def verify_failure(report: Any) -> str:
    """One line for a failed ``verify``: the first annotation error, else the videos, else the files."""
    more = " (the report above lists every problem)"
    if report.errors:
        return report.errors[0] + more
    if report.problem_ids and not report.allow_missing:
        return (
            f"{len(report.problem_ids)} test video(s) missing or unreadable: "
            + " ".join(report.problem_ids)
            + "; --allow-missing drops them (changes the protocol; recorded)"
        )
    bad = [f"{c.file} ({c.status})" for c in report.split_checks if not c.ok]
    if bad:
        return f"split files differ from the public {report.protocol} files: {', '.join(bad)}" + more
    return "; ".join(report.count_problems) + more


def _convert_msvd(args: argparse.Namespace) -> int:
    from clip2video.data.annotations import convert_msvd_pickle, msvd_json_path

    out = args.out or msvd_json_path(args.pickle)
    count = convert_msvd_pickle(args.pickle, out)
    print(f"wrote captions of {count:,} videos to {out}")
    return 0


def _protocols(args: argparse.Namespace) -> int:
    from clip2video.data.protocols import get_protocol, list_protocols

    for name in list_protocols():
        p = get_protocol(name)
        print(
            f"{name:<15} stride={p.stride} K={p.center_k} fps={p.extraction_fps:g} frames={p.max_frames} "
            f"train={p.train_split} val={p.val_split or '-'} test={p.test_split} captions={p.captions_file}"
        )
    return 0


def _synthetic(args: argparse.Namespace) -> int:
    from clip2video.data.synthetic import generate_synthetic

    root = generate_synthetic(
        args.root,
        seed=args.seed,
        num_train=args.num_train,
        num_val=args.num_val,
        num_test_pairs=args.num_test_pairs,
        captions_per_video=args.captions_per_video,
        size=tuple(args.size),
        overwrite=args.overwrite,
    )
    print(f"synthetic dataset (seed {args.seed}) in {root}: annotations/ and videos/")
    return 0
