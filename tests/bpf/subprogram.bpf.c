/* A program calling a non-inlined function: a BPF-to-BPF call the loader links. */
#include <linux/bpf.h>

#define SEC(name) __attribute__((section(name), used))

struct {
	int (*type)[BPF_MAP_TYPE_ARRAY];
	int (*max_entries)[1];
	__u32 *key;
	__u32 *value;
} config SEC(".maps");

__attribute__((noinline)) int helper(int x)
{
	return x * 3;
}

SEC("tracepoint/syscalls/sys_enter_close")
int close__enter(void *ctx)
{
	volatile int x = 1; /* not known at compile time: the call stays */

	return helper(x);
}

char LICENSE[] SEC("license") = "GPL";
