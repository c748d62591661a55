"""The `coretune` command line. User mistakes print one line and exit 2; no tracebacks.

Owns argument parsing and printing only: each command turns its options into the config
objects of `coretune.config` and calls `coretune.run` (or the library for `train` and
`evaluate`), then `coretune.report`; its options' defaults and help are the config fields'
(`options`), so it holds no defaults or steps of its own. May import anything in coretune;
nothing in coretune imports it (except `__main__`).
"""

from __future__ import annotations

import os
import sys

import typer
import typer.core

from coretune import __version__
from coretune.cli import pool as pool_cmd
from coretune.errors import CoretuneError
from coretune.io import NO_SPACE

# No hub access at run time: models come from installed packages or local paths.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

# The commands in the order a user runs them (typer would list the `pool` group last).
ORDER = ("pool", "select", "train", "evaluate", "run", "sweep", "table")


class _InOrder(typer.core.TyperGroup):
    def list_commands(self, ctx) -> list[str]:
        names = super().list_commands(ctx)
        return sorted(names, key=lambda n: ORDER.index(n) if n in ORDER else len(ORDER))


app = typer.Typer(
    cls=_InOrder,
    name="coretune",
    help="Find the small slice of an instruction pool that matters for a task family, "
    "fine-tune on it, and prove it by evaluation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(pool_cmd.app, name="pool")
from coretune.cli import lm as _lm_cmd  # noqa: E402

app.command(name="train")(_lm_cmd.train)
app.command(name="evaluate")(_lm_cmd.evaluate)
from coretune.cli.options import refresh_help  # noqa: E402
from coretune.cli.select import select as _select_cmd  # noqa: E402

app.command(name="select")(_select_cmd)
from coretune.cli import run as _run_cmd  # noqa: E402

app.command(name="run")(_run_cmd.run)
app.command(name="table")(_run_cmd.table)
from coretune.cli import sweep as _sweep_cmd  # noqa: E402

app.command(name="sweep")(_sweep_cmd.sweep)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"coretune {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """coretune: data-efficient instruction tuning."""


_NO_SPACE_TEXT = ("No space left", "File too large", "Disk quota exceeded")


def main(argv: list[str] | None = None) -> None:
    refresh_help()
    try:
        app(args=argv, standalone_mode=False, prog_name="coretune")
    except CoretuneError as e:
        print(f"coretune: error: {e}", file=sys.stderr)
        sys.exit(2)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except OSError as e:  # a full disk outside coretune.io's writes (a library's cache): one line
        if e.errno not in NO_SPACE and not any(m in str(e) for m in _NO_SPACE_TEXT):
            raise
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        print(f"coretune: error: {where}cannot write: {e.strerror or str(e).strip()} "
              "(free some space or move the output)", file=sys.stderr)
        sys.exit(2)
    except typer.Abort:
        print("coretune: aborted", file=sys.stderr)
        sys.exit(130)
    except Exception as e:  # click usage errors carry their own exit code (2)
        # typer >= 0.29 raises its vendored click's exceptions, not `click`'s: match by name.
        names = {c.__name__ for c in type(e).__mro__}
        if "UsageError" in names:  # one line, like every other user error
            ctx = getattr(e, "ctx", None)
            hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
            print(f"coretune: error: {e.format_message()}{hint}", file=sys.stderr)
            sys.exit(e.exit_code)
        if "ClickException" in names:
            e.show()
            sys.exit(e.exit_code)
        raise
