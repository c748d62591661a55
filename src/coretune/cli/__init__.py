"""The `coretune` command line. User mistakes print one line and exit 2; no tracebacks.

Owns argument parsing and printing only: each command turns its options into the config
objects of `coretune.config` and calls `coretune.stages` / `coretune.pipeline` (or the library
for `train`/`evaluate`), so it holds no defaults or steps of its own. May import anything in
coretune; nothing in coretune imports it (except `__main__`).
"""

from __future__ import annotations

import os
import sys

import typer

from coretune import __version__
from coretune.cli import pool as pool_cmd
from coretune.errors import CoretuneError

# No hub access at run time: models come from installed packages or local paths.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

app = typer.Typer(
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
from coretune.cli.select import refresh_help as _select_help  # noqa: E402
from coretune.cli.select import select as _select_cmd  # noqa: E402

app.command(name="select")(_select_cmd)
from coretune.cli import run as _run_cmd  # noqa: E402

app.command(name="run")(_run_cmd.run)
app.command(name="table")(_run_cmd.table)


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


def main(argv: list[str] | None = None) -> None:
    _select_help()
    _run_cmd.refresh_help()
    try:
        app(args=argv, standalone_mode=False)
    except CoretuneError as e:
        print(f"coretune: error: {e}", file=sys.stderr)
        sys.exit(2)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        print("coretune: aborted", file=sys.stderr)
        sys.exit(130)
    except Exception as e:  # click usage errors carry their own exit code (2)
        import click

        if isinstance(e, click.ClickException):
            e.show()
            sys.exit(e.exit_code)
        raise
