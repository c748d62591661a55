"""Decontamination (coretune.data.decontam) on constructed overlaps."""

from __future__ import annotations

import numpy as np

from coretune.data.decontam import LONG_N, SHORT_N, EvalIndex, pool_overlaps, summary, words

LONG = ("The committee approved the new budget for the city's public libraries after a long "
        "debate on Tuesday evening")  # 19 words (city's is two)
SHORT = "Nine people were hurt in the crash yesterday"  # 8 words
TINY = "A man is sleeping"  # under SHORT_N words: never matched


def index():
    return EvalIndex({"dev": [LONG, SHORT, TINY], "other": ["Completely unrelated text " * 5]})


def test_exact_copy_is_found():
    hits = index().overlaps([f"Premise: {LONG} Question: true or false?", "nothing here"])
    assert hits.tolist() == [[True, False], [False, False]]


def test_case_punctuation_and_whitespace_do_not_hide_a_copy():
    changed = "  THE committee   approved the NEW budget, for the city's\npublic libraries after"
    assert len(words(changed)) == LONG_N  # exactly one 13-gram, a changed copy of LONG's first
    assert index().overlaps([changed]).tolist() == [[True, False]]


def test_short_fields_match_by_their_shorter_ngrams():
    assert index().overlaps([f"Did it happen? {SHORT.upper()}!"]).tolist() == [[True, False]]
    # the first SHORT_N - 1 words of it are below the threshold
    below = " ".join(words(SHORT)[:SHORT_N - 1])
    assert index().overlaps([below]).tolist() == [[False, False]]


def test_below_the_long_threshold_is_not_a_match():
    part = " ".join(words(LONG)[:LONG_N - 1])  # 12 of the field's 19 words
    assert index().overlaps([part]).tolist() == [[False, False]]
    assert index().overlaps([TINY]).tolist() == [[False, False]]  # too short to match at all


def test_prompt_and_target_both_count_and_summary_counts_rows():
    hits = pool_overlaps(["q1", f"x {LONG}", "q3"], [SHORT, "y", "z"], index())
    assert hits[:, 0].tolist() == [True, True, False]
    s = summary(hits, ["dev", "other"], selected=np.array([1, 2]))
    assert s["pool_rows"] == {"dev": 2, "other": 0, "any": 2}
    assert s["selected_rows"] == {"dev": 1, "other": 0, "any": 1}


def _contaminated_pool(path):
    """The small real pool plus 40 RTE dev examples rendered through the pool's own RTE
    template, as if a pool had swallowed part of the evaluation set."""
    import pyarrow as pa
    from conftest import small_pool

    from coretune.data.pool import Pool
    from coretune.data.sources import eval_datasets

    pool = small_pool()
    rte = eval_datasets()["rte"]
    tmpl = rte.load_templates().get("can we infer")
    rows = [tmpl.render(r) for r in rte.rows()[:40]]
    extra = pa.table({"uid": [f"leak/{i}" for i in range(40)], "task": ["rte"] * 40,
                      "template": ["can we infer"] * 40, "prompt": [r.prompt for r in rows],
                      "target": [r.target for r in rows],
                      "choices": pa.array([[]] * 40, pa.list_(pa.string()))})
    table = pa.concat_tables([pool.table.select(extra.column_names), extra])
    Pool(table).save(path)


def test_select_counts_contamination_and_decontaminate_drops_it(cli, tmp_path):
    import json

    _contaminated_pool(tmp_path / "pool.parquet")
    counts = {}
    for flag in ("", "--decontaminate"):
        out = tmp_path / (flag or "plain") / "s.parquet"
        proc = cli("select", "--pool", tmp_path / "pool.parquet", "-o", out, "--k", 12,
                   "--probes", 100, "--method", "all", "--cache-dir", tmp_path / "cache",
                   "--quiet", *([flag] if flag else []), check=True)
        q = json.loads(out.with_name("s.quality.json").read_text())["contamination"]
        counts[flag] = q
        assert "contamination" in proc.stdout
    plain, clean = counts[""], counts["--decontaminate"]
    assert plain["pool_rows"]["rte"] >= 40 and plain["pool_rows"] == clean["pool_rows"]
    assert plain["selected_rows"]["rte"] > 0 and not plain["dropped"]
    assert clean["selected_rows"]["any"] == 0 and clean["dropped"]


def test_select_eval_file_sets_are_counted_and_dropped(cli, tmp_path):
    """`coretune select --eval-file`: a user's own set, 3 of whose premises a constructed pool
    holds, is counted beside the shipped sets and its rows dropped with --decontaminate."""
    import json

    premises = [f"{LONG} number {i}" for i in range(4)]
    (tmp_path / "mine.jsonl").write_text("".join(
        json.dumps({"premise": p, "hypothesis": "The budget passed.", "label": i % 2}) + "\n"
        for i, p in enumerate(premises)))
    (tmp_path / "t.yaml").write_text(
        "dataset: mine\ntemplates:\n  t1: !Template\n    id: t1\n    name: t1\n"
        "    jinja: '{{premise}} Is it true that {{hypothesis}} ||| {{answer_choices[label]}}'\n"
        "    answer_choices: yes ||| no\n")
    rows = [{"uid": f"f{i}", "task": "facts", "target": "yes",
             "prompt": f"Is fact {i} about {'rivers' if i % 2 else 'mountains'} true?"}
            for i in range(12)]
    for i in range(3):  # the leaks: facts rows that quote a premise of the user's set
        rows[i]["prompt"] = f"Read this. {premises[i]}. Is it true?"
    rows += [{"uid": f"p{i}", "task": "poetry", "target": "Leaves fall.",
              "prompt": f"Write a short poem about the colour of autumn leaf number {i}."}
             for i in range(12)]
    (tmp_path / "pool.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = f"mine:{tmp_path / 'mine.jsonl'}:{tmp_path / 't.yaml'}:yes,no"
    counts = {}
    for flag in ("", "--decontaminate"):
        out = tmp_path / (flag or "plain") / "s.parquet"
        proc = cli("select", "--pool", tmp_path / "pool.jsonl", "-o", out, "--k", 2,
                   "--target", "tasks:facts", "--budget", "24", "--method", "all",
                   "--max-tokens", 32, "--cache-dir", tmp_path / "cache", "--quiet",
                   "--eval-file", spec, *([flag] if flag else []), check=True)
        counts[flag] = json.loads(out.with_name("s.quality.json").read_text())["contamination"]
        assert "anli_r3 0, mine 3)" in " ".join(proc.stdout.split())  # printed, too
    plain, clean = counts[""], counts["--decontaminate"]
    assert plain["pool_rows"] == clean["pool_rows"] == {
        "rte": 0, "cb": 0, "anli_r1": 0, "anli_r2": 0, "anli_r3": 0, "mine": 3, "any": 3}
    assert plain["selected_rows"]["mine"] == 3 and not plain["dropped"]
    assert clean["selected_rows"]["any"] == 0 and clean["dropped"]
