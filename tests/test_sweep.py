"""`coretune sweep`: expansion, layout, budget checks, nested k-center selections, and (slow)
a tiny real sweep that resumes for free and runs only the points of a new budget."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from coretune.config import RunConfig, load_config
from coretune.errors import CoretuneError
from coretune.report.sweep import predictors, write_sweep_report
from coretune.run.layout import SHARED_STAGES, SweepLayout
from coretune.run.pipeline import plan
from coretune.run.sweep import expand, point_config, resolve_budgets, spec_of
from coretune.select import select_rows, split_budget
from coretune.train.data import NEWER


def test_sweep_block_defaults_and_seeds(tmp_path):
    cfg = RunConfig(name="s", seeds=[3, 4])
    spec = spec_of(cfg)  # no block: the defaults, the config's seeds
    assert spec.methods == ["kcenter", "random"] and spec.seeds == [3, 4]
    assert spec.knee_tolerance == 1.0
    f = tmp_path / "c.yaml"
    f.write_text("name: c\nsweep: {budgets: [25, '0.5%', all], methods: [random], seeds: [1]}\n")
    spec = spec_of(load_config(f))
    assert (spec.budgets, spec.methods, spec.seeds) == (["25", "0.5%", "all"], ["random"], [1])


def test_resolve_budgets_sorts_and_refuses():
    assert resolve_budgets(["all", "1%", "3"], 1000, 50) == {"3": 3, "1%": 10, "all": 50}
    with pytest.raises(CoretuneError, match="budget '10%' is 100 rows, more than the target"):
        resolve_budgets(["10%"], 1000, 50)
    with pytest.raises(CoretuneError, match="budgets '1%' and '10' are both 10 rows"):
        resolve_budgets(["1%", "10"], 1000, 50)
    with pytest.raises(CoretuneError, match="budgets '50' and 'all' are both 50 rows"):
        resolve_budgets(["50", "all"], 1000, 50)
    with pytest.raises(CoretuneError, match="larger than the pool"):
        resolve_budgets(["2000"], 1000, 1000)


def test_expand_and_layout(tmp_path):
    spec = spec_of(RunConfig(name="s", seeds=[0, 1], sweep={"budgets": ["all", "0.5%"]}))
    points = expand(spec, resolve_budgets(spec.budgets, 10_000, 400))
    assert [(p.label, p.seed) for p in points] == [
        ("kcenter 0.5%", 0), ("kcenter 0.5%", 1), ("random 0.5%", 0), ("random 0.5%", 1),
        ("all", 0), ("all", 1)]  # budget `all` is one point whatever the method
    layout = SweepLayout(tmp_path)
    run = layout.point("kcenter", "0.5%")
    assert run.stage("select", 1) == tmp_path / "points/kcenter-0.5pct/seed-1/select"
    assert run.stage("embed") == tmp_path / "shared/embed"
    assert layout.point("random", "all").root == tmp_path / "points/all"
    assert layout.untuned.stage("evaluate", 0) == tmp_path / "untuned/seed-0/evaluate"
    assert point_config(RunConfig(name="s"), "random", "all").select.method == "all"


def test_points_share_the_shared_stages_and_keep_their_keys(tmp_path):
    """Every point plans the same shared stages (same folders, same keys: computed once), and
    a point's own stages do not depend on the other budgets (adding one keeps the rest)."""
    cfg = RunConfig(name="s", sweep={"budgets": ["10", "20"]})
    layout = SweepLayout(tmp_path)

    def stages(method, budget, base=cfg):
        pc = point_config(base, method, budget)
        return {s.name: s for s in plan(pc, layout.point(method, budget).root, 0,
                                         shared=layout.shared)}

    a, b = stages("kcenter", "10"), stages("random", "20")
    for name in SHARED_STAGES:
        if name in a:
            assert (a[name].folder, a[name].key()) == (b[name].folder, b[name].key())
    assert a["select"].folder != b["select"].folder
    more = cfg.model_copy(update={"sweep": cfg.sweep.model_copy(update={"budgets": ["10", "20",
                                                                                   "40"]})})
    again = stages("kcenter", "10", more)
    assert {n: s.key() for n, s in again.items()} == {n: s.key() for n, s in a.items()}


