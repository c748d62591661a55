import pytest

from coretune import __version__


def test_version(cli):
    proc = cli("--version", check=True)
    assert proc.stdout.strip() == f"coretune {__version__}"


def test_help_lists_commands(cli):
    proc = cli("--help", check=True)
    assert "pool" in proc.stdout


@pytest.mark.parametrize("command", [[], ["pool", "build"], ["pool", "info"], ["select"],
                                     ["run"], ["table"], ["sweep"], ["train"],
                                     ["evaluate"]])
def test_help_fits_80_columns(cli, command, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    proc = cli(*command, "--help")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines and max(len(line) for line in lines) <= 80
    assert "…" not in proc.stdout  # nothing cut off
    assert "--no-no-" not in proc.stdout


@pytest.mark.parametrize("command", [[], ["pool", "info"], ["select"], ["train"]])
def test_help_has_no_placeholders(cli, command):
    """Flags read as flags and arguments by their names, not `<bool>` or `{source}`."""
    out = cli(*command, "--help", check=True).stdout
    assert "<bool>" not in out and "{" not in out and "<str>" not in out


def test_commands_are_listed_in_the_order_they_are_run(cli):
    out = cli("--help", check=True).stdout
    names = ("pool", "select", "train", "evaluate", "run", "sweep", "table")
    at = [out.index(f"│ {n} ") for n in names]
    assert at == sorted(at), out
