"""The evaluation protocols: which split files, which captions, which frame settings.

A :class:`Protocol` is data only: the split files it reads (relative to the user's annotations
folder), the frame and text settings the published numbers used, and what the public split files
must look like (id counts and SHA-256 checksums), so that ``clip2video data verify`` can catch a
7k list passed as 9k or an edited list before it changes the numbers silently.

Annotations-folder layout, per protocol (one folder the user names; nothing ships with the
project). Each file is looked up flat first, then in the protocol's sub-folder (``msrvtt/``,
``msvd/`` or ``vatex/``), as the public release of split lists arranges them:

- ``msrvtt-1k-a``: ``MSRVTT_train.9k.csv``, ``MSRVTT_JSFUSION_test.csv``, ``MSRVTT_data.json``.
- ``msrvtt-1k-a-7k``: ``MSRVTT_train.7k.csv``, ``MSRVTT_JSFUSION_test.csv``, ``MSRVTT_data.json``.
- ``msrvtt-full``: ``MSRVTT_train.full.csv``, ``MSRVTT_test.full.csv`` (when absent, the test ids
  are ``video7010`` .. ``video9999``, which is what that file holds), ``MSRVTT_data.json``.
- ``msvd``: ``train_list.txt``, ``val_list.txt``, ``test_list.txt`` and ``raw-captions.json``
  (written once from the public ``raw-captions.pkl`` by ``clip2video data convert-msvd``).
- ``vatex-1k5``: ``train_list.txt``, ``test1k5_sec_list.txt``, ``vatex_data.json``. It has no
  validation split: the public ``val_list.txt`` shares 776 ids with ``test1k5_sec_list.txt``.
- ``vatex-hgr``: ``train_list.txt``, ``val_list.txt``, ``test_list.txt``, ``vatex_data.json``.
- ``synthetic``: ``train_list.txt``, ``val_list.txt``, ``test_list.txt``, ``synthetic_data.json``
  (VATEX schema), written by ``clip2video.data.synthetic.generate_synthetic``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any
from typing import Protocol as TypingProtocol

from clip2video.errors import ProtocolError, UnknownNameError
from clip2video.registry import Registry


class UnknownProtocolError(UnknownNameError, ProtocolError):
    """``Unknown protocol 'x'. Available: ...`` (a ProtocolError and a KeyError)."""


# A protocol's ``layout`` names the reader of its annotation files (``register_reader``; the
# built-in readers are registered by clip2video.data.annotations). Adding a protocol means one
# reader (or an existing layout), one ``register_protocol`` entry and a suite.
Layout = str
LAYOUTS: tuple[str, ...] = ("msrvtt-1k-a", "msrvtt-full", "msvd", "vatex", "synthetic")
SPLITS: tuple[str, ...] = ("train", "val", "test")

# MSR-VTT full split: the test ids when MSRVTT_test.full.csv is absent.
MSRVTT_FULL_TEST_RANGE: tuple[int, int] = (7010, 10000)

# SHA-256 of the public split files, byte for byte (what `sha256sum FILE` prints).
PUBLIC_SPLIT_SHA256: dict[str, dict[str, str]] = {
    "msrvtt": {
        "MSRVTT_JSFUSION_test.csv": "e61144b312c8a2fc2126f96504c981f8c23c05b3ba9655a56e2af50ac8a4b16a",
        "MSRVTT_test.full.csv": "2cfa5acaabad7319f7e8c3639e0986b8f8c432399b545a97cb7531608a976b42",
        "MSRVTT_train.7k.csv": "ca0d04c34310168b620c90c67eaec702b37398943965f5e1f9f44af8f193da7d",
        "MSRVTT_train.9k.csv": "0a7ece2418e1f7ac5680555a04ddfef8950293ac3c4bdd6584fb0fa6cc0ff7d3",
        "MSRVTT_train.full.csv": "17f7ccf211d3d679d42425454ae12e9479abf681beb3865d561a2875ef2c2578",
    },
    "msvd": {
        "test_list.txt": "95eacd1fddb1d88cd7144267913ef02d0ecb8cc94a88bc484035433a2d8f9c7a",
        "train_list.txt": "223a750f33fcec3c5fcb1894123564e67286edd1e9f9473be97930340027d659",
        "val_list.txt": "0e6b31c93757d25115f04e1974bcdc7962b3fce17832b397f6e83e9ff096881b",
    },
    "vatex": {
        "test1k5_sec_list.txt": "20f22ab90daa192f17c18672bf4afc36f6a62c8edf2e55d0dce7f57fb11111dc",
        "test_list.txt": "652fd9bbfe53d53935b292b0e4127bc8e41cae6846b3c9faa4f502d96f160a42",
        "train_list.txt": "4434a6863540f638cd5c62b7497f9ac13ea5ab84da72b7928e507ee0c5f46f22",
        "val_list.txt": "223d6d6b0b8c88f093ac1942e1165ae6d21a982362252ba574059e1a27083066",
    },
}

# SHA-256 of the same files' content (``content_sha256``: lines right-stripped, blank lines
# dropped, joined with "\n" plus a final "\n"): equal when only line endings or a final newline
# differ (the public MSVD train/val lists lack their final newline).
PUBLIC_SPLIT_CONTENT_SHA256: dict[str, dict[str, str]] = {
    "msrvtt": dict(PUBLIC_SPLIT_SHA256["msrvtt"]),
    "msvd": {
        "test_list.txt": "95eacd1fddb1d88cd7144267913ef02d0ecb8cc94a88bc484035433a2d8f9c7a",
        "train_list.txt": "abfb8ab5660b464cf547d63a37a369920ff92c5f547af80f07aedd709df335d3",
        "val_list.txt": "9527cf1ef6c8fe2fb1ecfda0e1856acc563fecef5ff0a409b5d908b65c1e6ed4",
    },
    "vatex": dict(PUBLIC_SPLIT_SHA256["vatex"]),
}

# Number of ids (rows, for MSRVTT_JSFUSION_test.csv) in each public split file.
PUBLIC_SPLIT_COUNTS: dict[str, dict[str, int]] = {
    "msrvtt": {
        "MSRVTT_JSFUSION_test.csv": 1000,
        "MSRVTT_test.full.csv": 2990,
        "MSRVTT_train.7k.csv": 7010,
        "MSRVTT_train.9k.csv": 9000,
        "MSRVTT_train.full.csv": 6513,
    },
    "msvd": {"test_list.txt": 670, "train_list.txt": 1200, "val_list.txt": 100},
    "vatex": {
        "test1k5_sec_list.txt": 1500,
        "test_list.txt": 1500,
        "train_list.txt": 25991,
        "val_list.txt": 1500,
    },
}


def _frozen(mapping: dict) -> MappingProxyType:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True)
class Protocol:
    """One evaluation protocol: split files, captions file, frame/text settings, expected files.

    File names are relative to the annotations folder (see the module docstring for each
    protocol's layout). ``expected_*`` are ``None`` where the protocol does not fix the number.
    ``split_sha256`` / ``split_content_sha256`` / ``split_counts`` map a split file's name to its
    public checksum (bytes / normalised content) and its number of ids (rows for a pairs csv).

    ``extraction_fps``, ``stride``, ``max_frames``, ``image_size``, ``max_words`` and ``center_k``
    are the published settings: the defaults of every suite on this protocol (see
    :meth:`settings`). ``multi_caption`` says whether a test video may have several captions;
    the metrics read the caption-to-video map itself, so it decides no number: with ``False``,
    ``data verify`` requires exactly one caption per test video (MSR-VTT 1k-A's pairs).
    """

    name: str
    layout: Layout
    stride: int
    center_k: int
    train_split: str
    test_split: str
    captions_file: str
    val_split: str | None = None
    extraction_fps: float = 5.0
    max_frames: int = 12
    max_words: int = 32
    image_size: int = 224
    multi_caption: bool = True
    expected_train_videos: int | None = None
    expected_val_videos: int | None = None
    expected_test_videos: int | None = None
    expected_test_captions: int | None = None
    captions_per_test_video: int | None = None
    split_sha256: MappingProxyType = field(default_factory=lambda: _frozen({}), hash=False)
    split_content_sha256: MappingProxyType = field(default_factory=lambda: _frozen({}), hash=False)
    split_counts: MappingProxyType = field(default_factory=lambda: _frozen({}), hash=False)
    subfolder: str | None = None
    description: str = ""
    # Module holding the protocol's optional hooks: ``prepare_data(settings, root) -> folder`` (settings:
    # the typed clip2video.settings.Settings, also a read-only mapping), ``data_folder`` and
    # ``data_ready`` (same arguments), ``extra_metrics(sim, caption_video, annotations_dir, split) -> dict`` and ``notes()``.
    hooks: str | None = None

    def __post_init__(self) -> None:
        if not self.layout:
            raise ProtocolError(f"protocol {self.name!r}: layout must name its annotation reader")
        for attr in ("split_sha256", "split_content_sha256", "split_counts"):
            value = getattr(self, attr)
            if not isinstance(value, MappingProxyType):
                object.__setattr__(self, attr, _frozen(value))
        if self.stride < 1 or self.max_frames < 1 or self.center_k < 1:
            raise ProtocolError(f"protocol {self.name!r}: stride, max_frames and center_k must be >= 1")
        if not self.multi_caption and self.captions_per_test_video not in (None, 1):
            raise ProtocolError(
                f"protocol {self.name!r}: multi_caption=False but captions_per_test_video = "
                f"{self.captions_per_test_video}"
            )

    def hook(self, name: str) -> Any:
        """The protocol's hook ``name`` from its ``hooks`` module, or None."""
        if self.hooks is None:
            return None
        import importlib

        return getattr(importlib.import_module(self.hooks), name, None)

    def split_file(self, split: str) -> str | None:
        """The file name of ``split`` ("train" | "val" | "test"); ``None`` for a missing val split."""
        if split not in SPLITS:
            raise ProtocolError(f"unknown split {split!r} for protocol {self.name!r}; use one of {SPLITS}")
        return {"train": self.train_split, "val": self.val_split, "test": self.test_split}[split]

    def split_files(self) -> list[str]:
        """The protocol's split file names, train / val / test order, without repeats."""
        names = [self.split_file(s) for s in SPLITS]
        return [n for n in dict.fromkeys(names) if n is not None]

    def expected_videos(self, split: str) -> int | None:
        """The number of videos ``split`` must hold, where fixed."""
        return {
            "train": self.expected_train_videos,
            "val": self.expected_val_videos,
            "test": self.expected_test_videos,
        }[split]

    def settings(self) -> dict[str, dict[str, Any]]:
        """The protocol's defaults for a suite, keyed as in a suite file.

        A suite's resolved settings are ``defaults.toml`` < these < the suite file < ``--set``
        (``clip2video.experiments.suite``); the engine's default frame sampler and tokenizer (no
        suite) use them too. ``[frames]`` are :class:`~clip2video.data.frames.FrameSampler`'s
        keyword arguments, ``[text] max_words`` the tokenizer's, ``[model] center_k`` TAB's K.
        """
        return {
            "frames": {
                "extraction_fps": float(self.extraction_fps),
                "stride": int(self.stride),
                "max_frames": int(self.max_frames),
                "image_size": int(self.image_size),
            },
            "text": {"max_words": int(self.max_words)},
            "model": {"center_k": int(self.center_k)},
        }


def _adopt_protocol(registry: Registry[Protocol], name: str, obj: Any) -> None:
    """An entry point naming a Protocol registers it; one naming a callable is called once (a
    protocol factory) and its Protocol registered."""
    if callable(obj) and not isinstance(obj, Protocol):
        obj = obj()
    if isinstance(obj, Protocol):
        register_protocol(obj)


PROTOCOLS: Registry[Protocol] = Registry(
    "protocol",
    "protocols",
    unknown_error=UnknownProtocolError,
    adopt=_adopt_protocol,
    name_of=lambda p: p.name,
)


def register_protocol(protocol: Protocol, *, overwrite: bool = False) -> Protocol:
    """Add ``protocol`` to the registry under its name; replacing another entry of that name needs
    ``overwrite=True`` (else ``DuplicateNameError``)."""
    return PROTOCOLS.register(protocol, overwrite=overwrite)


def get_protocol(name: str | Protocol) -> Protocol:
    """The registered protocol ``name`` (a Protocol passes through)."""
    if isinstance(name, Protocol):
        return name
    return PROTOCOLS.get(name)


def list_protocols() -> list[str]:
    """Names of the registered protocols, sorted (installed plugins included)."""
    return PROTOCOLS.list()


class SplitReader(TypingProtocol):
    """Reads one split of a protocol: ``reader(protocol, annotations_dir, split, *, captions_path=None,
    allow_pickle=False) -> SplitData`` (clip2video.data.annotations.SplitData)."""

    def __call__(
        self,
        protocol: Protocol,
        annotations_dir: str | Path,
        split: str,
        *,
        captions_path: str | Path | None = None,
        allow_pickle: bool = False,
    ) -> Any: ...


# A plugin's protocol module usually registers its reader when imported (``clip2video.protocols``);
# an entry point of ``clip2video.readers`` names a reader function registered under the entry's name
# (the layout).
READERS: Registry[SplitReader] = Registry("reader", "readers", unknown_error=UnknownProtocolError)


def register_reader(layout: str, reader: SplitReader, *, overwrite: bool = False) -> SplitReader:
    """Register the reader that protocols with ``layout`` use; replacing another needs ``overwrite=True``."""
    return READERS.register(reader, name=layout, overwrite=overwrite)


def list_readers() -> list[str]:
    """The layouts that have a registered reader (the built-ins once clip2video.data.annotations is imported)."""
    return READERS.list()


def get_reader(layout: str, protocol_name: str = "") -> SplitReader:
    """The reader registered for ``layout``: ``Unknown reader 'x'. Available: ...`` otherwise."""
    what = f"reader (layout of protocol {protocol_name!r})" if protocol_name else "reader"
    return READERS.get(layout, kind=what)


def data_folders(
    protocol: Protocol | str, data_root: str | Path, *, annotations: str = "", videos: str = ""
) -> tuple[Path, Path]:
    """(annotations, videos) folders of ``protocol`` under ``data_root``.

    ``annotations`` / ``videos`` (a suite's ``data.*``) win when set (relative to ``data_root``).
    Otherwise the protocol's own folder ``DATA/<protocol>/`` is used when it exists, else the
    dataset's folder shared by its protocols: ``DATA/msrvtt/`` (msrvtt-1k-a, msrvtt-1k-a-7k,
    msrvtt-full), ``DATA/msvd/``, ``DATA/vatex/`` (vatex-1k5, vatex-hgr), each holding
    ``annotations/`` and ``videos/``.
    """
    proto = get_protocol(protocol)
    root = Path(data_root)
    base = root / proto.name
    if not base.is_dir() and proto.subfolder and (root / proto.subfolder).is_dir():
        base = root / proto.subfolder

    def pick(value: str, default: Path) -> Path:
        if not value:
            return default
        path = Path(value)
        return path if path.is_absolute() else root / path

    return pick(annotations, base / "annotations"), pick(videos, base / "videos")


def _public(group: str, *files: str) -> dict[str, MappingProxyType]:
    return {
        "split_sha256": _frozen({f: PUBLIC_SPLIT_SHA256[group][f] for f in files}),
        "split_content_sha256": _frozen({f: PUBLIC_SPLIT_CONTENT_SHA256[group][f] for f in files}),
        "split_counts": _frozen({f: PUBLIC_SPLIT_COUNTS[group][f] for f in files}),
    }


def _msrvtt_1k_a(name: str, train_csv: str, train_ids: int, note: str) -> Protocol:
    return Protocol(
        name=name,
        layout="msrvtt-1k-a",
        stride=2,
        center_k=5,
        train_split=train_csv,
        test_split="MSRVTT_JSFUSION_test.csv",
        captions_file="MSRVTT_data.json",
        multi_caption=False,
        expected_train_videos=train_ids,
        expected_test_videos=1000,
        expected_test_captions=1000,
        captions_per_test_video=1,
        subfolder="msrvtt",
        description=f"MSR-VTT 1k-A (JSFusion test pairs), {note}",
        **_public("msrvtt", train_csv, "MSRVTT_JSFUSION_test.csv"),
    )


def _vatex(name: str, test_list: str, val_list: str | None, note: str) -> Protocol:
    files = ["train_list.txt", test_list] + ([val_list] if val_list else [])
    return Protocol(
        name=name,
        layout="vatex",
        stride=1,
        center_k=7,
        train_split="train_list.txt",
        val_split=val_list,
        test_split=test_list,
        captions_file="vatex_data.json",
        expected_train_videos=25991,
        expected_val_videos=1500 if val_list else None,
        expected_test_videos=1500,
        expected_test_captions=15000,
        captions_per_test_video=10,
        subfolder="vatex",
        description=note,
        **_public("vatex", *files),
    )


BUILTIN_PROTOCOLS: tuple[Protocol, ...] = (
    _msrvtt_1k_a("msrvtt-1k-a", "MSRVTT_train.9k.csv", 9000, "train on the 9k list (180k pairs)"),
    _msrvtt_1k_a("msrvtt-1k-a-7k", "MSRVTT_train.7k.csv", 7010, "train on the 7k list"),
    Protocol(
        name="msrvtt-full",
        layout="msrvtt-full",
        stride=2,
        center_k=5,
        train_split="MSRVTT_train.full.csv",
        test_split="MSRVTT_test.full.csv",
        captions_file="MSRVTT_data.json",
        expected_train_videos=6513,
        expected_test_videos=2990,
        subfolder="msrvtt",
        description="MSR-VTT full split: test ids video7010..video9999 with all their captions",
        **_public("msrvtt", "MSRVTT_train.full.csv", "MSRVTT_test.full.csv"),
    ),
    Protocol(
        name="msvd",
        layout="msvd",
        stride=1,
        center_k=5,
        train_split="train_list.txt",
        val_split="val_list.txt",
        test_split="test_list.txt",
        captions_file="raw-captions.json",
        expected_train_videos=1200,
        expected_val_videos=100,
        expected_test_videos=670,
        subfolder="msvd",
        description="MSVD 1,200 / 100 / 670 with all captions (from raw-captions.pkl via convert-msvd)",
        **_public("msvd", "train_list.txt", "val_list.txt", "test_list.txt"),
    ),
    _vatex("vatex-1k5", "test1k5_sec_list.txt", None, "VATEX English, the paper's random 1.5k test split"),
    _vatex("vatex-hgr", "test_list.txt", "val_list.txt", "VATEX English, HGR's val / test split"),
    Protocol(
        name="synthetic",
        layout="synthetic",
        stride=1,
        center_k=5,
        image_size=32,
        train_split="train_list.txt",
        val_split="val_list.txt",
        test_split="test_list.txt",
        captions_file="synthetic_data.json",
        description="generated tiny videos and captions (clip2video.data.synthetic), VATEX file schema",
        hooks="clip2video.data.synthetic",
    ),
)

for _p in BUILTIN_PROTOCOLS:
    register_protocol(_p)
