"""clip2video.fileio: names and paths that stay inside their folders, outputs replaced whole."""

from __future__ import annotations

import errno
import os
import stat

import pytest

import clip2video.fileio as fileio
from clip2video.errors import ConfigError, OutputError, UnsafePathError
from clip2video.fileio import atomic_files, atomic_write_text, confined, safe_name


@pytest.mark.parametrize("name", ["smoke", "eval-msvd-clip2video", "tdb-s0", "clip2video+dsl", "a.b_c", "K3"])
def test_safe_names_pass_unchanged(name):
    assert safe_name(name, "suite name") == name


@pytest.mark.parametrize(
    "name", ["../../ESCAPED", "/abs", "a/b", "..", ".", ".hidden", "", "-x", "a b", "a\\b", "x" * 201]
)
def test_unsafe_names_are_refused_naming_what(name):
    with pytest.raises(ConfigError, match=r"^eval --name .* cannot name a folder"):
        safe_name(name, "eval --name")


def test_confined_refuses_escapes_and_outside_links(tmp_path):
    root = tmp_path / "videos"
    root.mkdir()
    (root / "a.mp4").write_bytes(b"x")
    assert confined(root, "a.mp4", "video") == root / "a.mp4"
    assert confined(root, "sub/b.mp4", "video") == root / "sub" / "b.mp4"  # need not exist
    for bad in ("../x.mp4", "sub/../../x", "/etc/passwd", "a\\..\\b", "", "C:x", "a\x00b"):
        with pytest.raises(UnsafePathError, match="is not a relative path inside"):
            confined(root, bad, "video id")
    outside = tmp_path / "elsewhere.mp4"
    outside.write_bytes(b"y")
    (root / "link.mp4").symlink_to(outside)
    (root / "inner.mp4").symlink_to(root / "a.mp4")  # a link that stays inside is fine
    assert confined(root, "inner.mp4", "video") == root / "inner.mp4"
    with pytest.raises(
        UnsafePathError, match=r"resolves to .*elsewhere.mp4 through a symbolic link.*; pass X"
    ):
        confined(root, "link.mp4", "video 'link'", allow_hint="pass X")
    assert confined(root, "link.mp4", "video", allow_outside_links=True) == root / "link.mp4"
    linked_root = tmp_path / "linked-videos"
    linked_root.symlink_to(root, target_is_directory=True)  # the root itself may be a link
    assert confined(linked_root, "a.mp4", "video") == linked_root / "a.mp4"


def test_a_failed_set_replaces_none_and_names_the_file(tmp_path, monkeypatch):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("old a")
    b.write_text("old b")
    with pytest.raises(
        OutputError, match=f"cannot write {b}: No space left on device .ENOSPC.*none of the files"
    ):
        with atomic_files() as batch:
            batch.path(a).write_text("new a")
            batch.path(b)
            raise OSError(errno.ENOSPC, "No space left on device")
    assert (a.read_text(), b.read_text()) == ("old a", "old b")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]
    with atomic_files() as batch:
        batch.path(a).write_text("new a")
        batch.path(b).write_text("new b")
    assert (a.read_text(), b.read_text()) == ("new a", "new b")
    monkeypatch.setattr(fileio, "_fsync", lambda path: (_ for _ in ()).throw(OSError(errno.EIO, "I/O error")))
    with pytest.raises(OutputError, match=f"cannot write {a}: .*EIO.*the previous file is unchanged"):
        atomic_write_text(a, "newer")
    assert a.read_text() == "new a"


def test_written_files_get_the_mode_a_plain_open_would(tmp_path):
    fresh = atomic_write_text(tmp_path / "fresh.txt", "x")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o666 & ~umask
    kept = tmp_path / "kept.txt"
    kept.write_text("x")
    kept.chmod(0o640)
    atomic_write_text(kept, "y")
    assert stat.S_IMODE(kept.stat().st_mode) == 0o640
