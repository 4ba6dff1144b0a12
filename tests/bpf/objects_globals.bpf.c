/* Global data, subprograms and a callback, for the object API (tests/test_objects.py).
 *
 * On sys_enter_getppid of `target_tgid` (.rodata, set from Python before load): `calls`
 * (.bss) counts, `total` (.bss) adds `step` (.data, writable after load) through a static
 * subprogram in .text and a global one, `looped` sums 0..loops-1 in a bpf_loop callback
 * and `greeting` gets a string literal (.rodata.str1.1). `broken` never verifies.
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

const volatile __u32 target_tgid = 0;
const volatile __u32 loops = 4;
__u64 step = 1;
__u64 calls = 0;
__u64 total = 0;
__u64 looped = 0;
char greeting[8] = {};

static __noinline __u64 add(__u64 a, __u64 b)
{
	return a + b;
}

__noinline int twice(int x)
{
	return x * 2;
}

static long sum_index(__u32 i, void *ctx)
{
	*(__u64 *)ctx += i;
	return 0;
}

SEC("tp/syscalls/sys_enter_getppid")
int count_getppid(void *ctx)
{
	__u64 sum = 0;

	if (bpf_get_current_pid_tgid() >> 32 != target_tgid)
		return 0;
	calls = add(calls, 1);
	total = add(total, step) + twice(0);
	bpf_loop(loops, sum_index, &sum, 0);
	looped = sum;
	bpf_probe_read_kernel_str(greeting, sizeof(greeting), "hello");
	return 0;
}

#ifndef ORACLE /* bpftool loads whole objects: leave out what must fail */
SEC("tp/syscalls/sys_enter_getpid")
int broken(void *ctx)
{
	char buf[8] = {};
	__u32 i = bpf_get_prandom_u32();

	return buf[i];
}
#endif

char LICENSE[] SEC("license") = "GPL";
