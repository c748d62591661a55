"""Generated documentation stays in step with the code."""

import subprocess
import sys

from conftest import ROOT


def test_config_reference_is_current():
    """docs/config.md is what scripts/config_reference.py writes from the config schema."""
    proc = subprocess.run([sys.executable, str(ROOT / "scripts/config_reference.py"), "--check"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
