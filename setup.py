"""Build of rnnext's compiled core: the C sources in csrc/ and the Cython binding rnnext/_core.pyx.

OpenMP: a probe compiles, links and runs a tiny OpenMP program with the compiler that builds the
extension, linked with the flags from the environment (LDFLAGS, CFLAGS, CPPFLAGS) that the
extension's link gets, so that a sanitizer build keeps OpenMP. Where that fails the build warns
loudly and continues without threads; RNNEXT_NO_OPENMP=1 skips OpenMP on purpose.

Kernels: csrc/kernel_scalar.c is built with the baseline flags. On x86-64, kernel_avx2.c,
kernel_avx_vnni.c, kernel_avx512.c, kernel_avx512_vnni.c and kernel_avx512_bf16.c are built as
separate objects with their own -m flags (csrc/sources.txt), and the library picks one at run time
from CPUID; nothing is built with -march=native.

Compilers: gcc or clang (Linux, macOS: Apple's clang takes OpenMP as `-Xpreprocessor -fopenmp`
with LLVM's libomp, `-lomp`), and on Windows clang-cl in MSVC's toolchain (`/openmp`, LLVM's
libomp): the core uses GCC vector extensions and overflow builtins that MSVC's cl.exe does not
compile. Release builds carry no debug information and, on Linux, no symbol table (0.9 MB, 6 MB
with them: gcc 12, x86-64); RNNEXT_DEBUG=1 keeps both and turns Cython's checks on.
"""
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import textwrap

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join("csrc")


def read_sources(path=os.path.join(HERE, "csrc", "sources.txt")):
    """csrc/sources.txt as (core sources, {x86-64 kernel: its flags}), names relative to csrc/."""
    core, kernels = [], {}
    with open(path) as f:
        for line in f:
            words = line.split("#", 1)[0].split()
            if not words:
                continue
            if len(words) > 1 and words[1] == "x86_64:":
                kernels[words[0]] = words[2:]
            elif len(words) == 1:
                core.append(words[0])
            else:
                raise ValueError(f"{path}: expected 'file.c' or 'file.c x86_64: flags', got "
                                 f"{line!r}")
    return core, kernels


CORE_SOURCES, X86_KERNELS = read_sources()

DEBUG = os.environ.get("RNNEXT_DEBUG", "") not in ("", "0")

OPENMP_PROBE = textwrap.dedent(
    """
    #include <omp.h>
    #include <stdio.h>
    int main(void) {
        int n = 0;
        #pragma omp parallel reduction(+:n)
        n += 1;
        printf("%d\\n", n == omp_get_max_threads());
        return 0;
    }
    """
)


def is_x86_64():
    return platform.machine().lower() in ("x86_64", "amd64")


class Flags:
    """The flags of one compiler family: `compile` and `link` for every object and the
    extension, `openmp_compile` and `openmp_link` where OpenMP is used."""

    def __init__(self, compiler_type, system=sys.platform, debug=DEBUG, clang_cl=None):
        if compiler_type == "msvc":
            # clang-cl takes MSVC's options; its /openmp calls LLVM's libomp (not MSVC's vcomp),
            # whose libomp.lib lies in lib/ beside clang-cl's bin/, as clang-cl's own link adds.
            llvm_lib = os.path.join(os.path.dirname(os.path.dirname(clang_cl or "")), "lib")
            self.compile = ["/O2", "/W3"] + (["/Z7"] if debug else [])
            self.link = ["/DEBUG"] if debug else []
            self.openmp_compile = ["/openmp"]
            self.openmp_link = [f"/LIBPATH:{llvm_lib}", "libomp.lib"]
            return
        self.compile = ["-O3", "-std=gnu11", "-fvisibility=hidden", "-Wall"]
        self.compile.append("-g" if debug else "-g0")  # after Python's CFLAGS, which say -g
        # Apple's linker keeps debug information out of the binary and calls -s obsolete.
        self.link = [] if debug or system == "darwin" else ["-Wl,-s"]
        if system == "darwin":
            self.openmp_compile, self.openmp_link = ["-Xpreprocessor", "-fopenmp"], ["-lomp"]
        else:
            self.openmp_compile, self.openmp_link = ["-fopenmp"], ["-fopenmp"]


def use_clang_cl(compiler):
    """Points setuptools' MSVC compiler at clang-cl (its linker stays MSVC's link.exe); returns
    clang-cl's path."""
    clang_cl = shutil.which("clang-cl")
    if clang_cl is None:
        raise RuntimeError("rnnext on Windows builds with clang-cl (LLVM): the C core uses GCC "
                           "vector extensions and builtins that MSVC's cl.exe does not compile; "
                           "install LLVM and put clang-cl on PATH")
    compiler.initialize()
    compiler.cc = clang_cl
    return clang_cl


