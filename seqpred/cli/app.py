"""The root of the ``seqpred`` command line: the command group, its options, and the one place where
every error becomes one line on stderr and an exit code.

Commands, seqpred's own and those that plugins add, raise :class:`seqpred.errors.SeqpredError` for
what the user can fix; the group turns it into ``error: ...`` and its exit code. An ``OSError``
becomes one line naming the file; anything else is a bug, reported in one line that says so (with
``--debug`` for the traceback). No exception reaches the user as a traceback.
"""

from __future__ import annotations

import errno
import sys
import traceback
from typing import Annotated, Any

import typer

from .._version import __version__
from ..errors import SeqpredError, first_line

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

# Typer vendors its own Click; its exceptions module is where typer.BadParameter lives.
_click_errors = sys.modules[typer.BadParameter.__module__]

_debug = False


def fail(message: str, code: int = EXIT_ERROR) -> typer.Exit:
    """Print ``error: message`` on stderr; return the :class:`typer.Exit` to raise with ``code``."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def report(exc: BaseException, command: str) -> typer.Exit:
    """The one line and exit code for an exception that ended ``command``."""
    if _debug:
        traceback.print_exception(exc)
    if isinstance(exc, SeqpredError):
        return fail(str(exc), exc.exit_code)
    if isinstance(exc, KeyboardInterrupt):
        return fail("interrupted", EXIT_INTERRUPTED)
    if isinstance(exc, MemoryError):
        return fail(f"seqpred {command}: out of memory; try a smaller model, batch or text", EXIT_ERROR)
    if isinstance(exc, OSError):  # a full disk or a vanished file where no clearer message was given
        where = f"{exc.filename}: " if exc.filename else ""
        return fail(f"{where}{exc.strerror or first_line(exc) or type(exc).__name__}", EXIT_ERROR)
    detail = first_line(exc)
    return fail(
        f"seqpred {command}: unexpected {type(exc).__name__}{': ' + detail if detail else ''}; "
        f"this is a bug: rerun with --debug and report it",
        EXIT_ERROR,
    )


class RootGroup(typer.core.TyperGroup):
    """The root command group: adds the commands of plugins, turns every exception of every command
    into one line (:func:`report`), and reports the command line's own usage errors (an unknown
    option, a value that is not a number) as one line with exit 2; Ctrl-C is exit 130."""

    _plugin_commands_added = False

    def _add_plugin_commands(self) -> None:
        """Subcommands from plugins (the ``seqpred_register_commands`` hook), added on first use."""
        if self._plugin_commands_added:
            return
        self._plugin_commands_added = True
        from ..registry import get_registry

        try:
            registry = get_registry()
        except SeqpredError:
            return  # the command that runs next reports it, as one line
        for info, plugin_app in registry.plugin_commands():
            for name, command in typer.main.get_group(plugin_app).commands.items():
                if name in self.commands:
                    registry.warnings.append(
                        f"plugin {info.distribution}: command {name!r} exists; not replaced"
                    )
                    continue
                self.add_command(command, name)

    def list_commands(self, ctx: Any) -> list[str]:
        self._add_plugin_commands()
        return super().list_commands(ctx)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        self._add_plugin_commands()
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, _click_errors.ClickException):
            raise  # click's own: an exit code, Ctrl-C while parsing, a usage error
        except OSError as exc:
            if exc.errno == errno.EPIPE:
                raise  # click ends quietly when the reader of the output went away
            raise report(exc, _command_name(ctx)) from None
        except (Exception, KeyboardInterrupt) as exc:
            raise report(exc, _command_name(ctx)) from None

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)  # type: ignore[misc]
            code = code if isinstance(code, int) else EXIT_OK
        except _click_errors.NoArgsIsHelpError as exc:
            typer.echo(exc.format_message())
            code = EXIT_USAGE
        except _click_errors.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx is not None else "seqpred"
            typer.echo(f"error: {exc.format_message()} (see {where} --help)", err=True)
            code = EXIT_USAGE
        except _click_errors.ClickException as exc:
            typer.echo(f"error: {exc.format_message()}", err=True)
            code = exc.exit_code
        except typer.Abort:
            typer.echo("error: interrupted", err=True)
            code = EXIT_INTERRUPTED
        if standalone_mode:
            sys.exit(code)
        return code


def _command_name(ctx: Any) -> str:
    """The subcommand that was running, for the bug report line."""
    return str(getattr(ctx, "invoked_subcommand", None) or "seqpred")


app = typer.Typer(
    cls=RootGroup,
    name="seqpred",
    help="Train sequence-prediction models on text and generate from them, on any installed backend.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion and --show-completion, as Typer offers them
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"seqpred {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show a traceback on errors. [default: off]")
    ] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    global _debug
    _debug = debug
