"""ebpfwire: decode, encode, capture and fuzz the eBPF syscall-event wire format.

    >>> import ebpfwire
    >>> event = ebpfwire.decode(sample_bytes)          # doctest: +SKIP
    >>> event.name, event.args[0].value, event.to_dict()  # doctest: +SKIP

The names below are loaded on first use, so importing one layer (``ebpfwire.kernel.perf``
for a recorder, say) does not load the decoder.
"""

from __future__ import annotations

from ebpfwire.lazy import lazy_names

__version__ = "0.1.0"

#: Public name -> the module that defines it.
_HOMES = {
    "ContainerInfo": "ebpfwire.capture.snapshot", "ProcessInfo": "ebpfwire.capture.snapshot",
    "MAX_ARGS": "ebpfwire.wire.argtypes", "ArgType": "ebpfwire.wire.argtypes",
    "arg_types": "ebpfwire.wire.argtypes", "argnum": "ebpfwire.wire.argtypes",
    "dec_arg_type": "ebpfwire.wire.argtypes", "enc_arg_type": "ebpfwire.wire.argtypes",
    "make_mask": "ebpfwire.wire.argtypes",
    "event_name": "ebpfwire.wire.catalogue",
    "decode": "ebpfwire.wire.decoder", "decode_many": "ebpfwire.wire.decoder",
    "encode": "ebpfwire.wire.encoder",
    "EbpfwireError": "ebpfwire.errors", "DecodeError": "ebpfwire.wire.errors",
    "Arg": "ebpfwire.wire.events", "Argv": "ebpfwire.wire.events",
    "Event": "ebpfwire.wire.events", "SockAddr": "ebpfwire.wire.events",
    "LAYOUTS": "ebpfwire.wire.layouts", "Layout": "ebpfwire.wire.layouts",
    "get_layout": "ebpfwire.wire.layouts", "register_layout": "ebpfwire.wire.layouts",
}

__all__ = sorted(_HOMES)

__getattr__ = lazy_names(__name__, _HOMES)
