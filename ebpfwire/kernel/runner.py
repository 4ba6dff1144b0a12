"""Run any libbpf-style object and read it: its events decoded as their type, its maps at the end.

```python
with ObjectRun("bootstrap.bpf.o", settings={"min_duration_ns": "1000000"}) as run:
    run.start()                                  # load, readers opened, attach
    while ...:
        for event in run.read(0.1):              # Event(map, fields dict) or LostRecords
            print(event)
    for dump in run.map_dumps():                 # every hash/array map, per-CPU summed
        print(render_map(dump))
```

The records' type is found by :mod:`ebpfwire.kernel.eventtype` (a name, the map's value
type, or the one struct of their size) and decoded by
:class:`~ebpfwire.kernel.btfstruct.CompiledStruct`; the maps' keys and values by the same
decoder, so texts and enums read the same in both. Closing releases everything the object
made in the kernel.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ebpfwire.kernel import syscalls
from ebpfwire.kernel.btfstruct import CompiledStruct
from ebpfwire.kernel.errors import LoaderError
from ebpfwire.kernel.eventtype import EventType, EventTypes
from ebpfwire.kernel.maps import Map
from ebpfwire.kernel.objects import Object
from ebpfwire.kernel.perf import Lost
from ebpfwire.kernel.stats import Bucket, render_log2_hist, slot_bounds

OUTPUT_TYPES = (syscalls.BPF_MAP_TYPE_RINGBUF, syscalls.BPF_MAP_TYPE_PERF_EVENT_ARRAY)
MAX_ENTRIES_SHOWN = 1000
_HIST_NAME = re.compile(r"hist|dist|slot|log2|lat", re.IGNORECASE)
_LINEAR_NAME = re.compile(r"lin", re.IGNORECASE)


@dataclass
class Event:
    """One decoded record of output map ``map`` (``data``: its bytes as the reader gave
    them, ``cpu``: where, RINGBUF_CPU for a ring buffer)."""

    map: str
    fields: dict[str, Any]
    cpu: int
    data: bytes


@dataclass
class LostRecords:
    map: str
    cpu: int
    count: int


@dataclass
class _Output:
    name: str
    map_type: int
    type: EventType | None
    decoder: CompiledStruct | None = None
    reader: Any = None


@dataclass
class MapDump:
    """A map's entries at the end, flat fields (per-CPU values summed); ``histograms``:
    (title, buckets, linear) when the map looks like one."""

    name: str
    map_type: int
    entries: list[tuple[dict[str, Any], dict[str, Any]]]
    histograms: list[tuple[str, list[Bucket], bool]] = field(default_factory=list)
    more: int = 0  # entries not kept past MAX_ENTRIES_SHOWN


def parse_setting(obj: Object, name: str, text: str) -> Any:
    """``--set NAME=VALUE``'s value for global ``name``: an integer (any base), true/false,
    or text for a char array (NUL-padded to its size)."""
    if name not in obj.globals:
        settable = sorted(obj.globals)
        raise LoaderError(f"no global {name!r} in {obj.spec.origin}; its globals: "
                          f"{', '.join(settable) or 'none'}")
    try:
        return int(text, 0)
    except ValueError:
        pass
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    size = next(sec.variables[name].size for sec in obj.spec.data.values()
                if name in sec.variables)
    raw = text.encode()
    if len(raw) >= size:
        raise LoaderError(f"global {name!r}: expected an integer, true/false, or text of at "
                          f"most {size - 1} bytes, found {text!r}")
    return raw.ljust(size, b"\0")


class ObjectRun:
    """An object opened, set, and (after :meth:`start`) loaded, attached and read."""

    def __init__(self, path: str | Path, *, settings: Mapping[str, str] | None = None,
                 maps: list[str] | None = None, type_name: str | None = None) -> None:
        path = Path(path)
        try:
            elf = path.read_bytes()
        except OSError as exc:
            raise LoaderError(f"cannot open BPF object {path}: {exc.strerror}", exc.errno) from exc
        self.obj = Object.open(path)
        try:
            self._setup(elf, settings or {}, maps, type_name)
        except BaseException:
            self.obj.close()
            raise

    def _setup(self, elf: bytes, settings: Mapping[str, str], maps: list[str] | None,
               type_name: str | None) -> None:
        obj = self.obj
        for name, text in settings.items():
            obj.globals[name] = parse_setting(obj, name, text)
        outputs = [m for m in obj.maps.values() if m.type in OUTPUT_TYPES]
        if maps:
            known = {m.name: m for m in outputs}
            missing = [n for n in maps if n not in known]
            if missing:
                raise LoaderError(f"{obj.spec.origin}: no ring buffer or perf array {missing}; "
                                  f"it has: {', '.join(sorted(known)) or 'none'}")
            outputs = [known[n] for n in maps]
        self.types = EventTypes(obj.spec.btf, elf, obj.spec.origin)
        named = self.types.named(type_name) if type_name else None
        self.outputs: list[_Output] = []
        for spec in outputs:
            found = named
            if found is None and spec.value_type_id and obj.spec.btf is not None:
                tid = obj.spec.btf.resolve(spec.value_type_id)
                if obj.spec.btf.kind(tid).name in ("STRUCT", "UNION"):
                    found = EventType(obj.spec.btf, tid, "map")
            out = _Output(spec.name, spec.type, found)
            if found is not None:
                out.decoder = CompiledStruct(found.btf, found.type_id)
            self.outputs.append(out)

    def start(self, *, ring_pages: int | None = None) -> None:
        """Load every program, open the readers, then attach (no early record is lost)."""
        self.obj.load()
        for out in self.outputs:
            if out.map_type == syscalls.BPF_MAP_TYPE_RINGBUF:
                out.reader = self.obj.ring_buffer(out.name)
            else:
                out.reader = (self.obj.perf_buffer(out.name, ring_pages) if ring_pages
                              else self.obj.perf_buffer(out.name))
        self.obj.attach()

    def type_of(self, name: str) -> EventType | None:
        """The type of output ``name`` (None until its first record where found by size)."""
        return next(o.type for o in self.outputs if o.name == name)

    def read(self, timeout: float | None = 0.1) -> list[Event | LostRecords]:
        """What every output holds now (waiting up to ``timeout`` in all), decoded."""
        got: list[Event | LostRecords] = []
        if not self.outputs:  # a tool that only counts in maps: nothing to read meanwhile
            time.sleep(timeout if timeout is not None else 3600)
            return got
        each = None if timeout is None else timeout / len(self.outputs)
        for out in self.outputs:
            for rec in out.reader.read_batch(timeout=each):
                if isinstance(rec, Lost):
                    got.append(LostRecords(out.name, rec.cpu, rec.count))
                    continue
                if out.decoder is None:
                    out.type = self.types.by_size(len(rec.data), out.map_type, out.name)
                    out.decoder = CompiledStruct(out.type.btf, out.type.type_id)
                got.append(Event(out.name, out.decoder.decode(rec.data), rec.cpu, rec.data))
        return got

    def map_dumps(self) -> list[MapDump]:
        """Every key/value map but the outputs and global data, decoded and summed."""
        outputs = {o.name for o in self.outputs}
        return [self._dump(name) for name, spec in self.obj.maps.items()
                if name not in outputs and name not in self.obj.spec.data
                and spec.type not in OUTPUT_TYPES and name in self.obj.map_fds]

    def _dump(self, name: str) -> MapDump:
        spec = self.obj.maps[name]
        btf = self.obj.spec.btf
        raw = Map.from_fd(self.obj.map_fds[name])
        key_dec = _decoder(btf, spec.key_type_id)
        value_dec = _decoder(btf, spec.value_type_id)
        entries = []
        for key, value in raw.lookup_batch():
            values = value if raw.percpu else [value]
            fields = _sum([_fields(value_dec, v) for v in values])
            if raw.type in (syscalls.BPF_MAP_TYPE_ARRAY, syscalls.BPF_MAP_TYPE_PERCPU_ARRAY) \
                    and not any(_nonzero(v) for v in fields.values()):
                continue  # an array holds every key: the untouched ones say nothing
            entries.append((_fields(key_dec, key), fields))
        try:
            entries.sort(key=lambda kv: tuple(kv[0].values()))
        except TypeError:  # keys of unlike values: the kernel's order
            pass
        dump = MapDump(name, spec.type, entries[:MAX_ENTRIES_SHOWN],
                       more=max(0, len(entries) - MAX_ENTRIES_SHOWN))
        dump.histograms = _histograms(name, entries)
        return dump

    def close(self) -> None:
        self.obj.close()

    def __enter__(self) -> ObjectRun:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _decoder(btf, tid: int) -> CompiledStruct | None:
    if btf is None or not tid:
        return None
    return CompiledStruct(btf, tid)


def _fields(dec: CompiledStruct | None, raw: bytes) -> dict[str, Any]:
    return dec.decode(raw) if dec is not None else {"value": raw}


def _nonzero(value: Any) -> bool:
    if isinstance(value, list):
        return any(map(_nonzero, value))
    if isinstance(value, bytes | str):
        return any(value) if isinstance(value, bytes) else bool(value)
    return bool(value)


def _sum(values: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-CPU values as one: numbers and lists of numbers added, the rest from CPU 0."""
    out = dict(values[0])
    for other in values[1:]:
        for k, v in other.items():
            mine = out[k]
            if isinstance(mine, int | float) and not isinstance(mine, bool):
                out[k] = mine + v
            elif isinstance(mine, list) and all(isinstance(x, int) for x in mine):
                out[k] = [a + b for a, b in zip(mine, v, strict=True)]
    return out


