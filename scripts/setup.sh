#!/usr/bin/env bash
# Set up everything jupyter-sandbox needs on a fresh Debian 12 machine:
# Debian packages (as root), a virtual environment at .venv with the package
# installed, and the default image `base`. Safe to run again: it only does
# what is missing. Usage: scripts/setup.sh [--test]   (--test adds test tools)
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
[ "${1:-}" = "--test" ] && want_test=1

log() { printf '\033[1m==> %s\033[0m\n' "$*"; }

# 1. Debian packages listed in setup/*.txt (only the missing ones).
packages=$(sed -e 's/#.*//' setup/apt-packages.txt | tr -s ' \n' ' ')
if [ "$want_test" = 1 ] && [ -f setup/apt-packages-test.txt ]; then
  packages="$packages $(sed -e 's/#.*//' setup/apt-packages-test.txt | tr -s ' \n' ' ')"
fi
missing=""
for p in $packages; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "missing Debian packages:$missing — run this script as root, or: sudo apt-get install$missing" >&2
    exit 1
  fi
  log "installing Debian packages:$missing"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# The group whose members may talk to the daemon's socket (as Docker's `docker`).
if [ "$(id -u)" = 0 ] && ! getent group sandbox >/dev/null; then
  log "creating the group sandbox (its members may use sandboxd)"
  groupadd --system sandbox
fi

# 2. The virtual environment and the package (editable, so the checkout is live).
if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  python3 -m venv .venv
fi
extras="" stamp=".venv/.installed"
if [ "$want_test" = 1 ]; then extras="[test]" stamp=".venv/.installed-test"; fi
# The install copies the kernelspec (kernel/kernelspec, shared data) into
# .venv/share/jupyter/kernels/sandbox rather than linking it, so a change there
# needs a reinstall too, like a change of pyproject.toml.
spec_dir=.venv/share/jupyter/kernels/sandbox
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] \
   || [ -n "$(find kernel/kernelspec -newer "$stamp" -print -quit)" ] \
   || ! diff -rq kernel/kernelspec "$spec_dir" >/dev/null 2>&1; then
  log "installing jupyter-sandbox$extras into .venv"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".$extras"
  touch "$stamp"
fi

# The Jupyter kernel "Bash (sandbox)" must be where JupyterLab looks for it.
found=$(.venv/bin/jupyter kernelspec list 2>/dev/null | awk '$1 == "sandbox" { print $2 }' || true)
if [ -z "$found" ]; then
  echo "setup: the Jupyter kernel 'sandbox' is missing: '.venv/bin/jupyter kernelspec list'" \
       "does not show it. 'pip install -e .' should have copied kernel/kernelspec to" \
       "$spec_dir (the shared-data of pyproject.toml): check that directory, and that it is" \
       "among the data paths of '.venv/bin/jupyter --paths'." >&2
  exit 1
fi
if [ "$found" != "$PWD/$spec_dir" ]; then
  echo "setup: warning: Jupyter uses the kernel 'sandbox' from $found, which hides" \
       "$PWD/$spec_dir; remove it ('jupyter kernelspec remove sandbox') to use this checkout's." >&2
fi

# 3. The default image (built from this machine's own tools, no download),
#    through the daemon, which `sandbox` starts when none answers. The tests
#    use stores and daemons of their own, so --test leaves the default alone.
if [ "$want_test" = 0 ] && { [ "$(id -u)" = 0 ] || [ -n "${SANDBOX_ROOT:-}" ]; }; then
  if ! .venv/bin/sandbox images -q 2>/dev/null | grep -q .; then
    log "building the default image base"
    .venv/bin/sandbox image build-base
  fi
fi
log "set-up done"