def test_compute_matched_points_train_the_same_full_steps(tmp_path):
    """`sweep.train_steps`: every point, `all` too, trains that many steps of batch_size rows
    (over train.epochs and train.max_steps); without it the train stage is as it was."""
    from coretune.train.data import rows_trained, step_rows

    budgets, methods = ["5", "13", "25", "all"], ["kcenter", "random@pool"]
    cfg = RunConfig(name="s", train={"epochs": 2, "batch_size": 8, "max_steps": 3},
                    sweep={"budgets": budgets, "methods": methods, "train_steps": 60})
    layout = SweepLayout(tmp_path)
    points = expand(spec_of(cfg), resolve_budgets(budgets, 5000, 392))
    keys = set()
    for p in points:
        pc = point_config(cfg, p.method, p.budget)
        train = {s.name: s for s in plan(pc, layout.point(p.method, p.budget).root, p.seed,
                                         shared=layout.shared)}["train"]
        assert (train.config["max_steps"], train.config["full_steps"]) == (60, True)
        assert train.config["epochs"] == 2 and train.config["batch_size"] == 8
        keys.add(train.key())
    assert len(points) == len(keys) == 7  # each point its own rows (upstream), the same steps
    for n in (5, 13, 25, 392):  # the demo's budgets and its `all`: 480 rows each, 8 a step
        assert {len(step_rows(s, n, 8, 1, full=True)) for s in range(60)} == {8}
        assert rows_trained(60, n, 8, full=True) == 480
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        RunConfig(name="s", sweep={"train_steps": 0})

    plain = RunConfig(name="s", train=cfg.train, sweep={"budgets": budgets})
    for base in (plain, plain.model_copy(update={"sweep": None})):
        pc = point_config(base, "kcenter", "5")
        assert pc.train == plain.train and spec_of(base).train_steps is None
        train = {s.name: s for s in plan(pc, layout.point("kcenter", "5").root, 0,
                                         shared=layout.shared)}["train"]
        assert train.config == {**plain.train.model_dump(exclude={"save_every", "log_every",
                                                                  *NEWER}),
                                "seed": 0}


