"""setup.py's OpenMP probe links as the extension does: with the flags the environment gives the
extension's link (CFLAGS, LDFLAGS), so that a sanitizer build keeps its threads."""
import runpy
import shutil
import subprocess

import pytest

from conftest import REPO

SANITIZE = "-fsanitize=address,undefined"


@pytest.fixture
def setup_py():
    pytest.importorskip("Cython")
    return runpy.run_path(str(REPO / "setup.py"), run_name="setup_under_test")


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
    assert setup_py["openmp_works"](configured_compiler())
