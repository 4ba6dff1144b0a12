"""ebpfwire: decode, encode, capture and fuzz the eBPF syscall-event wire format.

    >>> import ebpfwire
    >>> event = ebpfwire.decode(sample_bytes)          # doctest: +SKIP
    >>> event.name, event.args[0].value, event.to_dict()  # doctest: +SKIP
"""

from ebpfwire.capture.snapshot import ContainerInfo, ProcessInfo
from ebpfwire.wire.argtypes import (
    MAX_ARGS,
    ArgType,
    arg_types,
    argnum,
    dec_arg_type,
    enc_arg_type,
    make_mask,
)
from ebpfwire.wire.catalogue import event_name
from ebpfwire.wire.decoder import decode, decode_many
from ebpfwire.wire.encoder import encode
from ebpfwire.wire.errors import DecodeError
from ebpfwire.wire.events import Arg, Argv, Event, SockAddr
from ebpfwire.wire.layouts import LAYOUTS, Layout, get_layout, register_layout

__version__ = "0.1.0"

__all__ = [
    "LAYOUTS", "MAX_ARGS", "Arg", "ArgType", "Argv", "ContainerInfo", "DecodeError", "Event",
    "Layout", "ProcessInfo", "SockAddr", "arg_types", "argnum", "dec_arg_type", "decode",
    "decode_many", "enc_arg_type", "encode", "event_name", "get_layout", "make_mask",
    "register_layout",
]
