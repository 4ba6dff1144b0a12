"""The one base of every error ebpfwire raises, so a caller can catch "anything refused"."""

from __future__ import annotations


class EbpfwireError(Exception):
    """Base of the library's errors: bad bytes, bad captures, and what the kernel refused."""
