"""Tab completion and inspection (Shift-Tab) for the sandbox kernel.

What can be completed depends on the session's shell state (its cwd, files,
variables, functions, aliases), which lives in containers, not in the kernel.
So the shell part runs inside a throwaway container of the session: this module
only reads the cell up to the cursor, generates a small bash script (the word is
always passed quoted, never evaluated), hands it to a :data:`Runner` and parses
what the script prints, one match per line.

* :func:`word_at`: the token being completed and its offsets;
* :func:`complete`: Jupyter's complete_reply content;
* :func:`inspect`: Jupyter's inspect_reply content for the command word.

Pure functions of their input and the runner: no Jupyter import.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

__all__ = [
    "MAX_MATCHES",
    "Runner",
    "complete",
    "completion_script",
    "inspect",
    "inspect_script",
    "word_at",
]

Runner = Callable[[str], Awaitable[tuple[int, str, str]]]
"""Runs a bash script in a throwaway container of the session, with the session's
shell state restored; returns (exit status, stdout, stderr)."""

MAX_MATCHES = 500  # matches returned at most
SCRIPT_LIMIT = 10_000  # lines a completion script prints at most
HELP_LINES = (40, 200)  # lines of `NAME --help` shown at detail_level 0 and 1
MAX_INSPECT_CHARS = 100_000
# Every script starts here: the restored state may hold `set -eu` or pipefail.
PROLOGUE = "builtin set +o errexit +o nounset +o pipefail 2>/dev/null\n"

# Words after which the next word is again in command position.
_KEYWORDS = frozenset({"if", "then", "else", "elif", "do", "while", "until", "!", "{", "time"})
# Commands whose first non-option argument is itself a command.
_PREFIXES = frozenset(
    {"sudo", "doas", "env", "exec", "command", "builtin", "nohup", "nice", "xargs", "time"}
)
# Keywords after which the next word is a name, not a command.
_NAME_KEYWORDS = frozenset({"for", "select", "case", "function"})
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\[[^\]]*\])?\+?=")
_FD_WORD = re.compile(r"\d+|\{[A-Za-z_][A-Za-z0-9_]*\}")
_NAME_PREFIX = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|")
_TRAILING_VAR = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?$")
_VAR_LEAD = re.compile(r"\$(?:([A-Za-z_][A-Za-z0-9_]*)|\{([A-Za-z_][A-Za-z0-9_]*)\})(?=/)")
_REDIRECTS = ("<<<", "<<-", "&>>", "<<", ">>", "<&", ">&", "<>", ">|", "&>", "<", ">")
_CONTROLS = (";;&", ";;", ";&", "||", "&&", "|&", ";", "|", "&")
_BLANKS = " \t"
_WORD_END = " \t\n;|&()<>"
# Characters escaped with a backslash in an unquoted match ('#' and '~' only first).
_SPECIAL = set(" \t\n\"'\\$`!&;|<>()[]{}*?")


# -- reading the cell up to the cursor ---------------------------------------


@dataclass
class _Cmd:
    """A command context: the top level, `$( )`, backquotes, a subshell, an array."""

    kind: str  # top | subst | subshell | array
    closer: str  # ")" or "`" ("" at the top)
    cmd_pos: bool = True  # the next word is in command position
    after_prefix: bool = False  # the last word was sudo/env/...: options keep cmd_pos
    word_start: int | None = None  # offset of the word being read
    word_cmd_pos: bool = False  # that word started in command position
    breaks: list[int] = field(default_factory=list)  # offsets after an unquoted = or :
    redirect: str = ""  # the word being read is the target of this redirection
    command: tuple[int, int] | None = None  # last command-position word (start, end)
    heredocs: list[tuple[str, bool]] = field(default_factory=list)  # (delimiter, <<-)


@dataclass
class _Quote:
    """An open quote or expansion inside a word."""

    kind: str  # ' | " | $' | ${ | $(( | ext
    pos: int  # offset of its first character
    body: int  # offset of its content
    depth: int = 0  # nested parentheses ($(( and ext)


@dataclass
class _Word:
    """What the cursor is on."""

    raw: str  # code[start:end]
    start: int
    end: int
    kind: str = "none"  # command | variable | file | none
    value: str = ""  # the unquoted text to complete (a name prefix for variables)
    quote: str = ""  # the open quote the token is in: "", ', " or $'
    strip: str = ""  # unquoted text of the word before the token, removed from matches
    var_prefix: str = ""  # $ or ${ for variables
    cmd_pos: bool = False  # the token is a whole word in command position
    command: str | None = None  # the command word of the simple command (unquoted)


def _dequote(raw: str) -> str:
    """The value of a shell word without expansions: quotes and escapes removed."""
    out: list[str] = []
    i, n = 0, len(raw)
    while i < n:
        c = raw[i]
        if c == "\\":
            if i + 1 < n and raw[i + 1] != "\n":
                out.append(raw[i + 1])
            i += 2
        elif c == "'":
            end = raw.find("'", i + 1)
            end = n if end < 0 else end
            out.append(raw[i + 1 : end])
            i = end + 1
        elif c == '"' or raw.startswith('$"', i):
            i += 1 if c == '"' else 2
            text, i = _dq_content(raw, i)
            out.append(text)
            i += 1
        elif raw.startswith("$'", i):
            text, i = _ansi_content(raw, i + 2)
            out.append(text)
            i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _dq_content(raw: str, i: int) -> tuple[str, int]:
    """Unescaped content of a double-quoted string from ``i`` to its end quote."""
    out: list[str] = []
    n = len(raw)
    while i < n and raw[i] != '"':
        if raw[i] == "\\" and i + 1 < n and raw[i + 1] in '$`"\\\n':
            if raw[i + 1] != "\n":
                out.append(raw[i + 1])
            i += 2
        else:
            out.append(raw[i])
            i += 1
    return "".join(out), i


_ANSI = {"n": "\n", "t": "\t", "r": "\r", "a": "\a", "b": "\b", "e": "\x1b", "E": "\x1b"}


def _ansi_content(raw: str, i: int) -> tuple[str, int]:
    """Content of a $'...' string (common escapes only) from ``i`` to its end quote."""
    out: list[str] = []
    n = len(raw)
    while i < n and raw[i] != "'":
        if raw[i] == "\\" and i + 1 < n:
            out.append(_ANSI.get(raw[i + 1], raw[i + 1]))
            i += 2
        else:
            out.append(raw[i])
            i += 1
    return "".join(out), i


def _trailing_var(text: str) -> int | None:
    """Offset of an unescaped `$NAME` (or lone `$`) that ends ``text``, or None."""
    m = _TRAILING_VAR.search(text)
    if m is None:
        return None
    before = text[: m.start()]
    if before.endswith("$") or (len(before) - len(before.rstrip("\\"))) % 2:
        return None
    return m.start()


class _Lexer:
    """A forward scan of the code before the cursor, as far as completion needs."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.stack: list[_Cmd | _Quote] = [_Cmd("top", "")]
        self.in_comment = False
        self.in_heredoc = False

    def cmd(self) -> _Cmd:
        return next(f for f in reversed(self.stack) if isinstance(f, _Cmd))

    def start_word(self, cmd: _Cmd, i: int) -> None:
        if cmd.word_start is None:
            cmd.word_start = i
            cmd.breaks = []
            cmd.word_cmd_pos = cmd.cmd_pos and not cmd.redirect and cmd.kind != "array"

    def end_word(self, cmd: _Cmd, i: int) -> None:
        start = cmd.word_start
        if start is None:
            return
        cmd.word_start = None
        raw = self.text[start:i]
        if cmd.redirect:
            if cmd.redirect in ("<<", "<<-"):
                cmd.heredocs.append((_dequote(raw), cmd.redirect == "<<-"))
            cmd.redirect = ""
            return
        if not cmd.word_cmd_pos:
            return
        if _ASSIGNMENT.match(raw) or (cmd.after_prefix and raw.startswith("-")):
            return  # FOO=bar cmd, sudo -E cmd: still in command position
        cmd.command = (start, i)
        if raw in _NAME_KEYWORDS:
            cmd.cmd_pos = cmd.after_prefix = False
        elif raw in _PREFIXES:
            cmd.after_prefix = True
        elif raw in _KEYWORDS:
            cmd.after_prefix = False
        else:
            cmd.cmd_pos = cmd.after_prefix = False

    def separate(self, cmd: _Cmd) -> None:
        """A control operator or newline: a new simple command starts."""
        cmd.cmd_pos = True
        cmd.after_prefix = False
        cmd.redirect = ""
        cmd.command = None

    def run(self) -> None:
        i = 0
        while i < len(self.text) and not (self.in_comment or self.in_heredoc):
            top = self.stack[-1]
            i = self.in_quote(top, i) if isinstance(top, _Quote) else self.in_cmd(top, i)

    def in_quote(self, q: _Quote, i: int) -> int:
        text, c = self.text, self.text[i]
        if q.kind == "'":
            if c == "'":
                self.stack.pop()
            return i + 1
        if q.kind == "$'":
            if c == "\\":
                return i + 2
            if c == "'":
                self.stack.pop()
            return i + 1
        if c == "\\":
            return i + 2
        if q.kind == '"' and c == '"':
            self.stack.pop()
            return i + 1
        if q.kind == "${" and c == "}":
            self.stack.pop()
            return i + 1
        if q.kind in ("$((", "ext") and c in "()":
            if c == "(":
                q.depth += 1
            elif q.depth:
                q.depth -= 1
            else:
                self.stack.pop()
                return i + 2 if q.kind == "$((" and text.startswith("))", i) else i + 1
            return i + 1
        opened = self.open_expansion(i)
        if opened:
            return opened
        if q.kind != '"' and c in "'\"":
            self.stack.append(_Quote(c, i, i + 1))
        return i + 1

    def open_expansion(self, i: int) -> int:
        """Push `$((`, `$(`, `${` or a backquote at ``i``; the next offset, or 0."""
        text = self.text
        if text.startswith("$((", i):
            self.stack.append(_Quote("$((", i, i + 3))
            return i + 3
        if text.startswith("$(", i):
            self.stack.append(_Cmd("subst", ")"))
            return i + 2
        if text.startswith("${", i):
            self.stack.append(_Quote("${", i, i + 2))
            return i + 2
        if text[i] == "`":
            self.stack.append(_Cmd("subst", "`"))
            return i + 1
        return 0

    def in_cmd(self, cmd: _Cmd, i: int) -> int:
        text, c = self.text, self.text[i]
        if c in _BLANKS:
            self.end_word(cmd, i)
            return i + 1
        if c == "\n":
            self.end_word(cmd, i)
            self.separate(cmd)
            return self.skip_heredocs(cmd, i + 1)
        if c == "#" and cmd.word_start is None:
            end = text.find("\n", i)
            if end < 0:
                self.in_comment = True
                return len(text)
            return end
        if c == "\\":
            if text.startswith("\\\n", i):
                return i + 2  # line continuation
            self.start_word(cmd, i)
            return i + 2
        if c == "`" and cmd.closer == "`":
            self.end_word(cmd, i)
            self.stack.pop()
            return i + 1
        if c in "'\"" or text.startswith(("$'", '$"'), i):
            self.start_word(cmd, i)
            kind = "'" if c == "'" else '"' if c == '"' else text[i : i + 2]
            kind = '"' if kind == '$"' else kind
            self.stack.append(_Quote(kind, i, i + (1 if c in "'\"" else 2)))
            return i + (1 if c in "'\"" else 2)
        if c in "$`":
            self.start_word(cmd, i)
            return self.open_expansion(i) or i + 1
        if c == "(":
            return self.open_paren(cmd, i)
        if c == ")":
            self.end_word(cmd, i)
            if cmd.closer == ")":
                self.stack.pop()
                if cmd.kind == "subshell":
                    self.cmd().cmd_pos = False
            else:
                self.separate(cmd)  # a case pattern: a command follows
            return i + 1
        if c in "<>" or text.startswith("&>", i):
            return self.redirection(cmd, i)
        if c in ";|&":
            self.end_word(cmd, i)
            self.separate(cmd)
            op = next(op for op in _CONTROLS if text.startswith(op, i))
            return i + len(op)
        self.start_word(cmd, i)
        if c in "=:":
            cmd.breaks.append(i + 1)
        return i + 1

    def open_paren(self, cmd: _Cmd, i: int) -> int:
        if cmd.word_start is not None:
            if self.text[i - 1] == "=" and _ASSIGNMENT.fullmatch(self.text[cmd.word_start : i]):
                self.stack.append(_Cmd("array", ")", cmd_pos=False))
            else:  # extglob @(...) or the () of a function definition
                self.stack.append(_Quote("ext", i, i + 1))
            return i + 1
        self.stack.append(_Cmd("subshell", ")"))
        return i + 1

    def redirection(self, cmd: _Cmd, i: int) -> int:
        text = self.text
        start = cmd.word_start
        if start is not None and _FD_WORD.fullmatch(text[start:i]):
            cmd.word_start = None  # 2>file: the 2 is a file descriptor
        else:
            self.end_word(cmd, i)
        if text.startswith(("<(", ">("), i):  # process substitution: a word
            self.start_word(cmd, i)
            self.stack.append(_Cmd("subst", ")"))
            return i + 2
        op = next(op for op in _REDIRECTS if text.startswith(op, i))
        cmd.redirect = op
        return i + len(op)

    def skip_heredocs(self, cmd: _Cmd, i: int) -> int:
        """Skip the bodies of the here-documents opened on the line just ended."""
        text = self.text
        while cmd.heredocs:
            delimiter, strip_tabs = cmd.heredocs.pop(0)
            while True:
                end = text.find("\n", i)
                if end < 0:
                    self.in_heredoc = True
                    return len(text)
                line = text[i:end]
                i = end + 1
                if (line.lstrip("\t") if strip_tabs else line) == delimiter:
                    break
        return i

    def word(self, pos: int) -> _Word:
        """The token that ends at ``pos`` (the end of the scanned text)."""
        text = self.text
        empty = _Word("", pos, pos)
        if self.in_comment or self.in_heredoc:
            return empty
        top = self.stack[-1]
        cmd = self.cmd()
        command = None
        if cmd.command is not None:
            command = _dequote(text[cmd.command[0] : cmd.command[1]])
        empty.command = command
        start = cmd.word_start
        if isinstance(top, _Cmd):
            if start is None:
                kind = "command" if cmd.cmd_pos and not cmd.redirect else "file"
                if cmd.kind == "array":
                    kind = "file"
                return _Word("", pos, pos, kind, cmd_pos=kind == "command", command=command)
            raw = text[start:pos]
            var = _trailing_var(raw)
            if var is not None:
                return _Word(raw[var:], start + var, pos, "variable", raw[var + 1 :],
                             var_prefix="$", command=command)  # fmt: skip
            tok = max(cmd.breaks, default=start)
            word = _Word(text[tok:pos], tok, pos, "file", _dequote(text[tok:pos]))
            word.command = command
            word.cmd_pos = cmd.word_cmd_pos and tok == start
            if word.cmd_pos and not word.value.startswith((".", "~")) and "/" not in word.value:
                word.kind = "command"
            return word
        if top.kind == "${":
            name = text[top.body : pos]
            if _NAME_PREFIX.fullmatch(name):
                return _Word(text[top.pos : pos], top.pos, pos, "variable", name,
                             var_prefix="${", command=command)  # fmt: skip
            return empty
        if top.kind not in ("'", '"', "$'") or self.stack[-2] is not cmd or start is None:
            return empty
        content = text[top.body : pos]
        if top.kind == '"':
            var = _trailing_var(content)
            if var is not None:
                return _Word(content[var:], top.body + var, pos, "variable",
                             content[var + 1 :], var_prefix="$", command=command)  # fmt: skip
            value, _ = _dq_content(content, 0)
        elif top.kind == "$'":
            value, _ = _ansi_content(content, 0)
        else:
            value = content
        lead = max((b for b in cmd.breaks if b <= top.pos), default=start)
        strip = _dequote(text[lead : top.pos])
        word = _Word(content, top.body, pos, "file", strip + value, top.kind, strip)
        word.command = command
        word.cmd_pos = cmd.word_cmd_pos and lead == start
        if word.cmd_pos and not word.value.startswith((".", "~")) and "/" not in word.value:
            word.kind = "command"
        return word


