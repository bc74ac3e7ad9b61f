"""rollout-monitor: a streaming monitor for RL training of language models."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("rollout-monitor")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"
