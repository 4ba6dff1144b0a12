// SPDX-License-Identifier: GPL-2.0
/* ebpfwire system monitor: syscall, process-exit and TCP events in the
 * classic KubeArmor wire layout (68-byte packed header + tagged arguments),
 * submitted with bpf_perf_event_output to the perf array `events` (or, built
 * with -DEBPFWIRE_RINGBUF, with bpf_ringbuf_output to the ring buffer `events`).
 *
 * Built for a loader without CO-RE and without global data: every kernel
 * structure offset comes from the `config` map (struct monitor_config), every
 * constant is an immediate, and the object has no .data/.bss/.rodata.
 * The facts of the format are in docs/bpf-program.md and the wire-format page.
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "monitor_config.h"

/* ---- limits of the wire format ---------------------------------------- */

#define MAX_BUFFER_SIZE   32768
#define BUF_MASK          (MAX_BUFFER_SIZE - 1)
#define MAX_STRING_SIZE   4096
#define MAX_STR_ARR_ELEM  20
#define MAX_ELEMENT_SIZE  110 /* sizeof(struct sockaddr_un), the biggest fixed payload */

/* ---- argument tags (wire-format.md section 4) -------------------------- */

#define INT_T             1
#define STR_T             10
#define STR_ARR_T         11
#define SOCKADDR_T        12
#define OPEN_FLAGS_T      13
#define EXEC_FLAGS_T      14
#define SOCK_DOM_T        15
#define SOCK_TYPE_T       16
#define FILE_TYPE_T       17 /* never on the wire: written as STR_T */
#define UNLINKAT_FLAG_T   19
#define PTRACE_REQ_T      23
#define MOUNT_FLAG_T      24
#define UMOUNT_FLAG_T     25

#define ENC_ARG_TYPE(n, type) ((__u64)(type) << (8 * (n)))

/* ---- event ids (x86-64 syscall numbers and the special ids) ------------ */

#define EV_OPEN         2
#define EV_CLOSE        3
#define EV_SOCKET       41
#define EV_CONNECT      42
#define EV_ACCEPT       43
#define EV_BIND         49
#define EV_LISTEN       50
#define EV_EXECVE       59
#define EV_RMDIR        84
#define EV_UNLINK       87
#define EV_CHOWN        92
#define EV_PTRACE       101
#define EV_SETUID       105
#define EV_SETGID       106
#define EV_MOUNT        165
#define EV_UMOUNT       166
#define EV_OPENAT       257
#define EV_FCHOWNAT     260
#define EV_UNLINKAT     263
#define EV_EXECVEAT     322
#define EV_DO_EXIT      351
#define EV_BPRM         352
#define EV_TCP_CONNECT  400
#define EV_TCP_ACCEPT   401
#define EV_TCP_CONNECT6 402
#define EV_TCP_ACCEPT6  403

/* ---- argument masks: the catalogue of wire-format.md section 7 --------- */

#define MASK_OPEN     (ENC_ARG_TYPE(0, FILE_TYPE_T) | ENC_ARG_TYPE(1, OPEN_FLAGS_T))
#define MASK_CLOSE    (ENC_ARG_TYPE(0, INT_T))
#define MASK_SOCKET   (ENC_ARG_TYPE(0, SOCK_DOM_T) | ENC_ARG_TYPE(1, SOCK_TYPE_T) | \
		       ENC_ARG_TYPE(2, INT_T))
#define MASK_SOCKADDR (ENC_ARG_TYPE(0, INT_T) | ENC_ARG_TYPE(1, SOCKADDR_T))
#define MASK_LISTEN   (ENC_ARG_TYPE(0, INT_T) | ENC_ARG_TYPE(1, INT_T))
#define MASK_EXECVE   (ENC_ARG_TYPE(0, STR_T) | ENC_ARG_TYPE(1, STR_ARR_T))
#define MASK_EXECVEAT (ENC_ARG_TYPE(0, INT_T) | ENC_ARG_TYPE(1, STR_T) | \
		       ENC_ARG_TYPE(2, STR_ARR_T) | ENC_ARG_TYPE(3, EXEC_FLAGS_T))
#define MASK_UNLINK   (ENC_ARG_TYPE(0, INT_T) | ENC_ARG_TYPE(1, FILE_TYPE_T))
#define MASK_RMDIR    (ENC_ARG_TYPE(1, FILE_TYPE_T))
#define MASK_CHOWN    (ENC_ARG_TYPE(0, FILE_TYPE_T) | ENC_ARG_TYPE(1, INT_T) | \
		       ENC_ARG_TYPE(2, INT_T))
#define MASK_PTRACE   (ENC_ARG_TYPE(0, PTRACE_REQ_T) | ENC_ARG_TYPE(1, INT_T) | \
		       ENC_ARG_TYPE(2, FILE_TYPE_T))
#define MASK_SETID    (ENC_ARG_TYPE(0, INT_T))
#define MASK_MOUNT    (ENC_ARG_TYPE(0, STR_T) | ENC_ARG_TYPE(1, STR_T) | ENC_ARG_TYPE(2, STR_T) | \
		       ENC_ARG_TYPE(3, MOUNT_FLAG_T) | ENC_ARG_TYPE(4, STR_T))
#define MASK_UMOUNT   (ENC_ARG_TYPE(0, STR_T) | ENC_ARG_TYPE(1, UMOUNT_FLAG_T))
#define MASK_OPENAT   (ENC_ARG_TYPE(0, INT_T) | ENC_ARG_TYPE(1, FILE_TYPE_T) | \
		       ENC_ARG_TYPE(2, OPEN_FLAGS_T))
#define MASK_FCHOWNAT (ENC_ARG_TYPE(0, INT_T) | ENC_ARG_TYPE(1, FILE_TYPE_T) | \
		       ENC_ARG_TYPE(2, INT_T) | ENC_ARG_TYPE(3, INT_T) | ENC_ARG_TYPE(4, INT_T))
#define MASK_UNLINKAT (ENC_ARG_TYPE(0, INT_T) | ENC_ARG_TYPE(1, FILE_TYPE_T) | \
		       ENC_ARG_TYPE(2, UNLINKAT_FLAG_T))
#define MASK_BPRM     (ENC_ARG_TYPE(0, STR_T))
#define MASK_TCP      (ENC_ARG_TYPE(0, STR_T) | ENC_ARG_TYPE(1, SOCKADDR_T))
#define MASK_NONE     0

/* argnum = number of non-NONE slots; folded to a constant at compile time */
static __always_inline __u32 argnum_of(__u64 mask)
{
	__u32 n = 0;

#pragma unroll
	for (int i = 0; i < 6; i++)
		if ((mask >> (8 * i)) & 0xff)
			n++;
	return n;
}

/* ---- misc constants ---------------------------------------------------- */

#define AF_UNIX         1
#define AF_INET         2
#define AF_INET6        10
#define IPPROTO_TCP     6
#define TCP_ESTABLISHED 1
#define TCP_SYN_SENT    2
#define TCP_SYN_RECV    3
#define AT_FDCWD        (-100)

/* ---- wire structures --------------------------------------------------- */

/* the classic context header; aligned(4) lets clang use word stores into the
 * 8-aligned map value while the layout stays packed (68 bytes) */
