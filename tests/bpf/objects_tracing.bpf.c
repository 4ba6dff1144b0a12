/* BTF-typed tracing programs (tests/test_objects_core.py): tp_btf counts getppid calls of
 * `target_tgid` from the sys_enter raw tracepoint's typed arguments; fentry, fexit, fmod_ret
 * and lsm load with their attach BTF ids (refused with EPERM where trampolines are not allowed). */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

const volatile __u32 target_tgid = 0;
const volatile __u64 getppid_nr = 110;
__u64 seen = 0;

SEC("tp_btf/sys_enter")
int on_sys_enter(__u64 *ctx)
{
	if (bpf_get_current_pid_tgid() >> 32 == target_tgid && ctx[1] == getppid_nr)
		__sync_fetch_and_add(&seen, 1);
	return 0;
}

#ifndef ORACLE /* bpftool loads whole objects: leave out what must fail */
SEC("fentry/do_nanosleep")
int on_nanosleep(__u64 *ctx)
{
	__sync_fetch_and_add(&seen, 100);
	return 0;
}

SEC("fexit/do_nanosleep")
int on_nanosleep_exit(__u64 *ctx)
{
	__sync_fetch_and_add(&seen, 1000);
	return 0;
}

SEC("fmod_ret/security_file_open")
int on_file_open_modify(__u64 *ctx)
{
	return 0; /* 0: the hook runs as it would */
}

SEC("lsm/file_open")
int on_file_open(__u64 *ctx)
{
	return 0;
}
#endif

char LICENSE[] SEC("license") = "GPL";
