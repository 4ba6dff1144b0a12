/* A program calling a non-inlined function: a BPF-to-BPF call the loader rejects. */
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
	return helper((long)ctx & 1);
}

char LICENSE[] SEC("license") = "GPL";