def _clusters(sizes, d=16, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(sizes)), sizes)
    x = rng.normal(size=(len(labels), d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True), labels


def _cut(big, shares):
    """The per-cluster prefix of a selection (each cluster's first `shares[c]` picks)."""
    return np.concatenate([big.indices[big.cluster == c][:n] for c, n in shares.items() if n])


def test_kcenter_smaller_budget_is_the_per_cluster_prefix_of_a_larger_one():
    sizes = [40, 70, 110, 25]
    x, labels = _clusters(sizes)
    targets = list(range(len(sizes)))
    share = {c: s for c, s in enumerate(sizes)}
    big = select_rows(x, labels, targets, 120, "kcenter", seed=3, quiet=True)
    for budget in (4, 13, 30, 77):
        small = select_rows(x, labels, targets, budget, "kcenter", seed=3, quiet=True)
        shares = split_budget(budget, share)
        assert all(shares[c] <= n for c, n in split_budget(120, share).items())
        assert np.array_equal(small.indices, _cut(big, shares))
        assert np.array_equal(small.radius, np.concatenate(
            [big.radius[big.cluster == c][:n] for c, n in shares.items() if n]))
        # the global prefix is not it: the order is cluster by cluster
        assert not np.array_equal(np.sort(small.indices), np.sort(big.indices[:budget]))


def test_where_nesting_breaks_the_budget_split_shrinks_a_cluster():
    """Largest-remainder shares are not monotone in the budget (the Alabama paradox): with
    clusters of 5, 7 and 11 rows, 11 rows give cluster 0 three, 12 rows give it two. So the
    11-row selection is not inside the 12-row one; the other clusters still nest."""
    sizes = {0: 5, 1: 7, 2: 11}
    assert split_budget(11, sizes) == {0: 3, 1: 3, 2: 5}
    assert split_budget(12, sizes) == {0: 2, 1: 4, 2: 6}
    x, labels = _clusters(list(sizes.values()), seed=1)
    small = select_rows(x, labels, [0, 1, 2], 11, "kcenter", seed=0, quiet=True)
    big = select_rows(x, labels, [0, 1, 2], 12, "kcenter", seed=0, quiet=True)
    assert not set(small.indices) <= set(big.indices)
    for c, n in split_budget(11, sizes).items():
        mine, theirs = small.indices[small.cluster == c], big.indices[big.cluster == c]
        k = min(n, len(theirs))
        assert np.array_equal(mine[:k], theirs[:k])  # each cluster's order is still a prefix


def test_predictors_rank_correlation():
    acc = {"a": 40.0, "b": 45.0, "c": 50.0, "d": 55.0}
    quality = {"a": {"probe_mean": 0.9, "rows": 10, "flat": 1.0},
               "b": {"probe_mean": 0.8, "rows": 20, "flat": 1.0},
               "c": {"probe_mean": 0.7, "rows": 15, "flat": 1.0},
               "d": {"probe_mean": 0.6, "rows": 40, "flat": 1.0}}
    out = predictors(quality, acc)
    assert out["probe_mean"]["spearman"] == pytest.approx(-1.0)
    assert out["rows"]["spearman"] == pytest.approx(0.8) and out["rows"]["n"] == 4
    assert "flat" not in out  # constant: no ranking
    assert predictors({"a": {"x": 1.0}, "b": {"x": 2.0}}, {"a": 1.0, "b": 2.0}) == {}


def test_power_is_2_8_standard_errors_of_the_median_comparison():
    from coretune.report.sweep import power
    from coretune.stats import Delta

    cells = {"a": {"avg": Delta(1.0, -4.0, 6.0, 0.5, 100), "rte": Delta(0, -8, 8, 1, 100)},
             "b": {"avg": Delta(0.0, -3.0, 3.0, 1.0, 100)},
             "c": {"avg": Delta(0.0, -7.0, 7.0, 1.0, 100)}}
    out = power(cells)
    assert out["avg"] == {"half_width": 5.0, "comparisons": 3,
                          "detectable": pytest.approx(5.0 * 2.8016 / 1.96, abs=0.01)}
    assert out["rte"]["half_width"] == 8.0 and out["rte"]["comparisons"] == 1
    assert power({}) == {}


def _predictions(path, correct: list[int], pred: list[int] | None = None) -> None:
    """A predictions table as the evaluate stage writes it (one template per example), with
    the answers `pred` when given."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = len(correct)
    path.parent.mkdir(parents=True, exist_ok=True)
    answers = {} if pred is None else {"pred": pred}
    pq.write_table(pa.table({"task": ["rte"] * n, "example": list(range(n)),
                             "label": [i % 2 for i in range(n)],
                             "choices": [["yes", "no"]] * n,
                             "correct": [bool(c) for c in correct], **answers}), path)


# Stage seconds of the constructed sweep's manifests: the shared stages (the pool's is not a
# selection cost), and per point its select and train stages (by method; `all` by budget).
SHARED_SECONDS = {"pool": 100.0, "embed": 10.0, "cluster": 2.0, "target": 3.0}
SELECT_SECONDS = {"kcenter": 1.0, "random": 0.5, "random@pool": 0.25, "all": 0.125}
TRAIN_SECONDS = {"10": 20.0, "5": 15.0, "all": 80.0}


def _constructed_sweep(tmp_path, budgets=("10", "all"), methods=("kcenter", "random"),
                       train_steps=None, always_yes=()):
    """Points whose answers are known: 40 examples, the untuned model gets none right,
    kcenter at 10 rows and `all` get 20, random at 10 rows gets 10 (at 5 rows: 15 and 5);
    the points in `always_yes` answer "yes" to every example (20 right, the majority class).
    Stage manifests with known seconds (above), and the train stage's train_state.json at
    batch 8 and 2 epochs (or `train_steps` full steps)."""
    from coretune.io import write_json
    from coretune.run.manifest import MANIFEST
    from coretune.train.data import rows_trained

    cfg = RunConfig(name="s", evaluate={"tasks": ["rte"]}, train={"epochs": 2, "batch_size": 8},
                    sweep={"budgets": list(budgets), "methods": list(methods),
                           "train_steps": train_steps})
    spec = spec_of(cfg)
    counts = resolve_budgets(spec.budgets, 1000, 40)
    points = expand(spec, counts)
    layout = SweepLayout(tmp_path)
    _predictions(layout.untuned.predictions(0), [0] * 40)
    right = {"kcenter 10": 20, "random 10": 10, "all": 20, "kcenter 5": 15, "random 5": 5,
             "random@pool 10": 10}
    for name, sec in SHARED_SECONDS.items():
        write_json(layout.shared / name / MANIFEST, {"seconds": sec})
    for p in points:
        run = layout.point(p.method, p.budget)
        k = right[p.label]
        if p.label in always_yes:
            _predictions(run.predictions(p.seed), [i % 2 == 0 for i in range(40)], [0] * 40)
        else:
            _predictions(run.predictions(p.seed), [1] * k + [0] * (40 - k))
        upstream = ["pool"] if "@" in p.method else list(SHARED_SECONDS)
        write_json(run.stage("select", p.seed) / MANIFEST,
                   {"quality": {"rows": counts[p.budget], "probe_mean": 1 - k / 100},
                    "upstream": {n: "k" for n in upstream},
                    "seconds": SELECT_SECONDS[p.method]})
        train = point_config(cfg, p.method, p.budget).train
        write_json(run.stage("train", p.seed) / MANIFEST,
                   {"seconds": TRAIN_SECONDS[p.budget], "config": train.settings()})
        n = counts[p.budget]
        steps = train.max_steps or 2 * -(-n // 8)
        assert rows_trained(steps, n, 8, train.full_steps) > 0
        write_json(run.model(p.seed) / "train_state.json", {"steps": steps, "rows": n})
    return write_sweep_report(layout, cfg, spec, counts, points), layout


def test_sweep_report_on_constructed_points(tmp_path):
    md, layout = _constructed_sweep(tmp_path)
    md = md.read_text()
    doc = json.loads(layout.report("json").read_text())
    by = {p["label"]: p for p in doc["points"]}
    assert list(by) == ["kcenter 10", "random 10", "all"]
    assert by["kcenter 10"]["accuracy"]["rte"]["mean"] == 50.0
    d = by["kcenter 10"]["vs_untuned"]["avg"]
    assert d["delta"] == 50.0 and d["lo"] > 0 and d["p"] < 0.001
    r = by["kcenter 10"]["vs_random"]["avg"]  # 10 examples apart, all one way: exact p
    assert r["delta"] == 25.0 and r["p"] == pytest.approx(2 / 2**10, abs=1e-4)
    assert by["random 10"]["vs_random"] is None and by["all"]["vs_random"] is None
    assert doc["baselines"] == {"rte": {"majority": 50.0, "chance": 50.0,
                                        "prior_logloss": pytest.approx(np.log(2)),
                                        "uniform_logloss": pytest.approx(np.log(2))}}
    assert doc["knee"]["kcenter"]["budget"] == "10"  # as good as `all`
    assert doc["knee"]["random"]["budget"] == "all"  # 25 points short at 10 rows
    assert doc["predictors"]["probe_mean"]["spearman"] == pytest.approx(-1.0)
    assert "- kcenter: **10** (10 rows)" in md and "| majority | | 50.0 |" in md
    assert doc["power"]["vs_random"]["avg"]["comparisons"] == 1  # kcenter 10 vs random 10
    # Δ between budgets: kcenter 10 -> all gains nothing, random 10 -> all gains 25 points
    (k_step,), (r_step,) = doc["steps"]["kcenter"], doc["steps"]["random"]
    assert (k_step["from"], k_step["to"], k_step["delta"]) == ("10", "all", 0.0)
    assert r_step["delta"] == 25.0 and r_step["p"] < 0.01
    assert "- random: 10 → all +25.0 [" in md
    assert doc["power"]["vs_untuned"]["avg"]["comparisons"] == 3
    assert "- Power, Δ vs random: 95% paired intervals of ±" in md
    assert len(layout.report("csv").read_text().splitlines()) == 1 + 3 * 2  # rte, avg

    page = (tmp_path / "report.html").read_text()
    assert "Accuracy vs budget" in page and "Knee per method" in page
    _constructed_sweep(tmp_path / "one", budgets=("10",))  # one budget is not a curve
    page = (tmp_path / "one" / "report.html").read_text()
    assert "Accuracy vs budget" not in page
    # and without budget `all` it has no positive control: no knee
    assert "cannot rank selections" in page and "Knee per method" not in page


def test_sweep_html_shows_the_control_paired_deltas_baselines_and_one_class_points(tmp_path):
    _constructed_sweep(tmp_path, always_yes=("all",))
    page = (tmp_path / "report.html").read_text()
    lead = page.index("<p class='lead'>Positive control passed: all (40 rows")
    assert lead < page.index("<h2>Results</h2>")  # what decides comes first
    assert "<tr class='base'><th>majority class</th><td>–</td><td>50.0</td><td>50.0</td>" in page
    assert "<td class='one'>50.0 †<br>" in page and page.count("<td class='one'>") == 1
    for head in ("Paired Δ vs untuned", "Paired Δ vs random at the same budget"):
        assert f"<h3>{head}</h3>" in page
    rows = page.split("<h3>Paired Δ vs random at the same budget</h3>")[1].split("</table>")[0]
    assert "<th>kcenter 10</th><td class='sig'>+25.0<br>" in rows
    assert page.count("<figcaption>Avg accuracy (higher is better)") == 1


def _scored(path, p_gold) -> None:
    """A predictions table with option scores (two options, one template per example): the
    gold option has probability `p_gold[i]` under the softmax of the scores."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = np.asarray(p_gold, dtype=float)
    labels = np.arange(len(p)) % 2
    scores = [[np.log(q), np.log(1 - q)][::1 if y == 0 else -1] for q, y in
              zip(p, labels, strict=True)]
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"task": ["rte"] * len(p), "example": list(range(len(p))),
                             "label": labels.tolist(), "choices": [["yes", "no"]] * len(p),
                             "correct": (p > 0.5).tolist(), "logprob": scores,
                             "n_tokens": [[1, 1]] * len(p)}), path)


