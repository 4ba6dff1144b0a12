/* Event types of every BTF kind for the compiled decoder (tests/test_btfstruct.py).
 *
 * Nothing here runs: the types are anchored in BTF by unused globals (the one-line
 * anchor users add) and by a map's value type, and decoded from random bytes.
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

enum state { STATE_IDLE = 0, STATE_RUN = 3, STATE_DEAD = -1 };
enum level { LEVEL_LOW = 1, LEVEL_HIGH = 200 };

struct inner {
	__u16 a;
	__s8 b;
	char tag[3];
};

struct all_kinds {
	__u8 u8;
	__s8 s8;
	__u16 u16;
	__s16 s16;
	__u32 u32;
	__s32 s32;
	__u64 u64;
	__s64 s64;
	_Bool flag;
	char name[12];
	unsigned char raw[6];
	enum state state;
	struct inner inner;
	struct inner pairs[2];
	__u32 counts[3];
	enum level levels[2];
	__u32 lo : 3, mid : 9, hi : 20;
	int sbits : 5;
	__u8 small : 2;
	union {
		__u32 word;
		__u8 bytes[4];
		struct {
			__u16 lo16;
			__u16 hi16;
		} halves;
	} u;
	union {
		__u64 whole;
		__s32 parts[2];
	};
	float ratio;
	double precise;
	void *ptr;
	__u8 pad_after;
	__u64 aligned;
	__s32 grid[2][3];
	unsigned __int128 huge;
};

struct with_tail {
	__u32 len;
	__u16 kind;
	char data[];
};

/* libbpf-bootstrap's event, 168 bytes */
struct event {
	int pid;
	int ppid;
	unsigned exit_code;
	unsigned long long duration_ns;
	char comm[16];
	char filename[127];
	_Bool exit_event;
};

/* as large as with_tail: a record of 8 bytes cannot tell them apart */
struct pair {
	__u32 first;
	__u32 second;
};

struct all_kinds *unused_all __attribute__((unused));
struct with_tail *unused_tail __attribute__((unused));
struct pair *unused_pair __attribute__((unused));

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, struct event);
} events_by_pid SEC(".maps");

SEC("tp/syscalls/sys_enter_getppid")
int nothing(void *ctx)
{
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