struct event_header {
	__u64 ts;
	__u32 pid_id;
	__u32 mnt_id;
	__u32 host_ppid;
	__u32 host_pid;
	__u32 ppid;
	__u32 pid;
	__u32 uid;
	__u32 event_id;
	__u32 argnum;
	__s64 retval;
	char comm[16];
} __attribute__((packed, aligned(4)));

_Static_assert(sizeof(struct event_header) == 68, "classic header is 68 bytes");

/* ---- raw tracepoints ----------------------------------------------------
 * Every program is a raw tracepoint program: its context is the tracepoint's
 * arguments as u64s (struct bpf_raw_tracepoint_args), kernel pointers read
 * with bpf_probe_read_kernel at offsets from the config. Detaching a raw
 * tracepoint does not wait for an RCU grace period as closing a perf
 * tracepoint event does, which is what made stopping the monitor slow.
 *
 *   sys_enter(struct pt_regs *regs, long id)      sys_exit(struct pt_regs *regs, long ret)
 *   sched_process_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
 *   sched_process_exit(struct task_struct *p, bool group_dead)
 *   sched_process_fork(struct task_struct *parent, struct task_struct *child)
 *   inet_sock_set_state(const struct sock *sk, int oldstate, int newstate)
 */

#define TS_COMPAT 0x0002 /* thread_info.status: the task is in a 32-bit syscall */

/* ---- maps --------------------------------------------------------------- */

/* a per-CPU map value cannot exceed 32 KiB, so the scratch buffer is exactly
 * MAX_BUFFER_SIZE and every write is bounded by the checks before it */
struct scratch {
	__u8 data[MAX_BUFFER_SIZE];
};

/* the arguments of a syscall, read from its registers at its exit */
struct syscall_args {
	__u64 args[6];
};

/* failed outputs, per CPU (key 0), on both transports: the reader reports
 * their increases as lost records. The ring buffer has no lost records of its
 * own; perf's come only once the next sample fits, never after the last one */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} drops SEC(".maps");

#ifdef EBPFWIRE_RINGBUF
/* the ring buffer transport: one ring for all CPUs, sized by the loader
 * (max_entries = ring bytes) */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
} events SEC(".maps");
#else
struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__type(key, __u32);
	__type(value, __u32);
} events SEC(".maps");
#endif

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct monitor_config);
} config SEC(".maps");

/* the events the loader selected, by event id (1 = on): the syscall handlers
 * share two programs, so their selection is data, not attachment */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 512);
	__type(key, __u32);
	__type(value, __u32);
} events_on SEC(".maps");

/* per-CPU scratch buffer the event is built in */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch);
} scratch SEC(".maps");

/* executable path per host tgid, from sched_process_exec, for the FILE slot
 * of ptrace (the target's executable) */
struct exe_path {
	char path[MAX_STRING_SIZE];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, struct exe_path);
} exe_paths SEC(".maps");

/* an exec whose strings were not readable at entry (pages not present: a
 * forked child's untouched .rodata), keyed by thread id: its header as it was
 * at entry, then its entry event is written at sched_process_exec from the
 * new image or, when the exec fails, at the syscall's exit */
struct exec_pending {
	__u64 path;  /* the user pointers, for the exit of a failed exec */
	__u64 argv;
	__u32 dirfd;
	__u32 flags;
	struct event_header h;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 10240);
	__type(key, __u32);
	__type(value, struct exec_pending);
} exec_pending SEC(".maps");

/* the process tree of the pid filter: host tgids whose events are kept. The
 * loader seeds the traced process (and its living descendants); tree__fork adds
 * each child forked by a traced process, tree__exit removes a process when its
 * last thread exits. A full map stops the tree from growing (children are then
 * missed), it never lets other processes in. */
#define TRACED_MAX 65536

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TRACED_MAX);
	__type(key, __u32);
	__type(value, __u8);
} traced SEC(".maps");

/* ---- reading kernel memory through the config offsets ------------------ */

static __always_inline __u64 read_u64(__u64 base, __u32 off)
{
	__u64 v = 0;

	bpf_probe_read_kernel(&v, sizeof(v), (const void *)(base + off));
	return v;
}

static __always_inline __u16 read_u16(__u64 base, __u32 off)
{
	__u16 v = 0;

	bpf_probe_read_kernel(&v, sizeof(v), (const void *)(base + off));
	return v;
}

static __always_inline __u32 read_u32(__u64 base, __u32 off)
{
	__u32 v = 0;

	bpf_probe_read_kernel(&v, sizeof(v), (const void *)(base + off));
	return v;
}

static __always_inline struct monitor_config *get_config(void)
{
	__u32 zero = 0;
	struct monitor_config *cfg = bpf_map_lookup_elem(&config, &zero);

	if (!cfg || !cfg->ready)
		return 0;
	return cfg;
}

/* the comm filter: the current task's comm equals config.comm (16 bytes) */
static __always_inline int comm_matches(const struct monitor_config *cfg)
{
	char comm[16] = {};
	int same = 1;

	bpf_get_current_comm(comm, sizeof(comm));
#pragma unroll
	for (int i = 0; i < 16; i++)
		if (comm[i] != cfg->comm[i])
			same = 0;
	return same;
}

/* the filters of the config: 1 = trace, 0 = drop */
static __always_inline int wanted(const struct monitor_config *cfg)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;

	if (cfg->ignore_tgid && cfg->ignore_tgid == tgid)
		return 0;
	if (cfg->filter_tgid && !bpf_map_lookup_elem(&traced, &tgid))
		return 0;
	if (cfg->filter_comm && !comm_matches(cfg))
		return 0;
	return 1;
}

/* ---- the event writer (wire-format.md sections 4 and 5) ---------------- */

struct writer {
	struct scratch *b;
	__u32 off;
	__u32 faulted; /* a user read failed: a string or an argv pointer not readable */
};

