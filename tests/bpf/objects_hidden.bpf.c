/* A global function of hidden visibility (`__hidden`, as libbpf's usdt.bpf.h declares its
 * helpers): the verifier would check it on its own as a global function and refuse its
 * write through a pointer that may be NULL; the loader gives it static linkage in the
 * object's BTF, as libbpf does, so it is checked with its caller's stack pointer.
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

__u64 seen_pid;
__u64 calls;

__attribute__((visibility("hidden"))) __attribute__((noinline)) int
store_pid(__u64 *out)
{
	*out = bpf_get_current_pid_tgid() >> 32;
	return 1;
}

SEC("raw_tp/sys_enter")
int hidden_caller(void *ctx)
{
	__u64 pid = 0;

	if (store_pid(&pid) && pid == seen_pid)
		__sync_fetch_and_add(&calls, 1);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
