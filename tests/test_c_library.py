"""The C core as a library without Python, as csrc/Makefile builds and installs it (out of tree,
DESTDIR=stage, PREFIX=/usr): the installed files, the shared library's SONAME and exported names
(readelf and nm, against the version macros and the RNX_API declarations of rnnext.h), the
pkg-config flags, the CMake package's version check, and the example programs (csrc/examples)
built with make and through pkg-config, run on files saved from Python and compared with
Model.predict by csrc/examples/check_predict.py. CMake's own build, find_package and
add_subdirectory are .ci/c_library's (a library build each)."""
import json
import os
import re
import runpy
import shutil
import subprocess

import pytest

from conftest import HAS_SOURCE_TREE, NO_SOURCE_TREE, REPO, core_sources
from rnnext import LSTM, Dense, Embedding, GRU, Model, Readout


def needs(*tools):
    """Skips a test where one of the programs it runs is missing."""
    missing = [tool for tool in tools if shutil.which(tool) is None]
    return pytest.mark.skipif(bool(missing), reason=f"{', '.join(missing)} not found")


pytestmark = needs("make", "cc")  # every test builds, or reads the build of, the library

CSRC = REPO / "csrc"
if not HAS_SOURCE_TREE:
    pytest.skip(NO_SOURCE_TREE, allow_module_level=True)
HEADER = (CSRC / "include" / "rnnext.h").read_text()
VERSION = tuple(int(re.search(rf"#define RNX_VERSION_{part} (\d+)", HEADER).group(1))
                for part in ("MAJOR", "MINOR", "PATCH"))
SHARED = "librnnext.so." + ".".join(map(str, VERSION))
SONAME = f"librnnext.so.{VERSION[0]}"


def run(args, **kwargs):
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=600,
                          **kwargs)
    assert done.returncode == 0, f"{args}: {done.stdout[-2000:]}{done.stderr[-4000:]}"
    return done.stdout


def csrc_files():
    return {(path, os.path.getmtime(path)) for path in CSRC.rglob("*")}


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    """The library built out of tree and installed into a stage; the folder that holds build/
    and stage/usr."""
    tmp = tmp_path_factory.mktemp("c_library")
    before = csrc_files()
    run(["make", "-s", "-C", CSRC, f"-j{os.cpu_count()}", f"BUILDDIR={tmp / 'build'}", "install",
         f"DESTDIR={tmp / 'stage'}", "PREFIX=/usr"])
    assert csrc_files() == before, "an out-of-tree build wrote into csrc/"
    return tmp


@pytest.fixture(scope="module")
def prefix(build):
    return build / "stage" / "usr"


def test_install_layout(prefix):
    files = {str(p.relative_to(prefix)): p for p in prefix.rglob("*") if not p.is_dir()}
    assert sorted(files) == sorted([
        "include/rnnext.h", "lib/librnnext.a", f"lib/{SHARED}", f"lib/{SONAME}",
        "lib/librnnext.so", "lib/pkgconfig/rnnext.pc", "lib/cmake/rnnext/rnnextConfig.cmake",
        "lib/cmake/rnnext/rnnextConfigVersion.cmake", "lib/cmake/rnnext/rnnextTargets.cmake"])
    assert files["include/rnnext.h"].read_text() == HEADER
    assert os.readlink(files[f"lib/{SONAME}"]) == SHARED
    assert os.readlink(files["lib/librnnext.so"]) == SHARED
    assert not files[f"lib/{SHARED}"].is_symlink()


def listed_sources():
    """csrc/sources.txt as setup.py reads it: ([sources this machine builds], {kernel: flags})."""
    core, kernels = core_sources()
    x86_64 = run(["cc", "-dumpmachine"]).startswith("x86_64")
    return core + (list(kernels) if x86_64 else []), kernels if x86_64 else {}


def assert_builds_the_list(commands):
    """commands: {source file name: its compile command}, as a build would run them."""
    sources, kernels = listed_sources()
    assert sorted(commands) == sorted(sources)
    for name, command in commands.items():
        words = command.split()
        assert "-fvisibility=hidden" in words and "-fopenmp" in words, command
        assert "-O3" in words, command  # optimised by default, as setup.py builds
        assert ("-DRNX_X86_KERNELS=1" in words) == bool(kernels), command
        assert all(flag in words for flag in kernels.get(name, [])), command
        assert "-mavx2" not in words or name in kernels, command