/* fills the header of the current task; 0 if the event must not be written */
static __always_inline int begin_event(struct writer *w, __u32 event_id, __u32 argnum,
				       __s64 retval)
{
	struct monitor_config *cfg = get_config();
	__u32 zero = 0;
	__u64 task, parent, pid_s, upid, ns, ppid_s, pupid, nsproxy;
	__u32 level, plevel, inum;
	struct event_header *h;

	if (!cfg || !wanted(cfg))
		return 0;
	w->b = bpf_map_lookup_elem(&scratch, &zero);
	if (!w->b)
		return 0;
	h = (struct event_header *)w->b->data;

	task = bpf_get_current_task();
	parent = read_u64(task, cfg->task_real_parent);

	h->ts = bpf_ktime_get_ns();
	h->host_pid = bpf_get_current_pid_tgid() >> 32;
	h->host_ppid = read_u32(parent, cfg->task_tgid);
	h->uid = (__u32)bpf_get_current_uid_gid();
	h->event_id = event_id;
	h->argnum = argnum;
	h->retval = retval;
	bpf_get_current_comm(h->comm, sizeof(h->comm));

	/* pid and pid namespace: group_leader->thread_pid->numbers[level] */
	pid_s = read_u64(read_u64(task, cfg->task_group_leader), cfg->task_thread_pid);
	level = read_u32(pid_s, cfg->pid_level);
	upid = pid_s + cfg->pid_numbers + (__u64)level * cfg->upid_size;
	h->pid = read_u32(upid, cfg->upid_nr);
	ns = read_u64(upid, cfg->upid_ns);
	inum = read_u32(ns, cfg->pid_ns_inum);
	h->pid_id = inum == cfg->host_pidns_inum ? 0 : inum;

	/* the parent's number at the same level, if it lives in the same namespace */
	h->ppid = 0;
	ppid_s = read_u64(read_u64(parent, cfg->task_group_leader), cfg->task_thread_pid);
	plevel = read_u32(ppid_s, cfg->pid_level);
	if (ppid_s && plevel >= level) {
		pupid = ppid_s + cfg->pid_numbers + (__u64)level * cfg->upid_size;
		if (read_u64(pupid, cfg->upid_ns) == ns)
			h->ppid = read_u32(pupid, cfg->upid_nr);
	}

	/* mount namespace */
	nsproxy = read_u64(task, cfg->task_nsproxy);
	inum = read_u32(read_u64(nsproxy, cfg->nsproxy_mnt_ns), cfg->mnt_ns_inum);
	h->mnt_id = inum == cfg->host_mntns_inum ? 0 : inum;

	w->off = sizeof(struct event_header);
	w->faulted = 0;
	return 1;
}

static __always_inline int fits_fixed(const struct writer *w)
{
	return w->off <= MAX_BUFFER_SIZE - MAX_ELEMENT_SIZE;
}

static __always_inline int fits_str(const struct writer *w)
{
	return w->off <= MAX_BUFFER_SIZE - MAX_STRING_SIZE - sizeof(int);
}

/* the write offset, clamped so that the verifier can prove `room` bytes fit;
 * every caller has checked a wire-format limit before, so the clamp never
 * changes the offset */
static __always_inline __u64 off_within(const struct writer *w, __u32 room)
{
	__u64 o = w->off;

	/* hides what clang knows about `o`, so the clamp is not optimised away */
	asm volatile("" : "+r"(o));
	if (o > MAX_BUFFER_SIZE - room)
		o = MAX_BUFFER_SIZE - room;
	return o;
}

/* the same value, unknown to the verifier */
static __always_inline __u32 opaque(__u32 v)
{
	asm volatile("" : "+r"(v));
	return v;
}

static __always_inline void put_tag(struct writer *w, __u8 tag)
{
	w->b->data[off_within(w, 1)] = tag;
	w->off++;
}

/* a 4-byte value argument (INT_T and the u32 flag/enum types) */
static __always_inline void put_u32(struct writer *w, __u8 tag, __u32 value)
{
	if (!fits_fixed(w))
		return;
	put_tag(w, tag);
	*(__u32 *)&w->b->data[off_within(w, sizeof(__u32))] = value;
	w->off += sizeof(__u32);
}

static __always_inline void put_int(struct writer *w, __u64 value)
{
	put_u32(w, INT_T, (__u32)value);
}

/* the highest offset a string's size field can start at (after the tag of a
 * string that passed fits_str): its bytes then have only 4095 bytes of the
 * 32768-byte buffer left, so that one read is cut one byte shorter */
#define LAST_STR_OFF (MAX_BUFFER_SIZE - MAX_STRING_SIZE - (__u32)sizeof(int) + 1)

/* writes the size of a string whose bytes were read after the size field;
 * a failed read (size <= 0: a NULL or unreadable pointer, as mount(2)'s data
 * and type often are) writes size 0, a string no successful read gives (""
 * has size 1): the reader gets the argument, not an orphan tag (KubeArmor's
 * newest writer leaves the argument out instead, tag and all) */
static __always_inline void end_str(struct writer *w, long size)
{
	if (size <= 0) {
		w->faulted = 1;
		*(int *)&w->b->data[off_within(w, sizeof(int))] = 0;
		w->off += sizeof(int);
		return;
	}
	*(int *)&w->b->data[off_within(w, sizeof(int))] = (int)size;
	w->off += sizeof(int) + (__u32)(size & (MAX_STRING_SIZE * 2 - 1));
}

/* STR_T from user memory: tag, then s32 size (NUL included) and the bytes;
 * a failed read gives size 0 and no bytes (end_str). Returns the size read
 * (<= 0: failed, or no room) */
static __always_inline long put_user_str(struct writer *w, __u64 ptr)
{
	long size;

	if (!fits_str(w))
		return 0;
	put_tag(w, STR_T);
	if (w->off != LAST_STR_OFF) {
		size = bpf_probe_read_user_str(&w->b->data[off_within(w, MAX_STRING_SIZE + sizeof(int)) +
						     sizeof(int)], MAX_STRING_SIZE,
		                        (const void *)ptr);
	} else {
		size = bpf_probe_read_user_str(&w->b->data[LAST_STR_OFF + sizeof(int)],
		                        MAX_STRING_SIZE - 1, (const void *)ptr);
	}
	end_str(w, size);
	return size;
}

/* the same for a kernel string (the resolved filename of sched_process_exec) */
static __always_inline void put_kernel_str(struct writer *w, const void *ptr)
{
	long size;

	if (!fits_str(w))
		return;
	put_tag(w, STR_T);
	if (w->off != LAST_STR_OFF) {
		size = bpf_probe_read_kernel_str(&w->b->data[off_within(w, MAX_STRING_SIZE + sizeof(int)) +
						     sizeof(int)], MAX_STRING_SIZE,
		                          ptr);
	} else {
		size = bpf_probe_read_kernel_str(&w->b->data[LAST_STR_OFF + sizeof(int)],
		                          MAX_STRING_SIZE - 1, ptr);
	}
	end_str(w, size);
}

/* STR_T "" (size 1, the NUL) */
static __always_inline void put_empty_str(struct writer *w)
{
	__u64 o;

	if (!fits_fixed(w))
		return;
	put_tag(w, STR_T);
	o = off_within(w, 5);
	*(int *)&w->b->data[o] = 1;
	w->b->data[o + 4] = 0;
	w->off += 5;
}

/* the element "..." after 20 (immediate stores: no .rodata) */
static __always_inline void put_ellipsis(struct writer *w)
{
	__u64 o;

	if (!fits_fixed(w))
		return;
	put_tag(w, STR_T);
	o = off_within(w, 8);
	*(int *)&w->b->data[o] = 4;
	w->b->data[o + 4] = '.';
	w->b->data[o + 5] = '.';
	w->b->data[o + 6] = '.';
	w->b->data[o + 7] = 0;
	w->off += 8;
}

/* the closing tag is part of the argument, not an argument of its own:
 * written whenever the buffer has a byte left, so a nearly full buffer
 * still ends with a complete array */
static __always_inline void close_str_arr(struct writer *w)
{
	if (w->off < MAX_BUFFER_SIZE)
		put_tag(w, STR_ARR_T);
}

