"""Target-cluster detection on a small real pool (BIG-bench + RTE/CB), real MiniLM embeddings."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
from conftest import small_pool

from coretune.cluster import KMeansClusters
from coretune.data.pool import Pool
from coretune.embed import Embedder, make_encoder
from coretune.errors import CoretuneError
from coretune.target import TargetClusters, density_order, nli_probe_prompts, parse_target


def one(spec="nli", **kw) -> TargetClusters:
    """The rule on one clustering, its clusters whole (votes 1, no task step) unless `kw`
    says otherwise."""
    return TargetClusters(spec, **{"votes": 1, "by_task": False, **kw})


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    pool = small_pool()
    emb = Embedder(make_encoder("minilm", max_tokens=128, device="cpu"),
                   cache_dir=tmp_path_factory.getbasetemp() / "embed-cache", quiet=True)
    km = KMeansClusters(12, seed=0).fit(emb.embed(pool.prompts))
    return pool, km, emb


def test_parse_target_specs(tmp_path):
    assert parse_target("nli").kind == "nli"
    assert parse_target("tasks:rte, cb").values == ("rte", "cb")
    assert parse_target("family:nli").values == ("nli",)
    assert parse_target("keywords:logical reasoning").values == ("logical reasoning",)
    probe = tmp_path / "p.jsonl"
    probe.write_text('{"prompt": "Does A entail B?"}\n')
    assert parse_target(f"probe:{probe}").path == probe
    for bad in ("sentiment", "tasks:", "family:a,b", "nli:x", ""):
        with pytest.raises(CoretuneError, match="target"):
            parse_target(bad)
    with pytest.raises(CoretuneError, match="probe file not found"):
        parse_target(f"probe:{tmp_path / 'missing.jsonl'}")


def test_nli_probes_are_seeded_unlabelled_and_cover_every_eval_set():
    prompts, sets = nli_probe_prompts(50, seed=0)
    assert (prompts, sets) == nli_probe_prompts(50, seed=0)
    assert prompts != nli_probe_prompts(50, seed=1)[0]
    assert sorted(set(sets)) == ["anli_r1", "anli_r2", "anli_r3", "cb", "rte"]
    assert all(sets.count(s) == 10 for s in set(sets)) and all(p.strip() for p in prompts)


def test_probing_finds_the_nli_clusters(data):
    pool, km, emb = data
    # The old rule (density 0.25) favours recall; 0.5 is the precise setting. On this tiny
    # pool (12 clusters of ~27 rows) one mixed cluster separates the two.
    loose = one("nli", rule="density", n_probes=100, seed=0).fit(km, pool, emb)
    assert loose.n_probes_ == 100 and loose.recall_ >= 0.9, loose.summary()
    # The automatic cut takes a prefix of the density ranking, no threshold involved.
    auto = one("nli", n_probes=100, seed=0).fit(km, pool, emb)
    hits = np.asarray(auto.table_.column("probe_hits").to_pylist())
    order = density_order(hits, np.bincount(km.labels_, minlength=km.k), auto.min_hits)
    assert sorted(order[: len(auto.clusters_)].tolist()) == auto.clusters_
    assert auto.precision_ >= loose.precision_ and auto.recall_ >= 0.7, auto.summary()
    t = one("nli", n_probes=100, threshold=0.5, seed=0).fit(km, pool, emb)
    assert set(t.clusters_) <= set(loose.clusters_)
    assert t.recall_ >= 0.8 and t.precision_ >= 0.8, t.summary()
    table = t.table_.to_pylist()
    chosen = [r for r in table if r["chosen"]]
    assert [r["cluster"] for r in chosen] == t.clusters_
    assert all("probe hits" in r["why"] for r in chosen)
    assert not any(r["why"] for r in table if not r["chosen"])
    assert t.mask_.sum() == sum(r["size"] for r in chosen)
    assert set(t.recall_by_task_) >= {"rte"}
    again = one("nli", n_probes=100, threshold=0.5, seed=0).fit(km, pool, emb)
    assert again.clusters_ == t.clusters_


def test_by_task_keeps_most_inside_tasks_whole_drops_few_inside_leaves_the_rest(data):
    from coretune.config import RunConfig
    from coretune.run.stages import select_subset
    from coretune.target.cut import task_step

    # a: 2 of 3 in (kept whole); b: 1 of 2, a tie (left); c: 1 of 4 (dropped); d: 1 of 3,
    # exactly a third (left)
    inside = np.array([1, 1, 0, 1, 0, 0, 0, 1, 0, 1, 0, 0], bool)
    tasks = list("aaabbccccddd")
    rows, record = task_step(inside, tasks)
    assert rows.tolist() == [1, 1, 1, 1, 0, 0, 0, 0, 0, 1, 0, 0]
    assert {t: v["step"] for t, v in record.items()} == {
        "a": "kept", "b": "left", "c": "dropped", "d": "left"}
    assert list(record) == ["a", "b", "c", "d"]  # most rows inside first, ties by name
    # the task with the most rows inside is never dropped (a: 2 of 7), the others are (b: 1 of 4)
    rows, record = task_step(np.array([1, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0], bool), list("aaaaaaabbbb"))
    assert rows.tolist() == [1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    assert {t: v["step"] for t, v in record.items()} == {"a": "left", "b": "dropped"}
    pool, km, emb = data
    plain = one("nli").fit(km, pool, emb)
    t = one("nli", by_task=True).fit(km, pool, emb)
    tasks = np.asarray(pool.column("task"), dtype=object)
    inside = plain.mask_
    for task in set(tasks.tolist()):
        rows = tasks == task
        share = inside[rows].mean()
        assert (task in t.tasks_) == (share > 0.5), task
        left = share >= 1 / 3 or task == next(iter(t.task_votes_))  # most rows inside
        want = rows if share > 0.5 else (inside & rows) if left else np.zeros_like(rows)
        assert np.array_equal(t.mask_ & rows, want), task
    assert {"rte", "cb"} <= set(t.tasks_) and t.summary()["tasks"] == t.tasks_
    votes = t.summary()["task_votes"]  # the largest votes first, as recorded
    assert list(votes) == list(t.task_votes_)[:10] and len(votes) == min(10, len(t.task_votes_))
    held = [round(v["rows"] * v["inside"]) for v in votes.values()]  # rows inside
    assert held == sorted(held, reverse=True)
    for task, v in votes.items():
        rows = tasks == task
        assert v["rows"] == rows.sum()
        assert v["inside"] == pytest.approx(inside[rows].mean(), abs=1e-4)
        assert (v["step"] == "kept") == (task in t.tasks_)
    assert np.array_equal(t.chosen_, plain.chosen_)  # the cut is the same; only rows differ
    assert t.clusters_ == np.unique(km.labels_[t.mask_]).tolist()
    # selection never leaves the task-decided rows, even in clusters the cut did not choose
    cfg = RunConfig(name="t", select={"method": "kcenter", "budget": "40"})
    x = emb.embed(pool.prompts)
    res = select_subset(cfg.select, cfg.backend, pool, 0, x, km, t.clusters_, embedder=emb,
                        mask=t.mask_)
    assert len(res) == 40 and t.mask_[res.indices].all()


@pytest.mark.parametrize("spec", ["nli", "family:nli"])
def test_votes_keep_the_rows_most_clusterings_keep(data, spec):
    pool, km, emb = data
    x = emb.embed(pool.prompts)
    kw = {"n_probes": 100} if spec == "nli" else {}
    # what each clustering's rule keeps alone: the cluster stage's (seed 0), then seeds 1, 2
    alone = [one(spec, **kw).fit(KMeansClusters(12, seed=s).fit(x), pool, emb).mask_
             for s in range(3)]
    assert np.array_equal(alone[0], one(spec, **kw).fit(km, pool, emb).mask_)
    t = one(spec, votes=3, **kw).fit(km, pool, emb, x)
    count = np.sum(alone, axis=0)
    assert np.array_equal(t.row_votes_, count)
    assert np.array_equal(t.mask_, count >= 2)
    assert t.summary()["votes"] == {"runs": 3, "rows_any": int((count > 0).sum()),
                                    "rows_majority": int((count >= 2).sum()),
                                    "rows_all": int((count == 3).sum())}
    assert t.clusters_ == np.unique(km.labels_[t.mask_]).tolist()
    again = one(spec, votes=3, **kw).fit(km, pool, emb, x)
    assert np.array_equal(again.mask_, t.mask_)  # same seeds, same rows
    assert "votes" not in one(spec, **kw).fit(km, pool, emb).summary()
    with pytest.raises(CoretuneError, match="votes=3 clusters the rows again"):
        one(spec, votes=3, **kw).fit(km, pool, emb)
    with pytest.raises(CoretuneError, match="embeddings have 5 rows"):
        one(spec, votes=3, **kw).fit(km, pool, emb, x[:5])
    with pytest.raises(CoretuneError, match="field 'target.votes': .*greater than or equal to 1"):
        one(spec, votes=0)


def test_metadata_rule(data):
    pool, km, _ = data
    t = one("tasks:rte,cb").fit(km, pool)
    tasks = np.asarray(pool.column("task"), dtype=object)
    for c in t.clusters_:
        assert np.isin(tasks[km.labels_ == c], ["rte", "cb"]).mean() >= 0.5
    assert t.recall_ >= 0.8
    fam = one("family:nli", threshold=0.9).fit(km, pool)
    family = np.asarray(pool.column("family"), dtype=object)
    for c in fam.clusters_:
        assert (family[km.labels_ == c] == "nli").mean() >= 0.9
    top = one("family:nli", top=1).fit(km, pool)
    assert len(top.clusters_) == 1


def test_user_probe_file(data, tmp_path):
    pool, km, emb = data
    from coretune.data.sources import eval_datasets

    rte = eval_datasets()["rte"]
    template = list(rte.load_templates())[0]
    lines = [json.dumps({"prompt": template.render({**row, "label": -1}).prompt})
             for row in rte.rows()[:20]]
    path = tmp_path / "probes.jsonl"
    path.write_text("\n".join(lines) + "\n")
    t = one(f"probe:{path}").fit(km, pool, emb)
    tasks = np.asarray(pool.column("task"), dtype=object)
    assert all((tasks[km.labels_ == c] == "rte").mean() > 0.5 for c in t.clusters_)
    path.write_text(lines[0] + "\n" + '{"text": "no prompt field"}\n')
    with pytest.raises(CoretuneError, match=r"probes.jsonl:2: field 'prompt'"):
        one(f"probe:{path}").fit(km, pool, emb)


def test_errors(data):
    pool, km, emb = data
    bare = Pool(pool.table.drop_columns(["family"]))
    with pytest.raises(CoretuneError, match="no 'family' column"):
        one("family:nli").fit(km, bare)
    with pytest.raises(CoretuneError, match="no pool rows of task"):
        one("tasks:sst2").fit(km, pool)
    with pytest.raises(CoretuneError, match="no cluster passes"):
        one("tasks:rte", threshold=1.0).fit(km, pool.take(np.arange(len(pool))))
    with pytest.raises(CoretuneError, match="embedder"):
        one("nli").fit(km, pool)
    with pytest.raises(CoretuneError, match="clusters cover"):
        one("tasks:rte").fit(km, Pool(pa.Table.from_batches(
            pool.table.slice(0, 10).to_batches())))
    # Without a family column there is nothing to score against: no recall, still a choice.
    t = one("tasks:rte,cb").fit(km, bare)
    assert t.recall_ is None and t.clusters_


class LookupEncoder:
    """A real Encoder over a constructed geometry: each prompt's vector is looked up."""

    name, pooling, max_tokens = "lookup", "none", 0

    def __init__(self, vectors: dict[str, np.ndarray]):
        self.vectors = vectors
        self.dim = len(next(iter(vectors.values())))

    def encode(self, texts, batch_size=64, progress=None):
        return np.stack([self.vectors[t] for t in texts]).astype(np.float32)