def _clamp(code: str, cursor_pos: int | None) -> int:
    if cursor_pos is None:
        return len(code)
    return max(0, min(len(code), cursor_pos))


def _analyze(code: str, pos: int) -> _Word:
    lexer = _Lexer(code[:pos])
    lexer.run()
    return lexer.word(pos)


def word_at(code: str, cursor_pos: int) -> tuple[str, int, int]:
    """The token being completed at ``cursor_pos``: (text, start, end), end = cursor.

    ``text == code[start:end]``. The token starts after a blank or an operator
    (``|``, ``;``, ``&&``, ``$(``, ``(``...), after an open quote (``cat "my fi``
    gives ``my fi``), at the ``$`` of ``$VAR`` / ``${VAR``, or after an unquoted
    ``=`` or ``:`` (``PATH=/usr/bin:/us`` gives ``/us``). Offsets count code points.
    """
    pos = _clamp(code, cursor_pos)
    word = _analyze(code, pos)
    return word.raw, word.start, word.end


# -- completion --------------------------------------------------------------


def _escape(match: str, quote: str) -> str:
    """``match`` written so that the shell reads it back in the given quoting."""
    if quote == "'":
        return match.replace("'", "'\\''")
    if quote == '"':
        return re.sub(r'([$`"\\])', r"\\\1", match)
    if quote == "$'":
        return match.replace("\\", "\\\\").replace("'", "\\'")
    out = []
    for i, c in enumerate(match):
        if c in _SPECIAL or (c == "#" and i == 0):
            out.append("\\" + c)
        else:
            out.append(c)
    return "".join(out)


