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
  # Node.js from elsewhere (NodeSource's tarball, nvm) does as well as Debian's.
  if [ "$p" = nodejs ] && command -v node >/dev/null; then continue; fi
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

# 2a. The JupyterLab extension (labextension/, TypeScript), built with JupyterLab's
#     own jlpm into kernel/sandbox_kernel/labextension -- before the install below,
#     which copies it (shared data) into .venv/share/jupyter/labextensions. Rebuilt
#     only when its sources are newer than the build. Packages come from the npm
#     registry pinned in labextension/.yarnrc.yml, exactly as labextension/yarn.lock
#     says; no package's install scripts run.
ext_out=kernel/sandbox_kernel/labextension
ext_dir=.venv/share/jupyter/labextensions/jupyter-sandbox
ext_sources="labextension/src labextension/style labextension/package.json
  labextension/tsconfig.json labextension/yarn.lock labextension/.yarnrc.yml"
node_ok() {  # the builder (Rspack 2) needs Node.js ^20.19 or >= 22.12
  local v major minor
  v=$(node --version 2>/dev/null) || return 1
  v=${v#v}; major=${v%%.*}; minor=${v#*.}; minor=${minor%%.*}
  case $major in
    20) [ "$minor" -ge 19 ] ;;
    22) [ "$minor" -ge 12 ] ;;
    *) [ "$major" -gt 22 ] ;;
  esac
}
quietly() {  # run a command; show its output only if it fails
  local out
  if ! out=$("$@" 2>&1); then printf '%s\n' "$out" >&2; return 1; fi
}
jlpm_in_ext() { (cd labextension && PATH="$PWD/../.venv/bin:$PATH" jlpm "$@"); }
ext_state=labextension/node_modules/.yarn-state.yml
need_build=0 need_modules=0
# shellcheck disable=SC2086  # $ext_sources is a list of paths
if [ ! -f "$ext_out/package.json" ] \
   || [ -n "$(find $ext_sources -newer "$ext_out/package.json" -not -path '*/__tests__/*' -print -quit)" ]; then
  need_build=1
fi
if [ ! -f "$ext_state" ] || [ labextension/package.json -nt "$ext_state" ] \
   || [ labextension/yarn.lock -nt "$ext_state" ]; then
  # the build needs them, and so do the tests (jest)
  if [ "$need_build" = 1 ] || [ "$want_test" = 1 ]; then need_modules=1; fi
fi
if [ "$need_build" = 1 ] || [ "$need_modules" = 1 ]; then
  if ! node_ok; then
    msg="the JupyterLab extension needs Node.js ^20.19 or >= 22.12 to build, and node is $(node --version 2>/dev/null || echo missing).
  Debian 12's own nodejs is 18.x: install Node.js 20 or 22 (NodeSource's nodejs .deb, or Debian 13's nodejs) and run this again."
    if [ "$want_test" = 1 ]; then echo "setup: $msg" >&2; exit 1; fi
    echo "setup: warning: $msg
  Until then notebooks show the kernel's visualisations as plain HTML." >&2
  else
    # jlpm comes with JupyterLab (one of the package's own dependencies).
    if [ ! -x .venv/bin/jlpm ]; then
      log "installing JupyterLab into .venv (its jlpm builds the extension)"
      .venv/bin/python -m pip install -q --upgrade pip
      .venv/bin/python -m pip install -q "$(.venv/bin/python -c 'import tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
print(next(d for d in deps if d.lower().startswith("jupyterlab")))')"
    fi
    if [ "$need_modules" = 1 ]; then
      log "installing the extension's npm packages (labextension/node_modules)"
      if ! quietly jlpm_in_ext install --immutable; then
        echo "setup: 'jlpm install --immutable' failed in labextension/. If package.json changed," \
             "update yarn.lock: cd labextension && ../.venv/bin/jlpm install" >&2
        exit 1
      fi
      touch "$ext_state"
    fi
    if [ "$need_build" = 1 ]; then
      log "building the JupyterLab extension into $ext_out"
      quietly jlpm_in_ext build:prod
    fi
  fi
fi

# The install copies the kernelspec (kernel/kernelspec) and the built extension
# (shared data) into .venv/share/jupyter rather than linking them, so a change
# there needs a reinstall too, like a change of pyproject.toml.
spec_dir=.venv/share/jupyter/kernels/sandbox
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] \
   || [ -n "$(find kernel/kernelspec -newer "$stamp" -print -quit)" ] \
   || ! diff -rq kernel/kernelspec "$spec_dir" >/dev/null 2>&1 \
   || { [ -f "$ext_out/package.json" ] \
        && { [ -n "$(find "$ext_out" labextension/install.json -newer "$stamp" -print -quit)" ] \
             || ! diff -rq -x install.json "$ext_out" "$ext_dir" >/dev/null 2>&1; }; }; then
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

# The JupyterLab extension must be where JupyterLab looks for it (when it was built).
if [ -f "$ext_out/package.json" ] \
   && ! .venv/bin/jupyter labextension list 2>&1 | grep -q "jupyter-sandbox .*enabled.*OK"; then
  echo "setup: the JupyterLab extension jupyter-sandbox is not enabled and OK in" \
       "'.venv/bin/jupyter labextension list': 'pip install -e .' should have copied" \
       "$ext_out to $ext_dir (the shared-data of pyproject.toml)." >&2
  exit 1
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

# 4. (--test) The browser tests' npm packages (ui-tests/node_modules: Galata and
#    Playwright, about 600 MB, a minute or two cold), with JupyterLab's jlpm, from
#    the registry pinned in ui-tests/.yarnrc.yml, exactly as ui-tests/yarn.lock says.
#    No install script runs and no browser is downloaded: the tests drive Debian's
#    chromium (setup/apt-packages-test.txt). Reinstalled only when the manifest is
#    newer than the last install.
if [ "$want_test" = 1 ]; then
  ui_stamp=ui-tests/node_modules/.installed
  if [ ! -f "$ui_stamp" ] || [ ui-tests/package.json -nt "$ui_stamp" ] \
     || [ ui-tests/yarn.lock -nt "$ui_stamp" ] || [ ui-tests/.yarnrc.yml -nt "$ui_stamp" ]; then
    log "installing the browser tests' npm packages (ui-tests/node_modules)"
    if ! ui_out=$(cd ui-tests && ../.venv/bin/jlpm install --immutable 2>&1); then
      printf '%s\n' "$ui_out" >&2
      echo "setup: 'jlpm install --immutable' failed in ui-tests/. If package.json changed," \
           "update yarn.lock: cd ui-tests && ../.venv/bin/jlpm install" >&2
      exit 1
    fi
    touch "$ui_stamp"
  fi
fi

log "set-up done"
