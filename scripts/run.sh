#!/usr/bin/env bash
# The main job: set everything up, then open JupyterLab on notebooks/ with the
# "Bash (sandbox)" kernel as the default for new notebooks. Open the URL it
# prints. Extra arguments go to `jupyter lab` (e.g. --port=9999).
# The terminal tour of a container's isolation is scripts/demo.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
mkdir -p notebooks
args=(
  --notebook-dir=notebooks
  --ServerApp.ip=127.0.0.1
  --no-browser
  --MappingKernelManager.default_kernel_name=sandbox
)
# JupyterLab refuses to run as root unless told to.
if [ "$(id -u)" = 0 ]; then args+=(--allow-root); fi
exec .venv/bin/jupyter lab "${args[@]}" "$@"