def _capped_loop(body: str, limit: int = SCRIPT_LIMIT) -> str:
    """A brace group that runs ``body`` for each of the first ``limit`` input lines."""
    return f"{{ n=0; while IFS= builtin read -r m && (( n++ < {limit} )); do {body} done; }}"


def completion_script(word: _Word) -> tuple[str, str]:
    """The bash script that lists the matches for ``word``, and the raw text that
    the printed matches must be prefixed with (a `$VAR` the script expanded)."""
    lead_raw = ""
    if word.kind == "variable":
        lister = f"builtin compgen -v -- {shlex.quote(word.value)}"
        return f"{PROLOGUE}{lister} 2>/dev/null | {_capped_loop(_PRINT)}\nbuiltin exit 0\n", ""
    if word.kind == "command":
        lister = f"builtin compgen -abck -A function -- {shlex.quote(word.value)}"
        return f"{PROLOGUE}{lister} 2>/dev/null | {_capped_loop(_PRINT)}\nbuiltin exit 0\n", ""
    value = word.value
    setup = PROLOGUE + "e=''\n"
    m = _VAR_LEAD.match(word.raw) if not word.strip else None
    if m is not None and value.startswith(m.group(0)):
        name = m.group(1) or m.group(2)
        lead_raw = m.group(0)
        value = value[len(lead_raw) :]
        setup = f"{PROLOGUE}v={name}\n[[ -n ${{!v+x}} ]] || builtin exit 0\ne=${{!v}}\n"
    script = (
        f'{setup}w="$e"{shlex.quote(value)}\n'
        f'builtin compgen -f -- "$w" 2>/dev/null | {_capped_loop(_FILE)}\n'
        "builtin exit 0\n"
    )
    return script, lead_raw


