#!/usr/bin/env bash
# make demo: the local stack must be up (make demo starts it); runs deploy/demo.py.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python deploy/demo.py "$@"
