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


CHROMIUM = pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium not installed")
ONE_CELL = (0xfd / 255, 0xe2 / 255, 0xc8 / 255)  # report.CSS td.one
SIG_CELL = (0xdb / 255, 0xe9 / 255, 0xf6 / 255)  # td.sig
BASE_ROW = (0xf2 / 255, 0xf2 / 255, 0xf2 / 255)  # tr.base


def _pixels(img, rgb) -> np.ndarray:
    return (np.abs(img - np.array(rgb)) < 0.01).all(-1)


def test_one_class_marks_sets_where_a_seed_gives_one_answer():
    import pyarrow as pa

    from coretune.report.html import one_class

    def preds(rte, cb):
        return pa.table({"task": ["rte"] * len(rte) + ["cb"] * len(cb), "pred": rte + cb})

    seeds = [preds([1, 1, 1], [0, 2, 1]), preds([0, 0, 0], [1, 1, 1])]
    assert one_class(seeds) == {"rte": "†", "cb": "†1/2"}
    assert one_class(seeds[:1]) == {"rte": "†"}
    assert one_class([preds([0, 1], [2, 0])]) == {}
    assert one_class([pa.table({"task": ["rte"], "label": [0]})]) == {}  # no `pred` column


def test_family_styles_tell_every_family_apart_and_grey_other():
    from coretune.report.html import family_styles

    names = [f"family {i}" for i in range(20)] + ["other"]
    styles = family_styles(names * 2)
    assert len(styles) == 21 and len(set(styles.values())) == 21
    assert styles["other"][0][:3] == (0.6, 0.6, 0.6)
    assert all(c[0] != c[1] or c[1] != c[2] for name, (c, _) in styles.items() if name != "other")


@CHROMIUM
def test_report_renders_in_headless_chromium(tmp_path):
    import matplotlib.image as mpimg

    from coretune.report.compare import paired_rows
    from coretune.report.html import screenshot
    from coretune.stats import ACCURACY, baselines

    good, flat = np.array([1.0] * 12 + [0.0] * 4), np.array([1.0] * 8 + [0.0] * 8)
    runs = {"a": [{"rte": good}], "b": [{"rte": flat}]}
    rows = build_rows(runs, ["rte"])
    base = {"rte": baselines([0] * 8 + [1] * 8, 2)}
    figures = {"bars": (plot_rows(rows, "t", base["rte"]["majority"], 50.0), "what bars show"),
               "map": plot_map(np.random.default_rng(0).normal(size=(80, 2)),
                               ["nli"] * 40 + ["math"] * 30 + ["other"] * 10,
                               np.arange(80) < 40)}
    html_path, md_path = write_report(
        tmp_path, "demo", rows, figures, {"Run facts": [{"run": "a", "model": "x"}]},
        baselines=base, marks={"b": {"rte": "†"}},
        paired=[("b", paired_rows(runs, "b", ["rte"]), ACCURACY)])
    page = html_path.read_text()
    assert "<tr class='base'><th>majority class</th><td>–</td><td>50.0</td><td>50.0</td>" in page
    assert "<td class='one'>50.0 †<br>" in page and "† predicts one class on every" in page
    # a vs b: +25 points on 4 examples that all go one way, interval above 0
    assert "<h3>Paired Δ vs b</h3>" in page and "<td class='sig'>+25.0<br><small>[+" in page
    assert "<figcaption>what bars show</figcaption>" in page
    assert "Paired Δ vs `b`" in md_path.read_text()
    png = screenshot(html_path, tmp_path / "shot.png", height=1800)
    img = mpimg.imread(png)[..., :3]
    assert img.shape[0] == 1800 and img.shape[1] == 1200
    # The page is not blank: the plots put coloured (non-grey) pixels on it.
    colour = np.abs(img[..., 0] - img[..., 2]) > 0.2
    assert colour.sum() > 2000
    # the marked cell, the significant Δ and the baseline rows are drawn shaded
    for rgb in (ONE_CELL, SIG_CELL, BASE_ROW):
        assert _pixels(img, rgb).sum() > 1000, rgb


