/* The contract between the bundled BPF program and the Python loader.
 *
 * The loader fills element 0 of the ARRAY map `config` (key u32 0) with this
 * struct before attaching any program. Offsets come from the running kernel's
 * BTF (/sys/kernel/btf/vmlinux), so the program needs no CO-RE and no
 * kernel headers of the machine it runs on. u32 fields then a char[16]: no padding.
 */
#ifndef EBPFWIRE_MONITOR_CONFIG_H
#define EBPFWIRE_MONITOR_CONFIG_H

struct monitor_config {
	__u32 ready;                /* 1 once the loader has filled the struct; 0 => programs emit nothing */
	__u32 filter_tgid;          /* 0 = every process; else only the tgids in the `traced` map (that
	                             * tgid, seeded by the loader, and every descendant forked since) */
	__u32 ignore_tgid;          /* the reader's own tgid, never traced (0 = none) */
	__u32 host_pidns_inum;      /* inode of /proc/1/ns/pid: tasks in it are host tasks (pid_id = 0) */
	__u32 host_mntns_inum;      /* inode of /proc/1/ns/mnt: tasks in it get mnt_id = 0 */
	/* struct task_struct */
	__u32 task_real_parent;     /* offsetof(struct task_struct, real_parent), a struct task_struct * */
	__u32 task_tgid;            /* offsetof(struct task_struct, tgid), pid_t */
	__u32 task_group_leader;    /* offsetof(struct task_struct, group_leader), struct task_struct * */
	__u32 task_nsproxy;         /* offsetof(struct task_struct, nsproxy), struct nsproxy * */
	__u32 task_thread_pid;      /* offsetof(struct task_struct, thread_pid), struct pid * */
	/* struct nsproxy */
	__u32 nsproxy_mnt_ns;       /* offsetof(struct nsproxy, mnt_ns), struct mnt_namespace * */
	/* namespaces: offset of the embedded struct ns_common plus offsetof(struct ns_common, inum) */
	__u32 mnt_ns_inum;          /* offsetof(struct mnt_namespace, ns) + offsetof(struct ns_common, inum) */
	__u32 pid_ns_inum;          /* offsetof(struct pid_namespace, ns) + offsetof(struct ns_common, inum) */
	/* struct pid: the task's pid number as seen in its own namespace is
	 * pid->numbers[pid->level].nr, and its own pid namespace (what
	 * /proc/PID/ns/pid shows) is pid->numbers[pid->level].ns */
	__u32 pid_level;            /* offsetof(struct pid, level), unsigned int */
	__u32 pid_numbers;          /* offsetof(struct pid, numbers) */
	__u32 upid_size;            /* sizeof(struct upid) */
	__u32 upid_nr;              /* offsetof(struct upid, nr), int */
	__u32 upid_ns;              /* offsetof(struct upid, ns), struct pid_namespace * */
	/* struct pt_regs (raw_syscalls sys_enter/sys_exit hand the program the registers) */
	__u32 regs_arg0;            /* offset of the register holding syscall argument 0 (x86-64: di) */
	__u32 regs_arg1;            /* si */
	__u32 regs_arg2;            /* dx */
	__u32 regs_arg3;            /* r10 */
	__u32 regs_arg4;            /* r8 */
	__u32 regs_arg5;            /* r9 */
	__u32 regs_nr;              /* orig_ax: the syscall number, kept until the exit */
	__u32 task_ti_status;       /* offsetof(struct task_struct, thread_info.status): TS_COMPAT 0x2 */
	/* raw tracepoint arguments */
	__u32 binprm_filename;      /* offsetof(struct linux_binprm, filename), const char * */
	__u32 task_exit_code;       /* offsetof(struct task_struct, exit_code), int: the wait(2) status at exit */
	__u32 sk_family;            /* offsetof(struct sock, __sk_common.skc_family), u16 */
	__u32 sk_protocol;          /* offsetof(struct sock, sk_protocol), u16 */
	__u32 sk_sport;             /* offsetof(struct inet_sock, inet_sport), __be16 */
	__u32 sk_dport;             /* offsetof(struct sock, __sk_common.skc_dport), __be16 */
	__u32 sk_daddr;             /* offsetof(struct sock, __sk_common.skc_daddr), __be32 */
	__u32 sk_v6_daddr;          /* offsetof(struct sock, __sk_common.skc_v6_daddr), 16 bytes */
	/* the exec strings read from the new image at sched_process_exec */
	__u32 task_mm;              /* offsetof(struct task_struct, mm), struct mm_struct * */
	__u32 mm_arg_start;         /* offsetof(struct mm_struct, arg_start): argv's first byte */
	__u32 mm_arg_end;           /* offsetof(struct mm_struct, arg_end): past argv's last NUL */
	/* the comm filter */
	__u32 filter_comm;          /* 0 = every task; 1 = only tasks whose current comm equals `comm` */
	char comm[16];              /* NUL-padded, compared on all 16 bytes */
};

#endif
