"""Generated documentation stays in step with the code."""

import importlib.util
import json
import subprocess
import sys

import pytest
from conftest import ROOT

from coretune.report.sweep import _deltas, control, power
from coretune.stats import LOGLOSS, Delta


def test_config_reference_is_current():
    """docs/config.md is what scripts/config_reference.py writes from the config schema."""
    proc = subprocess.run([sys.executable, str(ROOT / "scripts/config_reference.py"), "--check"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_cli_reference_is_current():
    """docs/cli.md's generated part is every command's --help as scripts/cli_reference.py
    renders it."""
    proc = subprocess.run([sys.executable, str(ROOT / "scripts/cli_reference.py"), "--check"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    text = (ROOT / "docs/cli.md").read_text()
    for cmd in ("select", "train", "evaluate", "run", "table", "sweep", "pool build"):
        assert f"### `coretune {cmd}`" in text


@pytest.fixture
def readme_results(tmp_path, monkeypatch):
    """scripts/readme_results.py writing into copies in tmp_path, not the repository's files."""
    spec = importlib.util.spec_from_file_location("readme_results",
                                                  ROOT / "scripts/readme_results.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    (tmp_path / "docs").mkdir()
    monkeypatch.setattr(mod, "root", tmp_path)
    monkeypatch.setattr(mod, "README", tmp_path / "README.md")
    monkeypatch.setattr(mod, "RESULTS", tmp_path / "docs/results.md")
    mod.README.write_text("# x\n<!-- headline:start (generated) -->\nold\n<!-- headline:end -->\n")
    mod.RESULTS.write_text("<!-- sweep:start (generated) -->\nold\n<!-- sweep:end -->\n"
                           "<!-- lora:start (generated) -->\nold\n<!-- lora:end -->\n")
    return mod


def _delta(d, lo, hi, p):
    """One eval set's Δ, the same on the Avg (enough for the power lines' per-set list)."""
    return {"rte": Delta(d, lo, hi, p, 333), "avg": Delta(d, lo, hi, p, 333)}


def test_sweep_fills_headline_and_results(readme_results, tmp_path):
    """A constructed sweep folder: the README's headline gets the control line, both power
    lines and one row per point; docs/results.md gets sweep.md and the summed stage time."""
    loss = {"all": _delta(0.081, 0.04, 0.12, 0.0005),
            "kcenter 0.25%": _delta(0.012, -0.01, 0.034, 0.31)}
    acc = {"all": _delta(1.5, -1.0, 4.0, 0.2),
           "kcenter 0.25%": _delta(-0.5, -3.0, 2.0, 0.7)}
    rnd_loss = {"kcenter 0.25%": _delta(0.004, -0.02, 0.03, 0.74)}
    doc = {"control": control(loss, LOGLOSS, {"all": 812}),
           "power": {"vs_untuned": power(acc)},
           "power_logloss": {"vs_untuned": power(loss, 4), "vs_random": power(rnd_loss, 4)},
           "points": [
               {"label": "kcenter 0.25%", "rows": 50, "vs_untuned": _deltas(acc["kcenter 0.25%"]),
                "vs_untuned_logloss": _deltas(loss["kcenter 0.25%"]),
                "vs_random_logloss": _deltas(rnd_loss["kcenter 0.25%"]),
                "cost": {"select_seconds": 1234.4, "train_seconds": 610.0}},
               {"label": "all", "rows": 812, "vs_untuned": _deltas(acc["all"]),
                "vs_untuned_logloss": _deltas(loss["all"]), "vs_random_logloss": None,
                "cost": {"select_seconds": 1200.0, "train_seconds": None}}]}
    sweep = tmp_path / "sweep"
    (sweep / "points/x").mkdir(parents=True)
    (sweep / "sweep.json").write_text(json.dumps(doc))
    (sweep / "sweep.md").write_text("# Sweep `laptop`\n\nbody\n\n## Steps and cost per point\n")
    for i, (stage, s) in enumerate((("train", 3000.0), ("evaluate", 600.0), ("train", 600.0))):
        (sweep / f"points/x/m{i}").mkdir()
        (sweep / f"points/x/m{i}/manifest.json").write_text(json.dumps({"stage": stage,
                                                                        "seconds": s}))
    readme_results.main(["--sweep", str(sweep)])

    readme = (tmp_path / "README.md").read_text()
    assert "old" not in readme and readme.startswith("# x\n<!-- headline:start (generated) -->\n")
    assert doc["control"]["text"] in readme and "Positive control passed" in readme
    assert "- Power, Δ vs untuned: 95% paired intervals of ±" in readme
    assert "- Power, Δ log-loss vs random:" in readme and "nats (RTE 0.036)." in readme
    assert ("| kcenter 0.25% | 50 | +0.012 [-0.010, +0.034] p=0.31 | -0.5 [-3.0, +2.0] p=0.7 "
            "| +0.004 [-0.020, +0.030] p=0.74 | 1,234 | 610 |") in readme
    assert "| all | 812 | +0.081 [+0.040, +0.120] p=0.0005 | +1.5 [-1.0, +4.0] p=0.2 | – " \
           "| 1,200 | – |" in readme
    results = (tmp_path / "docs/results.md").read_text()
    assert "body\n\n### Steps and cost per point" in results and "# Sweep" not in results
    assert "summed from its manifests: 1.17 h (train 60, evaluate 10 min)." in results
    assert "<!-- lora:start (generated) -->\nold\n" in results  # other blocks left alone


def test_marker_block_and_missing_marker(readme_results, tmp_path):
    """--marker NAME FOLDER puts FOLDER/table.md between NAME's markers, and nowhere else; a
    file without the markers is refused, unchanged."""
    (tmp_path / "t").mkdir()
    (tmp_path / "t/table.md").write_text("| Row |\n|---|\n")
    readme_results.main(["--marker", "lora", str(tmp_path / "t")])
    results = (tmp_path / "docs/results.md").read_text()
    assert "<!-- lora:start (generated) -->\n| Row |\n|---|\n<!-- lora:end -->" in results
    assert "<!-- sweep:start (generated) -->\nold\n" in results
    before = results
    with pytest.raises(SystemExit, match="no results markers"):
        readme_results.main([str(tmp_path / "t")])
    assert (tmp_path / "docs/results.md").read_text() == before


def test_readme_headline_is_the_committed_sweep():
    """The README's headline is what readme_results.py writes from the sweep.json kept under
    benchmarks/results/laptop_sweep/, not typed by hand."""
    spec = importlib.util.spec_from_file_location("readme_results",
                                                  ROOT / "scripts/readme_results.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    doc = json.loads((ROOT / "benchmarks/results/laptop_sweep/sweep.json").read_text())
    readme = (ROOT / "README.md").read_text()
    block = readme.split("<!-- headline:start (generated) -->\n")[1].split("<!-- headline:end")[0]
    assert block == mod.headline_block(doc).strip() + "\n"
