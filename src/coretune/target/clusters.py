"""Which clusters belong to the target task family, and why.

Two ways to decide, picked by the target spec:
- metadata (`tasks:rte,cb`, `family:nli`, `keywords:a,b`): a row is a target row when its
  task / family / keywords match; a cluster is a target cluster when the share of target rows
  in it reaches `threshold` (default 0.5).
- probing (`nli`, `probe:FILE.jsonl`): unlabelled example prompts of the target task (for
  `nli`, the shipped NLI evaluation sets rendered through their promptsource templates with
  the label removed; a seeded sample of 1000, equal per set) are embedded with the pool's
  encoder and assigned to their nearest centroid; a cluster is a target cluster when it gets
  at least `min_hits` (2) probes and passes the rule. This needs no metadata, so it works on
  any pool. Probing with evaluation *inputs* (never labels) is transductive; use `probe:`
  with your own prompts to avoid it.

The rule (`rule=`):
- `auto` (default): the cut is chosen from the data, no per-pool tuning (see `auto_cut`).
  Clusters are ranked by evidence (probe density, share of probes / share of rows; for a
  metadata target, share of matching rows) and the prefix with the best F1 is taken: for a
  metadata target the F1 against the named rows is exact; for probes it is estimated by
  assuming the target rows are spread over clusters like the probes.
- `coverage`: for recall. Clusters in the same ranking until they hold `COVERAGE` (90%) of
  the probes (of the matching rows, for a metadata target).
- `density`: the old rule, probe density >= `threshold` (0.25; tuned on the NLI-heavy
  sample pool, it keeps far too many clusters where NLI is a 5% minority); for a metadata
  target, share of matching rows >= `threshold` (0.5).
- `threshold=` or `top=m` (the m clusters with most evidence) override the rule.
- `share=`: the target's share of the pool, when known; the auto probe rule uses it instead
  of its estimate (the estimate, not the cut, is what fails on the NLI-heavy pool).
- `votes=V` (default `VOTES`, as `target.votes` and `--votes`): k-means lands in another
  local optimum under perturbations no encoder would notice, and the rule takes whole
  clusters, so one clustering's target rows move a lot (docs/target.md). With V > 1 the rule
  also runs on V - 1 more clusterings of the same rows (seeds seed+1, ...) and a row is a
  target row when a strict majority of the V runs keeps it. Costs V - 1 k-means fits
  (through `fit(..., fit_clusters=)`: a backend's); needs the embeddings (`fit(..., x=)`).
- `by_task=True` (the default, as `target.by_task` and `--by-task`): a task with most of its
  rows among the target rows is kept whole, one with fewer than a third of them is dropped
  (never the task with the most target rows), one in between is left as it is (`task_step`).

The settings, their defaults and their rules are `TargetConfig`'s (`settings`).

When the pool has a `family` column, recall and precision of the chosen clusters against
`family == reference` (default `nli`) say how well the clusters capture the family.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
from pydantic import ValidationError

from coretune.cluster import KMeansClusters, cluster_members
from coretune.data.pool import Pool
from coretune.errors import CoretuneError
from coretune.io import read_jsonl
from coretune.target.cut import (
    COVERAGE,
    auto_cut,
    coverage_cut,
    density_order,
    prefix_f1,
    task_step,
)
from coretune.target.settings import TargetConfig, TargetSpec, parse_target

PROBE_DENSITY = 0.25  # the old (`density`) probe rule, see TargetClusters
METADATA_SHARE = 0.5  # the old (`density`) metadata rule
_DEFAULT = TargetConfig()  # the settings' defaults are the defaults here too


def nli_probe_prompts(n: int = 500, seed: int = 0) -> tuple[list[str], list[str]]:
    """About `n` unlabelled prompts from the shipped NLI evaluation sets (equal share per
    set), each row through one of its set's templates (cycled over a seeded permutation so
    every template is used). Returns (prompts, set name of each)."""
    from coretune.data.sources import eval_datasets

    if n < 1:
        raise CoretuneError("must be at least 1", field="n_probes")
    rng = np.random.default_rng(seed)
    sets = eval_datasets()
    rows_of = {name: ds.rows() for name, ds in sets.items()}
    quota = _equal_quotas(n, {name: len(r) for name, r in rows_of.items()})
    prompts, names = [], []
    for name, ds in sets.items():
        rows, templates = rows_of[name], list(ds.load_templates())
        pick = rng.choice(len(rows), quota[name], replace=False)
        tmpl = rng.permutation(len(templates))
        for j, i in enumerate(pick.tolist()):
            row = {**rows[i], "label": -1}  # no label: the prompt only, nothing leaks
            prompts.append(templates[tmpl[j % len(templates)]].render(row).prompt)
            names.append(name)
    return prompts, names


def _equal_quotas(n: int, sizes: dict[str, int]) -> dict[str, int]:
    """Split n as evenly as possible; a set smaller than its share gives all its rows and the
    rest is shared among the others (CB dev has only 56 rows)."""
    quota = dict.fromkeys(sizes, 0)
    left, open_ = min(n, sum(sizes.values())), sorted(sizes, key=lambda s: (sizes[s], s))
    while left and open_:
        share, extra = divmod(left, len(open_))
        name = open_[0]
        if sizes[name] <= share:  # smallest set: take it whole
            quota[name] = sizes[name]
            left -= sizes[name]
            open_.pop(0)
            continue
        for i, name in enumerate(sorted(open_)):
            quota[name] = share + (1 if i < extra else 0)
        break
    return quota


def read_probe_file(path: str | Path) -> list[str]:
    """Prompts of a JSONL file, one object a line with a non-empty `prompt`."""
    records, lines = read_jsonl(path)
    if not records:
        raise CoretuneError("empty file: no probe prompts", path=path)
    prompts = []
    for rec, line in zip(records, lines, strict=True):
        p = rec.get("prompt")
        if not isinstance(p, str) or not p.strip():
            raise CoretuneError("missing or empty", path=path, line=line, field="prompt")
        prompts.append(p)
    return prompts


def read_probe_answers(path: str | Path) -> list[str]:
    """Each line's optional string `target` ('' where none) of a probe file."""
    answers = []
    for rec, line in zip(*read_jsonl(path), strict=True):
        t = rec.get("target", "")
        if not isinstance(t, str):
            raise CoretuneError("must be a string", path=path, line=line, field="target")
        answers.append(t)
    return answers


