"""``held_until_fit`` for the bulk reader: a reader's :meth:`~CaptureReader.blocks` made to
pass the layout check that the record-by-record commands pass, so that a columnar path
refuses a wrong layout with the same UsageError and counts what they count."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ebpfwire.capture import CaptureReader, LostRecord, SampleRecord
from ebpfwire.capture.bulk import RecordBlock
from ebpfwire.cli.captures import held_until_fit
from ebpfwire.wire.layouts import Layout


def hold_blocks_until_fit(reader: CaptureReader, layout: Layout, arch: str, label: str
                          ) -> None:
    """Make ``reader.blocks()`` give its items through :func:`held_until_fit`.

    Until the check has released its first record, blocks are handed to it as record
    objects (it judges samples one by one and may add held LOST records together); after,
    the rest of the block they came from and every later item pass whole, as columns.
    """
    blocks = reader.blocks

    def held() -> Iterator[Any]:
        released = False

        def items() -> Iterator[Any]:
            for item in blocks():
                if released or type(item) is not RecordBlock:
                    yield item
                    continue
                for row, record in enumerate(item.records()):
                    if released:
                        yield item.split(row)[1]
                        break
                    yield record

        for item in held_until_fit(items(), layout, arch, label):
            if not released and (type(item) is SampleRecord or type(item) is LostRecord):
                released = True
            yield item

    reader.blocks = held  # type: ignore[method-assign]
