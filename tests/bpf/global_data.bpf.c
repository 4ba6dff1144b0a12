/* A program with a global variable: the loader must refuse it and name the section. */
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
