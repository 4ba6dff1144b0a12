"""``ebpfwire.loader``, the documented path of the bundled monitor and the loader's errors."""

from ebpfwire.kernel.errors import BtfError, LoaderError
from ebpfwire.kernel.monitor import Monitor

__all__ = ["BtfError", "LoaderError", "Monitor"]
