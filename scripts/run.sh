#!/usr/bin/env bash
# The main job: set everything up, then run it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec bash scripts/demo.sh
