"""The public object API: open any libbpf-style BPF object, adjust it, load, attach, read.

```python
with Object.open("tool.bpf.o") as obj:
    obj.globals["min_ns"] = 1000          # .rodata setting, before load
    obj.maps["events"].max_entries = 1 << 20
    obj.load()                            # or obj.programs["handle"].load()
    obj.attach()                          # by section convention
    for rec in obj.ring_buffer("events"): ...
```

Nothing touches the kernel before :meth:`Object.load`; :meth:`Object.close` (or the end
of the ``with`` block, an exception, Ctrl-C) releases every link, reader, program, map and
the BTF it made. The bundled monitor and statistics program are users of this API.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ebpfwire import machine
from ebpfwire.kernel import objmaps, syscalls
from ebpfwire.kernel.attach import (
    Link,
    attach_iter,
    attach_kprobe,
    attach_link,
    attach_perf_event,
    attach_probe,
    uprobe_plan,
)
from ebpfwire.kernel.btf import Btf, BtfKind
from ebpfwire.kernel.errors import LoaderError
from ebpfwire.kernel.externs import KCONFIG_SEC, Externs, collect, kconfig_section, resolve_kconfig
from ebpfwire.kernel.kernel_btf import KernelBtf
from ebpfwire.kernel.link import LinkedProgram, link
from ebpfwire.kernel.objfile import DataSection, MapSpec, ObjectSpec, ProgramSpec, read_spec
from ebpfwire.kernel.perf import DEFAULT_PAGE_COUNT, PerfReader
from ebpfwire.kernel.ringbuf import RingBufReader
from ebpfwire.kernel.syscalls import BpfSyscallError, ProgLoadExtras

if TYPE_CHECKING:
    from ebpfwire.kernel.maps import BtfCodec, Map, _RawCodec

BPF_F_RDONLY_PROG = 1 << 7
BTF_LOG_SIZE = 1 << 20
# map types the kernel takes no BTF key/value types for (libbpf leaves them out too)
_NO_BTF_TYPES = frozenset({4, 7, 8, 12, 13, 14, 15, 16, 17, 18, 22, 23, 25, 27})
LOAD_THREADS = min(8, max(2, os.cpu_count() or 2))
VERIFIER_LOG_SIZE = 16 * 1024 * 1024
VERIFIER_LOG_TAIL = 40  # lines shown in the error

T = TypeVar("T")


def load_insns(
    name: str,
    section: str,
    prog_type: int,
    insns: bytes,
    license: str,
    extras: ProgLoadExtras | None = None,
) -> int:
    """Load instructions as program ``name``; the fd.

    The first attempt runs without a verifier log (fast); on failure the load is
    retried with log level 1 so the error can show the tail of the verifier's reasoning
    (the whole log is the error's ``log``).
    """
    try:
        return syscalls.prog_load(prog_type, insns, license, name, extras=extras)[0]
    except BpfSyscallError as exc:
        if exc.errno in (errno.EPERM, errno.ENOSYS):
            raise
    try:
        fd, _ = syscalls.prog_load(
            prog_type, insns, license, name, 1, VERIFIER_LOG_SIZE, extras
        )
    except BpfSyscallError as exc:
        tail = "\n".join(exc.log.rstrip().splitlines()[-VERIFIER_LOG_TAIL:])
        err = BpfSyscallError(
            f"the kernel rejected program {name!r} (section {section!r}): "
            f"{os.strerror(exc.errno or 0)}\nverifier log (tail):\n{tail}",
            exc.errno,
        )
        err.log = exc.log
        raise err from exc
    return fd  # the first failure was transient (EAGAIN...) and did not recur


def _settle(state: threading.Condition, stop: threading.Event, loading: list[int]) -> None:
    """Stop the loads from beginning and wait for those begun to end (through another
    Ctrl-C meanwhile too), so close() finds every program's fd."""
    while True:
        try:
            with state:
                stop.set()
                while loading[0]:
                    state.wait()
            return
        except BaseException:  # a second Ctrl-C: keep waiting, the first one goes on after
            continue


class Program:
    """One program of an :class:`Object`: ``fd`` once loaded, ``error`` and ``log`` when
    the kernel (or the loader) refused it."""

    def __init__(self, obj: Object, spec: ProgramSpec) -> None:
        self._obj = obj
        self.spec = spec
        self.name = spec.name
        self.section = spec.section
        self.prog_type = spec.kind.prog_type
        self.attach_to = spec.attach_to
        self.autoload = True
        self.fd: int | None = None
        self.error: LoaderError | None = None
        self.log = ""
        self.linked: LinkedProgram | None = None
        self._links: list[Link] = []

    def load(self) -> int:
        """Load this program (the object's maps and BTF first, if not yet); its fd."""
        if self.fd is None:
            self._obj._prepare()
            try:
                self.fd = self._obj.prog_fds[self.name] = self._obj._load_program(self)
            except LoaderError as exc:
                self.error = exc
                self.log = getattr(exc, "log", "")
                raise
            self._obj._fill_prog_slots(self)
        return self.fd

    def attach(self) -> Link:
        """Attach where the section says (loading first if needed); the link, which the
        program owns (:meth:`detach` and the object's close release it)."""
        fd = self.load()
        if not self.spec.kind.attach:
            raise LoaderError(
                f"program {self.name!r}: section {self.section!r} has no automatic "
                "attachment in this loader"
            )
        return self._own(attach_link(self.spec, fd, self.spec.kind.attach))

    @property
    def auto_attach(self) -> bool:
        """Whether :meth:`Object.attach` attaches it: its section says where (a bare
        ``uprobe`` section does not: :meth:`attach_uprobe` names the place)."""
        kind = self.spec.kind.attach
        return bool(kind) and not (kind in ("uprobe", "uretprobe") and not self.attach_to)

    def _own(self, link: Link) -> Link:
        self._links.append(link)
        return link

    def _retprobe(self, retprobe: bool | None, ret_kinds: tuple[str, ...]) -> bool:
        return self.spec.kind.attach in ret_kinds if retprobe is None else retprobe

    def attach_kprobe(self, function: str, offset: int = 0, *, retprobe: bool | None = None
                      ) -> Link:
        """On entry to kernel ``function`` (+ ``offset``), or its return (``retprobe``;
        default: the section's kind)."""
        ret = self._retprobe(retprobe, ("kretprobe", "kretsyscall"))
        return self._own(attach_kprobe(self.load(), function, offset, retprobe=ret))

    def attach_uprobe(self, binary: str, func_or_offset: str | int, *, pid: int = -1,
                      retprobe: bool | None = None) -> Link:
        """On ``binary``'s function (``"name"``, ``"name+off"``) or file offset, in process
        ``pid`` (-1: every process); its return with ``retprobe`` (default: the section's
        kind)."""
        ret = self._retprobe(retprobe, ("uretprobe",))
        plan = uprobe_plan(binary, func_or_offset, retprobe=ret, pid=pid)
        return self._own(attach_probe(self.load(), plan))

    def attach_perf_event(self, *, period: int | None = None, frequency: int | None = None,
                          cpus: Iterable[int] | None = None) -> Link:
        """A sampler on the cpu-clock of each CPU (default: the online ones), every
        ``period`` ns of it or ``frequency`` times a second."""
        return self._own(attach_perf_event(self.load(), period=period, frequency=frequency,
                                           cpus=cpus))

    def attach_iter(self, *, map: str | None = None, pid: int | None = None,
                    tid: int | None = None) -> Link:
        """An iterator link: over the elements of the object's map ``map``, over one
        process or thread, or (default) over all; ``link.read()`` runs it."""
        fd = self.load()
        map_fd = self._obj._map_fd(map) if map is not None else None
        return self._own(attach_iter(fd, map_fd=map_fd, pid=pid, tid=tid))

    def iterate(self) -> str:
        """Run this iterator program once over everything; what it printed."""
        it = attach_iter(self.load())
        try:
            return it.read().decode("utf-8", "replace")
        finally:
            it.close()

    @property
    def links(self) -> list[Link]:
        return list(self._links)

    def detach(self) -> None:
        """Close every link of this program; it stays loaded."""
        for each in self.forget_links():
            each.close()

    def forget_links(self) -> list[Link]:
        """This program's links, which the caller now closes."""
        links, self._links = self._links, []
        return links

    def __repr__(self) -> str:
        return (f"Program({self.name!r}, section={self.section!r}, type={self.prog_type}, "
                f"fd={self.fd})")


class Globals(MutableMapping):
    """Global variables by symbol name: read and set before load (the section's initial
    bytes), read after load (from the map), set after load unless ``.rodata`` (frozen)."""

    def __init__(self, obj: Object) -> None:
        self._obj = obj
        self._where = {
            name: sec for sec in obj.spec.data.values() for name in sec.variables
        }

    def _codec(self, sec: DataSection, name: str) -> BtfCodec | _RawCodec:
        from ebpfwire.kernel.maps import BtfCodec, _RawCodec  # here: a load does not need it

        var = sec.variables[name]
        btf = self._obj.spec.btf
        if btf is not None and var.type_id:
            return BtfCodec(btf, var.type_id)
        return _RawCodec(var.size)

    def _section(self, name: str) -> DataSection:
        sec = self._where.get(name)
        if sec is None:
            raise KeyError(name)
        return sec

    def _bytes(self, sec: DataSection) -> bytes:
        fd = self._obj.map_fds.get(sec.name)
        if fd is None:
            if sec.name == KCONFIG_SEC:
                self._obj._resolve_kconfig()
            return bytes(sec.data)
        return syscalls.map_lookup(fd, bytes(4), len(sec.data))

    def __getitem__(self, name: str) -> Any:
        sec = self._section(name)
        var = sec.variables[name]
        return self._codec(sec, name).decode(self._bytes(sec)[var.offset : var.offset + var.size])

    def __setitem__(self, name: str, value: Any) -> None:
        sec = self._section(name)
        if sec.name == KCONFIG_SEC:
            raise LoaderError(f"{name!r} is a .kconfig extern, set from the kernel config: "
                              "name another config file with Object.open(..., kconfig=PATH)")
        var = sec.variables[name]
        raw = self._codec(sec, name).encode(value, f"global {name!r}")
        fd = self._obj.map_fds.get(sec.name)
        if fd is None:
            sec.data[var.offset : var.offset + var.size] = raw
            return
        if sec.readonly:
            raise LoaderError(f"global {name!r} is in {sec.name}, frozen once loaded: set it "
                              "before load()")
        data = bytearray(self._bytes(sec))
        data[var.offset : var.offset + var.size] = raw
        syscalls.map_update(fd, bytes(4), bytes(data))

    def __delitem__(self, name: str) -> None:
        raise LoaderError("globals cannot be deleted")

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)


