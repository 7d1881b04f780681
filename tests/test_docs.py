"""docs/: the maths page's line citations against the code they quote, and its gradient check
run as the page shows it (against central finite differences, in a new interpreter)."""
import re

import pytest

from conftest import REPO, run_python

pytestmark = pytest.mark.usefixtures("source_tree")

PAGE = REPO / "docs" / "maths.md"
GRADCHECK = REPO / "docs" / "gradcheck.py"
# a citation: a code span `path:line`, a space, and a code span quoting that line's code
CITATION = re.compile(r"`([\w./]+\.\w+):(\d+)`\s+`([^`]+)`")
# anything that looks like path:line, cited or not
PATH_LINE = re.compile(r"[\w./]+\.(?:py|c|h|pyx|pxd):\d+")


def citations():
    return CITATION.findall(PAGE.read_text())


def test_every_path_and_line_is_a_checked_citation():
    text = PAGE.read_text()
    assert len(citations()) >= 40, "the page should point at the code of each equation"
    cited = {f"{path}:{line}" for path, line, _ in CITATION.findall(text)}
    bare = sorted(set(PATH_LINE.findall(text)) - cited)
    assert not bare, f"path:line without a quoted code span after it: {bare}"


def test_each_citation_quotes_its_line():
    wrong = []
    for path, line, code in citations():
        source = REPO / path
        if not source.is_file():
            wrong.append(f"{path}:{line}: no such file")
            continue
        lines = source.read_text().splitlines()
        number = int(line)
        if 1 <= number <= len(lines) and code in lines[number - 1]:
            continue
        now = [str(k) for k, text in enumerate(lines, 1) if code in text]
        where = f"now at line {', '.join(now)}" if now else "not in the file"
        wrong.append(f"{path}:{line}: `{code}` is {where}")
    assert not wrong, "citations in docs/maths.md out of date:\n" + "\n".join(wrong)


def gradcheck_output():
    """`python docs/gradcheck.py`, run as a script in a new interpreter."""
    return run_python(f"import runpy; runpy.run_path({str(GRADCHECK)!r}, run_name='__main__')")


def without_figures(text):
    """text with its numbers and its parenthesised names (the parameter with the largest error,
    which rounding can change between machines) masked."""
    return re.sub(r"\d+(\.\d+)?(e[-+]\d+)?", "#", re.sub(r"\([^)]*\)", "(.)", text))


def test_gradient_check_passes_and_the_page_shows_its_output():
    run = gradcheck_output()
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    checks = [line for line in lines if "max relative error" in line]
    assert [line.split()[:2] for line in checks] == [
        [cell, output] for cell in ("rnn", "lstm", "gru")
        for output in ("many_to_one", "many_to_many")]
    tolerance = float(re.search(r"^tolerance (\S+):", run.stdout, re.M).group(1))
    for line in checks:
        error = float(re.search(r"max relative error (\S+)", line).group(1))
        assert error <= tolerance, line
    # the page shows the script's output: the same lines, up to the last digits of the errors
    page = PAGE.read_text()
    block = page.split("$ python docs/gradcheck.py\n", 1)[1].split("```", 1)[0]
    assert without_figures(block) == without_figures(run.stdout)