/* argv: opening tag 11, up to 20 STR_T, "..." when there are more, closing tag 11 */
static __always_inline void put_user_str_arr(struct writer *w, __u64 argv)
{
	__u64 p;

	if (!fits_fixed(w))
		return;
	put_tag(w, STR_ARR_T);

#pragma unroll
	for (int i = 0; i < MAX_STR_ARR_ELEM; i++) {
		/* forget what the verifier knows of the offset (each earlier element
		 * left a different one), so that the states of the paths through
		 * the elements before meet here and are pruned: verifying the
		 * unrolled loop then costs thousands of steps, not 300,000 */
		w->off = opaque(w->off);
		p = 0;
		if (bpf_probe_read_user(&p, sizeof(p), (const void *)(argv + i * sizeof(p)))) {
			w->faulted = argv != 0; /* a NULL argv is an empty one */
			goto close;
		}
		/* an element not readable ends the array: the exec's entry event then
		 * waits (exec_pending) and is read again where the pages are present;
		 * going on past it tripled what the verifier walks */
		if (!p || put_user_str(w, p) <= 0)
			goto close;
	}
	p = 0;
	bpf_probe_read_user(&p, sizeof(p), (const void *)(argv + MAX_STR_ARR_ELEM * sizeof(p)));
	if (p)
		put_ellipsis(w);
close:
	close_str_arr(w);
}

/* argv as the new image holds it (sched_process_exec): the NUL-separated
 * strings from mm->arg_start to mm->arg_end, which the kernel copied onto the
 * new stack, so its pages are present. The same shape as put_user_str_arr;
 * an element of 4096 bytes or more ends the array (where the next one starts
 * is not known without reading the rest) */
static __always_inline void put_new_argv(struct writer *w, __u64 p, __u64 end)
{
	long size;

	if (!fits_fixed(w))
		return;
	put_tag(w, STR_ARR_T);

#pragma unroll
	for (int i = 0; i < MAX_STR_ARR_ELEM; i++) {
		w->off = opaque(w->off); /* as in put_user_str_arr */
		if (p >= end)
			goto close;
		size = put_user_str(w, p);
		if (size <= 0 || size >= MAX_STRING_SIZE)
			goto close;
		p += size;
	}
	if (p < end)
		put_ellipsis(w);
close:
	close_str_arr(w);
}

/* SOCKADDR_T from user memory, sized by the family; NULL pointer => nothing */
static __always_inline void put_user_sockaddr(struct writer *w, __u64 ptr)
{
	__u16 family = 0;
	__u32 size;

	if (!ptr || !fits_fixed(w))
		return;
	/* tag + 110 bytes must fit in the 32768-byte buffer: one byte stricter
	 * than fits_fixed, and unreachable for the events that carry a sockaddr */
	if (w->off > MAX_BUFFER_SIZE - MAX_ELEMENT_SIZE - 1)
		return;
	put_tag(w, SOCKADDR_T);
	if (bpf_probe_read_user(&family, sizeof(family), (const void *)ptr))
		return;
	if (family == AF_UNIX)
		size = 110;
	else if (family == AF_INET)
		size = 16;
	else if (family == AF_INET6)
		size = 28;
	else
		size = 2;
	if (bpf_probe_read_user(&w->b->data[off_within(w, MAX_ELEMENT_SIZE)], size,
				(const void *)ptr))
		return;
	w->off += size;
}

static __always_inline void count_drop(void)
{
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(&drops, &zero);

	if (n)
		*n += 1; /* per-CPU value: no other writer */
}

/* submits `offset & (MAX_BUFFER_SIZE - 1)` bytes, plus up to 7 zero bytes
 * (the ring buffer build submits the very same bytes, so both transports hand
 * the reader identical samples):
 * the kernel rounds a raw sample (u32 size + data) up to 8 bytes but skips
 * the padding without clearing it, so stale ring bytes would follow the
 * event; writing the zeros here makes the padding the zeros the format
 * promises (and the kernel then adds none) */
static __always_inline int submit(void *ctx, struct writer *w)
{
	__u32 size = w->off & BUF_MASK;

	if (size && w->off <= MAX_BUFFER_SIZE - 8) {
		*(__u64 *)&w->b->data[off_within(w, 8)] = 0;
		size = (((size + 4 + 7) & ~7u) - 4) & BUF_MASK;
	}
#ifdef EBPFWIRE_RINGBUF
	/* like the perf rings' watermark: wake the reader only once a quarter of
	 * the ring is waiting (it also polls every 0.1 s, which bounds the delay of
	 * a lone event); a wakeup per event costs the reader several times more */
	__u64 waiting = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) + size;
	__u64 wakeup = waiting >= bpf_ringbuf_query(&events, BPF_RB_RING_SIZE) / 4 ?
		BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP;

	if (bpf_ringbuf_output(&events, w->b->data, size, wakeup))
		count_drop();
#else
	if (bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, w->b->data, size))
		count_drop();
#endif
	return 0;
}

/* ---- syscall arguments and results --------------------------------------- */

/* The syscall handlers serve two kinds of program: the raw_syscalls dispatchers
 * sys__enter/sys__exit (sys_enter(regs, id), sys_exit(regs, ret): one program
 * for every syscall of the machine) and one program per handler on its own
 * syscalls/sys_enter_NAME or sys_exit_NAME tracepoint, whose record holds the
 * arguments or the return value (events/syscalls/.../format): nothing runs for
 * an untraced syscall. `rec` (a constant once inlined) says which context.
 *
 * An event whose syscall returns is written at its exit alone, its arguments
 * read from the registers the syscall was made with: the entry is not hooked,
 * so every syscall of the machine pays for one tracepoint (the exit), not two
 * (docs/bpf-program.md, "At the exit alone"). Only exec is read at entry: the
 * caller's strings are gone once the new image runs. */
struct sys_enter_record {
	__u64 common;
	long nr;
	unsigned long args[6];
};

struct sys_exit_record {
	__u64 common;
	long nr;
	long ret;
};

/* syscall argument i from the registers at `regs` (struct pt_regs *) */
static __always_inline __u64 regs_arg(const struct monitor_config *cfg, __u64 regs, int i)
{
	__u32 off;

	switch (i) {
	case 0: off = cfg->regs_arg0; break;
	case 1: off = cfg->regs_arg1; break;
	case 2: off = cfg->regs_arg2; break;
	case 3: off = cfg->regs_arg3; break;
	case 4: off = cfg->regs_arg4; break;
	default: off = cfg->regs_arg5; break;
	}
	return read_u64(regs, off);
}

/* syscall argument i at entry */
static __always_inline __u64 syscall_arg(const struct monitor_config *cfg, void *ctx,
					 int rec, int i)
{
	if (rec)
		return ((const struct sys_enter_record *)ctx)->args[i];
	return regs_arg(cfg, ((struct bpf_raw_tracepoint_args *)ctx)->args[0], i);
}

static __always_inline long syscall_ret(void *ctx, int rec)
{
	if (rec)
		return ((const struct sys_exit_record *)ctx)->ret;
	return (long)((struct bpf_raw_tracepoint_args *)ctx)->args[1];
}

/* the registers the syscall was made with, at its exit: sys_exit hands them
 * over; on a sys_exit_NAME tracepoint they are the task's own (Linux 5.15's
 * bpf_task_pt_regs). The syscalls read this way leave their argument
 * registers as the caller set them (only the result register changes) */
