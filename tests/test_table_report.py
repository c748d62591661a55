"""Table intervals and the self-contained report."""

import base64
import re
import shutil

import numpy as np
import pytest

from coretune.report.html import plot_map, plot_radius, plot_rows, write_report
from coretune.report.table import TASKS, build_rows, to_csv, to_markdown
from coretune.stats import task_interval


def test_bootstrap_interval_covers_mean_and_shrinks_with_more_data():
    rng = np.random.default_rng(0)
    small = [(rng.random(50) < 0.6).astype(float) for _ in range(3)]
    big = [(rng.random(2000) < 0.6).astype(float) for _ in range(3)]
    a, b = task_interval(small), task_interval(big)
    assert a.lo <= a.mean <= a.hi and b.lo <= b.mean <= b.hi
    assert (b.hi - b.lo) < (a.hi - a.lo)
    assert abs(b.mean - 60) < 3
    same = task_interval([np.ones(10)])
    assert (same.mean, same.lo, same.hi) == (100, 100, 100)


def test_identical_seeds_do_not_narrow_the_interval():
    # Every run scores the same examples: three copies of one seed are one seed's evidence.
    x = (np.random.default_rng(1).random(40) < 0.5).astype(float)
    one, three = task_interval([x]), task_interval([x, x, x])
    assert abs((three.hi - three.lo) - (one.hi - one.lo)) < 2.5
    rows = build_rows({"one": [{"rte": x}], "three": [{"rte": x}] * 3})
    w = [r["cells"]["avg"].hi - r["cells"]["avg"].lo for r in rows]
    assert abs(w[0] - w[1]) < 2.5
    # Seeds that disagree add their spread on top of the examples'.
    y = np.maximum(x, np.random.default_rng(2).random(40) < 0.6)  # a better seed
    assert (task_interval([x, y]).hi - task_interval([x, y]).lo) > (one.hi - one.lo)


def test_rows_markdown_csv(tmp_path):
    seeds = [{t: np.array([1.0, 0.0, 1.0, 1.0]) for t in TASKS} for _ in range(3)]
    rows = build_rows({"coreset": seeds, "vanilla": seeds[:1]})
    assert rows[0]["cells"]["avg"].mean == 75.0 and rows[0]["cells"]["avg"].n_seeds == 3
    md = to_markdown(rows)
    assert "| coreset | 3 | 75.0 [" in md and "NLI coreset 0.5%" in md
    assert to_csv(rows).splitlines()[1].startswith("coreset,rte,75.00,")
    figures = {"samplers": plot_rows(rows, "t"),
               "map": plot_map(np.random.default_rng(0).normal(size=(50, 2)),
                               ["nli"] * 25 + ["math"] * 25, np.arange(50) < 25),
               "radius": plot_radius(np.linspace(1, 0.1, 20).astype(np.float32),
                                     np.repeat([3, 7], 10))}
    html_path, md_path = write_report(tmp_path, "demo", rows, figures,
                                      {"Run facts": [{"run": "a", "model": "x"}]})
    page = html_path.read_text()
    imgs = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page)
    assert len(imgs) == 3 and all(base64.b64decode(i)[:8] == b"\x89PNG\r\n\x1a\n" for i in imgs)
    assert "<table>" in page and "Run facts" in page
    assert "![map](report_map.png)" in md_path.read_text()
    assert (tmp_path / "report_map.png").is_file()


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium not installed")
def test_report_renders_in_headless_chromium(tmp_path):
    import matplotlib.image as mpimg

    from coretune.report.html import screenshot

    seeds = [{t: np.array([1.0, 0.0, 1.0]) for t in TASKS}]
    rows = build_rows({"a": seeds, "b": seeds})
    figures = {"bars": plot_rows(rows, "t"),
               "map": plot_map(np.random.default_rng(0).normal(size=(80, 2)),
                               ["nli"] * 40 + ["math"] * 40, np.arange(80) < 40)}
    html_path, _ = write_report(tmp_path, "demo", rows, figures,
                                      {"Run facts": [{"run": "a", "model": "x"}]})
    png = screenshot(html_path, tmp_path / "shot.png", height=1800)
    img = mpimg.imread(png)[..., :3]
    assert img.shape[0] == 1800 and img.shape[1] == 1200
    # The page is not blank: the plots put coloured (non-grey) pixels on it.
    colour = np.abs(img[..., 0] - img[..., 2]) > 0.2
    assert colour.sum() > 2000


