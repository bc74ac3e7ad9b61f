"""pytest: the detector modules' doctests run from ``tests/test_detector_doctests.py``.

mypyc drops docstrings, and pytest's doctest collection imports each file, which is then the
compiled extension, not the ``.py`` it was asked for; the test reads the examples from the
sources and runs them against the modules as imported (compiled or not).
"""

from detectors.compiled import COMPILED_MODULES

collect_ignore = [f"{name}.py" for name in COMPILED_MODULES]
