"""What users extend, extended from this module alone: a selection method, a backend and an
evaluation set, each registered here and used through `coretune select`, `coretune run` and
`coretune evaluate` with no other code change."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import small_pool

from coretune.backends import Backend, LocalBackend, register_backend
from coretune.cli import main
from coretune.config import load_config
from coretune.errors import CoretuneError
from coretune.evaluate import eval_sets, parse_eval_file, register_eval_set
from coretune.select import SelectionMethod, method_labels, method_names, register_method


@register_method
class EveryOther(SelectionMethod):
    """The cluster's 1st, 3rd, 5th ... rows (in pool order), up to its share."""

    name, label, help = "every_other", "every other row", "rows 0, 2, 4, ... of each cluster"
    reads_embeddings = False

    def pick(self, job, **_):
        return job.rows[::2][:job.share], None


class CountingBackend(Backend):
    """Runs everything here but counts the calls: proof the stages go through a backend."""

    name = "counting"
    calls: dict[str, int] = {}

    def __init__(self):
        self.local = LocalBackend()

    def _count(self, op: str) -> None:
        CountingBackend.calls[op] = CountingBackend.calls.get(op, 0) + 1

    def embedder(self, encoder="minilm", **kw):
        self._count("embedder")
        return self.local.embedder(encoder, **kw)

    def assign(self, x, centroids, spherical, chunk):
        self._count("assign")
        return self.local.assign(x, centroids, spherical, chunk)

    def select(self, x, labels, targets, budget, method, seed, centroids=None, *, quiet=False):
        self._count("select")
        return self.local.select(x, labels, targets, budget, method, seed, centroids,
                                 quiet=quiet)

    def close(self) -> None:
        self._count("close")


register_backend("counting", lambda address=None, **_: CountingBackend())

TEMPLATES = """dataset: yesno
templates:
  t1: !Template
    answer_choices: yes ||| no
    id: t1
    jinja: '{{premise}} Does it follow that {{hypothesis}}? ||| {{answer_choices[label]}}'
    name: follows
"""


def _eval_files(tmp_path):
    rows = [{"premise": "The cat sat on the mat.", "hypothesis": "a cat sits", "label": 0},
            {"premise": "It rained all day.", "hypothesis": "the ground is dry", "label": 1}]
    data = tmp_path / "yesno.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "yesno.yaml").write_text(TEMPLATES)
    return f"yesno:{data}:{tmp_path / 'yesno.yaml'}:yes,no"


@pytest.fixture(scope="module")
def pool_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("pool") / "pool.parquet"
    small_pool().save(path)
    return path


def _cli(*args) -> None:
    try:
        main([str(a) for a in args])
    except SystemExit as e:
        assert e.code == 0, e.code


def test_registered_names_reach_config_help_and_labels(tmp_path):
    assert "every_other" in method_names()
    assert method_labels()["every_other"] == "every other row"
    from coretune.cli.select import refresh_help, select

    refresh_help()
    import inspect

    method = inspect.signature(select).parameters["method"].default
    assert "every_other" in method.help  # --method help from the registry
    cfg = tmp_path / "c.yaml"
    cfg.write_text("name: c\nselect: {method: every_other}\nbackend: {name: counting}\n")
    assert load_config(cfg).select.method == "every_other"
    cfg.write_text("name: c\nselect: {method: best}\n")
    with pytest.raises(CoretuneError, match="unknown method 'best'.*every_other"):
        load_config(cfg)


def test_toy_method_and_backend_through_coretune_select(pool_file, tmp_path):
    CountingBackend.calls.clear()
    out = tmp_path / "subset.parquet"
    _cli("select", "--pool", pool_file, "-o", out, "--k", 12, "--probes", 100, "--threshold",
         1.5, "--budget", 16, "--method", "every_other", "--backend", "counting", "--quiet",
         "--cache-dir", tmp_path / "cache")
    assert CountingBackend.calls == {"embedder": 1, "assign": 1, "select": 1, "close": 1}
    sel = pq.read_table(tmp_path / "subset.selection.parquet").to_pydict()
    pool_uids = pq.read_table(pool_file).column("uid").to_pylist()
    rows = np.array([pool_uids.index(u) for u in sel["uid"]])
    assert len(rows) == 16
    for c in set(sel["cluster"]):  # each cluster's picks: its every other row, in order
        picked = rows[np.array(sel["cluster"]) == c]
        assert np.all(np.diff(picked) > 0)
    assert np.isnan(sel["radius"]).all()


def test_toy_method_backend_and_eval_set_through_coretune_run(pool_file, tmp_path,
                                                              monkeypatch):
    """The whole run: the toy method selects, the counting backend runs the heavy steps,
    and the run evaluates on the user's set named in the config like a shipped one."""
    CountingBackend.calls.clear()
    monkeypatch.chdir(tmp_path)
    spec = _eval_files(tmp_path)
    cfg = tmp_path / "toy.yaml"
    cfg.write_text(
        f"name: toy\npool: {{path: {pool_file}}}\ncluster: {{k: 12}}\n"
        "target: {threshold: 1.5, probes: 100}\n"
        "select: {method: every_other, budget: '8'}\nbackend: {name: counting}\n"
        "train: {max_steps: 1, batch_size: 2, max_length: 64}\n"
        f"evaluate: {{tasks: [yesno], eval_files: ['{spec}'], max_templates: 1}}\n")
    _cli("run", cfg, "--runs-dir", tmp_path / "runs", "-q")
    assert CountingBackend.calls["select"] == 1 and CountingBackend.calls["embedder"] >= 1
    seed = tmp_path / "runs" / "toy" / "seed-0"
    assert pq.read_table(seed / "select" / "subset.parquet").num_rows == 8
    metrics = json.loads((seed / "evaluate" / "metrics.json").read_text())
    assert list(metrics["tasks"]) == ["yesno"] and metrics["tasks"]["yesno"]["n_items"] == 2


def test_user_eval_set_is_a_peer_of_the_shipped_ones(tmp_path):
    ds = register_eval_set(parse_eval_file(_eval_files(tmp_path)))
    assert eval_sets()["yesno"] is ds and "rte" in eval_sets()