def test_makefile_builds_the_list(tmp_path):
    dry_run = run(["make", "-n", "-B", "-C", CSRC, f"BUILDDIR={tmp_path}", "all"])
    commands = [line for line in dry_run.splitlines() if " -c " in line]
    assert_builds_the_list({os.path.basename(re.search(r" -c (\S+)", line).group(1)): line
                            for line in commands})


@needs("cmake")
def test_cmake_builds_the_list_and_writes_what_make_installs(tmp_path, prefix):
    run(["cmake", "-S", CSRC, "-B", tmp_path, "-DCMAKE_EXPORT_COMPILE_COMMANDS=ON",
         "-DCMAKE_INSTALL_PREFIX=/usr", "-DCMAKE_INSTALL_LIBDIR=lib"])
    entries = json.loads((tmp_path / "compile_commands.json").read_text())
    assert_builds_the_list({os.path.basename(e["file"]): e["command"] for e in entries})
    # the files both fill in from one template each (CMake writes its own rnnextTargets.cmake)
    for name in ("pkgconfig/rnnext.pc", "cmake/rnnext/rnnextConfig.cmake",
                 "cmake/rnnext/rnnextConfigVersion.cmake"):
        assert (tmp_path / os.path.basename(name)).read_text() == \
            (prefix / "lib" / name).read_text(), name


@pytest.mark.parametrize("tool", ["make", "cmake"])
def test_a_malformed_list_is_refused(tmp_path, tool):
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} not found")
    src = tmp_path / "csrc"
    shutil.copytree(CSRC, src, ignore=shutil.ignore_patterns("*.o", "*.d", "*.a", "*.so*"))
    with open(src / "sources.txt", "a") as f:
        f.write("extra.c -mavx2  # a kernel's flags without x86_64:\n")
    args = ["make", "-n", "-C", src] if tool == "make" else ["cmake", "-S", src, "-B", src / "b"]
    refused = subprocess.run([str(a) for a in args], capture_output=True, text=True)
    assert refused.returncode != 0
    assert "sources.txt: expected 'file.c' or 'file.c x86_64: flags', got 'extra.c -mavx2" in \
        " ".join(refused.stderr.split())


@needs("ar")
def test_static_library_holds_the_listed_sources(prefix):
    members = run(["ar", "t", prefix / "lib" / "librnnext.a"]).split()
    assert sorted(members) == sorted(name[:-2] + ".o" for name in listed_sources()[0])


@needs("readelf")
def test_soname(prefix):
    dynamic = run(["readelf", "-d", prefix / "lib" / SHARED])
    assert re.findall(r"\(SONAME\)\s+Library soname: \[(.*)\]", dynamic) == [SONAME]


@needs("nm")
def test_exports_exactly_the_public_functions(prefix):
    declared = set(re.findall(r"RNX_API\s[^;{]*?\b(rnx_\w+)\s*\(", HEADER))
    assert len(declared) > 30 and "rnx_forward" in declared
    exported = run(["nm", "-D", "--defined-only", "--format=posix", prefix / "lib" / SHARED])
    assert {line.split()[0] for line in exported.splitlines()} == declared


def pkg_config(prefix, *args):
    env = dict(os.environ, PKG_CONFIG_PATH=str(prefix / "lib" / "pkgconfig"),
               PKG_CONFIG_SYSROOT_DIR=str(prefix.parent))
    return run(["pkg-config", *args, "rnnext"], env=env).split()


@needs("pkg-config")
def test_pkg_config(prefix):
    assert pkg_config(prefix, "--modversion") == [".".join(map(str, VERSION))]
    assert pkg_config(prefix, "--cflags", "--libs") == [
        f"-I{prefix}/include", f"-L{prefix}/lib", "-lrnnext"]
    # what rnnext.h says the static library needs: the OpenMP runtime and libm
    assert pkg_config(prefix, "--static", "--cflags", "--libs") == [
        f"-I{prefix}/include", f"-L{prefix}/lib", "-lrnnext", "-fopenmp", "-lm"]


