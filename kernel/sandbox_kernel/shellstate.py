"""Shell state that survives from one cell's container to the next.

Every cell runs in a fresh container, yet should feel like one bash session.
So each cell's bash is started as::

    bash -c 'eval "$__SANDBOX_PRELUDE"
    <the cell, unchanged>' bash

The prelude (passed in the environment, and unset at once) restores what the
previous cell left: exported and plain variables, functions, aliases, shell
options, the working directory and ``$?``. It sets an EXIT trap that, when
the cell's shell ends for whatever reason (the last line, ``exit``, a syntax
error, ^C), writes the new state back on the shell's original stdout as one
terminal control string (OSC 7777, invisible in a terminal), which
`output.OutputSplitter` takes out of the stream before the notebook sees it.

Why this shape:
- The cell starts on its own line, after the prelude's, so aliases the
  prelude defines apply to the cell's first line (bash reads a whole line
  before it runs any of it). Bash's own messages then count one line too
  many ("bash: line 3: ..." for the cell's second line): `LINE_OFFSET`, which
  `output.OutputSplitter` takes off again.
- Nothing is written to the container's filesystem, so a cell that changed
  nothing makes no layer.
- Options are restored last, in a group whose stderr is /dev/null, so
  ``set -x``, ``set -e`` and ``set -u`` apply to the cell and never to the
  prelude; the group's last command sets ``$?``.

What does not carry over: processes (they end with their cell), traps, the
directory stack, job control, history, shell-local (non-exported) arrays that
bash cannot print, and variables bash makes itself (RANDOM, SECONDS, ...).
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from urllib.parse import unquote_to_bytes

OSC_NUMBER = "7777"
PRELUDE_VAR = "__SANDBOX_PRELUDE"

# `set -o` options restored from $SHELLOPTS. The interactive-only ones
# (history, monitor, emacs/vi, ...) and noexec (a cell that reads nothing)
# are left alone.
SET_OPTIONS = (
    "allexport", "braceexpand", "errexit", "errtrace", "functrace", "hashall", "keyword",
    "noclobber", "noglob", "nounset", "physical", "pipefail", "posix", "verbose", "xtrace",
    "onecmd", "notify",
)  # fmt: skip
# Applied after everything else: each one changes how the rest would run.
LAST_OPTIONS = ("errexit", "nounset", "verbose", "xtrace", "onecmd")

# The helpers every cell's shell gets. `display` is the user-facing command;
# everything else is named __sandbox_* and never saved.
# Every variable name, without a fork: ${!a*} is the names beginning with a.
_ALL_NAMES = " ".join(
    "${!" + c + "*}" for c in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_"
)

HELPERS = r"""
__sandbox_status() { return "$1"; }
__sandbox_escape() {  # NAME VALUE: NAME=VALUE with %, ESC, BEL and US percent-encoded
  local __sandbox_v=$2
  __sandbox_v=${__sandbox_v//%/%25}; __sandbox_v=${__sandbox_v//$'\e'/%1B}
  __sandbox_v=${__sandbox_v//$'\a'/%07}; __sandbox_v=${__sandbox_v//$'\x1f'/%1F}
  printf -v "$1" '%s' "$__sandbox_v"
}
__sandbox_save() {
  set +euo pipefail
  local __sandbox_s=$1 __sandbox_so=$2 __sandbox_d __sandbox_p __sandbox_st __sandbox_c
  local __sandbox_left="" __sandbox_state __sandbox_pwd
  if [[ -z ${__sandbox_keep_procs-} ]]; then
    for __sandbox_d in /proc/[1-9]*; do
      __sandbox_p=${__sandbox_d#/proc/}
      [[ $__sandbox_p == 1 || $__sandbox_p == "$$" ]] && continue
      read -r __sandbox_st < "$__sandbox_d/stat" || continue
      __sandbox_st=${__sandbox_st##*) }
      [[ ${__sandbox_st%% *} == Z ]] && continue
      read -r __sandbox_c < "$__sandbox_d/comm" || continue
      __sandbox_left+="$__sandbox_c ($__sandbox_p), "
    done
  fi
  # One subshell (a fork, no exec) prints everything; it drops the helpers first.
  __sandbox_state=$(
    unset -f __sandbox_status __sandbox_save display
    __sandbox_names=""
    for __sandbox_n in @NAMES@; do
      __sandbox_names+="$__sandbox_n "
      case $__sandbox_n in
        __sandbox_*|BASH|BASH_*|BASHOPTS|BASHPID|COMP_*|COLUMNS|DIRSTACK|EPOCHREALTIME\
        |EPOCHSECONDS|EUID|FUNCNAME|GROUPS|HISTCMD|HISTFILE|HOSTNAME|HOSTTYPE|LINENO|LINES\
        |MACHTYPE|OPTERR|OSTYPE|PIPESTATUS|PPID|PWD|RANDOM|SECONDS|SHELLOPTS|SHLVL|SRANDOM\
        |UID|_) continue ;;
      esac
      declare -p "$__sandbox_n" 2>/dev/null
    done
    printf '\x1f%s\x1f' "$__sandbox_names"
    unset -f __sandbox_escape
    declare -f
    printf '\x1f'
    alias -p
    printf '\x1f'
    shopt -p
  )
  __sandbox_state=${__sandbox_state//%/%25}; __sandbox_state=${__sandbox_state//$'\e'/%1B}
  __sandbox_state=${__sandbox_state//$'\a'/%07}
  __sandbox_escape __sandbox_pwd "$PWD"
  __sandbox_escape __sandbox_left "${__sandbox_left%, }"
  printf '\e]%s;state;%s;%s\x1f%s\x1f%s\x1f%s\x1f%s\a' "$__sandbox_osc" "$__sandbox_nonce" \
    "$__sandbox_s" "$__sandbox_pwd" "$__sandbox_so" "$__sandbox_left" "$__sandbox_state" \
    >&"$__sandbox_fd"
}
display() {
  local __mime="" __usage="usage: display [--mime TYPE] [FILE]
  shows a PNG, JPEG, GIF, SVG, HTML, Markdown, JSON or text file (stdin without FILE)"
  case ${1-} in
    -h|--help) echo "$__usage"; return 0 ;;
    -m|--mime) __mime=${2-}; shift 2 || { echo "$__usage" >&2; return 2; } ;;
  esac
  local __f=${1:--}
  if [[ $__f != - && ! -r $__f ]]; then
    echo "display: cannot read ${__f}: no such file, or not readable" >&2
    return 1
  fi
  local __data
  if [[ $__f == - ]]; then __data=$(base64 -w0) || return 1
  else __data=$(base64 -w0 -- "$__f") || return 1
  fi
  local __name
  __sandbox_escape __mime "$__mime"
  __sandbox_escape __name "${__f##*/}"
  printf '\e]%s;display;%s;%s;%s\a' "$__sandbox_osc" "$__mime" "$__name" "$__data"
}
""".replace("@NAMES@", _ALL_NAMES)


@dataclass
class ShellState:
    """What one cell's shell left for the next: opaque bash text plus a few fields."""

    status: int = 0
    cwd: str = ""
    shellopts: str = ""
    declarations: str = ""  # `declare -p` lines
    names: list[str] = field(default_factory=list)  # every variable the shell had
    functions: str = ""
    aliases: str = ""
    shopts: str = ""
    left_running: list[str] = field(default_factory=list)  # "sleep (7)" ...

    @classmethod
    def parse(cls, payload: str) -> ShellState:
        """The state from the fields of an OSC ``state`` record (after the nonce)."""
        parts = payload.split("\x1f")
        if len(parts) < 9:
            raise ValueError(f"state record with {len(parts)} fields, expected 9")
        status, cwd, shellopts, left, declarations, names, functions, aliases, shopts = (
            parts[:9]
        )
        dec = [_unescape(p) for p in (cwd, left, declarations, names, functions, aliases, shopts)]
        return cls(
            status=int(status or 0),
            cwd=dec[0],
            shellopts=shellopts,
            left_running=[p for p in dec[1].split(", ") if p],
            declarations=dec[2],
            names=dec[3].split(),
            functions=dec[4],
            aliases=dec[5],
            shopts=dec[6],
        )


def _unescape(text: str) -> str:
    return unquote_to_bytes(text).decode("utf-8", "surrogateescape")


def new_nonce() -> str:
    """A per-session secret: only state records carrying it are believed."""
    return os.urandom(8).hex()


def prelude(
    state: ShellState | None,
    nonce: str,
    *,
    inherited_env: list[str] = (),  # type: ignore[assignment]
    save_state: bool = True,
    keep_processes: bool = False,
) -> str:
    """The bash text run before a cell (see the module docstring).

    Args:
        state: what the previous cell left; None for the first cell.
        nonce: the session's secret for state records.
        inherited_env: names the container's environment starts with (the
            image's ``Env`` and the kernel's); those the previous cell unset
            are unset again.
        save_state: False for cells whose state must not come back (none yet
            writes no record at all).
        keep_processes: True where processes may outlive the cell
            (``%%container``): they are then not listed as left running.
    """
    lines = [
        f"unset {PRELUDE_VAR}",
        f"__sandbox_osc={OSC_NUMBER} __sandbox_nonce={nonce}",
        "exec {__sandbox_fd}>&1",
        HELPERS,
        "shopt -s expand_aliases",
    ]
    if keep_processes:
        # The kernel interrupts such a cell through this pid (it is no container's init).
        lines.append("__sandbox_keep_procs=1; printf '\\e]%s;pid;%s\\a' \"$__sandbox_osc\" \"$$\"")
    status = 0
    last: list[str] = []
    if state is not None:
        status = state.status
        known = set(state.names)
        gone = sorted({n for n in inherited_env if n not in known and n.isidentifier()})
        if gone:
            lines.append("unset " + " ".join(gone) + " 2>/dev/null")
        lines.append(state.declarations)
        lines.append(state.functions)
        lines.append(state.aliases)
        if state.cwd:
            quoted = shlex.quote(state.cwd)
            # cd sets OLDPWD: the previous cell's (for `cd -`) is put back after it.
            lines.append("[[ -v OLDPWD ]] && __sandbox_oldpwd=$OLDPWD")
            lines.append(
                f"cd -- {quoted} 2>/dev/null || printf 'bash: the working directory %s "
                f"is gone; now in %s\\n' {quoted} \"$PWD\" >&2"
            )
            lines.append(
                "if [[ -v __sandbox_oldpwd ]]; then OLDPWD=$__sandbox_oldpwd; else unset OLDPWD; fi"
                "; unset __sandbox_oldpwd"
            )
        enabled = set(state.shellopts.split(":"))
        first = [o for o in SET_OPTIONS if o not in LAST_OPTIONS]
        lines.append(state.shopts)
        lines.append(" ".join(f"set {'-' if o in enabled else '+'}o {o};" for o in first))
        last = [f"set -o {o}" for o in LAST_OPTIONS if o in enabled]
    if save_state:
        lines.append(
            "trap '{ __sandbox_save \"$?\" \"$SHELLOPTS\"; } 2>/dev/null' EXIT"
        )
    lines.append("{ " + "; ".join([*last, f"__sandbox_status {status}"]) + "; } 2>/dev/null")
    return "\n".join(lines)


LINE_OFFSET = 1  # the cell's first line is line 2 of bash's -c string


def cell_command(code: str) -> list[str]:
    """The container's command for a cell (its prelude goes in the environment)."""
    return ["bash", "--noprofile", "--norc", "-c", f'eval "${PRELUDE_VAR}"\n{code}', "bash"]