def metadata_mask(pool: Pool, spec: TargetSpec) -> np.ndarray:
    """Rows of the pool that the metadata spec names (bool [n])."""
    t = pool.table
    if spec.kind == "tasks":
        names = set(spec.values)
        tasks = t.column("task").to_pylist()
        known = set(tasks) | {x.split("/")[0] for x in tasks}
        missing = sorted(names - known)
        if missing:
            raise CoretuneError(f"no pool rows of task(s) {', '.join(missing)}", field="target")
        return np.fromiter((x in names or x.split("/")[0] in names for x in tasks), bool,
                           len(tasks))
    if spec.kind == "family":
        if "family" not in t.column_names:
            raise CoretuneError("the pool has no 'family' column", path=pool.source,
                                field="target")
        fam = np.asarray(t.column("family").to_pylist(), dtype=object)
        mask = fam == spec.values[0]
        if not mask.any():
            raise CoretuneError(f"no pool rows of family '{spec.values[0]}'", field="target")
        return mask
    if spec.kind == "keywords":
        if "keywords" not in t.column_names:
            raise CoretuneError("the pool has no 'keywords' column", path=pool.source,
                                field="target")
        words = set(spec.values)
        kws = t.column("keywords").to_pylist()
        mask = np.fromiter((bool(words.intersection(k or ())) for k in kws), bool, len(kws))
        if not mask.any():
            raise CoretuneError(f"no pool rows with keyword(s) {', '.join(spec.values)}",
                                field="target")
        return mask
    raise ValueError(f"not a metadata spec: {spec}")


