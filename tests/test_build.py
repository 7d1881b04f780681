"""The build and the package as shipped: setup.py's OpenMP probe links as the extension does (with
the flags the environment gives the extension's link, so that a sanitizer build keeps its
threads); the compiled core carries no debug information or symbol table; an installed rnnext
holds its license and no build inputs; the flags for macOS and Windows are ones the real clang
drivers take, and the C core compiles against Windows' C library."""
import importlib.metadata
import os
import runpy
import shutil
import struct
import subprocess
import sys
import tarfile

import pytest

import rnnext
from rnnext import _core

from conftest import RNNEXT_ROOT

SANITIZE = "-fsanitize=address,undefined"


@pytest.fixture
def setup_py(source_tree):
    pytest.importorskip("Cython")
    return runpy.run_path(str(source_tree / "setup.py"), run_name="setup_under_test")


def configured_compiler():
    """A C compiler configured from the environment, as build_ext configures its own."""
    from setuptools._distutils.ccompiler import new_compiler
    from setuptools._distutils.sysconfig import customize_compiler

    compiler = new_compiler()
    customize_compiler(compiler)
    return compiler


def test_probe_link_gets_the_environment_flags(setup_py):
    flags = setup_py["environment_link_flags"]({"LDFLAGS": "-L/x -fsanitize=address",
                                                "CFLAGS": "-O1 '-DA=b c'", "CPPFLAGS": "-I/y"})
    assert flags == ["-L/x", "-fsanitize=address", "-O1", "-DA=b c", "-I/y"]
    assert setup_py["environment_link_flags"]({}) == []


def test_openmp_probe_passes_in_a_sanitizer_build(setup_py, monkeypatch, tmp_path):
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not installed")
    (tmp_path / "omp.c").write_text("int main(void) { int n = 0;\n#pragma omp parallel\n"
                                    "n = 1;\nreturn !n; }\n")
    plain = subprocess.run([gcc, "-fopenmp", str(tmp_path / "omp.c"), "-o",
                            str(tmp_path / "omp")], capture_output=True)
    if plain.returncode != 0:
        pytest.skip("gcc cannot build an OpenMP program here")
    sanitized = subprocess.run([gcc, SANITIZE, "-fopenmp", str(tmp_path / "omp.c"), "-o",
                                str(tmp_path / "omp_san")], capture_output=True)
    if sanitized.returncode != 0 or subprocess.run([str(tmp_path / "omp_san")]).returncode:
        pytest.skip("gcc cannot build or run a program with " + SANITIZE)
    monkeypatch.setenv("CC", gcc)
    monkeypatch.setenv("CFLAGS", SANITIZE)
    monkeypatch.setenv("LDFLAGS", SANITIZE)
    assert setup_py["openmp_works"](configured_compiler(), setup_py["Flags"]("unix"))