static __always_inline __u64 exit_regs(void *ctx, int rec)
{
	if (rec)
		return (__u64)bpf_task_pt_regs(bpf_get_current_task_btf());
	return ((struct bpf_raw_tracepoint_args *)ctx)->args[0];
}

/* the first `nargs` arguments (the ones the syscall has) at its exit, for a
 * task the filters keep; 0 = no event */
static __always_inline int exit_args(void *ctx, int rec, int nargs, struct syscall_args *a)
{
	struct monitor_config *cfg = get_config();
	__u64 regs;

	if (!cfg || !wanted(cfg))
		return 0;
	regs = exit_regs(ctx, rec);
#pragma unroll
	for (int i = 0; i < 6; i++)
		a->args[i] = i < nargs ? regs_arg(cfg, regs, i) : 0;
	return 1;
}

/* defines the exit handler of a syscall event; the body writes the arguments
 * from `a` (struct syscall_args) with the writer `w` */
#define SYSCALL_EXIT(event, tp, nr, id, nargs, mask)				\
	static __always_inline void event##_args_##tp(struct writer *w,	\
						      const struct syscall_args *a); \
	static __always_inline int exit_##tp(void *ctx, int rec)		\
	{									\
		struct syscall_args a;						\
		struct writer w;						\
										\
		if (!event_on(id) || !exit_args(ctx, rec, nargs, &a) ||		\
		    !begin_event(&w, id, argnum_of(mask), syscall_ret(ctx, rec)))	\
			return 0;						\
		event##_args_##tp(&w, &a);					\
		return submit(ctx, &w);						\
	}									\
	static __always_inline void event##_args_##tp(struct writer *w,	\
						      const struct syscall_args *a)

/* true while the current task makes a 32-bit (ia32) syscall: its numbers are
 * not the x86-64 ones, and the syscalls/ tracepoints skip it too */
static __always_inline int compat_syscall(const struct monitor_config *cfg)
{
	return read_u32(bpf_get_current_task(), cfg->task_ti_status) & TS_COMPAT;
}

/* the selected events (ids of the wire format), filled by the loader */
static __always_inline int event_on(__u32 id)
{
	__u32 *on = bpf_map_lookup_elem(&events_on, &id);

	return on && *on;
}

/* a native (64-bit) syscall of a configured monitor */
static __always_inline int native_syscall(void)
{
	struct monitor_config *cfg = get_config();

	return cfg && !compat_syscall(cfg);
}

/* ---- the process tree of the pid filter -----------------------------------
 * Raw tracepoints: their arguments are the kernel's task pointers, so the
 * child's tgid can be read (a new thread shares its parent's tgid and adds
 * nothing). The loader attaches them only when a pid filter is set. */

SEC("raw_tracepoint/sched_process_fork")
int tree__fork(struct bpf_raw_tracepoint_args *ctx)
{
	struct monitor_config *cfg = get_config();
	__u32 parent = bpf_get_current_pid_tgid() >> 32; /* the forking task is current */
	__u32 child;
	__u8 one = 1;

	if (!cfg || !cfg->filter_tgid || !bpf_map_lookup_elem(&traced, &parent))
		return 0;
	child = read_u32(ctx->args[1], cfg->task_tgid);
	if (child && child != parent)
		bpf_map_update_elem(&traced, &child, &one, BPF_ANY);
	return 0;
}

/* sched_process_exit(struct task_struct *p, bool group_dead) */
SEC("raw_tracepoint/sched_process_exit")
int tree__exit(struct bpf_raw_tracepoint_args *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;

	if ((__u8)ctx->args[1])
		bpf_map_delete_elem(&traced, &tgid);
	return 0;
}

/* ---- file events -------------------------------------------------------- */

SYSCALL_EXIT(open, open, 2, EV_OPEN, 2, MASK_OPEN)
{
	put_user_str(w, a->args[0]);
	put_u32(w, OPEN_FLAGS_T, a->args[1]);
}

SYSCALL_EXIT(openat, openat, 257, EV_OPENAT, 3, MASK_OPENAT)
{
	put_int(w, a->args[0]);
	put_user_str(w, a->args[1]);
	put_u32(w, OPEN_FLAGS_T, a->args[2]);
}

SYSCALL_EXIT(close, close, 3, EV_CLOSE, 1, MASK_CLOSE)
{
	put_int(w, a->args[0]);
}

/* unlink(path) has no dirfd: slot 0 carries AT_FDCWD, as unlinkat would */
SYSCALL_EXIT(unlink, unlink, 87, EV_UNLINK, 1, MASK_UNLINK)
{
	put_int(w, (__u32)AT_FDCWD);
	put_user_str(w, a->args[0]);
}

SYSCALL_EXIT(unlinkat, unlinkat, 263, EV_UNLINKAT, 3, MASK_UNLINKAT)
{
	put_int(w, a->args[0]);
	put_user_str(w, a->args[1]);
	put_u32(w, UNLINKAT_FLAG_T, a->args[2]);
}

SYSCALL_EXIT(rmdir, rmdir, 84, EV_RMDIR, 1, MASK_RMDIR)
{
	put_user_str(w, a->args[0]);
}

SYSCALL_EXIT(chown, chown, 92, EV_CHOWN, 3, MASK_CHOWN)
{
	put_user_str(w, a->args[0]);
	put_int(w, a->args[1]);
	put_int(w, a->args[2]);
}

SYSCALL_EXIT(fchownat, fchownat, 260, EV_FCHOWNAT, 5, MASK_FCHOWNAT)
{
	put_int(w, a->args[0]);
	put_user_str(w, a->args[1]);
	put_int(w, a->args[2]);
	put_int(w, a->args[3]);
	put_int(w, a->args[4]);
}

SYSCALL_EXIT(mount, mount, 165, EV_MOUNT, 5, MASK_MOUNT)
{
	put_user_str(w, a->args[0]);
	put_user_str(w, a->args[1]);
	put_user_str(w, a->args[2]);
	put_u32(w, MOUNT_FLAG_T, a->args[3]);
	put_user_str(w, a->args[4]);
}

/* umount2(2) is SYSCALL_DEFINE2(umount, ...): tracepoint sys_*_umount */
SYSCALL_EXIT(umount, umount, 166, EV_UMOUNT, 2, MASK_UMOUNT)
{
	put_user_str(w, a->args[0]);
	put_u32(w, UMOUNT_FLAG_T, a->args[1]);
}

/* ---- credentials and ptrace --------------------------------------------- */

SYSCALL_EXIT(setuid, setuid, 105, EV_SETUID, 1, MASK_SETID)
{
	put_int(w, a->args[0]);
}

SYSCALL_EXIT(setgid, setgid, 106, EV_SETGID, 1, MASK_SETID)
{
	put_int(w, a->args[0]);
}

/* slot 2 (FILE) is the target's executable as recorded by ptrace__exec when
 * the target last exec'd under the monitor. The target pid of the syscall is
 * a host tgid only for callers in the host PID namespace; when the path is
 * not known (target exec'd before the monitor started, a thread id, a caller
 * in a container, no such process) the slot is the empty string: an orphan
 * tag at the end of a sample would be read as "" anyway, since the zero
 * padding that follows looks like a size of 0. PTRACE_TRACEME (0) targets
 * the parent. */
