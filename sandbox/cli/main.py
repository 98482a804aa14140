"""``sandbox``: the command line, one subcommand group per module.

Every command is a client of the daemon (``sandbox.client``); when none
answers, one is started for the user, who is told so once.

Every failure the user can cause prints one line, ``sandbox: <what went
wrong and what to do>``, and exits non-zero (125 like ``docker run`` for
errors of the daemon, 127 for a command not found in the container);
``--debug`` shows the traceback too.
"""

from __future__ import annotations

import sys
import traceback

import click

from sandbox.cli import containers, images, networks, run, stats
from sandbox.cli import exec as exec_
from sandbox.cli.output import err_console
from sandbox.errors import CommandNotFound, SandboxError

EXIT_ENGINE_ERROR = 125


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks of errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """A small container engine for teaching the Unix shell and containers."""
    ctx.obj = {"debug": debug}


for module in (run, containers, exec_, stats, images, networks):
    for command in module.COMMANDS:
        cli.add_command(command)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``sandbox`` console script."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        code = cli.main(args=argv, prog_name="sandbox", standalone_mode=False)
    except click.exceptions.Abort:
        err_console.print("sandbox: aborted")
        code = 130
    except click.ClickException as exc:
        exc.show()
        code = exc.exit_code
    except CommandNotFound as exc:
        if debug:
            traceback.print_exc()
        err_console.print(f"sandbox: {exc}", markup=False, highlight=False)
        code = 127
    except SandboxError as exc:
        if debug:
            traceback.print_exc()
        err_console.print(f"sandbox: {exc}", markup=False, highlight=False)
        code = EXIT_ENGINE_ERROR
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
