#!/usr/bin/env bash
# A short tour of what a container is: run after scripts/setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
S=.venv/bin/sandbox
step() { printf '\n\033[1;36m$ %s\033[0m\n' "$*"; }

step "sandbox run --rm base bash -c 'ps -ef'   # a PID namespace: the container sees only itself"
$S run --rm base bash -c 'ps -ef; true'
step "sandbox run --rm --hostname lab base hostname   # its own UTS namespace"
$S run --rm --hostname lab base hostname
step "sandbox run --rm base ip addr   # its own network namespace: loopback only"
$S run --rm base ip addr
step "sandbox run --rm base findmnt /   # the root is an overlay of read-only layers plus one writable layer"
$S run --rm base findmnt -o TARGET,FSTYPE,OPTIONS /
step "sandbox run --rm base grep Cap /proc/self/status   # Docker's 14 capabilities, no more"
$S run --rm base grep Cap /proc/self/status
step "sandbox run --rm --memory 64m base bash -c 'x=\$(head -c 200m /dev/zero | tr \"\\0\" a)'   # a cgroup memory limit"
$S run --rm --memory 64m base bash -c 'x=$(head -c 200m /dev/zero | tr "\0" a)' || echo "(exit status $?)"
step "sandbox run --name demo-cow base bash -c 'echo hello > /greeting; rm /usr/bin/rev'"
$S rm -f demo-cow >/dev/null 2>&1 || true
$S run --name demo-cow base bash -c 'echo hello > /greeting; rm /usr/bin/rev'
step "sandbox diff demo-cow   # copy-on-write: what the container changed, from its upper dir"
$S diff demo-cow
step "sandbox commit demo-cow demo:1 && sandbox history demo:1   # the changes become a new layer"
$S commit demo-cow demo:1 >/dev/null
$S history demo:1
step "sandbox run --rm demo:1 cat /greeting"
$S run --rm demo:1 cat /greeting
$S rm demo-cow >/dev/null
$S rmi demo:1 >/dev/null
step "sandbox images"
$S images