#define PTRACE_TRACEME 0

SYSCALL_EXIT(ptrace, ptrace, 101, EV_PTRACE, 2, MASK_PTRACE)
{
	const struct event_header *h = (const struct event_header *)w->b->data;
	__u32 target = a->args[0] == PTRACE_TRACEME ? h->host_ppid : (__u32)a->args[1];
	struct exe_path *exe = 0;

	put_u32(w, PTRACE_REQ_T, a->args[0]);
	put_int(w, a->args[1]);
	if (h->pid_id == 0)
		exe = bpf_map_lookup_elem(&exe_paths, &target);
	if (exe)
		put_kernel_str(w, exe->path);
	else
		put_empty_str(w);
}

/* the filename of sched_process_exec (bprm->filename) */
static __always_inline const void *exec_filename(const struct monitor_config *cfg,
						 struct bpf_raw_tracepoint_args *ctx)
{
	return (const void *)read_u64(ctx->args[2], cfg->binprm_filename);
}

SEC("raw_tracepoint/sched_process_exec")
int ptrace__exec(struct bpf_raw_tracepoint_args *ctx)
{
	struct monitor_config *cfg = get_config();
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	__u32 zero = 0;
	struct scratch *b;

	if (!cfg)
		return 0;
	b = bpf_map_lookup_elem(&scratch, &zero);
	if (!b)
		return 0;
	/* staged in the scratch buffer: a 4 KiB value does not fit the stack */
	if (bpf_probe_read_kernel_str(b->data, MAX_STRING_SIZE, exec_filename(cfg, ctx)) <= 0)
		return 0;
	bpf_map_update_elem(&exe_paths, &tgid, b->data, BPF_ANY);
	return 0;
}

SEC("raw_tracepoint/sched_process_exit")
int ptrace__exit_task(struct bpf_raw_tracepoint_args *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;

	if ((__u8)ctx->args[1]) /* group_dead */
		bpf_map_delete_elem(&exe_paths, &tgid);
	return 0;
}

/* ---- sockets ------------------------------------------------------------ */

SYSCALL_EXIT(socket, socket, 41, EV_SOCKET, 3, MASK_SOCKET)
{
	put_u32(w, SOCK_DOM_T, a->args[0]);
	put_u32(w, SOCK_TYPE_T, a->args[1]);
	put_int(w, a->args[2]);
}

SYSCALL_EXIT(connect, connect, 42, EV_CONNECT, 2, MASK_SOCKADDR)
{
	put_int(w, a->args[0]);
	put_user_sockaddr(w, a->args[1]);
}

/* accept and accept4 are both event 43; the sockaddr is the peer address
 * the kernel wrote into the caller's buffer */
SYSCALL_EXIT(accept, accept, 43, EV_ACCEPT, 2, MASK_SOCKADDR)
{
	put_int(w, a->args[0]);
	put_user_sockaddr(w, a->args[1]);
}

SYSCALL_EXIT(accept, accept4, 288, EV_ACCEPT, 2, MASK_SOCKADDR)
{
	put_int(w, a->args[0]);
	put_user_sockaddr(w, a->args[1]);
}

SYSCALL_EXIT(bind, bind, 49, EV_BIND, 2, MASK_SOCKADDR)
{
	put_int(w, a->args[0]);
	put_user_sockaddr(w, a->args[1]);
}

SYSCALL_EXIT(listen, listen, 50, EV_LISTEN, 2, MASK_LISTEN)
{
	put_int(w, a->args[0]);
	put_int(w, a->args[1]);
}

/* ---- exec: an entry event with the arguments, an exit event with the result
 * The entry event reads path and argv at sys_enter, as KubeArmor does. When a
 * read fails (the pages are not present yet: the kernel faults them in later,
 * while it copies them), the event is not written then: its header and
 * pointers wait in exec_pending, and the entry event is written, with the same
 * header and the same arguments, at sched_process_exec from the new image
 * (bprm->filename and the argv on the new stack) or, when the exec fails, at
 * sys_exit from the caller's memory, before the exit event. */

/* keeps an entry event whose strings were not readable; 0 = nothing kept */
static __always_inline int exec_defer(const struct writer *w, __u64 path, __u64 argv,
				      __u32 dirfd, __u32 flags)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct exec_pending *p;
	struct exec_pending zero = {};

	if (bpf_map_update_elem(&exec_pending, &tid, &zero, BPF_ANY))
		return 0;
	p = bpf_map_lookup_elem(&exec_pending, &tid);
	if (!p)
		return 0;
	p->path = path;
	p->argv = argv;
	p->dirfd = dirfd;
	p->flags = flags;
	__builtin_memcpy(&p->h, w->b->data, sizeof(p->h));
	return 1;
}

/* the entry event kept for thread `tid` (if it is `event_id`'s), its header
 * back in the scratch buffer and removed from the map; 0 = none */
static __always_inline int exec_resume(struct writer *w, __u32 tid, __u32 event_id,
				       struct exec_pending *out)
{
	struct exec_pending *p = bpf_map_lookup_elem(&exec_pending, &tid);
	__u32 zero = 0;

	if (!p || p->h.event_id != event_id)
		return 0;
	*out = *p;
	bpf_map_delete_elem(&exec_pending, &tid);
	w->b = bpf_map_lookup_elem(&scratch, &zero);
	if (!w->b)
		return 0;
	__builtin_memcpy(w->b->data, &out->h, sizeof(out->h));
	w->off = sizeof(struct event_header);
	w->faulted = 0;
	return 1;
}

/* the arguments are read from the registers before begin_event: the writer
 * then holds the scratch buffer and the config pointer is out of scope */
static __always_inline int enter_execve(void *ctx, int rec)
{
	struct monitor_config *cfg = get_config();
	__u64 filename, argv;
	struct writer w;

	if (!cfg || !event_on(EV_EXECVE))
		return 0;
	filename = syscall_arg(cfg, ctx, rec, 0);
	argv = syscall_arg(cfg, ctx, rec, 1);
	if (!begin_event(&w, EV_EXECVE, argnum_of(MASK_EXECVE), 0))
		return 0;
	put_user_str(&w, filename);
	put_user_str_arr(&w, argv);
	if (w.faulted && exec_defer(&w, filename, argv, 0, 0))
		return 0;
	return submit(ctx, &w);
}

/* a failed exec: the entry event kept, from the caller's memory now */
static __always_inline int exit_execve(void *ctx, int rec)
{
	struct exec_pending p;
	struct writer w;

	if (!event_on(EV_EXECVE))
		return 0;
	if (exec_resume(&w, (__u32)bpf_get_current_pid_tgid(), EV_EXECVE, &p)) {
		put_user_str(&w, p.path);
		put_user_str_arr(&w, p.argv);
		submit(ctx, &w);
	}
	if (!begin_event(&w, EV_EXECVE, argnum_of(MASK_NONE), syscall_ret(ctx, rec)))
		return 0;
	return submit(ctx, &w);
}

