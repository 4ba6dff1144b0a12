"""``decode --format jsonl`` (and ``json``, with the context or ``--raw``, and
``kubearmor``) of a big capture on the bulk path: the records read in blocks, their time
order and process context worked out for many at once
(:class:`~ebpfwire.columnar.rowcontext.StreamContext`), and the lines made many at once
(:class:`~ebpfwire.columnar.jsonlines.Lines`), each ended with its answer's fields, whose
JSON is made once per distinct answer; KubeArmor's logs from each answer's
:class:`~ebpfwire.output.kubearmor.LogContext`. Output and stderr are the per-event
path's (``cli.decode.Decoding``), byte for byte: lines in time order, damage said where
reading record by record says it, undecodable samples at their place.
"""

from __future__ import annotations

import json

import numpy as np

from ebpfwire.capture import CaptureDamage
from ebpfwire.capture.bulk import Intake, fitting
from ebpfwire.capture.format import SampleRecord, resync_error
from ebpfwire.cli.captures import (
    damaged_record,
    layout_and_arch,
    open_capture,
    regular_size,
    say_notes,
    say_order,
    source_label,
    undecodable_sample,
)
from ebpfwire.cli.errors import say
from ebpfwire.cli.output import Output, Progress
from ebpfwire.columnar.jsonlines import Lines
from ebpfwire.columnar.kubearmorlogs import Logs
from ebpfwire.columnar.rowcontext import Answers, StreamContext
from ebpfwire.output.kubearmor import KubeArmorLogs, LogContext, log_context, log_key
from ebpfwire.output.render import event_json, lost_json, sample_json
from ebpfwire.process.enrich import ContextJson
from ebpfwire.wire.decoder import decode
from ebpfwire.wire.errors import DecodeError

ROWS = 1 << 14   # records taken at a time, at most
TAKE_BYTES = 4 << 20   # and samples' bytes
TEXT_BYTES = 16 << 20  # lines made at once, at most (by a bound on their length)


def decode_bulk(source: str, args, out: Output) -> int | None:
    """Decode ``source`` to ``out`` (``args.raw``: without the process context); the
    count of what was damaged, or None (nothing printed or said) where the per-event path
    is the one: no sample in file order decodes cleanly before the first that does not, or
    a LOST record (the layout check, ``captures.held_until_fit``, would hold records back,
    and context records pass them).
    """
    label = source_label(source)
    with open_capture(source) as reader:
        header = reader.header
        layout, arch = layout_and_arch(args, header, label)
        logs = (KubeArmorLogs(header.hostname, header.boot_time_ns,
                              version=args.kubearmor_version)
                if out.fmt == "kubearmor" else None)
        answers = (Answers(ContextJson()) if logs is None
                   else Answers(log_context, key=log_key))
        stream = StreamContext(layout, arch, Intake(reader.blocks()), reader,
                               answers=answers, place_damage=True, answer=not args.raw)
        out.set_boot_time(header.boot_time_ns)
        run = _Run(stream, layout, arch, label, out, logs)
        progress = Progress(regular_size(source))
        try:
            if not run.lines(progress):
                return None
        finally:
            progress.done()
            out.flush()
        say_notes(label, reader, None if args.raw else stream.enricher.table)
        say_order(label, stream)
        return run.damaged + run.damage_met


def _size(tail: str | LogContext | None) -> int:
    """A bound on the characters a line's end (or KubeArmor's context) adds to it."""
    if tail is None or isinstance(tail, str):
        return len(tail or "")
    request = tail.request
    return (len(tail.command) + len(tail.parent_exe)
            + (len(request[0]) + sum(map(len, request[1])) if request else 0))


