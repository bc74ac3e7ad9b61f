"""pytest: the doctests of the compiled modules run from ``tests/test_compiled_doctests.py``.

mypyc drops docstrings, and pytest's doctest collection imports each file, which is then the
compiled extension, not the ``.py`` it was asked for; that test reads the examples from the
sources and runs them against the modules as imported (compiled or not).
"""

from detectors.compiled import COMPILED_MODULES, source_path

collect_ignore = [str(source_path(name)) for name in COMPILED_MODULES]
