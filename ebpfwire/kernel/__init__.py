"""The kernel side: bpf(2) and perf_event_open(2), ELF and BTF, maps, attachment, the one
program-collection lifecycle (load, attach, close) the bundled monitor and statistics
programs share, and the perf and ring buffer readers.

Nothing here imports the capture, process or output layers: a recorder writes what these
readers give it. The package itself imports nothing, so ``import ebpfwire.kernel.perf`` loads
only what the perf reader needs.
"""