class _Run:
    """One capture's records made into lines and messages, shown in time order."""

    def __init__(self, stream: StreamContext, layout, arch: str, label: str, out: Output,
                 logs: KubeArmorLogs | None = None):
        self.stream, self.layout, self.arch, self.label, self.out = (
            stream, layout, arch, label, out)
        self.logs = logs   # KubeArmor's logs, else JSON lines
        self.damaged = 0      # samples decoded with errors or not at all
        self.lines_held: list[str] = []   # made, not yet shown: a record before them is not
        self.ranks_held = np.empty(0, np.int64)
        # (place, 0 damage / 1 sample, the damage's number, message)
        self.said: list[tuple[int, int, int, str]] = []
        self.damage_met = 0   # damaged records (stream.damage, drained as it is met)
        self.render = Lines(layout, arch) if logs is None else Logs(layout, arch, logs)
        self.first_clean = False   # a sample decoded: the layout check holds nothing

    def lines(self, progress: Progress) -> bool:
        """Every record shown; False, with nothing shown, where the layout check would
        hold records back."""
        stream = self.stream
        records_done = events = 0
        while len(records := stream.take(ROWS, TAKE_BYTES)):
            samples = records.samples
            if not self.first_clean and not samples[0]:
                return False      # a LOST record first: the layout check holds it, and
                # context records pass it
            ranks = stream.taken_ranks(samples=False)
            if not samples.all() and self.logs is None:   # (KubeArmor logs no loss)
                lost = np.flatnonzero(~samples)
                self._hold([lost_json(cpu, count) for cpu, count in zip(
                    records.cpus[lost].tolist(), records.counts[lost].tolist(), strict=True)],
                    ranks[lost])
            ids = stream.taken_ids().tolist()
            tails = self._tails(ids)
            buf, begins, ends = records.payloads()
            rows = (buf, begins[samples], ends[samples], ranks[samples],
                    records.offsets[samples], records.cpus[samples], records.resync[samples])
            # the lines in parts of at most TEXT_BYTES of text (a sample's escapes may make
            # it 6 times longer; a context's argv may be long), each shown once nothing
            # before it in time order is still to make
            sizes = 6 * (rows[2] - rows[1]) + np.fromiter(map(_size, tails), np.int64,
                                                          len(tails))
            if self.logs is not None:    # each log holds the sample's text and the
                sizes = 4 * sizes + 4096   # context's a few times, and two logs at most
            later = np.minimum.accumulate(rows[3][::-1])[::-1]   # least rank from each row on
            before = stream.placed_before()
            start = 0
            while start < len(ids):
                stop = start + fitting(np.zeros(1, np.int64), sizes[start:], TEXT_BYTES)
                if not self._part(rows, tails, start, stop):
                    return False
                self._show(min(before, int(later[stop])) if stop < len(ids) else before)
                start = stop
            records_done += len(records)
            events += len(ids)
            self._show(before)
            if progress.enabled:
                progress.update(records_done, events, int(records.offsets[-1]))
        if not self.first_clean:
            return False
        self._show(None)
        return True

    def _tails(self, ids: list[int]) -> list:
        """What ends each sample's line: its answer's JSON fields and the line's ``}``, or
        (KubeArmor's logs) its :class:`LogContext`; one object per answer (a context's
        argv may be long)."""
        values = self.stream.answers.values
        if self.logs is not None:
            return [values[answer] if answer >= 0 else None for answer in ids]
        made = {answer: values[answer] + "}" if answer >= 0 else "}" for answer in set(ids)}
        return [made[answer] for answer in ids]

    def _part(self, rows: tuple, tails: list, start: int, stop: int) -> bool:
        """The lines of samples ``start:stop`` of a take (``rows``: its buffer, then the
        samples' bounds, ranks, file offsets, cpus and resync offsets) held; False where
        the first sample of the capture does not decode (nothing is shown then)."""
        buf, begins, ends, ranks, offsets, cpus, resync = (
            row if isinstance(row, bytes) else row[start:stop] for row in rows)
        tails = tails[start:stop]
        kubearmor = self.logs is not None
        lines = self.render(buf, begins, ends, tails)
        # what Lines does not take: sample_json's, then (a resynchronised sample is never
        # clean) the decoder's, as the per-event path makes them
        again = np.flatnonzero((resync >= 0) | np.array([line is None for line in lines]))
        if len(again):
            layout, arch = self.layout, self.arch
            for row in again.tolist():
                data, tail = buf[int(begins[row]):int(ends[row])], tails[row]
                line = (sample_json(data, layout, arch, None, tail)
                        if resync[row] < 0 and not kubearmor else None)
                lines[row] = line or self._decoded(data, int(offsets[row]), int(cpus[row]),
                                                   int(resync[row]), int(ranks[row]), tail)
                if lines[row] is None and not self.first_clean and row == 0:
                    return False
        if len(again) or kubearmor:
            shown = np.array([bool(line) for line in lines], bool)  # ("": no KubeArmor log)
            lines = [line for line in lines if line]
            ranks = ranks[shown]
        self.first_clean = True
        self._hold(lines, ranks)
        return True

    def _decoded(self, data: bytes, offset: int, cpu: int, resync: int, rank: int,
                 tail) -> str | None:
        """The line of a sample the fast path does not take, as ``CaptureStream.decode``
        decodes it (KubeArmor's logs: its lines, "" for none); None (its message held) for
        one that does not decode."""
        try:
            event = decode(data, layout=self.layout, arch=self.arch)
        except DecodeError as error:
            self.damaged += 1
            self.said.append((rank, 1, 0, undecodable_sample(self.label, offset, error)))
            return None
        if resync >= 0:
            event = decode(data, layout=self.layout, arch=self.arch, strict=False)
            event.errors.append(resync_error(SampleRecord(cpu, data, offset, resync)))
        if event.errors:   # (strict decoding lets a writer's known omissions pass)
            self.damaged += 1
        if self.logs is not None:
            return "\n".join(map(json.dumps, self.logs.logs(event, tail)))
        return event_json(event, tail[:-1])

    def _hold(self, lines: list[str], ranks: np.ndarray) -> None:
        self.lines_held += lines
        self.ranks_held = np.concatenate([self.ranks_held, ranks])
        damage: list[tuple[int, CaptureDamage]] = self.stream.damage
        self.said += [(place, 0, number, damaged_record(self.label, found))
                      for number, (place, found) in enumerate(damage, self.damage_met)]
        self.damage_met += len(damage)
        damage.clear()   # (said or held in self.said: a capture may hold any number)

    def _show(self, before: int | None) -> None:
        """Show the lines and say the messages placed before ``before`` (None: all), in
        time order."""
        ranks = self.ranks_held
        order = np.argsort(ranks, kind="stable")
        shown = len(order) if before is None else int(np.searchsorted(ranks[order], before))
        if shown:
            held = self.lines_held
            self.out.lines([held[i] for i in order[:shown].tolist()])
            rest = order[shown:]
            self.lines_held = [held[i] for i in rest.tolist()]
            self.ranks_held = ranks[rest]
        if self.said:
            self.said.sort()
            due = [item for item in self.said if before is None or item[0] < before]
            self.said = self.said[len(due):]
            for *_, message in due:
                say(message)
