"""Every interval and paired test coretune reports: bootstrap intervals over seeds and
examples, paired comparisons of runs scored on the same evaluation examples, and the budget
knee.

Intervals: 95% percentile bootstrap, `BOOTSTRAP_REPS` replicates. A replicate draws the seeds
(runs) with replacement and, once for all of them, the evaluation examples with replacement
(every run scores the same examples, so identical seeds add no evidence), and takes the mean.
An eval set's interval draws with generator seed `TASK_DRAWS`; the average's (the mean of the
sets' means, each set resampled on its own) with `AVG_DRAWS`. One seed gives the plain
example bootstrap. `coretune evaluate`, `coretune run` and the table all use these.

Every run of a sweep scores the same examples and templates (fixed evaluation seed), so the
difference between two runs is taken example by example: a paired bootstrap for the interval
and a paired sign-flip test for the p-value. Both are far tighter than comparing two unpaired
intervals by overlap, which is never done here.

Input shape used throughout: a run is a list of seeds, each seed a dict {task: per-example
value} (templates averaged: accuracy in [0, 1], or gold-option log-loss in nats), examples in
the same order in every run. When two runs have the same number of seeds, seed i of one is
paired with seed i of the other (the same sampling seed); otherwise seeds are resampled
independently for each run.

A `Metric` says how a value reads: its scale (accuracy x100: points) and which way is better.
Every Δ is oriented so that POSITIVE MEANS BETTER: accuracy(a) - accuracy(b), and for
log-loss logloss(b) - logloss(a) (the drop in log-loss).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import product

import numpy as np

from coretune.errors import CoretuneError

Run = Sequence[dict[str, np.ndarray]]
EXACT_FLIPS = 16  # at most 2**16 sign patterns are enumerated exactly; above that, sampled
BOOTSTRAP_REPS = 2000
TASK_DRAWS, AVG_DRAWS = 0, 1  # generator seeds: an eval set's interval, the average's


@dataclass(frozen=True)
class Metric:
    """How a per-example value is shown and compared."""

    name: str
    label: str
    unit: str
    scale: float  # per-example value x scale = the number shown
    higher_is_better: bool
    digits: int  # decimals shown


ACCURACY = Metric("accuracy", "accuracy", "points", 100.0, True, 1)
LOGLOSS = Metric("logloss", "log-loss", "nats", 1.0, False, 3)
METRICS = {m.name: m for m in (ACCURACY, LOGLOSS)}


@dataclass(frozen=True)
class Interval:
    """A mean (x metric.scale) and its 95% interval, over `n_seeds` seeds; `n_examples`: an
    eval set's examples (0 for the average over sets)."""

    mean: float
    lo: float
    hi: float
    n_seeds: int
    n_examples: int
    digits: int = 1

    def text(self) -> str:
        d = self.digits
        return f"{self.mean:.{d}f} [{self.lo:.{d}f}, {self.hi:.{d}f}]"


def task_interval(per_seed: Sequence[np.ndarray], metric: Metric = ACCURACY,
                  reps: int = BOOTSTRAP_REPS) -> Interval:
    """One eval set: `per_seed`, each seed's per-example values (templates averaged: accuracy
    in [0, 1], or `metric`'s)."""
    means = replicates([[{"x": x} for x in per_seed]], ["x"], reps,
                       np.random.default_rng(TASK_DRAWS))[:, 0]
    point = float(np.mean([x.mean() for x in per_seed]))
    return _interval(point, means, metric, len(per_seed),
                     int(np.mean([len(x) for x in per_seed])))


def average_interval(per_seed: Run, tasks: Sequence[str], metric: Metric = ACCURACY,
                     reps: int = BOOTSTRAP_REPS) -> Interval:
    """The mean over `tasks` of each set's mean; `per_seed`: each seed's {task: per-example
    values}."""
    means = replicates([per_seed], tasks, reps, np.random.default_rng(AVG_DRAWS))[:, 0]
    point = float(np.mean([np.mean([s[t].mean() for t in tasks]) for s in per_seed]))
    return _interval(point, means, metric, len(per_seed), 0)


