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
from coretune.target import VOTES


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
    from coretune.cli.options import refresh_help
    from coretune.cli.select import select

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
    # one clustering, then the target votes' ten more: every labelling on the backend
    assert CountingBackend.calls == {"embedder": 1, "assign": VOTES, "select": 1, "close": 1}
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
    from coretune.evaluate import EVAL_SET_REGISTRY

    with EVAL_SET_REGISTRY.scratch():
        ds = register_eval_set(parse_eval_file(_eval_files(tmp_path)))
        assert eval_sets()["yesno"] is ds and "rte" in eval_sets()
        assert load_config_text("evaluate: {tasks: [yesno]}").evaluate.tasks == ["yesno"]
    assert "yesno" not in eval_sets()


def test_a_registered_encoder_is_listed_by_coretune_select_help(capsys):
    from coretune.embed import ENCODER_REGISTRY, make_encoder, register_encoder

    def encoder_help() -> str:  # the --encoder option's help, its lines joined
        _cli("select", "--help")
        text = capsys.readouterr().out
        words = text[text.index("--encoder"):text.index("--max-tokens")].split()
        return " ".join(w for w in words if w != "│")

    with ENCODER_REGISTRY.scratch():
        register_encoder("toy-bag", lambda arg, max_tokens, device: None)
        assert "minilm-int8, minilm," in encoder_help() and "toy-bag" in encoder_help()
        assert load_config_text("embed: {encoder: toy-bag}").embed.encoder == "toy-bag"
    assert "toy-bag" not in encoder_help()  # the scratch registration is gone
    with pytest.raises(CoretuneError, match="unknown encoder 'toy-bag'"):
        make_encoder("toy-bag")


def load_config_text(text: str):
    import yaml

    from coretune.config import validate

    return validate({"name": "c", **yaml.safe_load(text)})


def test_registry_lazy_entries_names_and_did_you_mean():
    from coretune.registry import Registry

    r = Registry("widget", field="widget")
    r.register("json", "json:dumps")  # imported on first use
    assert r.names() == ("json",) and "json" in r
    import json

    assert r.get("json") is json.dumps

    @r.register("twice")
    def twice(x):
        return 2 * x

    assert r.get("twice")(3) == 6
    with pytest.raises(CoretuneError, match=r"field 'widget': unknown widget 'jsno' "
                                            r"\(one of json, twice\); did you mean 'json'\?"):
        r.get("jsno")
    with r.scratch():
        r.register("extra", 1)
        assert r.names() == ("json", "twice", "extra")
    assert "extra" not in r


def test_unknown_names_suggest_the_closest_registered_one(tmp_path):
    from coretune.backends import get_backend
    from coretune.select import get_method

    with pytest.raises(CoretuneError, match="did you mean 'kcenter'"):
        get_method("kcentre")
    with pytest.raises(CoretuneError, match="did you mean 'local'"):
        get_backend("locale")
    with pytest.raises(CoretuneError, match="did you mean 'minilm-int8'"):
        load_config_text("embed: {encoder: minilm-int9}")
    with pytest.raises(CoretuneError, match="did you mean 'anli_r1'"):
        load_config_text("evaluate: {tasks: [anli_1]}")


def test_planning_a_run_registers_nothing(tmp_path):
    """A config's own evaluation sets are its run's alone: planning (or running) it leaves the
    registry as it was."""
    from coretune.evaluate import EVAL_SET_REGISTRY
    from coretune.run.pipeline import plan

    spec = _eval_files(tmp_path)
    names = EVAL_SET_REGISTRY.names()
    cfg = load_config_text(f"evaluate: {{tasks: [rte, yesno], eval_files: ['{spec}']}}")
    stages = plan(cfg, tmp_path / "run", 0)
    assert EVAL_SET_REGISTRY.names() == names and "yesno" not in EVAL_SET_REGISTRY
    assert set(stages[-1].files) == {"yesno:path", "yesno:templates"}