_PRINT = "builtin printf '%s\\n' \"$m\";"
_FILE = (
    "case $m in '~') t=$HOME ;; '~/'*) t=$HOME/${m#'~/'} ;; *) t=$m ;; esac; "
    '[[ -d $t ]] && m+=/; builtin printf \'%s\\n\' "${m#"$e"}";'
)


async def _run(script: str, run: Runner) -> list[str] | None:
    """The script's output lines, or None if it could not run or failed."""
    try:
        status, out, _err = await run(script)
    except Exception:  # a SandboxError, a lost daemon...: completion never throws
        return None
    if status != 0:
        return None
    return [line for line in out.split("\n") if line]


def _reply(matches: list[str], start: int, end: int) -> dict[str, object]:
    return {
        "status": "ok",
        "matches": matches,
        "cursor_start": start,
        "cursor_end": end,
        "metadata": {},
    }


async def complete(code: str, cursor_pos: int | None, run: Runner) -> dict[str, object]:
    """Jupyter's complete_reply content for the cursor in ``code``.

    Commands (aliases, builtins, keywords, functions, PATH) in command position,
    variables after ``$`` or ``${``, files and directories (with a trailing
    ``/``) elsewhere. Never raises: a failing runner gives no matches.
    """
    pos = _clamp(code, cursor_pos)
    try:
        word = _analyze(code, pos)
    except Exception:  # a lexer bug must not break the kernel
        return _reply([], pos, pos)
    if word.kind == "none":
        return _reply([], pos, pos)
    script, lead_raw = completion_script(word)
    lines = await _run(script, run)
    if not lines:
        return _reply([], word.start, word.end)
    matches: list[str] = []
    if word.kind == "variable":
        matches = sorted({word.var_prefix + line for line in lines})
    elif word.kind == "command":
        matches = sorted({_escape(line, word.quote) for line in lines})
    else:
        for line in lines:
            if lead_raw:
                matches.append(lead_raw + _escape(line, word.quote))
            elif line.startswith(word.strip):
                matches.append(_escape(line[len(word.strip) :], word.quote))
        matches = sorted(set(matches))
    return _reply(matches[:MAX_MATCHES], word.start, word.end)


