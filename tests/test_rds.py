"""RDS+ round-robin selection on geometries with a known answer, and against the rule
written out plainly (every query pops its next row in turn; a taken row spends the turn)."""

import numpy as np
import pytest

from coretune.errors import CoretuneError
from coretune.select.rds import rds_order


def _unit(angles_deg):
    a = np.radians(np.asarray(angles_deg, dtype=np.float64))
    return np.stack([np.cos(a), np.sin(a)], axis=1).astype(np.float32)


def _popping(x, q, budget):
    """The rule, one pop at a time over each query's whole ranking (stable: lowest index
    first on ties)."""
    sims = q.astype(np.float32) @ x.astype(np.float32).T
    queue = [sorted(range(len(x)), key=lambda j, s=s: -s[j]) for s in sims]
    picked = []
    while len(picked) < budget:
        for ranking in queue:
            row = ranking.pop(0)
            if row not in picked:
                picked.append(row)
            if len(picked) == budget:
                break
    return picked


def test_a_taken_row_spends_the_turn():
    # rows at 45, 10, 80 deg; queries at 30 (ranks 45, 10, 80) and 60 (ranks 45, 80, 10):
    # the 60-deg query pops 45, already taken, and its turn ends; 30 then takes 10
    x, q = _unit([45, 10, 80]), _unit([30, 60])
    assert rds_order(x, q, 2).tolist() == [0, 1]
    assert rds_order(x, q, 3).tolist() == [0, 1, 2]


def test_rounds_that_add_nothing_and_exhausted_rankings_end():
    # two queries ranking the same two rows in opposite orders: round 2 offers only taken rows
    x, q = _unit([0, 90, 45]), _unit([-10, 100])
    assert rds_order(x, q, 3).tolist() == [0, 1, 2]
    # identical queries: each round adds one row, the rankings run n deep (past the budget
    # the first ranking covered)
    x = _unit([0, 20, 40, 60, 80])
    assert rds_order(x, _unit([0, 0, 0]), 5).tolist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("kind", ["random", "clustered", "tied"])
def test_same_rows_as_the_rule_written_out(kind):
    rng = np.random.default_rng({"random": 0, "clustered": 1, "tied": 2}[kind])
    if kind == "tied":  # 10 distinct rows, each 6 times: every ranking full of exact ties
        x = np.repeat(rng.normal(size=(10, 4)), 6, axis=0)
    elif kind == "clustered":
        x = np.repeat(rng.normal(size=(4, 8)), 30, axis=0) + 0.05 * rng.normal(size=(120, 8))
    else:
        x = rng.normal(size=(120, 8))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    q = x[rng.choice(len(x), 9, replace=False)] + 0.02 * rng.normal(size=(9, x.shape[1]))
    q = (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)
    for budget in (1, 9, 25, 60):
        assert rds_order(x, q, budget).tolist() == _popping(x, q, budget), budget


def test_round_robin_alternates_between_queries():
    # rows at 0, 5, 10 degrees near query A (0 deg); rows at 90, 85 near query B (90 deg)
    x = _unit([10, 90, 0, 85, 5, 45])
    q = _unit([0, 90])
    assert rds_order(x, q, 5).tolist() == [2, 1, 4, 3, 0]
    # B's third row is 45 deg, free: it takes it
    assert rds_order(x, q, 6).tolist() == [2, 1, 4, 3, 0, 5]


def test_prefix_property_and_no_duplicates():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = x[rng.choice(500, 7, replace=False)] + 0.1
    full = rds_order(x, q, 120)
    assert len(set(full.tolist())) == 120
    for b in (1, 7, 30, 119):
        assert rds_order(x, q, b).tolist() == full[:b].tolist()


def test_exact_ties_resolve_by_row_index():
    x = np.repeat(_unit([0, 30]), 4, axis=0)  # four copies of each row
    order = rds_order(x, _unit([0]), 5)
    assert order.tolist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("budget", [0, 7])
def test_budget_out_of_range(budget):
    with pytest.raises(CoretuneError, match="budget"):
        rds_order(_unit([0, 1, 2, 3, 4, 5]), _unit([0]), budget)


