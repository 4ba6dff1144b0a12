"""A tiny pure-Python BPF loader for the bundled monitor object (no libbpf, no BCC)."""

from ebpfwire.loader.errors import BtfError, LoaderError
from ebpfwire.loader.monitor import Monitor

__all__ = ["BtfError", "LoaderError", "Monitor"]
