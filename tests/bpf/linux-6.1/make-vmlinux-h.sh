#!/usr/bin/env bash
# Regenerate vmlinux.h.xz: the vmlinux.h of another kernel than the one the tests run on
# (Debian bookworm's Linux 6.1 cloud kernel), for tests/bpf/exitsnoop_61.bpf.c. Its structs
# are laid out as on 6.1 (task_struct members 1,100+ bytes further than on 6.18, ns_common.inum
# at 16 instead of 24), so only CO-RE relocation against the running kernel reads them right.
# Needs apt-get (Debian), lz4, binutils' objcopy and bpftool.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
apt-get download linux-image-6.1.0-47-cloud-amd64-unsigned
dpkg-deb -x ./*.deb root
# bzImage: the compressed kernel sits at the setup header's payload_offset/payload_length;
# Debian's is lz4 (legacy frames) followed by its 4-byte uncompressed size
python3 - root/boot/vmlinuz-* <<'PY'
import struct, sys
data = open(sys.argv[1], "rb").read()
setup_sects = data[0x1F1] or 4
offset, length = struct.unpack_from("<II", data, 0x248)
start = (setup_sects + 1) * 512 + offset
open("payload.lz4", "wb").write(data[start:start + length - 4])
PY
lz4 -dc payload.lz4 > vmlinux
objcopy -O binary --only-section=.BTF vmlinux vmlinux.btf
bpftool btf dump file vmlinux.btf format c > vmlinux.h
xz -9e -c vmlinux.h > "$here/vmlinux.h.xz"
