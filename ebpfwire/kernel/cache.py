"""An on-disk cache of what is computed from the running kernel, so opening the monitor
need not parse the kernel's BTF (~127,000 types) every time.

An entry is keyed by a hash of what it was computed from (for the kernel: the content of
``/sys/kernel/btf/vmlinux``, which changes with the kernel build) and of the question
asked. The directory is ``/var/cache/ebpfwire`` for root, else
``$XDG_CACHE_HOME/ebpfwire`` or ``~/.cache/ebpfwire``; ``EBPFWIRE_CACHE=off`` turns the
cache off. Nothing read is trusted: the directory must be ours and writable by nobody
else, no symlink is followed, an entry that does not parse or validate is a miss (and is
rewritten), and a cache that cannot be written is skipped: the answer is computed.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

ENV = "EBPFWIRE_CACHE"
ROOT_DIR = Path("/var/cache/ebpfwire")
FORMAT = 1  # the entries' layout: another one is a miss
MAX_ENTRY = 1 << 20  # bytes read of an entry at most: a bigger file is not ours
_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

T = TypeVar("T")


def directory() -> Path | None:
    """Where the cache lives for this user, or None when ``EBPFWIRE_CACHE=off``."""
    if os.environ.get(ENV, "").strip().lower() == "off":
        return None
    if os.geteuid() == 0:
        return ROOT_DIR
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache"  # the spec: absolute
    return base / "ebpfwire"


def key(content: bytes | memoryview, question: object) -> str:
    """The key of an answer to ``question`` (its ``repr``) computed from ``content``."""
    digest = hashlib.sha256(repr((FORMAT, question)).encode())
    digest.update(content)
    return digest.hexdigest()


def _open_dir(where: Path, create: bool) -> int | None:
    """An fd of ``where`` if it is a directory of ours that nobody else can write (made,
    0700, when ``create``); None otherwise."""
    try:
        if create:
            where.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            try:
                where.mkdir(mode=0o700)
            except FileExistsError:
                pass
        fd = os.open(where, _OPEN_DIR)
    except OSError:
        return None
    st = os.fstat(fd)
    if st.st_uid != os.geteuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        os.close(fd)
        return None
    return fd


def load(name: str, entry_key: str, validate: Callable[[object], T | None],
         where: Path | None = None) -> T | None:
    """The value stored under ``name`` for ``entry_key``, if ``validate`` accepts it (it
    returns the value, or None to refuse it); None on any miss."""
    where = where or directory()
    if where is None:
        return None
    dir_fd = _open_dir(where, create=False)
    if dir_fd is None:
        return None
    try:
        fd = os.open(f"{name}.json", os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC,
                     dir_fd=dir_fd)
    except OSError:  # absent, or a symlink (ELOOP): never followed
        return None
    finally:
        os.close(dir_fd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
            return None
        raw = os.read(fd, MAX_ENTRY + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    try:
        entry = json.loads(raw) if len(raw) <= MAX_ENTRY else None
    except (ValueError, RecursionError):  # not UTF-8, not JSON, nested past the parser
        return None
    if (not isinstance(entry, dict) or entry.keys() != {"format", "key", "value"}
            or entry["format"] != FORMAT or entry["key"] != entry_key):
        return None
    return validate(entry["value"])


def store(name: str, entry_key: str, value: object, where: Path | None = None) -> None:
    """Keep ``value`` (JSON-able) under ``name`` for ``entry_key``: written to a new file
    of its own, then renamed over the old entry, so a reader sees one whole entry or the
    other. A cache that cannot be written is skipped silently."""
    where = where or directory()
    if where is None:
        return
    dir_fd = _open_dir(where, create=True)
    if dir_fd is None:
        return
    body = json.dumps({"format": FORMAT, "key": entry_key, "value": value}).encode()
    tmp = f".{name}.{os.getpid()}.{os.urandom(6).hex()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600, dir_fd=dir_fd)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(body)
            os.replace(tmp, f"{name}.json", src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except OSError:
            os.unlink(tmp, dir_fd=dir_fd)
            raise
    except OSError:  # read-only, full, or not ours: the answer is computed next time too
        pass
    finally:
        os.close(dir_fd)
