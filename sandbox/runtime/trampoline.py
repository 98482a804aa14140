"""A sealed program of a few hundred bytes whose only job is to exec its arguments.

Why ``exec`` needs it (CVE-2019-5736): the process that enters a running
container is a fork of the engine, so until it execs, its ``/proc/self/exe``
is the host's Python. If it exec'd the command itself, a command that is a
script starting ``#!/proc/self/exe`` (or an ELF whose interpreter is that
path) would be run by the host's Python binary, inside the container, with a
handle on that binary: a root process in the container could then rewrite
the host's Python. So the engine's child execs this program from a sealed
memfd first, and it execs the command. At the moment the command's
interpreter is looked up, ``/proc/self/exe`` is this memfd, which nobody can
write; nothing of it remains after the second exec (the command replaces it,
in the same process).

It runs only when called with `MARKER` before the path in ``argv[0]``: run
any other way (as the interpreter of such a script) it fails at once, rather
than exec the script again, and again.

It is machine code, not a file from the host: an ELF header made here and a
few instructions, assembled once from the source below::

    _start:                       # argv = [MARKER + path, argv0, args...], envp after
        if argv[0] is NULL or argv[0][0] != MARKER: goto fail
        execve(argv[0] + 1, &argv[1], &argv[argc + 1])
    fail:
        write(2, "sandbox: cannot execute the command\\n")
        exit_group(127 if execve returned -ENOENT else 126)

The engine checks the command (found, executable, a known format) before it
execs this, so the failure branch is for races and misuse only.
"""

from __future__ import annotations

import fcntl
import os
import platform
import struct
from functools import cache

from sandbox.errors import RuntimeFailure

# x86_64 (GNU as, AT&T syntax):
#   mov (%rsp),%rcx; mov 8(%rsp),%rdi; xor %ebx,%ebx; test %rdi,%rdi; jz fail
#   cmpb $1,(%rdi); jne fail; inc %rdi; lea 16(%rsp),%rsi; lea 16(%rsp,%rcx,8),%rdx
#   mov $59,%eax; syscall; mov %rax,%rbx                     # execve
#   fail: mov $2,%edi; lea msg(%rip),%rsi; mov $36,%edx; mov $1,%eax; syscall
#   mov $126,%edi; cmp $-2,%rbx; jne 1f; mov $127,%edi
#   1: mov $231,%eax; syscall                                # exit_group
# aarch64:
#   ldr x9,[sp]; ldr x0,[sp,#8]; mov x19,#0; cbz x0,fail; ldrb w10,[x0]; cmp w10,#1
#   b.ne fail; add x0,x0,#1; add x1,sp,#16; add x2,sp,x9,lsl #3; add x2,x2,#16
#   mov x8,#221; svc #0; mov x19,x0                          # execve
#   fail: mov x0,#2; adr x1,msg; mov x2,#36; mov x8,#64; svc #0
#   mov x0,#126; cmn x19,#2; b.ne 1f; mov x0,#127
#   1: mov x8,#94; svc #0                                    # exit_group
MARKER = "\x01"
MESSAGE = b"sandbox: cannot execute the command\n"
CODE = {
    "x86_64": bytes.fromhex(
        "488b0c24488b7c240831db4885ff741c803f01751748ffc7488d742410488d54cc10b83b"
        "0000000f054889c3bf02000000488d3523000000ba24000000b8010000000f05bf7e0000"
        "004883fbfe7505bf7f000000b8e70000000f05"
    ),
    "aarch64": bytes.fromhex(
        "e90340f9e00740f9130080d2600100b40a0040395f0500710101005400040091e1430091"
        "e26f298b42400091a81b80d2010000d4f30300aa400080d241010010820480d2080880d2"
        "010000d4c00f80d27f0a00b141000054e00f80d2c80b80d2010000d4"
    ),
}
ELF_MACHINE = {"x86_64": 62, "aarch64": 183}
ALIASES = {"amd64": "x86_64", "arm64": "aarch64"}
LOAD_ADDRESS = 0x400000
PT_LOAD, PT_GNU_STACK = 1, 0x6474E551
PF_X, PF_W, PF_R = 1, 2, 4


def elf(machine: str) -> bytes:
    """The whole program for ``machine`` (``platform.machine()`` names).

    One read-only, executable PT_LOAD segment maps the file itself; a
    PT_GNU_STACK entry asks for a stack that is not executable.

    Raises:
        RuntimeFailure: no code for this machine.
    """
    arch = ALIASES.get(machine, machine)
    if arch not in CODE:
        raise RuntimeFailure(
            f"exec into a container is not supported on {machine} (only x86_64 and aarch64)",
            step="exec",
        )
    header_size, phdr_size, phnum = 64, 56, 2
    entry_offset = header_size + phdr_size * phnum
    body = CODE[arch] + MESSAGE
    size = entry_offset + len(body)
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)  # 64-bit, little-endian, SysV
    header = ident + struct.pack(
        "<HHIQQQIHHHHHH",
        2,  # ET_EXEC
        ELF_MACHINE[arch],
        1,  # EV_CURRENT
        LOAD_ADDRESS + entry_offset,
        header_size,  # program headers right after this header
        0,  # no section headers
        0,
        header_size,
        phdr_size,
        phnum,
        0,
        0,
        0,
    )
    load = struct.pack("<IIQQQQQQ", PT_LOAD, PF_R | PF_X, 0, LOAD_ADDRESS, LOAD_ADDRESS,
                       size, size, 0x1000)  # fmt: skip
    stack = struct.pack("<IIQQQQQQ", PT_GNU_STACK, PF_R | PF_W, 0, 0, 0, 0, 0, 16)
    return header + load + stack + body


@cache
def memfd() -> int:
    """A sealed in-memory copy of the program, made once per process (close-on-exec).

    Executing a close-on-exec fd works for an ELF file (not for a script), and
    no process in a container ever holds it open. Exec it with ``argv =
    [MARKER + path, argv0, args...]``.
    """
    fd = os.memfd_create("sandbox-exec", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    os.write(fd, elf(platform.machine()))
    os.fchmod(fd, 0o555)
    fcntl.fcntl(
        fd,
        fcntl.F_ADD_SEALS,
        fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE,
    )
    return fd