def test_sweep_plot_has_bands_and_knee_and_no_one_point_curve(tmp_path):
    from coretune.report.html import plot_sweep

    curves = {"kcenter": [(0.1, 50.0, 45.0, 55.0), (1.0, 60.0, 56.0, 64.0), (5.0, 61.0, 57, 65)],
              "random": [(0.1, 48.0, 43.0, 53.0), (1.0, 55.0, 50.0, 60.0), (5.0, 60.0, 56, 64)]}
    png = plot_sweep(curves, {"kcenter": 1.0, "random": 5.0}, untuned=47.0, majority=40.0)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot_sweep({"kcenter": [(0.5, 50.0, 45.0, 55.0)]}, {"kcenter": 0.5}) is None


def test_log_loss_table_goes_to_table_md_and_report_not_table_csv(tmp_path):
    from coretune.report.table import write_table
    from coretune.stats import LOGLOSS

    acc = build_rows({"a": [{"rte": np.array([1.0, 0.0, 1.0, 1.0])}]}, ["rte"])
    loss = build_rows({"a": [{"rte": np.array([0.2, 1.4, 0.5, 0.3])}]}, ["rte"], LOGLOSS)
    cell = loss[0]["cells"]["rte"]
    assert cell.mean == pytest.approx(0.6) and cell.text().startswith("0.600 [")
    for d in ("plain", "both"):
        (tmp_path / d).mkdir()
    write_table(acc, tmp_path / "plain", ["rte"])
    write_table(acc, tmp_path / "both", ["rte"], loss_rows=loss)
    md = (tmp_path / "both" / "table.md").read_text()
    assert "Gold-option log-loss (nats, lower is better)" in md and "| a | 1 | 0.600 [" in md
    assert (tmp_path / "both" / "table.csv").read_bytes() == \
        (tmp_path / "plain" / "table.csv").read_bytes()  # table.csv is accuracy only
    page, _ = write_report(tmp_path / "both", "t", acc, {}, {}, loss_rows=loss)
    assert "<td>0.600<br><small>[" in page.read_text()


@pytest.mark.slow
def test_the_rows_coretune_run_prints_are_the_tables(tmp_path, capsys):
    """One seed of the untuned model: the Avg `coretune run` prints at the end, and the one in
    its metrics.json, are table.md's (one computation, `coretune.stats`). 16 examples x 3
    templates per set: there the example bootstrap `coretune run` printed before gave
    [29.2, 57.3] beside the table's [28.1, 57.3]."""
    import json

    from coretune.cli import main

    cfg = tmp_path / "v.yaml"
    cfg.write_text("name: v\nseeds: [0]\nselect: {method: none}\n"
                   "evaluate: {tasks: [rte, cb], max_examples: 16, max_templates: 3}\n")
    main(["run", str(cfg), "--runs-dir", str(tmp_path / "runs"), "-q"])
    printed = next(line for line in capsys.readouterr().out.splitlines()
                   if line.startswith("v seed 0 | "))
    table = (tmp_path / "runs" / "v" / "table.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith("| v |"))
    avg = row.rstrip(" |").split(" | ")[-1]
    assert printed.endswith(f"| Avg {avg}") and re.fullmatch(r"[\d.]+ \[[\d.]+, [\d.]+\]", avg)
    for cell, header in zip(row.split(" | ")[2:4], ("RTE", "CB"), strict=True):
        assert f"| {header} {cell} |" in printed
    m = json.loads((tmp_path / "runs" / "v" / "seed-0" / "evaluate" / "metrics.json")
                   .read_text())["avg"]
    assert f"{m['mean']:.1f} [{m['ci95'][0]:.1f}, {m['ci95'][1]:.1f}]" == avg
