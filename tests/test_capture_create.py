"""Creating capture files: never through a link, never over a file without being asked."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from ebpfwire.capture import CaptureReader, CaptureWriteError, CaptureWriter, HostInfo, writer

HOST = HostInfo(kernel_release="6.18.0-test", hostname="create", ncpus=2)
VICTIM = b"root:x:0:0:precious configuration\n"


def new_writer(target, **kw) -> CaptureWriter:
    return CaptureWriter(target, host=HOST, boot_time_ns=1, start_time_ns=2, **kw)


@pytest.fixture
def trap(tmp_path: Path) -> tuple[Path, Path]:
    """A world-writable directory holding a link, planted by another user, to a victim."""
    victim = tmp_path / "victim.conf"
    victim.write_bytes(VICTIM)
    victim.chmod(0o644)
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    link = shared / "trace.ewcap"
    link.symlink_to(victim)
    return link, victim


def unchanged(victim: Path) -> bool:
    return victim.read_bytes() == VICTIM and stat.S_IMODE(victim.stat().st_mode) == 0o644


def test_create_refuses_a_link_and_leaves_its_target_alone(trap):
    link, victim = trap
    with pytest.raises(FileExistsError, match="refusing to overwrite") as info:
        new_writer(link)
    assert info.value.filename == str(link)
    assert link.is_symlink() and unchanged(victim)


def test_append_refuses_a_link_and_leaves_its_target_alone(trap, tmp_path):
    link, victim = trap
    with pytest.raises(OSError, match="symbolic link") as info:
        CaptureWriter.append(link)
    assert info.value.errno == errno.ELOOP
    # even when the target is a valid capture
    real = tmp_path / "real.ewcap"
    with new_writer(real) as w:
        w.write_sample(0, b"one")
    before = real.read_bytes()
    link.unlink()
    link.symlink_to(real)
    with pytest.raises(OSError, match="symbolic link"):
        new_writer(link, mode="a")
    assert real.read_bytes() == before and unchanged(victim)


def test_dangling_link_is_refused_too(tmp_path):
    link = tmp_path / "dangling.ewcap"
    link.symlink_to(tmp_path / "would-be-created")
    with pytest.raises(FileExistsError):
        new_writer(link)
    assert not (tmp_path / "would-be-created").exists()


def test_replace_replaces_the_link_not_its_target(trap):
    link, victim = trap
    with new_writer(link, mode="replace") as w:
        w.write_sample(1, b"new capture")
    assert not link.is_symlink() and link.is_file()
    assert stat.S_IMODE(link.stat().st_mode) == 0o600
    assert unchanged(victim)
    with CaptureReader(link) as reader:
        assert [r.data for r in reader] == [b"new capture"]
    assert sorted(p.name for p in link.parent.iterdir()) == ["trace.ewcap"]  # no temp left


def test_existing_file_is_refused_in_create_mode(tmp_path):
    path = tmp_path / "old.ewcap"
    with new_writer(path) as w:
        w.write_sample(0, b"keep me")
    before = path.read_bytes()
    path.chmod(0o640)
    with pytest.raises(FileExistsError, match="already exists; refusing to overwrite it"):
        new_writer(path)
    assert path.read_bytes() == before and stat.S_IMODE(path.stat().st_mode) == 0o640


def test_replace_puts_the_header_in_place_at_construction(tmp_path):
    path = tmp_path / "r.ewcap"
    path.write_bytes(b"an old file")
    w = new_writer(path, mode="replace")
    assert CaptureReader(path).header.hostname == "create"  # visible before any record
    w.close()


def test_header_write_failure_leaves_nothing_behind(tmp_path, monkeypatch):
    def full(fd, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    path = tmp_path / "x.ewcap"
    old = tmp_path / "old.ewcap"
    old.write_bytes(b"previous")
    monkeypatch.setattr(writer.os, "write", full)
    with pytest.raises(CaptureWriteError, match="wrote 0 records"):
        new_writer(path)
    with pytest.raises(CaptureWriteError):
        new_writer(old, mode="replace")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.ewcap"]
    assert old.read_bytes() == b"previous"


def test_unknown_mode_names_the_valid_ones(tmp_path):
    with pytest.raises(ValueError, match="'x', 'replace', 'a'"):
        new_writer(tmp_path / "m.ewcap", mode="w")
