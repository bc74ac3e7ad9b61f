"""The examples in the compiled modules' docstrings, run against the modules as imported.

With the mypyc build (``deploy/compile_detectors.py``) the imported modules are the compiled
ones, which carry no docstrings: the examples are read from the sources (``ast``) and run in
the namespace of the imported module, so the documentation is checked against the code that
runs. The top-level ``conftest.py`` keeps pytest's own doctest collection off these files.
"""

from __future__ import annotations

import ast
import doctest
import importlib
from pathlib import Path

import pytest

from detectors.compiled import COMPILED_MODULES, source_path

ROOT = Path(__file__).resolve().parent.parent
FLAGS = doctest.ELLIPSIS  # pytest's default doctest_optionflags


def docstrings(path: Path, module: str) -> list[tuple[str, str, int]]:
    """``(qualified name, docstring, line)`` of the module, its classes and functions."""
    tree = ast.parse(path.read_text(), str(path))
    found: list[tuple[str, str, int]] = []

    def visit(node: ast.AST, name: str) -> None:
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            text = ast.get_docstring(node, clean=False)
            if text:
                body = node.body[0]
                found.append((name, text, body.lineno))
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                visit(child, f"{name}.{child.name}")

    visit(tree, module)
    return found


def examples(name: str) -> list[doctest.DocTest]:
    module = importlib.import_module(name)
    path = source_path(name, ROOT)
    parser = doctest.DocTestParser()
    tests = []
    for qualified, text, line in docstrings(path, module.__name__):
        test = parser.get_doctest(text, dict(vars(module)), qualified, str(path), line)
        if test.examples:
            tests.append(test)
    return tests


CASES = [(name, test) for name in COMPILED_MODULES for test in examples(name)]


def test_every_example_in_the_sources_is_run() -> None:
    """Each ``>>>`` line of the compiled modules' sources belongs to a collected example."""
    prompts = sum(
        line.lstrip().startswith(">>>")
        for name in COMPILED_MODULES
        for line in source_path(name, ROOT).read_text().splitlines()
    )
    assert sum(len(test.examples) for _, test in CASES) == prompts > 0


@pytest.mark.parametrize(("module", "test"), CASES, ids=[t.name for _, t in CASES])
def test_docstring_examples(module: str, test: doctest.DocTest) -> None:
    output: list[str] = []
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    runner.run(test, out=output.append)
    assert runner.failures == 0, "".join(output)
