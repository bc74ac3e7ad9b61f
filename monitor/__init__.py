"""rollout-monitor: a streaming monitor for RL training of language models."""

from importlib.metadata import PackageNotFoundError, version

import detectors  # noqa: F401  (first: it refuses a compiled build older than the sources)

try:
    __version__ = version("rollout-monitor")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"
