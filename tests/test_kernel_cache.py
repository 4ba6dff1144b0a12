"""The on-disk cache of kernel facts (kernel/cache.py) as the monitor's config uses it: a hit
skips the BTF parse, anything else (another kernel, a corrupt or forged entry, a symlink, a
directory not ours, one we cannot write) is computed afresh, never trusted and never fatal."""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
from pathlib import Path

import pytest

from ebpfwire.kernel import cache, config
from ebpfwire.kernel.btf import VMLINUX_PATH, Btf

pytestmark = pytest.mark.skipif(not os.path.exists(VMLINUX_PATH),
                                reason=f"{VMLINUX_PATH} absent: no kernel BTF to cache from")
NOBODY = 65534
ENTRY = f"{config.CACHE_NAME}.json"


@pytest.fixture(scope="module")
def truth() -> dict[str, int]:
    return config.kernel_offsets(Btf.vmlinux())


@pytest.fixture
def btf(tmp_path: Path) -> Path:
    """A copy of the kernel's BTF, so a test can make another kernel's of it."""
    path = tmp_path / "vmlinux"
    shutil.copyfile(VMLINUX_PATH, path)
    return path


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One item per BTF parse the config does (a miss)."""
    calls: list[int] = []
    real = config.kernel_offsets

    def counted(btf: Btf) -> dict[str, int]:
        calls.append(1)
        return real(btf)

    monkeypatch.setattr(config, "kernel_offsets", counted)
    return calls


def offsets(btf: Path, where: Path) -> dict[str, int]:
    return config.cached_kernel_offsets(str(btf), where)


def test_hit_skips_the_parse(btf: Path, tmp_path: Path, parses: list[int],
                             truth: dict[str, int]) -> None:
    where = tmp_path / "cache"
    assert offsets(btf, where) == truth
    assert len(parses) == 1
    assert stat.S_IMODE(where.stat().st_mode) == 0o700
    assert stat.S_IMODE((where / ENTRY).stat().st_mode) == 0o600
    assert [p.name for p in where.iterdir()] == [ENTRY]  # no temp file left behind
    assert offsets(btf, where) == truth
    assert len(parses) == 1  # the second answer came from the cache


def test_another_kernel_is_a_miss(btf: Path, tmp_path: Path, parses: list[int],
                                  truth: dict[str, int]) -> None:
    where = tmp_path / "cache"
    offsets(btf, where)
    other = tmp_path / "other"
    other.write_bytes(btf.read_bytes() + b"\0")  # another build: other content, same types
    assert offsets(other, where) == truth
    assert len(parses) == 2
    assert offsets(other, where) == truth
    assert len(parses) == 2  # rewritten for the new kernel
    offsets(btf, where)
    assert len(parses) == 3  # one entry: the first kernel's answer was replaced


def test_another_question_is_a_miss(btf: Path, tmp_path: Path, parses: list[int],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A config that asks for other offsets does not take the old answer."""
    where = tmp_path / "cache"
    offsets(btf, where)
    monkeypatch.setitem(config._OFFSETS, "task_tgid", ("task_struct", "pid"))
    assert offsets(btf, where)["task_tgid"] == Btf.vmlinux().member_offset("task_struct", "pid")
    assert len(parses) == 2


def _valid_entry(btf: Path, where: Path) -> dict:
    offsets(btf, where)
    return json.loads((where / ENTRY).read_text())


def _forged(entry: dict) -> dict:
    """``entry`` with every offset off by 8: what a test must never get back."""
    return {**entry, "value": {k: v + 8 for k, v in entry["value"].items()}}