# -- inspection --------------------------------------------------------------


def inspect_script(name: str, detail_level: int = 0) -> str:
    """The bash script that describes command ``name``: its kind on the first line
    (builtin, keyword, function, alias, file or none), then the text to show."""
    lines = HELP_LINES[1] if detail_level else HELP_LINES[0]
    return f"""{PROLOGUE}builtin shopt -s expand_aliases  # else type does not see aliases
n={shlex.quote(name)}
t=$(builtin type -t -- "$n" 2>/dev/null)
case $t in
builtin|keyword)
    builtin printf '%s\\n' "$t"
    builtin help -- "$n" 2>/dev/null || builtin type -- "$n" ;;
function)
    builtin printf 'function\\n'
    builtin declare -f -- "$n" ;;
alias)
    builtin printf 'alias\\n'
    builtin alias -- "$n" ;;
file)
    builtin printf 'file\\n'
    builtin type -- "$n"
    builtin echo
    if builtin command -v timeout >/dev/null 2>&1; then
        timeout -k 1 2 "$n" --help
    else
        "$n" --help
    fi </dev/null 2>&1 | {_capped_loop(_PRINT, lines)} ;;
*)
    builtin printf 'none\\n' ;;
esac
builtin exit 0
"""


def _command_name(code: str, pos: int) -> str | None:
    """The command word under the cursor, or the one of the command it is in."""
    end = pos
    while end < len(code) and code[end] not in _WORD_END:
        end += 1
    word = _analyze(code, end)
    if word.cmd_pos and word.value and word.kind != "variable":
        return word.value
    return word.command