def blob_pool(tmp_path, n_blobs=20, per_blob=50, target_blobs=(3, 11), strays=(7, 7)):
    """`n_blobs` tight, well-separated blobs; rows of `target_blobs` are family 'goal' (a
    known share of the pool); probes: 20 from each target blob + one per `strays` blob."""
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((n_blobs, 32))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)

    def point(b):
        v = centres[b] + 0.02 * rng.standard_normal(32)
        return v / np.linalg.norm(v)

    vectors, records = {}, []
    for b in range(n_blobs):
        for i in range(per_blob):
            prompt = f"row {b}-{i}"
            vectors[prompt] = point(b)
            records.append({"uid": prompt, "task": f"task{b}", "prompt": prompt, "target": "x",
                            "family": "goal" if b in target_blobs else "other"})
    probes = [f"probe {b}-{i}" for b in target_blobs for i in range(20)]
    probes += [f"stray {b}-{i}" for i, b in enumerate(strays)]
    for p in probes:
        vectors[p] = point(int(p.split()[1].split("-")[0]))
    path = tmp_path / "probes.jsonl"
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in probes))
    pool = Pool.from_records(records)
    emb = Embedder(LookupEncoder(vectors), cache_dir=tmp_path / "cache", quiet=True)
    km = KMeansClusters(n_blobs, seed=3).fit(emb.embed(pool.prompts))
    assert (np.bincount(km.labels_) == per_blob).all()  # one cluster per blob (seed 3 does)
    return pool, km, emb, path


