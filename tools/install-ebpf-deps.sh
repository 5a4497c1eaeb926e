#!/usr/bin/env bash
# Install what the ebpf backend's build and tests need, only when missing (Debian/Ubuntu):
#   clang        compiles web10g/bpf/web10g.bpf.c (-target bpf)      build time only
#   bpftool      dumps the kernel's BTF into build/bpf/vmlinux.h      build time only
#   libbpf-dev   bpf_helpers.h & co.                                  build time only
#   libbpf1      the loader ('web10g ebpf load') calls it via ctypes  load time (root)
#   nftables     the tests' induced loss on loopback                  tests only
# Readers of the pinned iterator need none of these. Without them the package still
# builds and runs; the ebpf backend then reports "not built" and its tests skip.
# Called by the Makefile for the tests and the benchmarks; WEB10G_NO_EBPF=1 skips it.
set -euo pipefail
[ "${WEB10G_NO_EBPF:-}" = 1 ] && exit 0
need=()
command -v clang >/dev/null 2>&1 || need+=(clang)
command -v bpftool >/dev/null 2>&1 || [ -x /usr/sbin/bpftool ] || need+=(bpftool)
[ -e /usr/include/bpf/bpf_helpers.h ] || need+=(libbpf-dev)
ldconfig -p 2>/dev/null | grep -q 'libbpf\.so\.1' || need+=(libbpf1)
command -v nft >/dev/null 2>&1 || [ -x /usr/sbin/nft ] || need+=(nftables)
command -v llvm-strip >/dev/null 2>&1 || need+=(llvm)
# the fuzz harnesses (make fuzz, and the short run in make test) link clang's libFuzzer
if ! command -v clang >/dev/null 2>&1 || \
   [ ! -e "$(clang -print-file-name=libclang_rt.fuzzer-x86_64.a 2>/dev/null)" ]; then
    need+=(libclang-rt-dev)
fi
[ ${#need[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
    echo "note: the ebpf backend needs: ${need[*]} (Debian names; Fedora: clang bpftool" \
         "libbpf-devel nftables llvm); without them it reports 'not built'" >&2
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
        echo "note: the ebpf backend needs: ${need[*]}; as root: apt-get install ${need[*]}" >&2
        exit 0
    fi
fi
echo "installing the ebpf backend's build tools: ${need[*]}"
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
# a failure here must not break the package's own install: the backend then skips
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${need[@]}" >/dev/null || echo "note: could not install ${need[*]}: the ebpf backend" \
    "will report 'not built'" >&2
