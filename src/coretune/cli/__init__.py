"""The `coretune` command line (`app`): one module per command group, their options made
from the config fields (`options`)."""

from coretune.cli.app import app, main

__all__ = ["app", "main"]