class Object:
    """A BPF object file: its programs, maps and globals, then the same in the kernel.

    ``target_btf``: the kernel BTF that CO-RE relocations and tracing attach points are
    resolved against (a path, or a :class:`Btf`; default ``/sys/kernel/btf/vmlinux``, then
    the modules' BTF for what vmlinux lacks). ``module_btfs`` (name -> path or split
    :class:`Btf`, in search order) replaces the running kernel's modules. ``kconfig``: the
    kernel config file ``CONFIG_*`` externs are read from (plain or gzip; default
    ``/boot/config-<release>``, else ``/proc/config.gz``).
    ``pin_path``: the bpffs directory of maps declared ``pinning = LIBBPF_PIN_BY_NAME``
    (default ``/sys/fs/bpf``, as libbpf); ``pins`` says where each was pinned, ``reused``
    which were found there already.
    """

    def __init__(self, spec: ObjectSpec, target_btf: str | Path | Btf | None = None, *,
                 module_btfs: dict[str, str | Path | Btf] | None = None,
                 kconfig: str | Path | None = None, pin_path: str | Path | None = None) -> None:
        self.spec = spec
        self.name = spec.name
        self._target_btf = target_btf
        self.pin_path = Path(pin_path) if pin_path is not None else objmaps.PIN_ROOT
        self.pins: dict[str, Path] = {}
        self.reused: set[str] = set()
        self._module_btfs = module_btfs
        self._kernel: KernelBtf | None = None
        self._kconfig = kconfig
        self._kconfig_done = False
        self.externs = Externs(spec, collect(spec))
        kcfg = kconfig_section(spec, self.externs.items)
        if kcfg is not None:
            spec.data[KCONFIG_SEC] = kcfg
        self.maps: dict[str, MapSpec] = dict(spec.maps)
        for sec in spec.data.values():
            self.maps[sec.name] = MapSpec(
                name=sec.name, type=syscalls.BPF_MAP_TYPE_ARRAY, key_size=4,
                value_size=len(sec.data), max_entries=1,
                map_flags=BPF_F_RDONLY_PROG if sec.readonly else 0,
                value_type_id=sec.btf_id,
            )
        self.programs = {name: Program(self, p) for name, p in spec.programs.items()}
        self.globals = Globals(self)
        self.map_fds: dict[str, int] = {}
        self.prog_fds: dict[str, int] = {}  # the loaded programs' fds by name
        self.btf_fd: int | None = None
        self.btf_error: LoaderError | None = None
        self._readers: list[Any] = []
        self._btf_lock = threading.Lock()  # loads on worker threads may read it first
        self._relocated: tuple[dict[int, bytes], dict[tuple[int, int], str]] | None = None
        self._prepared = False
        self.closed = False

    @classmethod
    def open(cls, source: str | Path | bytes, *, name: str | None = None,
             target_btf: str | Path | Btf | None = None,
             module_btfs: dict[str, str | Path | Btf] | None = None,
             kconfig: str | Path | None = None, pin_path: str | Path | None = None
             ) -> Object:
        """Read an object from a path or from its bytes (``name`` then names it)."""
        return cls(read_spec(source, name), target_btf, module_btfs=module_btfs,
                   kconfig=kconfig, pin_path=pin_path)

    # ---- before load -------------------------------------------------------------------

    def target_btf(self) -> Btf:
        """The kernel BTF relocations resolve against (read once)."""
        with self._btf_lock:
            if not isinstance(self._target_btf, Btf):
                self._target_btf = (Btf.vmlinux() if self._target_btf is None
                                    else Btf.from_file(self._target_btf))
            return self._target_btf

    def require_maps(self, names: Iterable[str]) -> None:
        """Refuse an object without maps ``names`` (those a caller writes to), before
        anything is created."""
        missing = set(names) - set(self.maps)
        if missing:
            raise LoaderError(f"{self.spec.origin}: expected maps {sorted(missing)} in .maps")

    def kernel_btf(self) -> KernelBtf | None:
        """vmlinux and module BTF, as relocations and externs search them; None where a
        ``target_btf`` was named without ``module_btfs`` (as libbpf, no module search)."""
        if self._kernel is None and (self._target_btf is None or self._module_btfs is not None):
            self._kernel = KernelBtf(self.target_btf(), self._module_btfs)
        return self._kernel

    def _resolve_kconfig(self) -> None:
        if not self._kconfig_done:
            sec = self.spec.data[KCONFIG_SEC]
            resolve_kconfig(self.externs.items, sec.data, self._kconfig)
            self._kconfig_done = True

    # ---- load --------------------------------------------------------------------------

    def load(
        self,
        programs: Iterable[str] | None = None,
        *,
        keep_going: bool = False,
        while_loading: Callable[[], T] | None = None,
    ) -> T | None:
        """Create the maps and load ``programs`` (default: every one with ``autoload``);
        ``while_loading()``'s value.

        The programs load on worker threads while ``while_loading()`` runs here: the
        verifier runs in the kernel with the GIL released, so the loads overlap each other
        and that Python work. With ``keep_going`` a refused program keeps its ``error`` and
        ``log`` and the others still load; otherwise the first refusal (in the order
        given) is raised. A KeyboardInterrupt cancels the loads not started and waits only
        for those running, so :meth:`close` then finds every fd.
        """
        self._check_open()
        names = ([p.name for p in self.programs.values() if p.autoload]
                 if programs is None else list(programs))
        unknown = set(names) - set(self.programs)
        if unknown:
            raise LoaderError(f"{self.spec.origin}: no program {sorted(unknown)}; programs: "
                              f"{sorted(self.programs)}")
        try:
            self._prepare()
            self._relocations()  # once, before the workers share it
            value = self._load_on_workers(names, keep_going, while_loading)
            self._check_prog_slots()
        except BaseException:
            self._unpin_created()
            raise
        return value

    def _load_on_workers(self, names: list[str], keep_going: bool,
                         while_loading: Callable[[], T] | None) -> T | None:
        """:meth:`load`'s loads on up to LOAD_THREADS threads (plain threads: a pool's
        module and its logging would cost every import of the monitor ~3 ms).

        A load begins only under ``state`` with ``stop`` unset, counted in ``loading``;
        an interrupt sets ``stop`` under it and waits for ``loading`` to reach 0, so no
        program is loaded after it comes out. (Not ``Thread.join``: one interrupted on
        Python 3.11 marks a running thread stopped.)"""
        errors: dict[str, BaseException] = {}
        pending = iter(names)
        state = threading.Condition()
        stop = threading.Event()  # set: start no more loads
        loading = [0]  # loads begun and not ended

        def work() -> None:
            while True:
                with state:
                    name = None if stop.is_set() else next(pending, None)
                    if name is None:
                        return
                    loading[0] += 1
                try:
                    self.programs[name].load()
                except LoaderError as exc:
                    errors[name] = exc
                    if not keep_going:
                        stop.set()
                except BaseException as exc:  # handed to the caller's thread below
                    errors[name] = exc
                    stop.set()
                finally:
                    with state:
                        loading[0] -= 1
                        state.notify_all()

        workers = [threading.Thread(target=work, name="ebpfwire-load")
                   for _ in range(min(LOAD_THREADS, len(names)))]
        try:
            for worker in workers:
                worker.start()
            value = while_loading() if while_loading is not None else None
            for worker in workers:
                worker.join()
        except BaseException:  # Ctrl-C too: the loads begun end, no other begins
            _settle(state, stop, loading)
            raise
        for name in names:
            exc = errors.get(name)
            if exc is not None and not (keep_going and isinstance(exc, LoaderError)):
                raise exc
        return value

    def _check_open(self) -> None:
        if self.closed:
            raise LoaderError(f"{self.spec.origin}: the object is closed")

    def _prepare(self) -> None:
        """The object's BTF and every map in the kernel (once)."""
        self._check_open()
        if self._prepared:
            return
        if KCONFIG_SEC in self.spec.data:
            self._resolve_kconfig()
        if any(e.section != KCONFIG_SEC for e in self.externs.items):
            # ksyms are the running kernel's, whatever BTF CO-RE relocates against
            self.externs.resolve_ksyms(self.kernel_btf() or KernelBtf(Btf.vmlinux(), {}))
        self._prepared = True
        if self.spec.btf is not None:
            self._load_btf()
        try:
            for spec in self.maps.values():
                self.map_fds[spec.name] = self._create_map(spec)
            for spec in self.maps.values():
                if spec.type in syscalls.MAP_IN_MAP_TYPES and spec.name not in self.reused:
                    for slot, target in spec.values.items():
                        objmaps.set_slot(spec.name, self.map_fds[spec.name], slot, target,
                                         self.map_fds[target])
        except BaseException:
            self._unpin_created()
            raise

    def _unpin_created(self) -> None:
        """Remove the pins this object made (not those it reused): a failed load leaves
        none behind, as libbpf's."""
        for name, path in list(self.pins.items()):
            if name not in self.reused:
                path.unlink(missing_ok=True)
                del self.pins[name]

    def _load_btf(self) -> None:
        btf = self.spec.btf
        sizes: dict[int, int] = {}
        offsets: dict[int, list[int]] = {}
        for tid in range(1, len(btf)):
            if btf.kind(tid) != BtfKind.DATASEC:
                continue
            rec = btf.type(tid)
            if rec.name in self.spec.section_sizes:
                sizes[tid] = self.spec.section_sizes[rec.name]
            offs = []
            for info in rec.detail:
                off = self.spec.symbol_offset(btf.type(info.type).name)
                offs.append(info.offset if off is None else off)
            offsets[tid] = offs
        blob = btf.with_fixes(sizes, offsets, self._hidden_funcs())
        if self.externs.items:
            blob = self.externs.fix_btf(blob)
        try:
            self.btf_fd = syscalls.btf_load(blob, BTF_LOG_SIZE)
        except BpfSyscallError as exc:  # programs still load, without func/line info
            tail = "\n".join(exc.log.rstrip().splitlines()[-10:])
            self.btf_error = LoaderError(f"{self.spec.origin}: the kernel refused the "
                                         f"object's BTF: {exc}\n{tail}", exc.errno)

    def _hidden_funcs(self) -> list[int]:
        """The BTF FUNCs of global or weak functions of hidden visibility (``__hidden``, as
        in libbpf's usdt.bpf.h): static to the verifier, as libbpf makes them, so they are
        checked in their callers' context instead of on their own."""
        names = {s.name for s in self.spec.symbols if s.type == "STT_FUNC"
                 and s.bind in ("STB_GLOBAL", "STB_WEAK")
                 and s.visibility in ("STV_HIDDEN", "STV_INTERNAL")}
        return [tid for name in names for tid in self.spec.btf.ids_named(name, (BtfKind.FUNC,))]

    def _create_map(self, spec: MapSpec) -> int:
        """A new map for ``spec`` (an outer map made with its inner template), or the map
        pinned under its name if it declares pinning and one is there."""
        sizes, entries = (spec.key_size, spec.value_size), spec.max_entries
        if spec.type == syscalls.BPF_MAP_TYPE_PERF_EVENT_ARRAY and not entries:
            entries = machine.possible_cpus()
        elif spec.type == syscalls.BPF_MAP_TYPE_RINGBUF:
            sizes = (0, 0)
        pin = self.pin_path / spec.name if spec.pinning == objmaps.LIBBPF_PIN_BY_NAME else None
        if pin is not None:
            fd = objmaps.reuse_pinned(spec.name, pin, {
                "type": spec.type, "key_size": sizes[0], "value_size": sizes[1],
                "max_entries": entries, "map_flags": spec.map_flags,
                "map_extra": spec.map_extra,
            })
            if fd is not None:
                self.pins[spec.name] = pin
                self.reused.add(spec.name)
                return fd
        data = self.spec.data.get(spec.name)
        btf_ids = {}
        if self.btf_fd is not None and spec.type not in _NO_BTF_TYPES and spec.value_type_id:
            btf_ids = {"btf_fd": self.btf_fd, "btf_key_type_id": spec.key_type_id,
                       "btf_value_type_id": spec.value_type_id}
        inner_fd = self._create_map(spec.inner) if spec.inner is not None else 0
        try:
            fd = syscalls.map_create(
                spec.type, *sizes, entries, spec.map_flags,
                data.map_name if data is not None else spec.name, map_extra=spec.map_extra,
                inner_map_fd=inner_fd, **btf_ids,
            )
        finally:
            if inner_fd:  # the template only shapes the outer map: libbpf drops it too
                os.close(inner_fd)
        if pin is not None:
            try:
                objmaps.pin(spec.name, fd, pin)
            except BaseException:
                os.close(fd)
                raise
            self.pins[spec.name] = pin
        if data is not None:
            try:
                syscalls.map_update(fd, bytes(4), bytes(data.data))
                if data.readonly:
                    syscalls.map_freeze(fd)
            except BaseException:
                os.close(fd)
                raise
        return fd

    def _fill_prog_slots(self, prog: Program) -> None:
        """Put ``prog``, just loaded, in each PROG_ARRAY slot that names it statically."""
        for spec in self.maps.values():
            if spec.type == syscalls.BPF_MAP_TYPE_PROG_ARRAY:
                for slot, target in spec.values.items():
                    if target == prog.name:
                        objmaps.set_slot(spec.name, self.map_fds[spec.name], slot, target,
                                         prog.fd)

    def _check_prog_slots(self) -> None:
        """Every static slot of a PROG_ARRAY that a loaded program uses holds its program:
        one not loaded is an error (libbpf's load fails on it too), not a tail call that
        silently falls through."""
        used = {ref.map for p in self.programs.values() if p.fd is not None and p.linked
                for ref in p.linked.map_refs}
        for spec in self.maps.values():
            if spec.type != syscalls.BPF_MAP_TYPE_PROG_ARRAY or spec.name not in used:
                continue
            for slot, target in sorted(spec.values.items()):
                prog = self.programs[target]
                if prog.fd is None:
                    why = (f"refused: {prog.error}" if prog.error is not None else
                           "not loaded (autoload off, or not among the programs asked for)")
                    raise LoaderError(f"map {spec.name!r} slot [{slot}] is set statically to "
                                      f"program {target!r}, which is {why}")

    def _relocations(self) -> tuple[dict[int, bytes], dict[tuple[int, int], str]]:
        if self._relocated is None:
            ext = self.spec.btf_ext
            if ext is None or not ext.core_relos:
                self._relocated = (self.spec.code, {})
            else:  # imported here: only objects with CO-RE relocations pay for it
                from ebpfwire.kernel.core import relocate_sections

                self._relocated = relocate_sections(
                    self.spec.code, self.spec.section_names, ext.core_relos, self.spec.btf,
                    self.target_btf(), self.kernel_btf(),
                )
        return self._relocated

    def _attach_btf_id(self, prog: Program) -> tuple[int, int]:
        """(attach BTF id, its module's BTF object fd or 0)."""
        kind = prog.spec.kind
        if kind.btf_target is None:
            return 0, 0
        name = kind.btf_target + prog.attach_to
        kinds = (BtfKind[kind.btf_kind],)
        kernel = self.kernel_btf()
        if kernel is None:
            ids = self.target_btf().ids_named(name, kinds)
            found = (ids[0], 0) if ids else None
        else:
            hit = kernel.find(name, kinds)
            found = hit and (hit.type_id, kernel.module_fd(hit.module) if hit.module else 0)
        if not found:
            raise LoaderError(
                f"program {prog.name!r} (section {prog.section!r}): the kernel's BTF has no "
                f"{kind.btf_kind} {name!r} to attach to"
            )
        return found

    def _load_program(self, prog: Program) -> int:
        code, failures = self._relocations()
        prog.linked = link(self.spec, prog.spec.function, code, failures,
                           self.externs.by_name())
        linked = prog.linked
        attach_id, attach_fd = self._attach_btf_id(prog)
        extras = ProgLoadExtras(
            expected_attach_type=prog.spec.kind.expected_attach_type,
            attach_btf_id=attach_id,
            attach_btf_obj_fd=attach_fd,
            kern_version=self.spec.kern_version,
            prog_flags=prog.spec.kind.flags,
            fd_array=self.externs.fd_array or None,
        )
        if self.btf_fd is not None:
            extras.prog_btf_fd = self.btf_fd
            extras.func_info = linked.func_info or None
            extras.line_info = linked.line_info or None
        try:
            return load_insns(prog.name, prog.section, prog.prog_type,
                              linked.with_fds(self.map_fds), self.spec.license, extras)
        except BpfSyscallError as exc:
            if exc.errno == errno.EPERM and extras.attach_btf_id:
                raise BpfSyscallError(
                    f"loading program {prog.name!r} (section {prog.section!r}, attach BTF id "
                    f"{extras.attach_btf_id}): the kernel answers EPERM (Operation not "
                    "permitted) to this program type", exc.errno,
                ) from exc
            raise

    # ---- after load --------------------------------------------------------------------

    def attach(self, programs: Iterable[str] | None = None) -> None:
        """Attach ``programs`` in the order given: programs on one hook run in attach
        order (default: every loaded one whose section says where)."""
        self._check_open()
        names = list(programs) if programs is not None else [
            p.name for p in self.programs.values() if p.fd is not None and p.auto_attach
        ]
        for name in names:
            self.programs[name].attach()

    def detach(self) -> None:
        """Detach every attached program; they stay loaded until :meth:`close`.

        The links close on one thread each: a perf event link waits for RCU grace periods
        in the kernel (tens of milliseconds), which overlap when closed at once."""
        links = [link for prog in self.programs.values() for link in prog.links]
        for prog in self.programs.values():
            prog.forget_links()
        closers = [threading.Thread(target=link.close, name="ebpfwire-detach")
                   for link in links[1:]]
        for closer in closers:
            closer.start()
        try:
            for link in links[:1]:
                link.close()
        finally:  # Ctrl-C too: every link is closed before this returns
            for closer in closers:
                closer.join()

    def map(self, name: str) -> Map:
        """The loaded map ``name`` (a ``.maps`` name, or a data section such as ``.bss``),
        keys and values typed from the object's BTF."""
        from ebpfwire.kernel.maps import Map  # here: a load does not need it

        fd = self._map_fd(name)
        spec = self.maps[name]
        if name in self.spec.data:
            return Map.from_fd(fd)
        codec = None
        if spec.type == syscalls.BPF_MAP_TYPE_PROG_ARRAY:
            codec = objmaps.FdCodec(self._prog_fd)
        elif spec.type in syscalls.MAP_IN_MAP_TYPES:
            codec = objmaps.FdCodec(self._map_fd)
        return Map.from_fd(fd, btf=self.spec.btf, key_type_id=spec.key_type_id,
                           value_type_id=spec.value_type_id, value_codec=codec)

    def _prog_fd(self, name: str) -> int:
        """The fd of loaded program ``name`` (what a PROG_ARRAY slot takes)."""
        prog = self.programs.get(name)
        if prog is None:
            raise LoaderError(f"{self.spec.origin}: no program {name!r}; programs: "
                              f"{sorted(self.programs)}")
        if prog.fd is None:
            raise LoaderError(f"program {name!r} is not loaded: load it first")
        return prog.fd

    def _map_fd(self, name: str) -> int:
        self._check_open()
        if name not in self.maps:
            raise LoaderError(f"{self.spec.origin}: no map {name!r}; maps: {sorted(self.maps)}")
        if name not in self.map_fds:
            raise LoaderError(f"map {name!r} is not created yet: load() first")
        return self.map_fds[name]

    def ring_buffer(self, name: str, *, drops: str | None = None, **kwargs: Any
                    ) -> RingBufReader:
        """A reader of RINGBUF map ``name`` (``drops``: the name of its drop counter map);
        closed with the object."""
        fd = self._map_fd(name)
        drops_fd = self._map_fd(drops) if drops is not None else None
        reader = RingBufReader(fd, syscalls.map_info(fd).max_entries, drops_map_fd=drops_fd,
                               **kwargs)
        self._readers.append(reader)
        return reader

    def perf_buffer(self, name: str, page_count: int = DEFAULT_PAGE_COUNT, *,
                    drops: str | None = None, **kwargs: Any) -> PerfReader:
        """A reader of PERF_EVENT_ARRAY map ``name`` (``drops``: the name of its drop
        counter map); closed with the object."""
        fd = self._map_fd(name)
        drops_fd = self._map_fd(drops) if drops is not None else None
        reader = PerfReader(fd, page_count, drops_map_fd=drops_fd, **kwargs)
        self._readers.append(reader)
        return reader

    def close(self) -> None:
        """Detach, then close readers, programs, maps and BTF; idempotent."""
        if self.closed:
            return
        self.closed = True
        self.detach()
        for reader in self._readers:
            reader.close()
        prog_arrays = [fd for name, fd in self.map_fds.items()
                       if self.maps[name].type == syscalls.BPF_MAP_TYPE_PROG_ARRAY
                       and name not in self.pins]
        prog_array_ids = objmaps.empty_prog_arrays(prog_arrays)
        for prog in self.programs.values():
            if prog.fd is not None:
                os.close(prog.fd)
                prog.fd = None
        for fd in self.map_fds.values():
            os.close(fd)
        self.map_fds.clear()
        self.prog_fds.clear()
        if self.btf_fd is not None:
            os.close(self.btf_fd)
            self.btf_fd = None
        if self._kernel is not None:
            self._kernel.close()
        objmaps.wait_freed(prog_array_ids)  # last: a Ctrl-C here leaves no fd open

    def __enter__(self) -> Object:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