CORRUPT = {
    "not JSON": lambda e: b"{\"format\": 1, \"key\"",
    "not UTF-8": lambda e: b"\xff\xfe\x00garbage",
    "nested past the parser": lambda e: b"[" * 200_000,
    "empty": lambda e: b"",
    "a list": lambda e: json.dumps([e]).encode(),
    "another format": lambda e: json.dumps({**_forged(e), "format": 2}).encode(),
    "another key": lambda e: json.dumps({**_forged(e), "key": "0" * 64}).encode(),
    "an extra member": lambda e: json.dumps({**_forged(e), "why": 1}).encode(),
    "a field missing": lambda e: json.dumps(
        {**e, "value": {k: v for k, v in e["value"].items() if k != "task_tgid"}}).encode(),
    "an extra field": lambda e: json.dumps(
        {**e, "value": {**e["value"], "task_pid": 4}}).encode(),
    "a string offset": lambda e: json.dumps(
        {**e, "value": {**e["value"], "task_tgid": "1268"}}).encode(),
    "a bool offset": lambda e: json.dumps(
        {**e, "value": {**e["value"], "upid_nr": False}}).encode(),
    "a float offset": lambda e: json.dumps(
        {**e, "value": {**e["value"], "upid_nr": 0.0}}).encode(),
    "a negative offset": lambda e: json.dumps(
        {**e, "value": {**e["value"], "task_tgid": -8}}).encode(),
    "an offset past 32 bits": lambda e: json.dumps(
        {**e, "value": {**e["value"], "task_tgid": 1 << 32}}).encode(),
    "past the size bound": lambda e: json.dumps(_forged(e)).encode()
    + b" " * cache.MAX_ENTRY,
}


@pytest.mark.parametrize("how", CORRUPT)
def test_corrupt_entry_is_ignored_and_rewritten(btf: Path, tmp_path: Path, how: str,
                                                parses: list[int],
                                                truth: dict[str, int]) -> None:
    where = tmp_path / "cache"
    entry = _valid_entry(btf, where)
    (where / ENTRY).write_bytes(CORRUPT[how](entry))
    assert offsets(btf, where) == truth
    assert len(parses) == 2
    assert json.loads((where / ENTRY).read_text()) == entry  # rewritten whole
    offsets(btf, where)
    assert len(parses) == 2


def test_forged_entry_with_the_right_key_is_what_the_cache_trusts(
        btf: Path, tmp_path: Path, parses: list[int]) -> None:
    """The shape is checked, not the values: what guards them is that only we can write
    the directory (the tests below)."""
    where = tmp_path / "cache"
    forged = _forged(_valid_entry(btf, where))
    (where / ENTRY).write_text(json.dumps(forged))
    assert offsets(btf, where) == forged["value"]
    assert len(parses) == 1


def test_symlinked_entry_is_not_followed(btf: Path, tmp_path: Path, parses: list[int],
                                         truth: dict[str, int]) -> None:
    where = tmp_path / "cache"
    entry = _valid_entry(btf, where)
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text(json.dumps(_forged(entry)))
    (where / ENTRY).unlink()
    (where / ENTRY).symlink_to(elsewhere)
    assert offsets(btf, where) == truth  # the forged entry behind the link was not read
    assert len(parses) == 2
    assert json.loads(elsewhere.read_text()) == _forged(entry)  # nor written through
    assert not (where / ENTRY).is_symlink()  # the link itself replaced by an entry
    assert json.loads((where / ENTRY).read_text()) == entry


def test_symlinked_directory_is_refused(btf: Path, tmp_path: Path, parses: list[int],
                                        truth: dict[str, int]) -> None:
    real = tmp_path / "real"
    entry = _valid_entry(btf, real)
    (real / ENTRY).write_text(json.dumps(_forged(entry)))
    link = tmp_path / "link"
    link.symlink_to(real)
    assert offsets(btf, link) == truth
    assert offsets(btf, link) == truth
    assert len(parses) == 3  # neither read nor written through the link
    assert json.loads((real / ENTRY).read_text()) == _forged(entry)