@needs("cmake")
def test_cmake_package_version(prefix):
    """find_package(rnnext X.Y.Z) accepts the same major version up to this one."""
    major, minor, patch = VERSION
    script = prefix / "lib" / "cmake" / "rnnext" / "rnnextConfigVersion.cmake"

    def accepts(requested):
        parts = requested.split(".")
        probe = prefix.parent.parent / "version_probe.cmake"
        probe.write_text(f'set(PACKAGE_FIND_VERSION "{requested}")\n'
                         f'set(PACKAGE_FIND_VERSION_MAJOR "{parts[0]}")\n'
                         f'set(CMAKE_SIZEOF_VOID_P 8)\ninclude("{script}")\n'
                         'message("${PACKAGE_VERSION_COMPATIBLE} ${PACKAGE_VERSION}")\n')
        out = subprocess.run(["cmake", "-P", str(probe)], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        compatible, version = out.stderr.split()
        assert version == f"{major}.{minor}.{patch}"
        return compatible == "TRUE"

    assert accepts(f"{major}.{minor}.{patch}") and accepts(f"{major}.{minor}")
    assert accepts(f"{major}") and not accepts(f"{major + 1}.0")
    assert not accepts(f"{major}.{minor + 1}")
    if minor or patch:
        assert accepts(f"{major}.0")


# ----------------------------------------------------------------------------------------------
# the examples, on files saved from Python

@pytest.fixture(scope="module")
def programs(build, prefix):
    """The example programs: from `make examples` (static), and through pkg-config the C one
    with the shared library and the C++ one with the static library."""
    run(["make", "-s", "-C", CSRC, f"BUILDDIR={build / 'build'}", "examples"])
    cflags = pkg_config(prefix, "--cflags")
    static = " ".join(pkg_config(prefix, "--static", "--libs")).replace(
        "-lrnnext", "-Wl,-Bstatic -lrnnext -Wl,-Bdynamic").split()
    out = build / "pkg-config"
    out.mkdir()
    run(["cc", "-O2", "-std=c99", *cflags, CSRC / "examples" / "rnx_predict.c",
         *pkg_config(prefix, "--libs"), f"-Wl,-rpath,{prefix}/lib", "-lm", "-o",
         out / "shared_c"])
    run(["c++", "-O2", "-std=c++17", "-pthread", *cflags, CSRC / "examples" / "rnx_predict.cpp",
         *static, "-o", out / "static_cpp"])
    for program, shared in ((out / "shared_c", True), (out / "static_cpp", False)):
        needed = re.findall(r"\(NEEDED\).*\[(.*)\]", run(["readelf", "-d", program]))
        assert (SONAME in needed) == shared and "librnnext.so" not in needed
    return [build / "build" / "examples" / "rnx_predict",
            build / "build" / "examples" / "rnx_predict_cpp", out / "shared_c",
            out / "static_cpp"]


MODELS = {  # the layers; the weights from a seed
    "ids_lstm_per_step": lambda seed: Model([Embedding(20, 4), LSTM(6),
                                             Dense(5, activation="softmax")], seed=seed),
    "gru_lstm_last": lambda seed: Model([GRU(5), LSTM(4, proj_size=2), Readout("last"),
                                         Dense(3)], input_size=3, seed=seed),
    "bidirectional_mean": lambda seed: Model([GRU(5, direction="bidirectional"), Readout("mean"),
                                              Dense(2, activation="sigmoid")], input_size=2,
                                             seed=seed),
}


@needs("c++", "pkg-config", "readelf")
@pytest.mark.parametrize("name", MODELS)
def test_examples_agree_with_predict(programs, tmp_path, name):
    compare = runpy.run_path(str(CSRC / "examples" / "check_predict.py"))["compare"]
    path, other = tmp_path / "model.rnx", tmp_path / "other.rnx"
    MODELS[name](1).save(path)
    MODELS[name](2).save(other)  # the same layers, other weights: the check must notice
    streams = [] if name == "bidirectional_mean" else ["stream 0", "stream 1", "stream 2"]
    for program in programs:
        printed = run([program, path])
        assert compare(path, printed) == ["y", *streams]
        with pytest.raises(AssertionError, match="Model.predict"):
            compare(other, printed)