def target_mask(target: dict, tasks, labels: np.ndarray) -> np.ndarray:
    """The target rows (bool [n]) that a `TargetClusters.summary()` (target.json) describes,
    given each row's task and cluster."""
    if target.get("tasks") is not None:
        return np.isin(np.asarray(tasks, dtype=object), np.asarray(target["tasks"], object))
    return np.isin(labels, np.asarray(target["clusters"], np.int64))


FitClusters = Callable[..., KMeansClusters]  # (x, k, **KMeansClusters settings) -> fitted


def _fit_here(x: np.ndarray, k: int, **kw) -> KMeansClusters:
    return KMeansClusters(k, **kw).fit(x)


class TargetClusters:
    """Pick the target clusters of a fitted `KMeansClusters` for a target spec.

    After `fit`: `chosen_` (bool [k], the rule's clusters), `table_` (one row per cluster:
    size, top tasks, evidence, chosen, why), `mask_` (bool [n], the target rows: rows in the
    chosen clusters, or with `votes` > 1 the rows most runs keep (`row_votes_`: runs keeping
    each row), then with `by_task` the task step (`task_step`: `tasks_` the tasks kept whole,
    `task_votes_` each task's share inside and step), `clusters_` (sorted ids of the clusters
    holding target rows), `rule_` (the rule that decided) and `cut_` (the auto rule's
    estimate), and when the pool has a `family` column `recall_`, `precision_`,
    `recall_by_task_` against `family == reference_`; `n_probes_`, `probe_sets_` and
    `probe_vectors_` for probing specs.
    """

    def __init__(self, spec: str | TargetSpec = _DEFAULT.spec, *, rule: str = _DEFAULT.rule,
                 threshold: float | None = None, top: int | None = None,
                 n_probes: int = _DEFAULT.probes, min_hits: int = 2, seed: int = 0,
                 reference: str | None = None, share: float | None = None,
                 by_task: bool = _DEFAULT.by_task, votes: int = _DEFAULT.votes):
        settings = {"spec": str(spec), "rule": rule, "threshold": threshold, "top": top,
                    "probes": n_probes, "share": share, "by_task": by_task, "votes": votes}
        try:  # the settings' rules, as a config's target section is checked
            checked = TargetConfig.model_validate(settings)
        except ValidationError as e:
            err = e.errors()[0]
            raise CoretuneError(err["msg"].removeprefix("Value error, "),
                                field=".".join(["target", *map(str, err["loc"])])) from None
        self._use(checked, seed=seed, min_hits=min_hits, reference=reference)

    @classmethod
    def from_config(cls, t: TargetConfig, seed: int, **kw) -> TargetClusters:
        """The finder of a validated `target:` section; `seed`: the clustering's (the probe
        sample's and the votes' first)."""
        self = cls.__new__(cls)
        self._use(t, seed=seed, **kw)
        return self

    def _use(self, t: TargetConfig, *, seed: int, min_hits: int = 2,
             reference: str | None = None) -> None:
        self.spec = parse_target(t.spec)
        self.rule, self.threshold, self.top, self.n_probes = t.rule, t.threshold, t.top, t.probes
        self.share, self.by_task, self.votes = t.share, t.by_task, t.votes
        self.min_hits, self.seed, self.reference = min_hits, seed, reference

    def fit(self, clusters: KMeansClusters, pool: Pool, embedder=None,
            x: np.ndarray | None = None, fit_clusters: FitClusters | None = None
            ) -> TargetClusters:
        """`embedder` (an `coretune.embed.Embedder` with the pool's encoder) is needed for
        probing specs; `x` (the rows `clusters` was fitted on) for `votes` > 1, whose further
        clusterings `fit_clusters(x, k, **settings)` makes (a backend's; default: here)."""
        labels = clusters.labels_
        if len(labels) != len(pool):
            raise CoretuneError(f"clusters cover {len(labels)} rows, the pool has {len(pool)}",
                                field="clusters")
        if self.votes > 1 and x is None:
            raise CoretuneError(f"votes={self.votes} clusters the rows again: give the "
                                "embeddings (fit(..., x=)) or set votes to 1", field="target.votes")
        if self.votes > 1 and len(x) != len(labels):
            raise CoretuneError(f"embeddings have {len(x)} rows, the clusters {len(labels)}",
                                field="target.votes")
        k = clusters.k
        sizes = np.bincount(labels, minlength=k)
        self.rule_ = ("top" if self.top is not None else
                      "threshold" if self.threshold is not None else self.rule)
        self.cut_: dict = {}
        if self.spec.probing:
            evidence, share, chosen, why = self._probe(clusters, embedder, sizes)
        else:
            evidence, share, chosen, why = self._metadata(pool, labels, k, sizes)
        if not chosen.any():
            raise CoretuneError(f"no cluster passes the target rule for '{self.spec}' "
                                "(lower --threshold or use --top)", field="target")
        self.chosen_ = chosen
        self.mask_ = chosen[labels]
        self.row_votes_ = None
        if self.votes > 1:
            self.mask_ = self._vote(clusters, x, fit_clusters or _fit_here)
            if not self.mask_.any():
                raise CoretuneError(f"no row is kept by most of the {self.votes} runs for "
                                    f"'{self.spec}' (set votes to 1)", field="target.votes")
        self.tasks_ = None
        if self.by_task:
            self.mask_, self.task_votes_ = task_step(self.mask_, pool.column("task"))
            self.tasks_ = sorted(t for t, v in self.task_votes_.items() if v["step"] == "kept")
        self.clusters_ = np.unique(labels[self.mask_]).tolist()
        self._evaluate(pool)
        self.table_ = self._table(pool, labels, k, sizes, evidence, share, chosen, why)
        return self

    def probe_vectors(self, clusters, embedder) -> tuple[np.ndarray, list[str]]:
        """The probe prompts' embeddings (checked against the clusters' dimension) and the
        set each came from. Also the target examples of methods that read them (rds)."""
        if embedder is None:
            raise CoretuneError(f"target '{self.spec}' probes with embeddings: give an embedder",
                                field="target")
        prompts, sets = self.probe_prompts()
        vecs = embedder.embed(prompts)
        d = clusters.centroids_.shape[1]
        if vecs.ndim != 2 or vecs.shape[1] != d:
            raise CoretuneError(f"probe embeddings have size {vecs.shape[-1]}, the pool's "
                                f"clusters {d} (embed probes with the pool's encoder)",
                                path=self.spec.path, field="target")
        return vecs, sets

    def probe_prompts(self) -> tuple[list[str], list[str]]:
        """The probe prompts and the set each came from."""
        if not self.spec.probing:
            raise CoretuneError(f"target '{self.spec}' has no example prompts (a probing "
                                "target has: nli or probe:FILE.jsonl)", field="target")
        if self.spec.kind == "nli":
            return nli_probe_prompts(self.n_probes, self.seed)
        prompts = read_probe_file(self.spec.path)
        return prompts, [self.spec.path.name] * len(prompts)

    def probe_answers(self) -> list[str]:
        """Each probe's answer, '' where none. The `nli` probes are evaluation prompts without
        their labels, so never with answers; a probe file's lines may give a `target`."""
        if self.spec.kind == "nli":
            return [""] * len(self.probe_prompts()[0])
        return read_probe_answers(self.spec.path)

    def _probe(self, clusters, embedder, sizes):
        vecs, sets = self.probe_vectors(clusters, embedder)
        hits_of = clusters.predict(vecs)
        k, n_probes = clusters.k, len(vecs)
        hits = np.bincount(hits_of, minlength=k)
        share = hits / n_probes
        self.n_probes_ = n_probes
        self.probe_vectors_ = vecs
        self.probe_sets_ = dict(sorted(Counter(sets).items()))
        self.probe_hits_by_set_ = {
            s: np.bincount(hits_of[np.asarray(sets) == s], minlength=k) for s in self.probe_sets_
        }
        # Probe density: share of probes / share of pool rows. A cluster of the target
        # family gets more probes than its size says; elsewhere only strays land.
        density = share / np.maximum(sizes / sizes.sum(), 1e-12)
        chosen, self.cut_ = self._probe_cut(hits, sizes)
        why = [self._probe_why(c, hits, share, sizes, density, n_probes) if chosen[c] else ""
               for c in range(k)]
        return hits, share, chosen, why

    def _probe_cut(self, hits, sizes) -> tuple[np.ndarray, dict]:
        """The rule on one clustering's probe hits: chosen clusters and the auto estimate."""
        k = len(sizes)
        chosen = np.zeros(k, bool)
        if self.rule_ == "top":
            order = np.lexsort((np.arange(k), -hits))[: self.top]
            chosen[order[hits[order] > 0]] = True
        elif self.rule_ == "auto":
            return auto_cut(hits, sizes, min_hits=self.min_hits, pi=self.share)
        elif self.rule_ == "coverage":
            return coverage_cut(hits, sizes, min_hits=self.min_hits), {"coverage": COVERAGE}
        else:
            floor = PROBE_DENSITY if self.threshold is None else self.threshold
            density = hits / hits.sum() / np.maximum(sizes / sizes.sum(), 1e-12)
            chosen = (hits >= self.min_hits) & (density >= floor)
        return chosen, {}

    def _probe_why(self, c, hits, share, sizes, density, n_probes) -> str:
        if self.rule_ == "top":
            return f"top {self.top} by probe hits ({hits[c]}/{n_probes})"
        text = (f"{hits[c]} probe hits: {share[c]:.1%} of probes on "
                f"{sizes[c] / sizes.sum():.1%} of rows (density {density[c]:.2f}")
        if self.rule_ == "auto":
            return text + f"; auto cut, est. F1 {self.cut_['estimated_f1']:.2f})"
        if self.rule_ == "coverage":
            return text + f"; densest clusters holding {COVERAGE:.0%} of probes)"
        floor = PROBE_DENSITY if self.threshold is None else self.threshold
        return text + f" >= {floor:g})"

    def _metadata(self, pool, labels, k, sizes):
        self.metadata_mask_ = mask = metadata_mask(pool, self.spec)
        rows = np.bincount(labels[mask], minlength=k)
        chosen, self.cut_, share, label = self._metadata_cut(rows, sizes, float(mask.sum()))
        why = [f"{share[c]:.0%} of rows match; {label}" if chosen[c] else "" for c in range(k)]
        return rows, share, chosen, why

    def _metadata_cut(self, rows, sizes, total) -> tuple[np.ndarray, dict, np.ndarray, str]:
        """The rule on one clustering's matching rows per cluster: chosen clusters, the cut,
        each cluster's share of matching rows and why (for the table)."""
        k = len(sizes)
        share = np.divide(rows, sizes, out=np.zeros(k), where=sizes > 0)
        chosen, cut = np.zeros(k, bool), {}
        if self.rule_ == "top":
            keep = np.lexsort((np.arange(k), -share))[: self.top]
            chosen[keep[rows[keep] > 0]] = True
            label = f"top {self.top} by share of {self.spec} rows"
        elif self.rule_ == "auto":  # exact F1 against the named rows, best prefix by share
            order = density_order(rows, sizes, 1)
            f1 = prefix_f1(order, sizes, rows, total)
            j = int(np.argmax(f1))
            chosen[order[: j + 1]] = True
            cut = {"f1": round(float(f1[j]), 4)}
            label = f"auto cut by share of {self.spec} rows (F1 {f1[j]:.2f})"
        elif self.rule_ == "coverage":
            chosen, cut = coverage_cut(rows, sizes, min_hits=1), {"coverage": COVERAGE}
            label = f"clusters holding {COVERAGE:.0%} of {self.spec} rows"
        else:
            threshold = METADATA_SHARE if self.threshold is None else self.threshold
            chosen = (rows > 0) & (share >= threshold)
            label = f"{self.spec} rows >= {threshold:.0%}"
        return chosen, cut, share, label

    def _vote(self, clusters, x, fit_clusters: FitClusters) -> np.ndarray:
        """Rows kept by a strict majority of `votes` runs of the rule: on `clusters` (its
        choice is `mask_`) and on votes - 1 more k-means fits of the same rows, seeds
        seed + 1, ... (same k, sample size, iterations)."""
        count = self.mask_.astype(np.int32)
        for i in range(1, self.votes):
            km = fit_clusters(x, clusters.k, seed=clusters.seed + i, niter=clusters.niter,
                              sample_size=clusters.sample_size, spherical=clusters.spherical)
            sizes = np.bincount(km.labels_, minlength=km.k)
            if self.spec.probing:
                hits = np.bincount(km.predict(self.probe_vectors_), minlength=km.k)
                chosen = self._probe_cut(hits, sizes)[0]
            else:
                rows = np.bincount(km.labels_[self.metadata_mask_], minlength=km.k)
                chosen = self._metadata_cut(rows, sizes, float(self.metadata_mask_.sum()))[0]
            count += chosen[km.labels_]
        self.row_votes_ = count
        return count * 2 > self.votes

    def _evaluate(self, pool) -> None:
        self.reference_ = self.reference or (self.spec.values[0] if self.spec.kind == "family"
                                             else "nli")
        self.recall_ = self.precision_ = None
        self.recall_by_task_: dict[str, float] = {}
        if "family" not in pool.table.column_names:
            return
        ref = np.asarray(pool.table.column("family").to_pylist(), dtype=object) == self.reference_
        if not ref.any():
            return
        inside = self.mask_
        self.recall_ = float((ref & inside).sum() / ref.sum())
        self.precision_ = float((ref & inside).sum() / max(1, inside.sum()))
        tasks = np.asarray(pool.table.column("task").to_pylist(), dtype=object)
        for task in sorted(set(tasks[ref].tolist())):
            rows = ref & (tasks == task)
            self.recall_by_task_[task] = float((rows & inside).sum() / rows.sum())

    def _table(self, pool, labels, k, sizes, evidence, share, chosen, why) -> pa.Table:
        tasks = pool.table.column("task").to_pylist()
        members = cluster_members(labels, k)
        fam = (np.asarray(pool.table.column("family").to_pylist(), dtype=object)
               if "family" in pool.table.column_names else None)
        top_tasks, ref_share = [], []
        for c in range(k):
            counts = Counter(tasks[i] for i in members[c]).most_common(3)
            top_tasks.append([f"{t} {n / max(1, sizes[c]):.0%}" for t, n in counts])
            if fam is not None:
                ref_share.append(float((fam[members[c]] == self.reference_).mean())
                                 if sizes[c] else 0.0)
        name = "probe_hits" if self.spec.probing else "target_rows"
        cols = {"cluster": pa.array(range(k), pa.int64()), "size": pa.array(sizes, pa.int64()),
                "top_tasks": pa.array(top_tasks, pa.list_(pa.string())),
                name: pa.array(evidence, pa.int64()),
                name.replace("hits", "share").replace("rows", "share"): pa.array(share,
                                                                                 pa.float64())}
        if fam is not None:
            cols[f"{self.reference_}_share"] = pa.array(ref_share, pa.float64())
        cols["chosen"] = pa.array(chosen)
        cols["why"] = pa.array(why, pa.string())
        return pa.table(cols)

    def summary(self) -> dict:
        """JSON-able summary: spec, chosen clusters, rows covered, recall/precision."""
        out = {"target": str(self.spec), "rule": self.rule_, "cut": self.cut_,
               "clusters": self.clusters_,
               "rows": int(self.mask_.sum()), "recall": self.recall_,
               "precision": self.precision_, "reference_family": self.reference_,
               "recall_by_task": self.recall_by_task_}
        if self.row_votes_ is not None:  # how much the runs agree
            v = self.row_votes_
            out["votes"] = {"runs": self.votes, "rows_any": int((v > 0).sum()),
                            "rows_majority": int((v * 2 > self.votes).sum()),
                            "rows_all": int((v == self.votes).sum())}
        if self.tasks_ is not None:  # the largest votes: check them on a one-task pool
            out["tasks"] = self.tasks_
            out["task_votes"] = dict(list(self.task_votes_.items())[:10])
        if self.spec.probing:
            out["probes"] = self.n_probes_
            out["probe_sets"] = self.probe_sets_
        return out