def test_dimension_mismatch():
    with pytest.raises(CoretuneError, match="dimensions"):
        rds_order(_unit([0, 1]), np.ones((1, 3), dtype=np.float32), 1)


def test_rds_method_takes_one_job_over_all_target_rows():
    """`method rds` through the selection engine: the target clusters' rows as one
    candidate set (not split per cluster), the target examples as queries."""
    from coretune.select import select_rows

    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    labels = rng.integers(0, 5, 300)
    q = x[[3, 50, 120]] + 0.05
    got = select_rows(x, labels, [1, 3], 20, "rds", seed=0, queries=q)
    rows = np.flatnonzero(np.isin(labels, [1, 3]))
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    assert got.indices.tolist() == rows[rds_order(x[rows], qn, 20)].tolist()
    assert (got.cluster == labels[got.indices]).all() and np.isnan(got.radius).all()
    assert np.isin(labels[got.indices], [1, 3]).all()
    # a prefix order through the engine too
    small = select_rows(x, labels, [1, 3], 7, "rds", seed=0, queries=q)
    assert small.indices.tolist() == got.indices[:7].tolist()
    with pytest.raises(CoretuneError, match="needs target examples"):
        select_rows(x, labels, [1, 3], 20, "rds", seed=0)
    with pytest.raises(CoretuneError, match="dimensions"):
        select_rows(x, labels, [1, 3], 20, "rds", seed=0, queries=q[:, :4])


# ---------------------------------------------------------------- select.encoder


def test_with_response_texts_split_back_whatever_the_prompt_holds():
    from coretune.embed import with_response
    from coretune.embed.encoders import split_response

    for prompt, response in [("12:ab", "c"), ("", "x"), ("p", ""), ("3:", ":9")]:
        assert split_response(with_response(prompt, response)) == (prompt, response)
    with pytest.raises(ValueError):
        split_response("no length")


def test_select_encoder_config():
    from coretune.config import RunConfig, validate

    with pytest.raises(CoretuneError, match="set it as select.encoder"):
        validate({"name": "c", "embed": {"encoder": "smollm2-weighted+response"}})
    with pytest.raises(CoretuneError, match="unknown encoder 'nope'"):
        validate({"name": "c", "select": {"encoder": "nope"}})
    assert RunConfig(name="c").select.encoder is None
    from coretune.run.stages import make_target_finder

    cfg = RunConfig(name="c", target={"spec": "tasks:rte"})
    with pytest.raises(CoretuneError, match="no example prompts"):  # rds needs probes
        make_target_finder(cfg.target, cfg.cluster).probe_prompts()


def test_select_encoder_is_in_the_select_key_only_where_the_method_reads_it(tmp_path):
    from coretune.config import RunConfig
    from coretune.run.pipeline import plan

    def select_stage(**select):
        cfg = RunConfig(name="k", select=select)
        return next(s for s in plan(cfg, tmp_path, 0) if s.name == "select")

    assert select_stage(method="rds").config == {"method": "rds", "budget": "0.5%",
                                                 "scope": "target", "seed": 0}
    own = "smollm2-weighted+response"
    assert select_stage(method="kcenter", encoder=own).key() == select_stage(
        method="kcenter").key()
    rds = select_stage(method="rds", encoder=own)
    assert rds.config["encoder"] == own and rds.key() != select_stage(method="rds").key()


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """The small real pool embedded, clustered and targeted (nli, 60 probes) with the
    default encoder, in a cache of its own."""
    from conftest import small_pool

    from coretune.config import section_config
    from coretune.run import stages

    cache = tmp_path_factory.mktemp("cache")
    cfg = section_config(name="t", cluster={"k": 12}, embed={"max_tokens": 128},
                         target={"probes": 60, "votes": 1},
                         select={"method": "rds", "budget": "15"})
    pool = small_pool()
    embedder = stages.make_embedder(cfg.embed, cfg.backend, quiet=True, cache_dir=cache)
    x = embedder.embed(pool.prompts)
    clusters = stages.fit_clusters(cfg.cluster, cfg.backend, x)
    mask = stages.find_targets(finder(cfg), cfg.backend, clusters, pool, embedder, x).mask_
    return cfg, pool, embedder, x, clusters, mask


