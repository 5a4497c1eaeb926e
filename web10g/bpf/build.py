"""Build the ebpf backend's BPF object: ``python -m web10g.bpf.build`` (setup.py calls it).

clang (-target bpf, CO-RE) compiles web10g/bpf/web10g.bpf.c against a vmlinux.h that
bpftool generates from the running kernel's BTF (build/bpf/vmlinux.h, not committed:
2.8 MB). The object is kernel-independent thanks to CO-RE; it is stripped of DWARF but
keeps its BTF. Without clang, bpftool or the libbpf headers the build is skipped with a
note saying what to install (tools/install-ebpf-deps.sh); the package works without it,
and the ebpf backend then reports "not built".
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SOURCE = os.path.join(HERE, "web10g.bpf.c")
OBJECT = os.path.join(HERE, "web10g.bpf.o")
BTF = "/sys/kernel/btf/vmlinux"
INSTALL_HINT = ("install clang, bpftool and libbpf-dev (tools/install-ebpf-deps.sh), then "
                "rebuild: python setup.py build_ext --inplace")


def missing() -> list[str]:
    """What the build needs and this machine lacks (empty: it can build)."""
    out = []
    if shutil.which("clang") is None:
        out.append("clang")
    if shutil.which("bpftool") is None and not os.path.exists("/usr/sbin/bpftool"):
        out.append("bpftool")
    if not os.path.exists("/usr/include/bpf/bpf_helpers.h"):
        out.append("libbpf-dev")
    if not os.path.exists(BTF):
        out.append("kernel BTF (CONFIG_DEBUG_INFO_BTF)")
    return out


def build(build_dir: str | None = None, *, force: bool = False, quiet: bool = False) -> str | None:
    """Compile the object if its sources are newer; return its path, or None when the
    toolchain is missing (a note goes to stderr)."""
    lack = missing()
    if lack:
        if not quiet:
            print(f"note: the ebpf backend's BPF object is not built (missing: "
                  f"{', '.join(lack)}); {INSTALL_HINT}", file=sys.stderr)
        return None
    build_dir = build_dir or os.path.join(ROOT, "build", "bpf")
    os.makedirs(build_dir, exist_ok=True)
    header = os.path.join(ROOT, "csrc", "w10g_ebpf_rec.h")
    inputs = [SOURCE, header, __file__]
    if (not force and os.path.exists(OBJECT)
            and os.path.getmtime(OBJECT) >= max(os.path.getmtime(p) for p in inputs)):
        return OBJECT
    vmlinux = os.path.join(build_dir, "vmlinux.h")
    bpftool = shutil.which("bpftool") or "/usr/sbin/bpftool"
    with open(vmlinux + ".tmp", "w") as fh:
        subprocess.run([bpftool, "btf", "dump", "file", BTF, "format", "c"], stdout=fh,
                       check=True)
    os.replace(vmlinux + ".tmp", vmlinux)
    tmp = os.path.join(build_dir, "web10g.bpf.o")
    subprocess.run(["clang", "-O2", "-g", "-target", "bpf", "-D__TARGET_ARCH_x86",
                    "-Wall", "-Wno-unused-function", "-Wno-compare-distinct-pointer-types",
                    "-I", build_dir, "-I", os.path.join(ROOT, "csrc"),
                    "-c", SOURCE, "-o", tmp], check=True)
    strip = shutil.which("llvm-strip") or shutil.which("llvm-strip-14")
    if strip:
        subprocess.run([strip, "-g", tmp], check=True)
    shutil.copyfile(tmp, OBJECT + ".tmp")
    os.replace(OBJECT + ".tmp", OBJECT)
    if not quiet:
        print(f"built {os.path.relpath(OBJECT, ROOT)}", file=sys.stderr)
    return OBJECT


if __name__ == "__main__":
    sys.exit(0 if build(force="--force" in sys.argv) else 1)
