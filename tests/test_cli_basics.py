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
