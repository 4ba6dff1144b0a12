/* A program with a global variable (.bss): a map the loader creates, readable by name. */
#include <linux/bpf.h>

#define SEC(name) __attribute__((section(name), used))

int counter;

SEC("tracepoint/syscalls/sys_enter_close")
int close__enter(void *ctx)
{
	counter++;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
