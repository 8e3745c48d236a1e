#!/bin/sh
# Rebuild the ELF loader's test objects from their C sources (needs clang with the BPF target).
# The .o files are committed so the tests run on hosts without clang.
set -eu
cd "$(dirname "$0")"
for src in *.c; do
	clang -O2 -g -target bpf -c "$src" -o "${src%.c}.o"
done
