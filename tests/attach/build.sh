#!/bin/sh
# Rebuild the attach test objects from their C sources. Build-time needs: clang with the BPF
# target, libbpf's headers (libbpf-dev: bpf_helpers.h, bpf_tracing.h) and bpftool, which
# writes this kernel's vmlinux.h into a temporary directory. The .o files are committed: the
# tests need none of this (they build the user-space test programs with gcc themselves).
# The objects are built for x86_64 (BPF_UPROBE/BPF_PROG read pt_regs the x86 way); DWARF is
# stripped (llvm-strip -g), .BTF and .BTF.ext stay.
set -eu
cd "$(dirname "$0")"
CLANG=${CLANG:-$(command -v clang-16 || command -v clang)}
STRIP=${STRIP:-$(command -v llvm-strip-16 || command -v llvm-strip)}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
bpftool btf dump file /sys/kernel/btf/vmlinux format c > "$tmp/vmlinux.h"
for src in *.bpf.c; do
	obj="${src%.bpf.c}.o"
	"$CLANG" -O2 -g -target bpf -D__TARGET_ARCH_x86 -I"$tmp" -c "$src" -o "$obj"
	"$STRIP" -g "$obj"
done
