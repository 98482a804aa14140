#!/usr/bin/env bash
# Set up everything (with the test tools), then run every check and test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
echo "==> ruff"
.venv/bin/ruff check sandbox kernel tests bench
echo "==> jest (the JupyterLab extension)"
(cd labextension && PATH="$PWD/../.venv/bin:$PATH" jlpm test)
echo "==> pytest"
exec .venv/bin/pytest "$@"