def test_auto_cut_finds_a_known_target_share_without_tuning(tmp_path):
    pool, km, emb, path = blob_pool(tmp_path)
    goal = np.asarray(pool.column("family"), dtype=object) == "goal"
    assert goal.mean() == pytest.approx(0.10)
    auto = one(f"probe:{path}", reference="goal").fit(km, pool, emb)
    assert auto.rule_ == "auto"
    assert np.array_equal(auto.mask_, goal), auto.summary()  # exactly the 10% target rows
    assert auto.recall_ == 1.0 and auto.precision_ == 1.0
    # pi (the target share) from the densest clusters holding half the probes: both target
    # clusters, 10% of the rows for 40 of the 42 probes
    assert auto.cut_["pi"] == pytest.approx(0.10 / (40 / 42), rel=1e-3)
    # The old rule keeps the cluster with 2 stray probes (density 0.95 >= 0.25).
    old = one(f"probe:{path}", rule="density", reference="goal").fit(km, pool, emb)
    assert len(old.clusters_) == 3 and old.precision_ == pytest.approx(2 / 3)
    # coverage: densest clusters until they hold 90% of the probes (40 of 42 here)
    cov = one(f"probe:{path}", rule="coverage", reference="goal").fit(km, pool, emb)
    assert np.array_equal(cov.mask_, goal)
    # a known share replaces the estimate, and the target stage's key keeps its old value
    # without one
    known = one(f"probe:{path}", reference="goal", share=0.1).fit(km, pool, emb)
    assert np.array_equal(known.mask_, goal) and known.cut_["pi"] == 0.1 and known.cut_["pi_given"]
    with pytest.raises(CoretuneError, match="target.share"):
        one(f"probe:{path}", share=0.0)
    # threshold and top stay overrides of the automatic rule
    assert one(f"probe:{path}", threshold=0.25).fit(km, pool, emb).rule_ == "threshold"
    assert len(one(f"probe:{path}", top=1).fit(km, pool, emb).clusters_) == 1