async def inspect(
    code: str, cursor_pos: int | None, detail_level: int, run: Runner
) -> dict[str, object]:
    """Jupyter's inspect_reply content for the command word at the cursor.

    Builtins and keywords: ``help``; functions: ``declare -f``; aliases:
    ``alias``; programs: ``type`` and the first lines of ``NAME --help``
    (more at detail_level 1). Never raises; ``found`` is False if nothing is known.
    """
    not_found: dict[str, object] = {"status": "ok", "found": False, "data": {}, "metadata": {}}
    pos = _clamp(code, cursor_pos)
    try:
        name = _command_name(code, pos)
    except Exception:  # a lexer bug must not break the kernel
        return not_found
    if not name:
        return not_found
    out = await _run_text(inspect_script(name, detail_level), run)
    if out is None:
        return not_found
    kind, _, text = out.partition("\n")
    if kind not in ("builtin", "keyword", "function", "alias", "file") or not text.strip():
        return not_found
    text = text.rstrip("\n")[:MAX_INSPECT_CHARS]
    return {"status": "ok", "found": True, "data": {"text/plain": text}, "metadata": {}}


async def _run_text(script: str, run: Runner) -> str | None:
    try:
        status, out, _err = await run(script)
    except Exception:  # a SandboxError, a lost daemon...: inspection never throws
        return None
    return out if status == 0 else None