static __always_inline int enter_execveat(void *ctx, int rec)
{
	struct monitor_config *cfg = get_config();
	__u64 dirfd, path, argv, flags;
	struct writer w;

	if (!cfg || !event_on(EV_EXECVEAT))
		return 0;
	dirfd = syscall_arg(cfg, ctx, rec, 0);
	path = syscall_arg(cfg, ctx, rec, 1);
	argv = syscall_arg(cfg, ctx, rec, 2);
	flags = syscall_arg(cfg, ctx, rec, 4);
	if (!begin_event(&w, EV_EXECVEAT, argnum_of(MASK_EXECVEAT), 0))
		return 0;
	put_int(&w, dirfd);
	put_user_str(&w, path);
	put_user_str_arr(&w, argv);
	put_u32(&w, EXEC_FLAGS_T, flags);
	if (w.faulted && exec_defer(&w, path, argv, dirfd, flags))
		return 0;
	return submit(ctx, &w);
}

static __always_inline int exit_execveat(void *ctx, int rec)
{
	struct exec_pending p;
	struct writer w;

	if (!event_on(EV_EXECVEAT))
		return 0;
	if (exec_resume(&w, (__u32)bpf_get_current_pid_tgid(), EV_EXECVEAT, &p)) {
		put_int(&w, p.dirfd);
		put_user_str(&w, p.path);
		put_user_str_arr(&w, p.argv);
		put_u32(&w, EXEC_FLAGS_T, p.flags);
		submit(ctx, &w);
	}
	if (!begin_event(&w, EV_EXECVEAT, argnum_of(MASK_NONE), syscall_ret(ctx, rec)))
		return 0;
	return submit(ctx, &w);
}

/* argv on the new image's stack: [mm->arg_start, mm->arg_end) of current */
static __always_inline void put_exec_argv(struct writer *w, const struct monitor_config *cfg)
{
	__u64 mm = read_u64(bpf_get_current_task(), cfg->task_mm);

	put_new_argv(w, read_u64(mm, cfg->mm_arg_start), read_u64(mm, cfg->mm_arg_end));
}

/* the entry event of an execve kept at entry, from the new image: the path is
 * bprm->filename, the caller's string as getname() copied it (execve passes
 * AT_FDCWD, so the kernel keeps it as given) */
SEC("raw_tracepoint/sched_process_exec")
int execve__exec(struct bpf_raw_tracepoint_args *ctx)
{
	struct monitor_config *cfg = get_config();
	struct exec_pending p;
	struct writer w;

	if (!cfg || !exec_resume(&w, (__u32)ctx->args[1], EV_EXECVE, &p)) /* old_pid */
		return 0;
	put_kernel_str(&w, exec_filename(cfg, ctx));
	put_exec_argv(&w, cfg);
	return submit(ctx, &w);
}

/* digits of a non-negative fd (at most 10) */
static __always_inline __u32 fd_digits(__u32 fd)
{
	return 1 + (fd >= 10) + (fd >= 100) + (fd >= 1000) + (fd >= 10000) + (fd >= 100000) +
	       (fd >= 1000000) + (fd >= 10000000) + (fd >= 100000000) + (fd >= 1000000000);
}

/* execveat's path from bprm->filename: the caller's string when dirfd is
 * AT_FDCWD or the path absolute; otherwise the kernel made it "/dev/fd/N/path"
 * (the caller's path follows the prefix) or "/dev/fd/N" (AT_EMPTY_PATH: "").
 * Few branches on the bytes: each one doubled what the verifier walks after */
#define DEV_FD_PREFIX 0x2f64662f7665642fULL /* "/dev/fd/" as a little-endian u64 */

static __always_inline void put_execveat_path(struct writer *w, const char *filename, int dirfd)
{
	__u64 prefix = 0;
	__u32 at = 0;
	char c = 1;

	if (dirfd >= 0) {
		bpf_probe_read_kernel(&prefix, sizeof(prefix), filename);
		at = 8 + fd_digits(dirfd);
		bpf_probe_read_kernel(&c, 1, filename + at);
		if (prefix != DEV_FD_PREFIX || (c != '/' && c != 0))
			at = 0; /* an absolute path of the caller's */
		else if (c == '/')
			at++; /* "/dev/fd/N/path": path; "/dev/fd/N": its NUL, "" */
	}
	put_kernel_str(w, filename + opaque(at));
}

SEC("raw_tracepoint/sched_process_exec")
int execveat__exec(struct bpf_raw_tracepoint_args *ctx)
{
	struct monitor_config *cfg = get_config();
	struct exec_pending p;
	struct writer w;

	if (!cfg || !exec_resume(&w, (__u32)ctx->args[1], EV_EXECVEAT, &p))
		return 0;
	put_int(&w, p.dirfd);
	put_execveat_path(&w, exec_filename(cfg, ctx), (int)p.dirfd);
	put_exec_argv(&w, cfg);
	put_u32(&w, EXEC_FLAGS_T, p.flags);
	return submit(ctx, &w);
}

/* the path the kernel resolved for the new program (security_bprm_check) */
SEC("raw_tracepoint/sched_process_exec")
int security_bprm_check__exec(struct bpf_raw_tracepoint_args *ctx)
{
	struct monitor_config *cfg = get_config();
	const void *filename;
	struct writer w;

	if (!cfg)
		return 0;
	filename = exec_filename(cfg, ctx);
	if (!begin_event(&w, EV_BPRM, argnum_of(MASK_BPRM), 0))
		return 0;
	put_kernel_str(&w, filename);
	return submit(ctx, &w);
}

/* ---- process exit -------------------------------------------------------
 * At sched_process_exit of the last thread (group_dead), its task->exit_code
 * is the process's wait(2) status, emitted as retval: (code & 0xff) << 8 from
 * exit/exit_group, or the fatal signal (| 0x80 when it dumped core), which a
 * group exit gives every thread. No syscall or signal is hooked for it. */

SEC("raw_tracepoint/sched_process_exit")
int do_exit__sched(struct bpf_raw_tracepoint_args *ctx)
{
	struct monitor_config *cfg = get_config();
	struct writer w;
	__s64 code;

	if (!cfg || !(__u8)ctx->args[1]) /* group_dead */
		return 0;
	code = (int)read_u32(ctx->args[0], cfg->task_exit_code);
	if (!begin_event(&w, EV_DO_EXIT, argnum_of(MASK_NONE), code))
		return 0;
	return submit(ctx, &w);
}

/* ---- TCP connect / accept from inet_sock_set_state ---------------------- */

/* STR_T "TCP" or "TCPv6" with immediate stores (no .rodata) */
static __always_inline void put_proto_name(struct writer *w, int v6)
{
	__u64 o;

	if (!fits_fixed(w))
		return;
	put_tag(w, STR_T);
	o = off_within(w, 10);
	*(int *)&w->b->data[o] = v6 ? 6 : 4;
	w->b->data[o + 4] = 'T';
	w->b->data[o + 5] = 'C';
	w->b->data[o + 6] = 'P';
	if (v6) {
		w->b->data[o + 7] = 'v';
		w->b->data[o + 8] = '6';
		w->b->data[o + 9] = 0;
		w->off += 10;
	} else {
		w->b->data[o + 7] = 0;
		w->off += 8;
	}
}

/* connect: the remote address and port; accept: the remote (peer) address
 * with the local (listening) port, as KubeArmor reported it */
