/* Externs (tests/test_objects_externs.py): .kconfig values libbpf fills in (the kernel
 * version, LINUX_HAS_*, CONFIG_* of each C type, a __weak one that is not set), an
 * untyped ksym (an address from /proc/kallsyms), kfuncs (bpf_task_from_pid /
 * bpf_task_release) and __weak ksyms and kfuncs this kernel lacks: tp_btf/sys_enter
 * copies them into .bss when `target_tgid` calls getppid. Typed per-CPU ksyms
 * (bpf_prog_active, runqueues through bpf_this_cpu_ptr / bpf_per_cpu_ptr) are in a program
 * of their own: the kernel finds their address in kallsyms, which holds no data symbols
 * without CONFIG_KALLSYMS_ALL. */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define ksym_exists(sym) (!!(sym)) /* libbpf 1.2's bpf_ksym_exists, without its assert */

extern __u32 LINUX_KERNEL_VERSION __kconfig;
extern _Bool LINUX_HAS_BPF_COOKIE __kconfig __weak;
extern _Bool LINUX_HAS_SYSCALL_WRAPPER __kconfig __weak;
extern _Bool CONFIG_BPF_SYSCALL __kconfig;                 /* y, as a bool */
extern enum libbpf_tristate CONFIG_BPF_EVENTS __kconfig;   /* y, as a tristate */
extern char CONFIG_TRACEPOINTS __kconfig;                  /* y, as a char */
extern int CONFIG_HZ __kconfig;                            /* a number */
extern __u64 CONFIG_NR_CPUS __kconfig;                     /* a number, 8 bytes */
extern char CONFIG_LOCALVERSION[16] __kconfig;             /* a string */
extern _Bool CONFIG_MODULES __kconfig __weak;              /* "is not set": 0 */
extern int CONFIG_EBPFWIRE_NOT_THERE __kconfig __weak;     /* absent: 0 */
#ifdef STRONG_KCONFIG
extern int CONFIG_EBPFWIRE_ABSENT __kconfig;               /* absent and strong: refused */
#endif

struct rq {
	int cpu;
} __attribute__((preserve_access_index));

struct task_struct {
	int pid;
	int tgid;
} __attribute__((preserve_access_index));

extern const int bpf_prog_active __ksym;                   /* typed, per CPU */
extern const struct rq runqueues __ksym;                   /* typed, per CPU */
extern const void __x64_sys_getppid __ksym;                /* untyped: its address */
extern const int ebpfwire_no_such_var __ksym __weak;       /* typed, absent: address 0 */
extern struct task_struct *bpf_task_from_pid(__s32 pid) __ksym;
extern void bpf_task_release(struct task_struct *p) __ksym;
extern void bpf_ebpfwire_no_such_kfunc(void) __ksym __weak;
#ifdef STRONG_KSYM
extern const int ebpfwire_absent_var __ksym;               /* absent and strong: refused */
#endif

const volatile __u32 target_tgid = 0;
const volatile __u64 getppid_nr = 110;

__u32 kernel_version, hz, modules, not_there, has_cookie, has_wrapper;
__u64 nr_cpus;
__u32 bpf_syscall, bpf_events, tracepoints;
char localversion[16];
__u64 getppid_addr, no_such_var_addr;
__s32 prog_active = -1, rq_cpu = -1, this_cpu = -1;
__s32 task_tgid, task_pid;
__u32 has_task_from_pid, has_no_such_kfunc, hits;

SEC("tp_btf/sys_enter")
int read_externs(__u64 *ctx)
{
	struct task_struct *task;

	if (bpf_get_current_pid_tgid() >> 32 != target_tgid || ctx[1] != getppid_nr)
		return 0;
	kernel_version = LINUX_KERNEL_VERSION;
	has_cookie = LINUX_HAS_BPF_COOKIE;
	has_wrapper = LINUX_HAS_SYSCALL_WRAPPER;
	bpf_syscall = CONFIG_BPF_SYSCALL;
	bpf_events = CONFIG_BPF_EVENTS;
	tracepoints = CONFIG_TRACEPOINTS;
	hz = CONFIG_HZ;
	nr_cpus = CONFIG_NR_CPUS;
	modules = CONFIG_MODULES;
	not_there = CONFIG_EBPFWIRE_NOT_THERE;
#ifdef STRONG_KCONFIG
	not_there = CONFIG_EBPFWIRE_ABSENT;
#endif
	__builtin_memcpy(localversion, CONFIG_LOCALVERSION, sizeof(localversion));

	getppid_addr = (__u64)&__x64_sys_getppid;
	no_such_var_addr = (__u64)&ebpfwire_no_such_var;
#ifdef STRONG_KSYM
	no_such_var_addr = (__u64)&ebpfwire_absent_var;
#endif

	task = bpf_task_from_pid(target_tgid);
	if (task) {
		task_tgid = task->tgid;
		task_pid = task->pid;
		bpf_task_release(task);
	}
	has_task_from_pid = ksym_exists(bpf_task_from_pid);
	has_no_such_kfunc = ksym_exists(bpf_ebpfwire_no_such_kfunc);
	if (ksym_exists(bpf_ebpfwire_no_such_kfunc))
		bpf_ebpfwire_no_such_kfunc(); /* poisoned, and dead */
	__sync_fetch_and_add(&hits, 1);
	return 0;
}

#ifndef ORACLE /* bpftool loads whole objects: leave out what must fail */
SEC("tp_btf/sys_enter")
int reads_percpu_ksyms(__u64 *ctx)
{
	const int *active;
	struct rq *rq;
	__u32 cpu;

	if (bpf_get_current_pid_tgid() >> 32 != target_tgid || ctx[1] != getppid_nr)
		return 0;
	cpu = bpf_get_smp_processor_id();
	this_cpu = cpu;
	active = bpf_this_cpu_ptr(&bpf_prog_active);
	prog_active = *active;
	rq = bpf_per_cpu_ptr(&runqueues, cpu);
	if (rq)
		rq_cpu = rq->cpu;
	return 0;
}

SEC("tp_btf/sys_enter")
int calls_missing_kfunc(__u64 *ctx)
{
	bpf_ebpfwire_no_such_kfunc(); /* reached: the verifier names the poisoned call */
	return 0;
}
#endif

#ifdef MODULE_BTF /* relocated and linked against a module BTF file the test writes */
#include <bpf/bpf_core_read.h>

struct ebpfwire_mod_state { /* the module has `int before; long count;` */
	long count;
	int before;
} __attribute__((preserve_access_index));

extern int ebpfwire_mod_kfunc(int pid) __ksym;
extern const int ebpfwire_mod_var __ksym;
__u64 mod_offset, mod_type_id, mod_var_addr;
__s32 mod_result;

SEC("tp_btf/ebpfwire_mod_event")
int uses_module(__u64 *ctx)
{
	mod_offset = bpf_core_field_offset(struct ebpfwire_mod_state, count);
	mod_type_id = bpf_core_type_id_kernel(struct ebpfwire_mod_state);
	mod_var_addr = (__u64)&ebpfwire_mod_var;
	mod_result = ebpfwire_mod_kfunc(1);
	return 0;
}
#endif

char LICENSE[] SEC("license") = "GPL";