def test_auto_cut_stops_early_when_probes_pile_up_and_a_known_share_fixes_it():
    # 4 target clusters of 10 hold 40% of the rows, but the probes pile into one of them
    # (as ANLI probes do on the NLI-heavy pool): pi is estimated from that cluster alone.
    from coretune.target.cut import auto_cut

    sizes = np.full(10, 100)
    hits = np.array([60, 20, 10, 10, 2, 2, 0, 0, 0, 0])
    est, info = auto_cut(hits, sizes)
    assert info["pi"] == pytest.approx(0.1 / (60 / 104), rel=1e-4)
    assert np.flatnonzero(est).tolist() == [0]
    known, info = auto_cut(hits, sizes, pi=0.4)
    assert np.flatnonzero(known).tolist() == [0, 1, 2, 3] and info["pi"] == 0.4


def test_auto_cut_on_a_larger_share(tmp_path):
    pool, km, emb, path = blob_pool(tmp_path, target_blobs=(1, 4, 9, 12, 15, 18), strays=())
    auto = one(f"probe:{path}", reference="goal").fit(km, pool, emb)
    assert auto.mask_.mean() == pytest.approx(0.30) and auto.precision_ == 1.0


def test_metadata_auto_cut_on_a_non_nli_family(data):
    pool, km, _ = data
    family = np.asarray(pool.column("family"), dtype=object)
    name = next(f for f in ("logic", "math", "commonsense") if (family == f).sum() >= 5)
    t = one(f"family:{name}").fit(km, pool)
    assert t.rule_ == "auto" and t.reference_ == name
    # The auto cut is the F1-best set of clusters ranked by share: no other share cut beats it.
    f1 = 2 * t.recall_ * t.precision_ / (t.recall_ + t.precision_)
    assert f1 == pytest.approx(t.cut_["f1"], abs=1e-4)
    for thr in (0.1, 0.25, 0.5, 0.75):
        try:
            other = one(f"family:{name}", threshold=thr).fit(km, pool)
        except CoretuneError:
            continue
        assert f1 >= 2 * other.recall_ * other.precision_ / (other.recall_ + other.precision_)