def _copy_run(src, dst, name: str, method: str, pred_of) -> None:
    """A copy of the finished run `src` as run `name` (select.method `method`) whose
    predictions are `pred_of(task, labels, n_choices)` on each eval set: what a trained model
    would answer, with option scores that rank that answer first."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq
    from scipy.special import log_softmax

    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("report*", "table*"))
    cfg = json.loads((dst / "config.json").read_text())
    cfg["name"], cfg["select"]["method"] = name, method
    (dst / "config.json").write_text(json.dumps(cfg))
    path = dst / "seed-0/evaluate/predictions.parquet"
    df = pq.read_table(path).to_pandas()
    for task, g in df.groupby("task"):
        df.loc[g.index, "pred"] = pred_of(task, g["label"].to_numpy(), len(g["choices"].iloc[0]))
    df["logprob"] = [[0.0 if j == p else -1.0 for j in range(len(c))]
                     for p, c in zip(df["pred"], df["choices"], strict=True)]
    df["logloss"] = [float(-log_softmax(s)[y]) for s, y in zip(df["logprob"], df["label"],
                                                                strict=True)]
    df["p_gold"] = np.exp(-df["logloss"])
    df["correct"] = df["pred"] == df["label"]
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path)


@CHROMIUM
def test_run_report_shows_paired_deltas_baselines_and_one_class_runs(tmp_path):
    """The untuned model scored for real on 6 RTE and 6 CB examples; `coreset` answers each
    set's commonest label on every example, `random` does so on RTE only: report.html shows
    both beside the majority class, marked, with the paired Δs that say they gained nothing
    over it. table.md keeps its form."""
    import matplotlib.image as mpimg
    import pyarrow.parquet as pq

    from coretune.config import load_config
    from coretune.report.html import screenshot
    from coretune.report.summary import write_run_report
    from coretune.run.pipeline import run

    (tmp_path / "u.yaml").write_text("name: untuned\nseeds: [0]\nselect: {method: none}\n"
                                     "evaluate: {tasks: [rte, cb], max_examples: 6, "
                                     "max_templates: 1}\n")
    runs = tmp_path / "runs"
    run(load_config(tmp_path / "u.yaml"), runs / "untuned", quiet=True, log=lambda _: None)

    def commonest(task, labels, k):
        return np.full(len(labels), np.bincount(labels, minlength=k).argmax())

    _copy_run(runs / "untuned", runs / "coreset", "coreset", "kcenter", commonest)
    _copy_run(runs / "untuned", runs / "random", "random", "random",
              lambda task, y, k: commonest(task, y, k) if task == "rte" else np.arange(len(y)) % k)
    page = write_run_report([runs], tmp_path / "out").read_text()

    real = pq.read_table(runs / "untuned/seed-0/evaluate/predictions.parquet").to_pandas()
    sets = {t: g for t, g in real.groupby("task")}
    labels = {t: g["label"].to_numpy() for t, g in sets.items()}  # one template: one row each
    majority = {t: 100 * np.bincount(y).max() / len(y) for t, y in labels.items()}
    untuned = {t: 100 * g["correct"].mean() for t, g in sets.items()}
    row = "".join(f"<td>{majority[t]:.1f}</td>" for t in ("rte", "cb"))
    assert f"<tr class='base'><th>majority class</th><td>–</td>{row}" in page
    prior = {t: -sum(f * np.log(f) for f in np.bincount(y) / len(y) if f) for t, y in
             labels.items()}
    row = "".join(f"<td>{prior[t]:.3f}</td>" for t in ("rte", "cb"))
    assert f"<tr class='base'><th>label prior</th><td>–</td>{row}" in page
    # coreset scores exactly the majority class on both sets, and is marked on both
    for t in ("rte", "cb"):
        assert f"<td class='one'>{majority[t]:.1f} †<br>" in page
    marked = {t for t, g in sets.items() if g["pred"].nunique() == 1}  # the real model's own
    assert page.count("<td class='one'>") == 3 + len(marked)
    assert "† predicts one class on every example" in page
    # the paired Δ of coreset vs untuned is the majority class's margin over the untuned model
    acc = page.split("<h3>Paired Δ vs untuned</h3>")[1].split("</table>")[0]
    coreset = acc.split("<th>coreset</th>")[1].split("</tr>")[0]
    assert coreset.startswith(f"<td>{majority['rte'] - untuned['rte']:+.1f}<br>") or \
        coreset.startswith(f"<td class='sig'>{majority['rte'] - untuned['rte']:+.1f}<br>")
    assert "p=" in coreset and "<h3>Paired Δ log-loss vs untuned</h3>" in page
    assert "<td>1 (seed 0)</td>" in page and page.count("<figcaption>") == 2
    md = (tmp_path / "out/table.md").read_text()
    assert "Paired Δ vs `untuned`" in md and "†" not in md and "label prior" not in md

    png = screenshot(tmp_path / "out/report.html", tmp_path / "shot.png", height=2400)
    img = mpimg.imread(png)[..., :3]
    one = _pixels(img, ONE_CELL)
    assert one.sum() > 3 * 1500  # three marked cells, each ~90 x 45 px
    assert np.flatnonzero(one.any(1)).max() < 700  # in the results table, first on the page
    assert _pixels(img, BASE_ROW).sum() > 4 * 2000  # two baseline rows under each table


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
