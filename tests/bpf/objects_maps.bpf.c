/* Map-in-map, static `values`, tail calls and a bloom filter, for tests/test_objects_maps.py.
 *
 * On sys_enter_getppid of `target_tgid` (.rodata): `use_outer` adds k + 1 to element 0 of
 * the inner map in slot k of `outer` (ARRAY_OF_MAPS, slots 0 and 3 set statically, the
 * others from Python) and 10 to element 1 of the inner map at key 1 of `outer_hash`;
 * `jump` tail-calls slot `slot` (.data) of `jmp` (PROG_ARRAY, slot 0 set statically):
 * each tail-called program counts its runs, a missed tail call counts in `missed`;
 * `bloom_check` counts in `bloom_hits` which of `probes` the bloom filter may hold.
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

const volatile __u32 target_tgid = 0;
__u32 slot = 0;
__u64 entry_runs = 0;
__u64 tail_a_runs = 0;
__u64 tail_b_runs = 0;
__u64 missed = 0;
__u64 bloom_hits = 0;
__u32 probes[4] = {};

struct inner_def {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
};

struct inner_def inner_a SEC(".maps");
struct inner_def inner_b SEC(".maps");
struct inner_def inner_c SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 4);
	__type(key, __u32);
	__array(values, struct inner_def);
} outer SEC(".maps") = {
	.values = { [0] = &inner_a, [3] = &inner_b },
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__uint(max_entries, 4);
	__type(key, __u32);
	__array(values, struct inner_def);
} outer_hash SEC(".maps") = {
	.values = { [1] = &inner_c },
};

SEC("tp/syscalls/sys_enter_getppid")
int tail_a(void *ctx);
SEC("tp/syscalls/sys_enter_getppid")
int tail_b(void *ctx);

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__array(values, int (void *));
} jmp SEC(".maps") = {
	.values = { [0] = (void *)&tail_a },
};

struct {
	__uint(type, BPF_MAP_TYPE_BLOOM_FILTER);
	__uint(max_entries, 16);
	__uint(value_size, sizeof(__u32));
	__uint(map_flags, BPF_F_ZERO_SEED); /* the same hashes on every run: no chance false positive */
	__uint(map_extra, 3); /* number of hash functions */
} bloom SEC(".maps");

#ifdef BAD_VALUES /* inner maps in a map that cannot hold maps: refused at open */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4);
	__type(key, __u32);
	__array(values, struct inner_def);
} bad SEC(".maps");
#endif

static __always_inline int ours(void)
{
	return bpf_get_current_pid_tgid() >> 32 == target_tgid;
}

static __always_inline void add_slot(__u32 k)
{
	__u32 zero = 0;
	__u64 *value;
	void *inner;

	inner = bpf_map_lookup_elem(&outer, &k);
	if (!inner)
		return;
	value = bpf_map_lookup_elem(inner, &zero);
	if (value)
		__sync_fetch_and_add(value, k + 1);
}

SEC("tp/syscalls/sys_enter_getppid")
int use_outer(void *ctx)
{
	__u32 one = 1;
	__u64 *value;
	void *inner;

	if (!ours())
		return 0;
	add_slot(0);
	add_slot(1);
	add_slot(2);
	add_slot(3);
	inner = bpf_map_lookup_elem(&outer_hash, &one);
	if (inner) {
		value = bpf_map_lookup_elem(inner, &one);
		if (value)
			__sync_fetch_and_add(value, 10);
	}
	return 0;
}

SEC("tp/syscalls/sys_enter_getppid")
int jump(void *ctx)
{
	if (!ours())
		return 0;
	entry_runs++;
	bpf_tail_call(ctx, &jmp, slot);
	missed++;
	return 0;
}

SEC("tp/syscalls/sys_enter_getppid")
int tail_a(void *ctx)
{
	tail_a_runs++;
	return 0;
}

SEC("tp/syscalls/sys_enter_getppid")
int tail_b(void *ctx)
{
	tail_b_runs++;
	return 0;
}

SEC("tp/syscalls/sys_enter_getppid")
int bloom_check(void *ctx)
{
	if (!ours())
		return 0;
	for (int i = 0; i < 4; i++)
		if (bpf_map_peek_elem(&bloom, &probes[i]) == 0)
			bloom_hits |= 1 << i;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
