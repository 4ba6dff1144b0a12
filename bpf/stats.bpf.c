// SPDX-License-Identifier: GPL-2.0
/* ebpfwire syscall statistics: per syscall, calls, errors by errno and a log2
 * histogram of entry-to-exit time in microseconds, kept in per-CPU maps.
 * Nothing is sent to user space: the loader reads the maps (ebpfwire/kernel/stats.py).
 *
 * Like the monitor, the object has no global data and no CO-RE: the filters
 * come from the `config` map. It has its own maps, so it runs beside the
 * monitor. raw_syscalls enter/exit cover every syscall (as BCC's syscount).
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define MAX_SYSCALLS 1024 /* syscall numbers at or above are not counted */
#define SLOTS        64   /* log2 buckets of a duration in microseconds */
#define MAX_ERRNO    4095 /* a return value in [-4095, -1] is an error */

struct stats_config {
	__u32 ready;           /* 1 once the loader filled the struct; 0 => nothing is counted */
	__u32 filter_tgid;     /* 0 = every process; else only the tgids in `traced` */
	__u32 ignore_tgid;     /* a tgid never counted (the reader's own), 0 = none */
	__u32 filter_syscalls; /* 0 = every syscall; 1 = only those marked in `syscall_set` */
};

/* one syscall's counters on one CPU; slots[i] counts durations d (in us)
 * with log2l(d) == i, BCC's bucketing: slot 1 is 0..1 us, slot 2 is 2..3 ... */
struct syscall_stats {
	__u64 calls;
	__u64 errors;
	__u64 total_ns;
	__u64 slots[SLOTS];
};

struct start {
	__u64 ts;
	__u32 nr;
	__u32 pad;
};

struct errno_key {
	__u32 nr;
	__u32 err; /* positive errno */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct stats_config);
} config SEC(".maps");

/* 1 at index nr: syscall nr is counted (read when filter_syscalls is set) */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_SYSCALLS);
	__type(key, __u32);
	__type(value, __u32);
} syscall_set SEC(".maps");

/* tgids counted when filter_tgid is set: the loader puts filter_tgid in,
 * the fork program adds children (and threads, by tid), exit removes them */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, __u32);
	__type(value, __u32);
} traced SEC(".maps");

/* entry time and number of the syscall a thread is in, keyed by pid_tgid */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct start);
} starts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MAX_SYSCALLS);
	__type(key, __u32);
	__type(value, struct syscall_stats);
} stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct errno_key);
	__type(value, __u64);
} errnos SEC(".maps");

/* index 0: entries that found `starts` full; 1: errno pairs that found `errnos` full */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} dropped SEC(".maps");

static __always_inline void count_dropped(__u32 what)
{
	__u64 *n = bpf_map_lookup_elem(&dropped, &what);

	if (n)
		*n += 1;
}

/* BCC's bpf_log2l: 1 + floor(log2(v)) for v > 0, and 1 for v == 0 */
static __always_inline __u32 log2l(__u64 v)
{
	__u32 r = 0, shift;

	shift = (v > 0xFFFFFFFF) << 5; v >>= shift; r |= shift;
	shift = (v > 0xFFFF) << 4; v >>= shift; r |= shift;
	shift = (v > 0xFF) << 3; v >>= shift; r |= shift;
	shift = (v > 0xF) << 2; v >>= shift; r |= shift;
	shift = (v > 0x3) << 1; v >>= shift; r |= shift;
	r |= (v >> 1);
	return r + 1;
}

/* raw tracepoint sys_enter(struct pt_regs *regs, long id) */
SEC("raw_tracepoint/sys_enter")
int stats__sys_enter(struct bpf_raw_tracepoint_args *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tgid = pid_tgid >> 32, zero = 0, nr = ctx->args[1];
	struct stats_config *cfg = bpf_map_lookup_elem(&config, &zero);
	struct start s = {};
	__u32 *on;

	if (!cfg || !cfg->ready || nr >= MAX_SYSCALLS)
		return 0;
	if (cfg->ignore_tgid && cfg->ignore_tgid == tgid)
		return 0;
	if (cfg->filter_tgid && !bpf_map_lookup_elem(&traced, &tgid))
		return 0;
	if (cfg->filter_syscalls) {
		on = bpf_map_lookup_elem(&syscall_set, &nr);
		if (!on || !*on)
			return 0;
	}
	s.ts = bpf_ktime_get_ns();
	s.nr = nr;
	if (bpf_map_update_elem(&starts, &pid_tgid, &s, BPF_ANY))
		count_dropped(0);
	return 0;
}

/* raw tracepoint sys_exit(struct pt_regs *regs, long ret); the syscall number
 * is the one saved at entry, so no pt_regs field is read */
SEC("raw_tracepoint/sys_exit")
int stats__sys_exit(struct bpf_raw_tracepoint_args *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid(), delta, one = 1, *n;
	long ret = ctx->args[1];
	struct syscall_stats *st;
	struct errno_key ek = {};
	struct start *s;
	__u32 nr, slot;

	s = bpf_map_lookup_elem(&starts, &pid_tgid);
	if (!s)
		return 0; /* not counted at entry, or entered before we attached */
	delta = bpf_ktime_get_ns() - s->ts;
	nr = s->nr;
	bpf_map_delete_elem(&starts, &pid_tgid);

	st = bpf_map_lookup_elem(&stats, &nr);
	if (!st)
		return 0;
	st->calls += 1;
	st->total_ns += delta;
	slot = log2l(delta / 1000);
	if (slot >= SLOTS)
		slot = SLOTS - 1;
	/* clang folds the clamp into a form the verifier cannot follow; hide it
	 * and mask, which changes nothing for a clamped slot */
	asm volatile("" : "+r"(slot));
	st->slots[slot & (SLOTS - 1)] += 1;
	if (ret < 0 && ret >= -MAX_ERRNO) {
		st->errors += 1;
		ek.nr = nr;
		ek.err = -ret;
		n = bpf_map_lookup_elem(&errnos, &ek);
		if (!n && !bpf_map_update_elem(&errnos, &ek, &one, BPF_NOEXIST))
			return 0; /* created with this CPU's count at 1 */
		if (!n) /* another CPU created it meanwhile, or the map is full */
			n = bpf_map_lookup_elem(&errnos, &ek);
		if (n)
			*n += 1;
		else
			count_dropped(1);
	}
	return 0;
}

/* tracepoint sched/sched_process_fork (this kernel's format: comms as __data_loc) */
struct fork_ctx {
	__u64 common;
	__u32 parent_comm_loc;
	int parent_pid;
	__u32 child_comm_loc;
	int child_pid;
};

/* a child of a traced process is traced (`strace -f`): attached with a pid filter only */
SEC("tracepoint/sched/sched_process_fork")
int stats__fork(struct fork_ctx *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32, child = ctx->child_pid, one = 1;

	if (bpf_map_lookup_elem(&traced, &tgid))
		bpf_map_update_elem(&traced, &child, &one, BPF_ANY);
	return 0;
}

struct exit_ctx {
	__u64 common;
	char comm[16];
	int pid;
	int prio;
	__u8 group_dead;
};

/* a thread that exits inside a syscall (exit, exit_group) never reaches
 * sys_exit: drop its entry; drop a dead process (or thread) from `traced` */
SEC("tracepoint/sched/sched_process_exit")
int stats__exit(struct exit_ctx *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)pid_tgid, tgid = pid_tgid >> 32;

	bpf_map_delete_elem(&starts, &pid_tgid);
	if (tid != tgid || ctx->group_dead)
		bpf_map_delete_elem(&traced, &tid);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