def warn(message):
    bar = "*" * 78
    sys.stderr.write(f"\n{bar}\nrnnext build WARNING: {message}\n{bar}\n\n")


def environment_link_flags(environ=os.environ):
    """The flags from the environment that distutils adds to the extension's link command
    (LDSHARED): LDFLAGS, CFLAGS and CPPFLAGS. Its executables get none of them, so the OpenMP
    probe adds them itself: a build with CFLAGS=LDFLAGS=-fsanitize=... links the sanitizers'
    runtimes into the probe as into the extension."""
    return [flag for name in ("LDFLAGS", "CFLAGS", "CPPFLAGS")
            for flag in shlex.split(environ.get(name, ""))]


def openmp_works(compiler, flags):
    """Compile, link and run a tiny OpenMP program with `compiler` (configured from the
    environment: it compiles with CFLAGS), `flags` (a Flags) and the extension's link flags."""
    tmp = tempfile.mkdtemp(prefix="rnnext-omp-")
    try:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write(OPENMP_PROBE)
        objects = compiler.compile([src], output_dir=tmp, extra_postargs=flags.openmp_compile)
        exe = os.path.join(tmp, "probe")
        compiler.link_executable(objects, exe,
                                 extra_postargs=flags.openmp_link + environment_link_flags())
        out = subprocess.run([compiler.executable_filename(exe)], capture_output=True,
                             text=True, timeout=60)
        return out.returncode == 0 and out.stdout.strip() == "1"
    except Exception:
        return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def build_flags(ext):
    """The flags that matter to the compiled core, as show_config() reports them: the
    extension's, the environment's CFLAGS, the kernels' and Cython's checks."""
    parts = [" ".join(ext.extra_compile_args)]
    if os.environ.get("CFLAGS"):
        parts.append(f"CFLAGS={os.environ['CFLAGS']}")
    if is_x86_64():
        parts += [f"{name}: {' '.join(flags)}" for name, flags in X86_KERNELS.items()]
    if compiler_directives["boundscheck"]:
        parts.append("Cython bounds checks (RNNEXT_DEBUG)")
    return "; ".join(parts)


def c_string(text):
    """text as a C string literal, for a -D macro (the compiler is run without a shell)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class BuildCore(build_ext):
    """Adds the OpenMP decision and the per-ISA kernel objects to the extension."""

    def build_extensions(self):
        clang_cl = use_clang_cl(self.compiler) if self.compiler.compiler_type == "msvc" else None
        flags = Flags(self.compiler.compiler_type, clang_cl=clang_cl)
        use_openmp = False
        if os.environ.get("RNNEXT_NO_OPENMP", "") not in ("", "0"):
            warn("RNNEXT_NO_OPENMP is set: building without OpenMP; every call runs on one thread.")
        elif openmp_works(self.compiler, flags):
            use_openmp = True
        else:
            warn("the OpenMP probe failed to compile, link or run with this compiler: building "
                 "WITHOUT OpenMP; every call runs on one thread. Install an OpenMP runtime "
                 "(libgomp or libomp) and rebuild to use threads.")
        for ext in self.extensions:
            ext.extra_compile_args += flags.compile
            ext.extra_link_args += flags.link
            if use_openmp:
                ext.extra_compile_args += flags.openmp_compile
                ext.extra_link_args += flags.openmp_link
            ext.define_macros.append(("RNX_BUILD_FLAGS", c_string(build_flags(ext))))
            if is_x86_64():
                ext.define_macros.append(("RNX_X86_KERNELS", "1"))
                for name, kernel_flags in X86_KERNELS.items():
                    ext.extra_objects += self.compiler.compile(
                        [os.path.join(CSRC, name)],
                        output_dir=self.build_temp,
                        macros=ext.define_macros,
                        include_dirs=ext.include_dirs,
                        extra_postargs=flags.compile + kernel_flags,
                    )
        super().build_extensions()


extension = Extension(
    "rnnext._core",
    sources=["rnnext/_core.pyx"] + [os.path.join(CSRC, s) for s in CORE_SOURCES],
    # headers too, so that editing one rebuilds (and relinks) the extension
    depends=[os.path.join(CSRC, h) for h in ("rnx_internal.h", "general.h", "kernel_impl.h",
                                              "kernel_train_impl.h", "include/rnnext.h")],
    include_dirs=[os.path.join(CSRC, "include"), CSRC, numpy.get_include()],
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    extra_compile_args=[],
    extra_link_args=[],
)

compiler_directives = {"language_level": 3, "boundscheck": False, "wraparound": False,
                       "cdivision": True, "initializedcheck": False}
if DEBUG:
    compiler_directives.update(boundscheck=True, wraparound=True, initializedcheck=True)

if __name__ == "__main__":  # as pip and setuptools run it; tests import the probe
    setup(
        ext_modules=cythonize([extension], compiler_directives=compiler_directives),
        cmdclass={"build_ext": BuildCore},
    )