def _control_sweep(tmp_path, control, metric: str = "logloss", base=None):
    """40 examples; kcenter and random at 10 rows gain on the untuned model (`base`: its gold
    probabilities); `all` (the positive control) gains a lot ("strong"), changes nothing on
    balance ("flat"), loses ("worse"), or has the gold probabilities `control`."""
    from coretune.io import write_json
    from coretune.run.manifest import MANIFEST

    cfg = RunConfig(name="s", evaluate={"tasks": ["rte"]},
                    sweep={"budgets": ["10", "all"], "metric": metric})
    spec = spec_of(cfg)
    counts = resolve_budgets(spec.budgets, 1000, 40)
    layout = SweepLayout(tmp_path)
    base = np.random.default_rng(0).uniform(0.3, 0.6, 40) if base is None else base
    wobble = np.where(np.arange(40) % 2 == 0, 0.02, -0.02)
    control = control if isinstance(control, np.ndarray) else {
        "strong": base + 0.3, "flat": base + wobble, "worse": base - 0.2}[control]
    gold = {"kcenter 10": np.minimum(base + 0.1, 0.99), "random 10": np.minimum(base + 0.05, 0.99),
            "all": control}
    _scored(layout.untuned.predictions(0), base)
    points = expand(spec, counts)
    for p in points:
        run = layout.point(p.method, p.budget)
        _scored(run.predictions(p.seed), gold[p.label])
        write_json(run.stage("select", p.seed) / MANIFEST, {"quality": {"rows": counts[p.budget]}})
    md = write_sweep_report(layout, cfg, spec, counts, points)
    return md.read_text(), json.loads(layout.report("json").read_text()), layout