def finder(cfg):
    from coretune.run import stages

    return stages.make_target_finder(cfg.target, cfg.cluster)


def select(cfg, pool, x, clusters, embedder, mask):
    from coretune.run import stages

    return stages.select_subset(cfg.select, cfg.backend, pool, 0, x, clusters,
                                embedder=embedder, mask=mask, finder=finder(cfg))


def _with(cfg, **select):
    return cfg.model_copy(update={"select": cfg.select.model_copy(update=select)})


@pytest.mark.parametrize("scope", ["target", "pool"])
def test_select_encoder_equal_to_the_embed_encoder_selects_the_same_rows(fitted, scope):

    cfg, pool, embedder, x, clusters, mask = fitted
    cfg = _with(cfg, scope=scope)
    plain = select(cfg, pool, x, clusters, embedder, mask)
    own = select(_with(cfg, encoder=cfg.embed.encoder), pool, x, clusters, embedder, mask)
    assert len(plain) == 15
    for field in ("indices", "cluster", "radius"):
        np.testing.assert_array_equal(getattr(own, field), getattr(plain, field))


def test_select_encoder_embeds_only_the_candidates_and_the_examples(fitted):
    from coretune.embed import EmbeddingCache, cache_key, make_encoder

    cfg, pool, embedder, x, clusters, mask = fitted
    cfg = _with(cfg, encoder="minilm")  # float32 MiniLM: a cache folder of its own
    got = select(cfg, pool, x, clusters, embedder, mask)
    assert len(got) == 15 and mask[got.indices].all()
    folder = embedder.cache_root / cache_key(make_encoder("minilm", max_tokens=128))
    probes = set(finder(cfg).probe_prompts()[0])
    inside = set(np.asarray(pool.prompts, dtype=object)[mask].tolist())
    assert 0 < mask.sum() < len(pool)
    assert len(EmbeddingCache(folder, 384)) == len(inside | probes)


@pytest.mark.slow
def test_response_encoder_rows_and_probe_answers(fitted, tmp_path):
    """`...+response`: candidate rows as prompt + target, a probe file's examples as prompt +
    its `target` (none: the prompt alone)."""
    import json

    from coretune.embed import make_encoder, with_response
    from coretune.models import default_model_dir
    from coretune.run import stages

    cfg, pool, embedder, _, _, mask = fitted
    probes = tmp_path / "probes.jsonl"
    probes.write_text(json.dumps({"prompt": "Does A follow from B?", "target": "yes"}) + "\n"
                      + json.dumps({"prompt": "Is it raining?"}) + "\n")
    spec = f"hf-weighted+response:{default_model_dir()}"
    cfg = _with(cfg.model_copy(update={"target": cfg.target.model_copy(
        update={"spec": f"probe:{probes}"})}), encoder=spec)
    few = np.zeros_like(mask)
    few[np.flatnonzero(mask)[:4]] = True
    rows, xs, q = stages.own_vectors(spec, cfg.backend, finder(cfg), pool, few, embedder)
    assert rows.tolist() == np.flatnonzero(mask)[:4].tolist()
    enc = make_encoder(spec, max_tokens=128, device="cpu")
    t = pool.table.take(rows)
    want = enc.encode([with_response(p, r) for p, r in zip(
        t.column("prompt").to_pylist(), t.column("target").to_pylist(), strict=True)])
    np.testing.assert_allclose(xs, want, atol=1e-5)
    np.testing.assert_allclose(q, enc.encode([with_response("Does A follow from B?", "yes"),
                                              with_response("Is it raining?", "")]), atol=1e-5)
    with pytest.raises(CoretuneError, match="field 'target': must be a string"):
        probes.write_text(json.dumps({"prompt": "p", "target": 1}) + "\n")
        stages.own_vectors(spec, cfg.backend, finder(cfg), pool, few, embedder)