def _interval(point: float, means: np.ndarray, metric: Metric, seeds: int,
              examples: int) -> Interval:
    lo, hi = np.percentile(means, [2.5, 97.5])
    f = metric.scale
    return Interval(f * point, f * lo, f * hi, seeds, examples, metric.digits)


@dataclass(frozen=True)
class Delta:
    """How much better a is than b (accuracy points a - b; log-loss nats b - a), with a 95%
    paired-bootstrap interval and the two-sided p-value of a paired sign-flip test."""

    delta: float
    lo: float
    hi: float
    p: float
    n_examples: int

    def text(self, digits: int = 1) -> str:
        return (f"{self.delta:+.{digits}f} [{self.lo:+.{digits}f}, {self.hi:+.{digits}f}] "
                f"p={self.p:.3g}")


def _tasks(a: Run, b: Run, tasks: Sequence[str] | None) -> list[str]:
    if not a or not b:
        raise CoretuneError("a paired comparison needs at least one seed on each side")
    common = [t for t in (tasks or a[0]) if all(t in s for s in (*a, *b))]
    if not common:
        raise CoretuneError("the two runs share no evaluation set")
    for t in common:
        sizes = {len(s[t]) for s in (*a, *b)}
        if len(sizes) != 1:
            raise CoretuneError(f"eval set {t!r}: runs scored different numbers of examples "
                                f"{sorted(sizes)}; a paired comparison needs the same examples")
    return common


def _mean_over_seeds(run: Run, task: str) -> np.ndarray:
    return np.mean([np.asarray(s[task], dtype=np.float64) for s in run], axis=0)


def accuracy(run: Run, tasks: Sequence[str], metric: Metric = ACCURACY) -> float:
    """Mean accuracy in points (or `metric`): over tasks, of the mean over seeds and examples."""
    return metric.scale * float(np.mean([_mean_over_seeds(run, t).mean() for t in tasks]))


def paired_delta(a: Run, b: Run, tasks: Sequence[str] | None = None, *,
                 reps: int = BOOTSTRAP_REPS, flips: int = 10000, seed: int = 0,
                 metric: Metric = ACCURACY) -> Delta:
    """Δ = accuracy(a) - accuracy(b), in points, averaged over `tasks` (each task weighs the
    same, as in the table's Avg column); for a metric where lower is better (log-loss),
    value(b) - value(a): positive always means a is better. Identical runs give Δ = 0 with a
    zero-width interval and p = 1."""
    tasks = _tasks(a, b, tasks)
    if not metric.higher_is_better:  # the same draws and flips, the sign turned round
        a, b = b, a
    rng = np.random.default_rng(seed)
    diffs = [_mean_over_seeds(a, t) - _mean_over_seeds(b, t) for t in tasks]
    point = float(np.mean([d.mean() for d in diffs]))
    both = replicates([a, b], tasks, reps, rng)  # the same examples and seeds for a and b
    lo, hi = np.percentile(both[:, 0] - both[:, 1], [2.5, 97.5])
    p = sign_flip_p(diffs, flips=flips, rng=rng)
    f = metric.scale
    return Delta(f * point, f * float(lo), f * float(hi), p, int(sum(len(d) for d in diffs)))


def replicates(runs: Sequence[Run], tasks: Sequence[str], reps: int, rng) -> np.ndarray:
    """Bootstrap replicates of each run's accuracy (mean over tasks, then over its drawn
    seeds), shape (reps, len(runs)). Runs evaluate the same examples (fixed evaluation seed),
    so each replicate draws one set of example indices per task shared by every run and seed:
    independent draws would treat identical seeds as new examples and shrink the interval.
    Seeds are drawn once for all runs when they have as many, else per run. A task whose seeds
    scored different numbers of examples (different caps) is drawn per seed instead."""
    sizes = {t: {len(s[t]) for run in runs for s in run} for t in tasks}
    paired = [t for t in tasks if len(sizes[t]) == 1]
    stacks = [{t: np.stack([s[t] for s in run]).astype(np.float64) for t in paired}
              for run in runs]
    joint = len({len(run) for run in runs}) == 1
    out = np.empty((reps, len(runs)))
    for r in range(reps):
        picks = rng.integers(0, len(runs[0]), len(runs[0])) if joint else None
        idx = {t: rng.integers(0, n, n) for t in paired for n in sizes[t]}
        for j, run in enumerate(runs):
            sel = picks if joint else rng.integers(0, len(run), len(run))
            per_task = []
            for t in tasks:
                if t in idx:
                    per_task.append(stacks[j][t][sel][:, idx[t]].mean())
                else:  # examples differ between seeds: each seed's own draw
                    per_task.append(np.mean([run[i][t][rng.integers(0, len(run[i][t]),
                                                                    len(run[i][t]))].mean()
                                             for i in sel]))
            out[r, j] = np.mean(per_task)
    return out