def _readme_block(tmp_path, md: str) -> str:
    """What scripts/readme_results.py puts into docs/results.md for a sweep with this sweep.md."""
    import importlib.util

    from conftest import ROOT

    spec = importlib.util.spec_from_file_location("readme_results",
                                                  ROOT / "scripts/readme_results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    folder = tmp_path / "readme"
    folder.mkdir()
    (folder / "sweep.md").write_text(md)  # the sweep.md alone: no figure copied into docs/
    return module.sweep_block(folder)


@pytest.mark.parametrize("control", ["flat", "worse"])
def test_a_control_that_is_not_better_withholds_every_ranking(tmp_path, control):
    md, doc, layout = _control_sweep(tmp_path, control)
    assert doc["metric"] == "logloss" and doc["control"]["status"] == control
    assert not doc["control"]["ranks"] and doc["knee"] == {} and doc["predictors"] == {}
    d = doc["control"]["delta"]
    assert (d["p"] >= 0.01) if control == "flat" else (d["delta"] < 0 and d["p"] < 0.01)
    line = "**This design cannot rank selections**: its positive control is " + (
        "not significantly better than" if control == "flat" else "significantly worse than")
    for text in (md, _readme_block(tmp_path, md)):
        assert sum(line in x for x in text.splitlines()) == 1
        assert "Knee" not in text and "- kcenter: **" not in text
        assert "Training-free predictors" not in text
    page = (tmp_path / "report.html").read_text()
    assert "This design cannot rank selections" in page and "Knee per method" not in page
    assert "knee ringed" not in page  # nothing is ringed on the curves either


def test_a_strong_control_lets_log_loss_rank(tmp_path):
    md, doc, _ = _control_sweep(tmp_path, "strong")
    c = doc["control"]
    assert c["status"] == "better" and c["ranks"] and c["delta"]["p"] < 0.01
    assert "cannot rank" not in md and "Positive control passed: `all` (40 rows" in md
    assert "Deciding metric: **log-loss**" in md and "Knee by log-loss" in md
    assert doc["knee"]["kcenter"]["budget"] == "all"  # 0.2 of gold probability better
    by = {p["label"]: p for p in doc["points"]}
    # lower log-loss is better and every Δ says so with a +
    assert by["all"]["logloss"]["rte"]["mean"] < by["kcenter 10"]["logloss"]["rte"]["mean"]
    assert by["kcenter 10"]["vs_untuned_logloss"]["avg"]["delta"] > 0
    assert by["kcenter 10"]["vs_random_logloss"]["avg"]["delta"] > 0
    assert "- Power, Δ log-loss vs untuned: 95% paired intervals of ±" in md
    assert "- Power, Δ vs untuned: 95% paired intervals of ±" in md  # accuracy's, too
    assert "Paired Δ log-loss vs `untuned` (log-loss nats, reference minus row" in md
    head = (tmp_path / "sweep.csv").read_text().splitlines()[0].split(",")
    assert head[5] == "mean" and head[-15:-12] == ["logloss", "logloss_low", "logloss_high"]
    page = (tmp_path / "report.html").read_text()
    assert "Log-loss vs budget" in page and "Knee per method" in page
    assert "Gold-option log-loss (nats, lower is better)" in page


def test_sweep_metric_says_which_metric_the_control_reads(tmp_path):
    """A control that puts 20 of 40 gold options just over the line (0.48 -> 0.52) and makes
    20 sure ones less sure (0.9 -> 0.8): +50 accuracy points, no better in log-loss."""
    base = np.repeat([0.48, 0.9], 20)
    control = np.repeat([0.52, 0.8], 20)
    md, doc, _ = _control_sweep(tmp_path / "acc", control, metric="accuracy", base=base)
    assert doc["metric"] == "accuracy" and doc["control"]["ranks"]
    assert doc["control"]["delta"]["delta"] == 50.0 and "Knee by accuracy" in md
    md, doc, _ = _control_sweep(tmp_path / "loss", control, base=base)
    assert doc["control"]["status"] == "flat" and doc["control"]["delta"]["delta"] < 0
    assert "cannot rank selections" in md


def test_sweep_cost_and_steps_come_from_the_stage_manifests(tmp_path):
    """Select seconds: the shared embed, cluster and target stages the point's select stage
    read, in full, plus its own; train seconds: the train stage; epochs: rows trained / rows."""
    md, layout = _constructed_sweep(tmp_path, methods=("kcenter", "random@pool"))
    doc = json.loads(layout.report("json").read_text())
    by = {p["label"]: p for p in doc["points"]}
    assert doc["design"] == {"name": "epochs", "epochs": 2.0, "max_steps": None,
                             "rows_per_step": 8}
    assert by["kcenter 10"]["cost"] == {"select_seconds": 16.0, "train_seconds": 20.0,
                                        "select_to_train": 0.8}
    # from the whole pool, random reads no clusters: its own select stage alone
    assert by["random@pool 10"]["cost"]["select_seconds"] == 0.25
    assert by["all"]["cost"] == {"select_seconds": 15.125, "train_seconds": 80.0,
                                 "select_to_train": 0.1891}
    assert doc["all_train_seconds"] == 80.0
    assert doc["shared_seconds"] == {"embed": 10.0, "cluster": 2.0, "target": 3.0}
    # 2 epochs at batch 8: 10 rows take 4 steps (8 + 2 rows each epoch), 40 rows take 10
    assert by["kcenter 10"]["training"] == {"steps": 4, "rows_trained": 20, "epochs": 2.0}
    assert by["all"]["training"] == {"steps": 10, "rows_trained": 80, "epochs": 2.0}
    text = md.read_text()
    assert "Design: epoch-based: every point trains train.epochs=2 over its own rows" in text
    assert "| point | rows | steps | epochs | select s | train s | select / train |" in text
    assert "| kcenter 10 | 10 | 4 | 2.00 | 16.0 | 20.0 | 0.80 |" in text
    assert "| random@pool 10 | 10 | 4 | 2.00 | 0.2 | 20.0 | 0.01 |" in text
    assert "Training on every target row (`all`) took 80.0 s" in text
    csv = layout.report("csv").read_text().splitlines()
    assert csv[0].endswith(",p_logloss_random,steps,epochs,select_seconds,train_seconds")
    assert csv[1].startswith("kcenter 10,") and csv[1].endswith(",4,2.0,16.0,20.0")
    page = (tmp_path / "report.html").read_text()
    assert "Steps and cost per point" in page and "Design: epoch-based" in page

    # compute-matched: 30 full steps of 8 rows everywhere; 10 rows seen 24 times, 40 rows 6
    md, layout = _constructed_sweep(tmp_path / "steps", train_steps=30)
    doc = json.loads(layout.report("json").read_text())
    assert doc["design"] == {"name": "steps", "train_steps": 30, "rows_per_step": 8}
    assert {p["label"]: p["training"]["steps"] for p in doc["points"]} == {
        "kcenter 10": 30, "random 10": 30, "all": 30}
    assert [p["training"]["epochs"] for p in doc["points"]] == [24.0, 24.0, 6.0]
    assert ("Design: compute-matched (sweep.train_steps): every point trains 30 optimizer "
            "steps of 8 rows") in md.read_text()


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium not installed")
def test_sweep_report_draws_the_budget_curve_in_a_browser(tmp_path):
    import matplotlib.image as mpimg

    from coretune.report.html import screenshot

    _constructed_sweep(tmp_path, budgets=("5", "10", "all"))
    png = screenshot(tmp_path / "report.html", tmp_path / "shot.png", height=4000)
    img = mpimg.imread(png)[..., :3]
    # tab10's first two colours (kcenter blue, random orange) drawn as lines and bands
    blue = (np.abs(img - np.array([0.12, 0.47, 0.71])) < 0.08).all(-1)
    orange = (np.abs(img - np.array([1.0, 0.5, 0.05])) < 0.08).all(-1)
    assert blue.sum() > 300 and orange.sum() > 300

TINY = """
name: tiny
seeds: [0]
pool: {bigbench: sample, templates: "first:1", max_rows: 300}
embed: {max_tokens: 48}
cluster: {k: 5}
train: {max_steps: 2, batch_size: 2, max_length: 64}
evaluate: {max_examples: 3, max_templates: 1, tasks: [rte, cb]}
sweep: {budgets: ["4", all], methods: [kcenter, random]}
"""


@pytest.mark.slow
def test_tiny_sweep_resumes_for_free_and_runs_only_new_points(tmp_path, capsys):
    from coretune.cli import main

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY)
    out = tmp_path / "sweep"

    def sweep(*args) -> str:
        main(["sweep", str(cfg), "--out", str(out), "-q", *args])
        return capsys.readouterr().out

    first = sweep()
    assert "[3/3] all seed 0: [evaluate] done" in first
    doc = json.loads((out / "sweep.json").read_text())
    assert [p["label"] for p in doc["points"]] == ["kcenter 4", "random 4", "all"]
    target_rows = json.loads((out / "shared/target/target.json").read_text())["rows"]
    assert doc["budgets"] == {"4": 4, "all": target_rows}
    assert set(doc["baselines"]) == {"rte", "cb"} and doc["tasks"] == ["rte", "cb"]
    kc = doc["points"][0]
    assert kc["rows"] == 4 and kc["seeds"] == [0] and set(kc["accuracy"]) == {"rte", "cb", "avg"}
    d = kc["vs_untuned"]["avg"]
    assert d["lo"] <= d["delta"] <= d["hi"] and 0 < d["p"] <= 1 and d["n_examples"] == 6
    assert kc["vs_random"]["avg"]["n_examples"] == 6 and doc["points"][1]["vs_random"] is None
    assert kc["quality"]["rows"] == 4 and "radius" in kc["quality"]
    # train.max_steps 2 of 2 rows: 4 rows, each seen once; seconds from the manifests
    assert doc["design"]["name"] == "epochs" and doc["design"]["max_steps"] == 2
    assert kc["training"] == {"steps": 2, "rows_trained": 4, "epochs": 1.0}
    assert kc["cost"]["select_seconds"] > doc["shared_seconds"]["target"] > 0
    assert doc["all_train_seconds"] == doc["points"][2]["cost"]["train_seconds"] > 0
    loss = kc["vs_untuned_logloss"]["avg"]
    assert doc["metric"] == "logloss" and loss["n_examples"] == 6 and loss["lo"] <= loss["hi"]
    assert 0 < kc["logloss"]["avg"]["mean"] and 0 < doc["untuned_logloss"]["avg"]["mean"]
    # 6 examples: the smallest sign-flip p is 2 / 2**6 = 0.031, so the positive control
    # cannot pass at 0.01 and no knee is given (the constructed sweeps above test the knee)
    assert doc["control"]["point"] == "all" and not doc["control"]["ranks"]
    assert doc["knee"] == {}
    md = (out / "sweep.md").read_text()
    assert "| majority |" in md and "cannot rank selections" in md and "| kcenter 4 | 4 |" in md
    assert (out / "sweep.csv").read_text().startswith("point,method,budget,rows,task,mean")
    # `coretune table SWEEP` lists the untuned run and every point, paired with the untuned
    main(["table", str(out), "-o", str(tmp_path / "table")])
    table = capsys.readouterr().out
    for name in ("untuned", "kcenter-4", "random-4", "all"):
        assert f"| tiny/{name} | 1 |" in table
    assert "Paired Δ vs `tiny/untuned`" in table and "| tiny/all | 1 | " in table
    assert "Gold-option log-loss" in table and "Paired Δ log-loss vs `tiny/untuned`" in table
    main(["table", str(out), "-o", str(tmp_path / "vs-all"), "--reference", "tiny/all"])
    vs_all = capsys.readouterr().out
    assert "Paired Δ vs `tiny/all`" in vs_all and "| tiny/untuned | " in vs_all.split("Δ vs")[1]
    with pytest.raises(SystemExit) as bad:
        main(["table", str(out), "-o", str(tmp_path / "bad"), "--reference", "tiny/nope"])
    assert bad.value.code == 2 and "no finished run named 'tiny/nope'" in capsys.readouterr().err

    again = sweep()  # nothing left to do
    assert "running" not in again and "resuming" not in again
    assert again.count("up to date, skipped") == 4 + 1 + 3 * 3  # shared, untuned, points

    more = sweep("--budgets", "4,8,all", "--methods", "kcenter")
    ran = {line.split(":")[0] for line in more.splitlines() if "] running" in line}
    assert ran == {"[2/3] kcenter 8 seed 0"}, more
    assert [p["label"] for p in json.loads((out / "sweep.json").read_text())["points"]] == [
        "kcenter 4", "kcenter 8", "all"]

    # compute-matched: the same selections, every point retrained for 3 full steps of 2 rows
    matched = sweep("--budgets", "4,8,all", "--methods", "kcenter", "sweep.train_steps=3")
    ran = {line.split("[")[-1].split("]")[0] for line in matched.splitlines()
           if "] running" in line}
    assert ran == {"train", "evaluate"}, matched
    doc = json.loads((out / "sweep.json").read_text())
    assert doc["design"] == {"name": "steps", "train_steps": 3, "rows_per_step": 2}
    for p in doc["points"]:
        state = json.loads((out / "points" / ("all" if p["budget"] == "all" else
                            f"kcenter-{p['budget']}") / "seed-0/train/model/train_state.json"
                            ).read_text())
        assert state["steps"] == p["training"]["steps"] == 3
        assert p["training"]["epochs"] == round(6 / p["rows"], 2)
    assert "Design: compute-matched (sweep.train_steps): every point trains 3 " in (
        out / "sweep.md").read_text()


