#!/bin/sh
# Rebuild the CO-RE test objects from their C sources. Build-time needs: clang >= 15 with the
# BPF target (for bpf_core_type_matches; CLANG=clang-16 by default when installed), libbpf's
# headers (libbpf-dev: bpf_helpers.h, bpf_core_read.h) and bpftool, which writes this kernel's
# vmlinux.h into a temporary directory. The .o files are committed: the tests need none of this.
# Their DWARF is stripped (llvm-strip -g): .BTF and .BTF.ext stay, and task.o shrinks from
# 650 KB (vmlinux.h's types as debug information) to 38 KB.
set -eu
cd "$(dirname "$0")"
CLANG=${CLANG:-$(command -v clang-16 || command -v clang)}
STRIP=${STRIP:-$(command -v llvm-strip-16 || command -v llvm-strip)}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
bpftool btf dump file /sys/kernel/btf/vmlinux format c > "$tmp/vmlinux.h"
for src in *.c; do
	"$CLANG" -O2 -g -target bpf -I"$tmp" -c "$src" -o "${src%.c}.o"
	"$STRIP" -g "${src%.c}.o"
done