def test_sdist_of_a_clean_clone_holds_every_tracked_file_the_build_and_tests_read(source_tree,
                                                                                  tmp_path):
    """The files git tracks, as in the working tree, copied to a fresh folder (a checkout's
    rnnext.egg-info would add the files an earlier sdist held), then python -m build --sdist."""
    pytest.importorskip("build", reason="the build package is not installed")
    listed = subprocess.run(["git", "-C", str(source_tree), "ls-files"], capture_output=True,
                            text=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout: " + listed.stderr.strip())
    tracked = [name for name in listed.stdout.split() if (source_tree / name).is_file()]
    clone = tmp_path / "clone"
    for name in tracked:
        (clone / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source_tree / name, clone / name)
    run = subprocess.run([sys.executable, "-m", "build", "--sdist", "--no-isolation", "-o",
                          str(tmp_path / "dist"), str(clone)], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    with tarfile.open(next((tmp_path / "dist").glob("*.tar.gz"))) as sdist:
        held = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    needed = {name for name in tracked if name.startswith(("csrc/", "tests/", "rnnext/"))
              or name in ("setup.py", "pyproject.toml", "MANIFEST.in", "LICENSE", "README.md")}
    assert needed - held == set()
    assert "rnnext/_core.c" not in held


# ---------------------------------------------------------------------------------------------
# the compiled core as built


def elf_section_names(path):
    """The section names of a 64-bit little-endian ELF file, read from its section headers (the
    ELF specification's layout: e_shoff at 0x28, e_shentsize, e_shnum, e_shstrndx at 0x3A)."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        pytest.skip(f"{path} is not a 64-bit little-endian ELF file")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    entsize, count, names_index = struct.unpack_from("<HHH", data, 0x3A)

    def header(k):  # (sh_name, sh_offset, sh_size)
        at = shoff + k * entsize
        return struct.unpack_from("<I", data, at)[0], *struct.unpack_from("<QQ", data, at + 0x18)

    _, names_at, _ = header(names_index)
    return {data[names_at + name:data.index(b"\0", names_at + name)].decode()
            for name, _, _ in map(header, range(count))}


def test_extension_has_no_debug_information_or_symbol_table():
    if "RNNEXT_DEBUG" in _core.build_flags():
        pytest.skip("a debug build (RNNEXT_DEBUG) keeps its debug information")
    sections = elf_section_names(_core.__file__)
    assert ".text" in sections and ".dynsym" in sections  # the reader found the real table
    assert ".symtab" not in sections
    assert not [s for s in sections if s.startswith(".debug")]


# ---------------------------------------------------------------------------------------------
# rnnext as installed from a wheel


@pytest.fixture
def installed():
    """rnnext's distribution, where the rnnext these tests import is installed from a wheel."""
    try:
        dist = importlib.metadata.distribution("rnnext")
    except importlib.metadata.PackageNotFoundError:
        dist = None
    if dist is None or dist.read_text("WHEEL") is None:  # an .egg-info of a checkout has none
        pytest.skip("rnnext is not installed from a wheel: these tests import it from the "
                    "checkout")
    if os.path.realpath(dist.locate_file("rnnext/__init__.py")) != os.path.realpath(
            rnnext.__file__):
        pytest.skip(f"the rnnext imported ({RNNEXT_ROOT}) is not the installed one")
    return dist


def test_installed_package_holds_its_license_and_no_build_inputs(installed):
    assert installed.metadata["License-Expression"] == "MIT"
    licenses = [f for f in installed.files if f.name == "LICENSE"]
    assert len(licenses) == 1
    text = licenses[0].read_text()
    assert "Copyright (c) 2026 the rnnext developers" in text
    assert "Permission is hereby granted, free of charge" in text
    names = [f.name for f in installed.files]
    assert any(n.startswith("_core.") and n.endswith((".so", ".pyd")) for n in names)
    assert not [n for n in names if n.endswith((".c", ".pyx", ".pxd"))]


def test_one_version_for_the_package_the_file_and_the_c_library(source_tree):
    """pyproject.toml's version is rnnext.__version__, and the C library's (rnnext.h's macros,
    its SONAME and pkg-config/CMake packages) as the compiled core reports it."""
    tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python 3.11")
    import rnnext
    from rnnext import _core

    version = tomllib.loads((source_tree / "pyproject.toml").read_text())["project"]["version"]
    major, minor, patch = map(int, version.split("."))
    assert rnnext.__version__ == version
    assert _core.version_number() == major * 10000 + minor * 100 + patch


def test_source_tree_license_is_the_one_declared(source_tree):
    tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python 3.11")
    project = tomllib.loads((source_tree / "pyproject.toml").read_text())
    assert project["project"]["license"] == "MIT"
    assert project["project"]["license-files"] == ["LICENSE"]
    assert (source_tree / "LICENSE").read_text().startswith("MIT License\n")
    # PEP 639 forbids a license classifier beside a license expression
    assert not [c for c in project["project"]["classifiers"] if c.startswith("License ::")]


# ---------------------------------------------------------------------------------------------
# other platforms, as far as this machine's tools can tell


def test_macos_and_windows_flags_are_taken_by_the_clang_drivers(setup_py, tmp_path):
    clang = shutil.which("clang")
    if clang is None:
        pytest.skip("clang is not installed (apt-get install clang)")
    source = tmp_path / "x.c"
    source.write_text("int main(void) { return 0; }\n")
    flags = setup_py["Flags"]
    kernels = [f for fs in setup_py["X86_KERNELS"].values() for f in fs]
    drivers = {
        "windows": ([clang, "--driver-mode=cl", "--target=x86_64-pc-windows-msvc"],
                    flags("msvc", clang_cl="C:/LLVM/bin/clang-cl.exe")),
        "macos-x86_64": ([clang, "--target=x86_64-apple-macos11"], flags("unix", "darwin")),
        "macos-arm64": ([clang, "--target=arm64-apple-macos11"], flags("unix", "darwin")),
    }
    for name, (driver, f) in drivers.items():
        extra = kernels if "x86_64" in driver[-1] else []
        run = subprocess.run(driver + ["-###", "-c", str(source)] + f.compile + f.openmp_compile
                             + extra, capture_output=True, text=True)
        assert run.returncode == 0, (name, run.stderr)
        assert "unknown argument" not in run.stderr and "unused" not in run.stderr, name
        assert '"-fopenmp"' in run.stderr, name


def test_core_compiles_against_windows_c_library(setup_py, source_tree):
    """Every source with OpenMP on, as for a Windows wheel, against MinGW-w64's headers: a POSIX
    call (posix_memalign, pthread_atfork) would be an undeclared function there."""
    mingw = shutil.which("x86_64-w64-mingw32-gcc")
    if mingw is None:
        pytest.skip("the MinGW-w64 cross compiler is not installed "
                    "(apt-get install gcc-mingw-w64-x86-64)")
    csrc = source_tree / "csrc"
    sources = {name: [] for name in setup_py["CORE_SOURCES"]} | setup_py["X86_KERNELS"]
    for name, kernel_flags in sources.items():
        run = subprocess.run([mingw, "-fsyntax-only", "-std=gnu11", "-fopenmp", "-Wall",
                              "-Werror=implicit-function-declaration", "-DRNX_X86_KERNELS=1",
                              "-I", str(csrc / "include"), "-I", str(csrc), *kernel_flags,
                              str(csrc / name)], capture_output=True, text=True)
        assert run.returncode == 0, (name, run.stderr)