@pytest.mark.slow
def test_budget_checks_after_the_target_stage_stop_before_any_point(tmp_path, capsys):
    from coretune.cli import main

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY)
    out = tmp_path / "sweep"
    for budgets, fragment in (("4,250", "budget '250' is 250 rows, more than the target"),
                              ("3,1%", "budgets '3' and '1%' are both 3 rows")):
        with pytest.raises(SystemExit) as e:
            main(["sweep", str(cfg), "--out", str(out), "-q", "--budgets", budgets])
        err = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
        assert e.value.code == 2 and len(err) == 1 and fragment in err[0], err
        assert "field 'sweep.budgets'" in err[0]
        assert not (out / "points").exists() and not (out / "untuned").exists()


def test_method_at_pool_selects_from_the_whole_pool():
    cfg = RunConfig(name="s", sweep={"methods": ["kcenter", "random@pool", "rds@pool"]})
    pc = point_config(cfg, "random@pool", "0.5%")
    assert (pc.select.method, pc.select.scope) == ("random", "pool") and not pc.needs_clusters
    rds = point_config(cfg, "rds@pool", "0.5%")
    assert (rds.select.method, rds.select.scope) == ("rds", "pool") and rds.needs_clusters
    assert point_config(cfg, "kcenter", "0.5%").select.scope == "target"
    assert SweepLayout(Path("s")).point("random@pool", "0.5%").root.name == "random@pool-0.5pct"


