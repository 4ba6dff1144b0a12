"""ebpfwire: decode, encode, capture and fuzz the eBPF syscall-event wire format."""