def _histograms(name: str, entries: list[tuple[dict, dict]]) -> list[tuple[str, list[Bucket],
                                                                           bool]]:
    """A value with a ``slots`` array (libbpf-tools: slot i holds 2**i..2**(i+1)-1), or a
    map of int -> int named like one (BCC: ``dist.increment(bpf_log2l(x))``)."""
    linear = bool(_LINEAR_NAME.search(name))
    out = []
    for key, value in entries:
        slots = value.get("slots")
        if isinstance(slots, list) and all(isinstance(x, int) for x in slots):
            title = " ".join(f"{'key' if k == 'value' else k} = {v}" for k, v in key.items())
            out.append((title, _buckets(slots, linear, shift=1), linear))
    if out or not entries or not _HIST_NAME.search(name):
        return out
    if all(list(k) == ["value"] and list(v) == ["value"] and isinstance(k["value"], int)
           and isinstance(v["value"], int) for k, v in entries):
        counts: dict[int, int] = {k["value"]: v["value"] for k, v in entries}
        top = max(counts)
        if top < 128 or linear:
            slots = [counts.get(i, 0) for i in range(top + 1)]
            out.append(("", _buckets(slots, linear, shift=0), linear))
    return out


def _buckets(slots: list[int], linear: bool, shift: int) -> list[Bucket]:
    used = [i for i, n in enumerate(slots) if n]
    if not used:
        return []
    if linear:
        return [Bucket(i, i, slots[i]) for i in range(used[0], used[-1] + 1)]
    first = used[0] if shift else max(used[0], 1)
    return [Bucket(*slot_bounds(i + shift), slots[i]) for i in range(first, used[-1] + 1)]


def render_linear_hist(buckets: list[Bucket], unit: str) -> str:
    """BCC's ``print_linear_hist``: one row per value."""
    if not buckets:
        return ""
    largest = max(b.count for b in buckets)
    lines = [f"     {unit:<13} : count     distribution"]
    for b in buckets:
        stars = "*" * (40 * b.count // largest)
        lines.append(f"        {b.low_us:<10} : {b.count:<8} |{stars:<40}|")
    return "\n".join(lines) + "\n"


def render_histogram(title: str, buckets: list[Bucket], linear: bool, unit: str) -> str:
    head = f"{title}\n" if title else ""
    body = render_linear_hist(buckets, unit) if linear else render_log2_hist(buckets, unit)
    return head + (body or "     (empty)\n")

