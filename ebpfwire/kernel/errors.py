"""The loader's one exception family, so callers catch a single type."""

from __future__ import annotations

from ebpfwire.errors import EbpfwireError


class LoaderError(EbpfwireError, RuntimeError):
    """Loading, attaching or reading failed; the message says what is needed.

    ``errno`` is the kernel's error number when a syscall failed, else ``None``.
    """

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno


class BtfError(LoaderError):
    """BTF data is malformed or lacks a type or member the loader needs."""