SEC("raw_tracepoint/inet_sock_set_state")
int tcp__state(struct bpf_raw_tracepoint_args *ctx)
{
	struct monitor_config *cfg = get_config();
	__u64 sk = ctx->args[0], daddr_v6[2] = {};
	int oldstate = (int)ctx->args[1], newstate = (int)ctx->args[2];
	int connect, v6;
	__u16 port, family, protocol;
	__u32 daddr;
	__u64 o;
	__u32 id;
	struct writer w;

	if (!cfg)
		return 0;
	protocol = read_u16(sk, cfg->sk_protocol);
	if (protocol != IPPROTO_TCP)
		return 0;
	if (newstate == TCP_SYN_SENT)
		connect = 1;
	else if (oldstate == TCP_SYN_RECV && newstate == TCP_ESTABLISHED)
		connect = 0;
	else
		return 0;
	family = read_u16(sk, cfg->sk_family);
	if (family == AF_INET)
		v6 = 0;
	else if (family == AF_INET6)
		v6 = 1;
	else
		return 0;
	id = v6 ? (connect ? EV_TCP_CONNECT6 : EV_TCP_ACCEPT6)
		: (connect ? EV_TCP_CONNECT : EV_TCP_ACCEPT);
	/* the socket keeps ports in network order, as the wire wants them */
	port = read_u16(sk, connect ? cfg->sk_dport : cfg->sk_sport);
	daddr = read_u32(sk, cfg->sk_daddr);
	if (v6)
		bpf_probe_read_kernel(daddr_v6, sizeof(daddr_v6),
				      (const void *)(sk + cfg->sk_v6_daddr));

	if (!begin_event(&w, id, argnum_of(MASK_TCP), 0))
		return 0;
	put_proto_name(&w, v6);
	if (!fits_fixed(&w))
		return submit(ctx, &w);
	put_tag(&w, SOCKADDR_T);
	o = off_within(&w, 28);
	*(__u16 *)&w.b->data[o] = v6 ? AF_INET6 : AF_INET;
	*(__u16 *)&w.b->data[o + 2] = port;
	if (v6) {
		*(__u32 *)&w.b->data[o + 4] = 0; /* flowinfo */
		*(__u64 *)&w.b->data[o + 8] = daddr_v6[0];
		*(__u64 *)&w.b->data[o + 16] = daddr_v6[1];
		*(__u32 *)&w.b->data[o + 24] = 0; /* scope_id */
		w.off += 28;
	} else {
		*(__u32 *)&w.b->data[o + 4] = daddr;
		*(__u64 *)&w.b->data[o + 8] = 0; /* sin_zero */
		w.off += 16;
	}
	return submit(ctx, &w);
}

/* each handler as its own program on its syscall's tracepoint */
#define SYSCALL_PROGRAM(event, phase, tp)				\
	SEC("tracepoint/syscalls/sys_" #phase "_" #tp)			\
	int event##__##phase##_##tp(void *ctx)				\
	{								\
		return phase##_##tp(ctx, 1);				\
	}

SYSCALL_PROGRAM(open, exit, open)
SYSCALL_PROGRAM(openat, exit, openat)
SYSCALL_PROGRAM(close, exit, close)
SYSCALL_PROGRAM(unlink, exit, unlink)
SYSCALL_PROGRAM(unlinkat, exit, unlinkat)
SYSCALL_PROGRAM(rmdir, exit, rmdir)
SYSCALL_PROGRAM(chown, exit, chown)
SYSCALL_PROGRAM(fchownat, exit, fchownat)
SYSCALL_PROGRAM(mount, exit, mount)
SYSCALL_PROGRAM(umount, exit, umount)
SYSCALL_PROGRAM(setuid, exit, setuid)
SYSCALL_PROGRAM(setgid, exit, setgid)
SYSCALL_PROGRAM(ptrace, exit, ptrace)
SYSCALL_PROGRAM(socket, exit, socket)
SYSCALL_PROGRAM(connect, exit, connect)
SYSCALL_PROGRAM(accept, exit, accept)
SYSCALL_PROGRAM(accept, exit, accept4)
SYSCALL_PROGRAM(bind, exit, bind)
SYSCALL_PROGRAM(listen, exit, listen)
SYSCALL_PROGRAM(execve, enter, execve)
SYSCALL_PROGRAM(execve, exit, execve)
SYSCALL_PROGRAM(execveat, enter, execveat)
SYSCALL_PROGRAM(execveat, exit, execveat)

/* ---- the syscall dispatchers --------------------------------------------
 * One program on raw_syscalls sys_enter and one on sys_exit serve every
 * syscall event: a syscall without a handler costs one program run and a few
 * compares; the handlers check that their event is selected (events_on). */

SEC("raw_tracepoint/sys_enter")
int sys__enter(struct bpf_raw_tracepoint_args *ctx)
{
	switch ((long)ctx->args[1]) {
	case 59:
		return native_syscall() ? enter_execve(ctx, 0) : 0;
	case 322:
		return native_syscall() ? enter_execveat(ctx, 0) : 0;
	}
	return 0;
}

/* the syscall number at exit: orig_ax of the registers (the number the
 * syscalls/ tracepoints report) */
SEC("raw_tracepoint/sys_exit")
int sys__exit(struct bpf_raw_tracepoint_args *ctx)
{
	struct monitor_config *cfg = get_config();

	if (!cfg)
		return 0;
	switch ((long)read_u64(ctx->args[0], cfg->regs_nr)) {
	case 2:
		return native_syscall() ? exit_open(ctx, 0) : 0;
	case 257:
		return native_syscall() ? exit_openat(ctx, 0) : 0;
	case 3:
		return native_syscall() ? exit_close(ctx, 0) : 0;
	case 87:
		return native_syscall() ? exit_unlink(ctx, 0) : 0;
	case 263:
		return native_syscall() ? exit_unlinkat(ctx, 0) : 0;
	case 84:
		return native_syscall() ? exit_rmdir(ctx, 0) : 0;
	case 92:
		return native_syscall() ? exit_chown(ctx, 0) : 0;
	case 260:
		return native_syscall() ? exit_fchownat(ctx, 0) : 0;
	case 165:
		return native_syscall() ? exit_mount(ctx, 0) : 0;
	case 166:
		return native_syscall() ? exit_umount(ctx, 0) : 0;
	case 105:
		return native_syscall() ? exit_setuid(ctx, 0) : 0;
	case 106:
		return native_syscall() ? exit_setgid(ctx, 0) : 0;
	case 101:
		return native_syscall() ? exit_ptrace(ctx, 0) : 0;
	case 41:
		return native_syscall() ? exit_socket(ctx, 0) : 0;
	case 42:
		return native_syscall() ? exit_connect(ctx, 0) : 0;
	case 43:
		return native_syscall() ? exit_accept(ctx, 0) : 0;
	case 288:
		return native_syscall() ? exit_accept4(ctx, 0) : 0;
	case 49:
		return native_syscall() ? exit_bind(ctx, 0) : 0;
	case 50:
		return native_syscall() ? exit_listen(ctx, 0) : 0;
	case 59:
		return native_syscall() ? exit_execve(ctx, 0) : 0;
	case 322:
		return native_syscall() ? exit_execveat(ctx, 0) : 0;
	}
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
