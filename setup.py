"""Build the Cython extensions against the system libmnl.

libmnl is found with pkg-config (Debian/Ubuntu: libmnl-dev; Fedora: libmnl-devel).
Overrides and variants, all through the environment (vendor/libmnl/README.md):

  WEB10G_MNL_INCLUDE_DIR / WEB10G_MNL_LIB_DIR   use the libmnl installed there
  WEB10G_DEBUG=1      -O0 -g3, Cython bounds/wraparound checks and line tracing on
  WEB10G_SANITIZE=1   AddressSanitizer + UndefinedBehaviorSanitizer (implies debug)
"""
import os
import shutil
import subprocess
import sys

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "yes", "true", "on")


def _missing_libmnl(reason: str) -> None:
    sys.exit(
        f"error: libmnl was not found ({reason}).\n"
        "  Install it: apt-get install libmnl-dev pkg-config   (Fedora: dnf install libmnl-devel)\n"
        "  or point WEB10G_MNL_INCLUDE_DIR and WEB10G_MNL_LIB_DIR at another installation."
    )


def libmnl_flags() -> tuple[list[str], list[str], list[str]]:
    """Return (include_dirs, library_dirs, libraries) for libmnl."""
    inc = os.environ.get("WEB10G_MNL_INCLUDE_DIR")
    lib = os.environ.get("WEB10G_MNL_LIB_DIR")
    if inc or lib:
        if inc and not os.path.exists(os.path.join(inc, "libmnl", "libmnl.h")):
            _missing_libmnl(f"no libmnl/libmnl.h under WEB10G_MNL_INCLUDE_DIR={inc}")
        return ([inc] if inc else [], [lib] if lib else [], ["mnl"])
    if shutil.which("pkg-config") is None:
        if os.path.exists("/usr/include/libmnl/libmnl.h"):
            return [], [], ["mnl"]
        _missing_libmnl("pkg-config is not installed and /usr/include/libmnl is absent")
    try:
        cflags = subprocess.check_output(
            ["pkg-config", "--cflags", "libmnl"], text=True, stderr=subprocess.DEVNULL)
        libs = subprocess.check_output(
            ["pkg-config", "--libs", "libmnl"], text=True, stderr=subprocess.DEVNULL)
    except subprocess.CalledProcessError:
        _missing_libmnl("pkg-config knows no package 'libmnl'")
    incs = [f[2:] for f in cflags.split() if f.startswith("-I")]
    libdirs = [f[2:] for f in libs.split() if f.startswith("-L")]
    names = [f[2:] for f in libs.split() if f.startswith("-l")] or ["mnl"]
    return incs, libdirs, names


DEBUG = _flag("WEB10G_DEBUG") or _flag("WEB10G_SANITIZE")
SANITIZE = _flag("WEB10G_SANITIZE")

compile_args = ["-std=gnu11", "-Wall", "-Wno-unused-function", "-Wno-unreachable-code"]
link_args: list[str] = []
directives = {"language_level": 3, "embedsignature": True}
macros = [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]
if DEBUG:
    compile_args += ["-O0", "-g3", "-UNDEBUG"]
    directives.update(boundscheck=True, wraparound=True, initializedcheck=True,
                      linetrace=True)
    macros.append(("CYTHON_TRACE_NOGIL", "1"))
else:
    compile_args += ["-O2"]
if SANITIZE:
    san = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer",
           "-fno-sanitize-recover=undefined"]
    compile_args += san
    link_args += san

incs, libdirs, libs = libmnl_flags()
common = dict(
    include_dirs=incs + ["csrc", numpy.get_include()],
    library_dirs=libdirs,
    libraries=libs,
    extra_compile_args=compile_args,
    extra_link_args=link_args,
    define_macros=macros,
)

extensions = [
    Extension("web10g._netlink", ["web10g/_netlink.pyx"], **common),
    Extension("web10g._sockdiag", ["web10g/_sockdiag.pyx", "csrc/w10g_sockdiag.c"], **common),
    Extension("web10g._estats", ["web10g/_estats.pyx", "csrc/w10g_estats.c"], **common),
    Extension("web10g._format", ["web10g/_format.pyx"], **common),
    Extension("web10g._ebpf", ["web10g/_ebpf.pyx", "csrc/w10g_ebpf.c"], **common),
    Extension("web10g._collect", ["web10g/_collect.pyx"], **common),
    Extension("web10g._aggregate", ["web10g/_aggregate.pyx"], **common),
    Extension("web10g._delta", ["web10g/_delta.pyx", "csrc/w10g_delta.c"], **common),
]

# The ebpf backend's BPF object (clang -target bpf): skipped with a note when the
# toolchain is missing; the package works without it (web10g/bpf/build.py).
if "build_ext" in sys.argv or "develop" in sys.argv or "bdist_wheel" in sys.argv:
    import runpy

    runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "web10g", "bpf",
                                "build.py"))["build"]()

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives=directives,
        build_dir="build/cython" + ("-debug" if DEBUG else ""),
        force=DEBUG,
    ),
)