def test_metadata_auto_cut_exact_on_blobs(tmp_path):
    pool, km, _, _ = blob_pool(tmp_path)
    t = one("family:goal").fit(km, pool)
    assert np.array_equal(t.mask_, np.asarray(pool.column("family"), dtype=object) == "goal")
    # one task per blob: the task step keeps the target tasks whole and nothing else
    by_task = one("family:goal", by_task=True).fit(km, pool)
    assert np.array_equal(by_task.mask_, t.mask_) and by_task.tasks_ == ["task11", "task3"]
    # ten tasks spread over every blob, each with 10% of its rows inside: all are dropped but
    # the one with most rows inside (a tie: the first name), which stays as clustered
    names = np.array([f"t{i % 10}" for i in range(len(pool))])
    mixed = Pool(pool.table.set_column(pool.table.schema.get_field_index("task"), "task",
                                       pa.array(names)))
    spread = one("family:goal", by_task=True).fit(km, mixed)
    assert np.array_equal(spread.mask_, t.mask_ & (names == "t0")) and spread.tasks_ == []
    assert [v["step"] for v in spread.task_votes_.values()] == ["left"] + ["dropped"] * 9


def test_probe_errors(tmp_path, data):
    pool, km, _ = data
    other = {"a": np.ones(8, np.float32) / np.sqrt(8)}
    emb = Embedder(LookupEncoder(other), cache_dir=tmp_path / "cache", quiet=True)
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "a"}\n')
    with pytest.raises(CoretuneError, match="probe embeddings have size 8"):
        one(f"probe:{path}").fit(km, pool, emb)
    path.write_text("")
    with pytest.raises(CoretuneError, match="empty file"):
        one(f"probe:{path}").fit(km, pool, emb)
    with pytest.raises(CoretuneError, match="field 'target.rule'"):
        one("nli", rule="magic")