def sign_flip_p(diffs: Sequence[np.ndarray], *, flips: int = 10000, rng=None) -> float:
    """Two-sided p-value of the paired sign-flip (permutation) test of mean difference 0.

    `diffs`: per task, the per-example differences a - b. Under the null each example's sign
    is exchangeable; the statistic is the mean over tasks of the mean difference. Exact
    enumeration when at most EXACT_FLIPS examples differ, else `flips` random patterns
    (p = (1 + hits) / (1 + flips), never 0)."""
    rng = rng if rng is not None else np.random.default_rng(0)
    weights = np.concatenate([np.full(len(d), 1.0 / (len(d) * len(diffs))) for d in diffs])
    d = np.concatenate([np.asarray(x, dtype=np.float64) for x in diffs]) * weights
    d = d[d != 0]
    if len(d) == 0:
        return 1.0
    observed = abs(d.sum()) - 1e-12
    if len(d) <= EXACT_FLIPS:
        signs = np.array(list(product((1.0, -1.0), repeat=len(d))))
        return float(np.mean(np.abs(signs @ d) >= observed))
    signs = rng.choice((1.0, -1.0), size=(flips, len(d)))
    hits = int(np.sum(np.abs(signs @ d) >= observed))
    return (1 + hits) / (1 + flips)


def baselines(labels: Sequence[int], n_choices: int) -> dict[str, float]:
    """Accuracy (points) of always answering the most common label, and of uniform chance;
    and the log-loss (nats) of the best constant guess, the set's own label frequencies
    (`prior_logloss`: what calibration alone can reach, with no example read), and of the
    uniform guess (`uniform_logloss`, ln of the number of options)."""
    labels = np.asarray(labels)
    if len(labels) == 0 or n_choices < 1:
        raise CoretuneError("baselines need at least one label and one choice")
    freq = np.bincount(labels, minlength=n_choices) / len(labels)
    seen = freq[freq > 0]
    return {"majority": 100 * float(freq.max()), "chance": 100.0 / n_choices,
            "prior_logloss": float(-(seen * np.log(seen)).sum()),
            "uniform_logloss": float(np.log(n_choices))}


@dataclass(frozen=True)
class Knee:
    """The smallest budget whose accuracy (or metric) is not significantly worse than the best
    budget's and within `tol` of it; `vs_best` is that budget's Δ against the best one."""

    budget: object
    best: object
    vs_best: Delta


def knee(curve: Sequence[tuple[object, Run]], *, tol: float = 1.0, alpha: float = 0.05,
         tasks: Sequence[str] | None = None, seed: int = 0, metric: Metric = ACCURACY) -> Knee:
    """`curve`: (budget, run) in increasing budget order. A budget qualifies when its point
    Δ against the best budget is ≥ -tol (in `metric`'s unit) and the paired sign-flip test does
    not find it worse than the best at level `alpha`; the first that qualifies is the knee (the
    best budget always qualifies, so there is always one)."""
    if not curve:
        raise CoretuneError("knee: empty curve")
    budgets = [b for b, _ in curve]
    if len(set(map(str, budgets))) != len(budgets):
        raise CoretuneError(f"knee: duplicate budgets in {budgets}")
    tasks = _tasks(curve[0][1], curve[-1][1], tasks)
    sign = 1 if metric.higher_is_better else -1
    best = int(np.argmax([sign * accuracy(run, tasks, metric) for _, run in curve]))
    for budget, run in curve:
        d = paired_delta(run, curve[best][1], tasks, seed=seed, metric=metric)
        if d.delta >= -tol and (d.p >= alpha or d.delta >= 0):
            return Knee(budget, curve[best][0], d)
    raise AssertionError("unreachable: the best budget always qualifies")
