"""One capture read as every command and library path reads it: the one loop of open
reader -> damage reported -> layout and arch chosen -> time order (or file order) ->
samples decoded, LOST and context records handed on.

``decode``, ``ps``, the process tree and ``CaptureReader.events`` read captures through
:class:`CaptureStream` (so do ``info`` and ``summary`` without the ``arrow`` extra, and
``summary -p``), so they agree on the order of records (the one reorder window,
:mod:`ebpfwire.wire.order`) and on how a sample is decoded. The bulk paths (``to_table``,
``export``, ``info``, ``summary``) read the reader's blocks into the batch decoder
(:mod:`ebpfwire.columnar.arrow`), which tests hold equal to this decoding; its process
context takes the same reorder window.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ebpfwire.capture.format import (
    CaptureDamage,
    CaptureRecord,
    LostRecord,
    SampleRecord,
    resync_error,
)
from ebpfwire.capture.snapshot import ContainerInfo, ProcessInfo
from ebpfwire.wire.decoder import decode
from ebpfwire.wire.errors import DecodeError
from ebpfwire.wire.events import Event
from ebpfwire.wire.layouts import Layout
from ebpfwire.wire.order import TimeOrder

Decoded = Event | DecodeError | None
"""What a record decodes to: an Event or a DecodeError for a SAMPLE, None for the others."""


class CaptureStream:
    """The records of one open capture, in time order (default) or file order; iterating
    gives ``(record, Event | DecodeError | None)`` pairs, :meth:`records` the records
    undecoded (for paths that render raw samples, or only need their ``ts`` and bytes).

    - ``layout`` and ``arch`` default to the capture header's (a name or a Layout).
    - ``strict=False`` decodes what can be decoded of a damaged sample.
    - ``time_order=False`` keeps file order; else the records pass the reorder window,
      whose out-of-order count is :attr:`late`. Process and container records pass at once.
    - ``records``: the reader's records as the caller wraps them (a check that the layout
      fits, a copy kept in file order), instead of iterating the reader here.
    - ``on_damage`` and ``on_context`` are the reader's callbacks (damage as it is met;
      context records given when read, ahead of the events they describe, not yielded).
    """

    def __init__(
        self,
        reader: Any,
        *,
        records: Iterable[CaptureRecord] | None = None,
        layout: str | Layout | None = None,
        arch: str | None = None,
        strict: bool = True,
        time_order: bool = True,
        on_damage: Callable[[CaptureDamage], None] | None = None,
        on_context: Callable[[ProcessInfo | ContainerInfo], None] | None = None,
    ):
        self.reader = reader
        self.header = reader.header
        self.layout = layout or self.header.layout
        self.arch = arch or self.header.arch
        self.strict = strict
        self.order = TimeOrder(SampleRecord, LostRecord) if time_order else None
        self._records = records
        if on_damage is not None:
            reader.on_damage = on_damage
        if on_context is not None:
            reader.on_context = on_context

    @property
    def late(self) -> int:
        """Samples released out of time order (they came more than the window late)."""
        return self.order.late if self.order is not None else 0

    def records(self) -> Iterator[CaptureRecord]:
        """The records, undecoded, in the stream's order."""
        records = iter(self.reader) if self._records is None else iter(self._records)
        return records if self.order is None else self.order(records)

    def decode(self, record: SampleRecord) -> Event | DecodeError:
        """One sample decoded with the stream's layout, arch and strictness. A sample found
        by scanning after damage (``record.resync``) is never clean: its event lists its
        :func:`~ebpfwire.capture.format.resync_error`, in strict mode too."""
        try:
            event = decode(record.data, layout=self.layout, arch=self.arch, strict=self.strict)
        except DecodeError as error:
            return error
        if record.resync is not None:
            if event.errors is None:  # strict, and whole: the lenient event has the list
                event = decode(record.data, layout=self.layout, arch=self.arch, strict=False)
            event.errors.append(resync_error(record))
        return event

    def __iter__(self) -> Iterator[tuple[CaptureRecord, Decoded]]:
        decoded = self.decode
        for record in self.records():
            yield record, (decoded(record) if type(record) is SampleRecord else None)
