"""Command-line options made from config fields: the field's default and description are the
option's, so a setting has one default and one help text wherever it is given. An option
that lists registered names (methods, encoders, backends) is refreshed from the registry when
the command line is parsed (`refresh_help`), so a name registered after import is listed."""

from __future__ import annotations

from collections.abc import Callable

import typer
from pydantic import BaseModel

_LISTED: list[tuple[typer.models.OptionInfo, str, Callable[[], str]]] = []


def option(section: type[BaseModel], name: str, *decls: str,
           listed: Callable[[], str] | None = None, **kw) -> typer.models.OptionInfo:
    """A typer option for `section`'s field `name`: its default (`default=None` where the
    option's absence means "the config's") and its description as the help (`help=` where
    the command reads the setting differently), followed by `listed()` (the registered
    names) when given."""
    field = section.model_fields[name]
    default = kw.pop("default", field.default)
    text = kw.pop("help", field.description) or ""
    info = typer.Option(default, *decls, help=text, **kw)
    info.config_field = (section, name)  # read by the test that the defaults agree
    if listed is not None:
        _LISTED.append((info, text, listed))
    return info


def refresh_help() -> None:
    """Rewrite the help of every option that lists registered names."""
    for info, text, listed in _LISTED:
        info.help = f"{text} Registered: {listed()}."
