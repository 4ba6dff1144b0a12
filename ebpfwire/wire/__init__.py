"""The wire format, with no I/O: argument tags and payloads, header layouts, the event
catalogue, the construct schemas (the specification), the walker, the decoder, the encoder,
:class:`~ebpfwire.wire.events.Event` and its JSON form, and the Hypothesis strategies.

Everything else in ebpfwire is built on this layer; it imports nothing above it.
"""