@pytest.mark.parametrize("how", ["group-writable", "world-writable", "not ours"])
def test_directory_others_can_write_is_refused(btf: Path, tmp_path: Path, how: str,
                                               parses: list[int],
                                               truth: dict[str, int]) -> None:
    where = tmp_path / "cache"
    entry = _valid_entry(btf, where)
    (where / ENTRY).write_text(json.dumps(_forged(entry)))
    if how == "not ours":
        if os.geteuid() != 0:
            pytest.skip("chown to another user needs root")
        os.chown(where, NOBODY, -1)
    else:
        where.chmod(0o770 if how == "group-writable" else 0o707)
    assert offsets(btf, where) == truth
    assert offsets(btf, where) == truth
    assert len(parses) == 3  # nothing read there, nothing kept there
    assert json.loads((where / ENTRY).read_text()) == _forged(entry)


def test_unwritable_cache_is_skipped(btf: Path, truth: dict[str, int],
                                     parses: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    """A user's cache they cannot write (a read-only home): a hit still serves, a miss is
    computed and not kept, no error. Runs as nobody (root writes anywhere)."""
    if os.geteuid() != 0:
        pytest.skip("switching to another user needs root")
    home = Path(tempfile.mkdtemp(prefix="ebpfwire-cache-"))
    try:
        home.chmod(0o755)
        where = home / "ebpfwire"
        entry = _valid_entry(btf, where)
        shutil.copyfile(btf, home / "vmlinux")
        other = home / "other"
        other.write_bytes(btf.read_bytes() + b"\0")
        for path in (home / "vmlinux", other, where / ENTRY):
            path.chmod(0o444)
        os.chown(where, NOBODY, -1)
        os.chown(where / ENTRY, NOBODY, -1)
        where.chmod(0o500)
        monkeypatch.setenv("XDG_CACHE_HOME", str(home))
        monkeypatch.delenv(cache.ENV, raising=False)
        os.seteuid(NOBODY)
        try:
            assert cache.directory() == where
            assert config.cached_kernel_offsets(str(home / "vmlinux")) == truth
            assert len(parses) == 1  # a hit, read-only
            assert config.cached_kernel_offsets(str(other)) == truth
            assert len(parses) == 2
        finally:
            os.seteuid(0)
        assert os.listdir(where) == [ENTRY]
        assert json.loads((where / ENTRY).read_text()) == entry  # left as it was
    finally:
        shutil.rmtree(home)


def test_cache_off(btf: Path, tmp_path: Path, parses: list[int],
                   monkeypatch: pytest.MonkeyPatch, truth: dict[str, int]) -> None:
    monkeypatch.setattr(cache, "ROOT_DIR", tmp_path / "root")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv(cache.ENV, "off")
    assert cache.directory() is None
    assert config.cached_kernel_offsets(str(btf)) == truth
    assert config.cached_kernel_offsets(str(btf)) == truth
    assert len(parses) == 2
    assert not (tmp_path / "root").exists() and not (tmp_path / "xdg").exists()


def test_directory_by_user(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(cache.ENV, raising=False)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert cache.directory() == Path("/var/cache/ebpfwire")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache.directory() == tmp_path / "ebpfwire"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/dir")  # not absolute: ignored, as the spec says
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache.directory() == tmp_path / "home" / ".cache" / "ebpfwire"


def test_unreadable_btf_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(config.BtfError, match=r"cannot read BTF from .*/absent: No such file"):
        config.cached_kernel_offsets(str(tmp_path / "absent"), tmp_path / "cache")


def test_btf_read_where_it_cannot_be_mapped(btf: Path, tmp_path: Path, parses: list[int],
                                            monkeypatch: pytest.MonkeyPatch,
                                            truth: dict[str, int]) -> None:
    """Kernels before 6.16 refuse to map vmlinux's BTF: it is read instead, same key."""
    where = tmp_path / "cache"
    offsets(btf, where)

    def refused(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(config.mmap, "mmap", refused)
    assert offsets(btf, where) == truth
    assert len(parses) == 1  # the same content, so the same entry
    (tmp_path / "empty").write_bytes(b"")  # nothing to map: read, and refused as BTF
    with pytest.raises(config.BtfError, match=r"0 bytes, too short for a BTF header"):
        offsets(tmp_path / "empty", where)