@pytest.mark.slow
def test_a_sweep_split_between_a_selecting_and_a_training_machine(tmp_path, capsys):
    """--phase select --pack: selections and manifests only; --phase train on the pack runs
    no stage before training and gives the points the same predictions as one machine."""
    import pyarrow.parquet as pq

    from coretune.cli import main

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY)
    here, pack = tmp_path / "sweep", tmp_path / "pack"
    tiny = ["--budgets", "4,all", "--methods", "kcenter", "-q"]

    def sweep(*args) -> str:
        main(["sweep", str(cfg), *tiny, *args])
        return capsys.readouterr().out

    def refused(*args) -> str:
        with pytest.raises(SystemExit) as e:
            main(["sweep", str(cfg), *tiny, *args])
        assert e.value.code == 2
        return capsys.readouterr().err

    assert "--pack goes with --phase select" in refused("--out", str(here), "--pack", str(pack))
    assert "no selections here" in refused("--out", str(tmp_path / "empty"), "--phase", "train")
    assert "unknown phase 'fit'" in refused("--out", str(here), "--phase", "fit")
    assert not here.exists() and not (tmp_path / "empty").exists()
    out = sweep("--out", str(here), "--phase", "select", "--pack", str(pack))
    assert f"selections ready in {pack}" in out and "[train]" not in out
    assert not (here / "untuned").exists() and not list(here.glob("points/*/seed-0/train"))
    packed = {p.relative_to(pack).as_posix() for p in pack.rglob("*") if p.is_file()}
    assert {"config.json", "selections.json", "shared/embed/manifest.json",
            "points/all/seed-0/select/subset.parquet"} <= packed
    assert not any(p.endswith((".npy", "pool.parquet")) for p in packed), packed
    assert "already exists" in refused("--out", str(here), "--phase", "select",
                                        "--pack", str(pack))

    trained = sweep("--out", str(pack), "--phase", "train")
    ran = {line.split("[")[-1].split("]")[0] for line in trained.splitlines()
           if "] running" in line}
    assert ran == {"train", "evaluate"} and "[shared]" not in trained, trained
    assert not (pack / "shared/embed/embeddings.npy").exists()
    doc = json.loads((pack / "sweep.json").read_text())
    assert [p["label"] for p in doc["points"]] == ["kcenter 4", "all"]
    assert doc["points"][0]["cost"]["select_seconds"] > 0  # the select machine's seconds

    sweep("--out", str(here))  # the same sweep finished on one machine
    for point in ("kcenter-4", "all"):
        one, two = (pq.read_table(d / "points" / point / "seed-0/evaluate/predictions.parquet")
                    for d in (here, pack))
        assert one.equals(two), point
    # a config whose selections differ from the packed ones is refused, not retrained
    assert "has no selection made with this config" in refused(
        "--out", str(pack), "--phase", "train", "cluster.k=4")
