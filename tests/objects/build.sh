#!/bin/sh
# Rebuild the corpus objects from their C sources, as skeleton-based tools are built: clang -O2
# -g -target bpf against this kernel's vmlinux.h (written by bpftool into a temporary
# directory), with libbpf's headers (libbpf-dev). Build-time needs: clang >= 15 with the BPF
# target (CLANG=clang-16 by default when installed), llvm-strip, bpftool, libbpf-dev. The .o
# files are committed: the tests need none of this. Their DWARF is stripped (llvm-strip -g):
# .BTF and .BTF.ext stay, which is all a loader reads.
set -eu
cd "$(dirname "$0")"
CLANG=${CLANG:-$(command -v clang-16 || command -v clang)}
STRIP=${STRIP:-$(command -v llvm-strip-16 || command -v llvm-strip)}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
bpftool btf dump file /sys/kernel/btf/vmlinux format c > "$tmp/vmlinux.h"
for src in *.bpf.c; do
	"$CLANG" -O2 -g -target bpf -D__TARGET_ARCH_x86 -I"$tmp" -c "$src" -o "${src%.c}.o"
	"$STRIP" -g "${src%.c}.o"
done
