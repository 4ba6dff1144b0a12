/* A map pinned by name (LIBBPF_PIN_BY_NAME), for tests/test_objects_maps.py: two loads
 * of this object share `ew_pinned`; `local` is each load's own. On sys_enter_getppid of
 * `target_tgid` (.rodata), `bump` adds 1 to element 0 of both. */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

const volatile __u32 target_tgid = 0;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ew_pinned SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} local SEC(".maps");

SEC("tp/syscalls/sys_enter_getppid")
int bump(void *ctx)
{
	__u32 zero = 0;
	__u64 *value;

	if (bpf_get_current_pid_tgid() >> 32 != target_tgid)
		return 0;
	value = bpf_map_lookup_elem(&ew_pinned, &zero);
	if (value)
		__sync_fetch_and_add(value, 1);
	value = bpf_map_lookup_elem(&local, &zero);
	if (value)
		__sync_fetch_and_add(value, 1);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
