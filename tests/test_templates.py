"""promptsource templates render exactly as promptsource's Template.apply would."""

import pytest
from conftest import DATA

from coretune.data.sources import eval_datasets, train_datasets
from coretune.data.templates import Template, load_templates
from coretune.errors import CoretuneError

RTE = DATA / "templates/super_glue/rte/templates.yaml"
CB = DATA / "templates/super_glue/cb/templates.yaml"


def _row(ds, row_id):
    return next(r for r in train_datasets()[ds].rows() if r["id"] == row_id)


def test_loads_custom_yaml_tags_in_file_order():
    rte = load_templates(RTE)
    assert rte.dataset == "super_glue/rte"
    assert len(rte) == 10
    assert rte.names[:3] == ["MNLI crowdsource", "guaranteed true", "can we infer"]
    assert rte.templates[0].metadata["original_task"] is True
    assert len(load_templates(CB)) == 15


def test_rte_exact_prompts():
    row = _row("rte", "rte-train-0")  # label 1 = not_entailment
    rte = load_templates(RTE)
    r = rte.get("MNLI crowdsource").render(row)
    assert r.prompt == (
        "No Weapons of Mass Destruction Found in Iraq Yet. Using only the above description "
        'and what you know about the world, is "Weapons of Mass Destruction Found in Iraq." '
        "definitely correct? Yes or no?"
    )
    assert (r.target, r.choices) == ("No", ["Yes", "No"])
    r = rte.get("guaranteed true").render(row)
    assert r.prompt == (
        "Given No Weapons of Mass Destruction Found in Iraq Yet. Is it guaranteed true that "
        '"Weapons of Mass Destruction Found in Iraq."? Yes or no?'
    )
    assert r.target == "No"
    r = rte.get("can we infer").render(row)
    assert r.prompt == ('Suppose No Weapons of Mass Destruction Found in Iraq Yet. Can we infer '
                        'that "Weapons of Mass Destruction Found in Iraq."? Yes or no?')


def test_cb_exact_prompts():
    row = _row("cb", "cb-train-44")  # label 0 = entailment
    premise, hyp = row["premise"], row["hypothesis"]
    cb = load_templates(CB)
    r = cb.get("can we infer").render(row)
    assert r.prompt == f'Suppose {premise} Can we infer that "{hyp}"? Yes, no, or maybe?'
    assert (r.target, r.choices) == ("Yes", ["Yes", "No", "Maybe"])
    r = cb.get("claim true/false/inconclusive").render(row)
    assert r.prompt == (f'{premise} Based on that information, is the claim: "{hyp}" '
                        'true, false, or inconclusive?')
    assert (r.target, r.choices) == ("True", ["True", "False", "Inconclusive"])


def test_every_eval_template_renders_every_label():
    for ds in eval_datasets().values():
        rows = ds.rows()[:3]
        for t in ds.load_templates().with_choices():
            for row in rows:
                r = t.render(row)
                assert r.prompt and r.target == r.choices[row["label"]], (ds.name, t.name)
                # Probing renders unlabelled rows; the prompt must not depend on the label.
                assert t.render({**row, "label": -1}).prompt == r.prompt


def test_pipes_inside_fields_do_not_split():
    t = Template(id="x", name="x", jinja="{{premise}} ||| {{hypothesis}}")
    r = t.render({"premise": "a ||| b", "hypothesis": "c"})
    assert (r.prompt, r.target) == ("a ||| b", "c")


def test_unknown_field_is_a_clear_error():
    t = Template(id="x", name="bad", jinja="{{ premise }} {{ nope }} ||| x", source="t.yaml")
    with pytest.raises(CoretuneError, match=r"t.yaml: field 'nope': template 'bad' uses a "
                                            r"field the row does not have"):
        t.render({"premise": "p"})


def test_sandbox_blocks_unsafe_attribute_access():
    t = Template(id="x", name="evil", jinja="{{ premise.__class__.__mro__ }} ||| x")
    with pytest.raises(CoretuneError, match="evil"):
        t.render({"premise": "p"})


def test_template_selection_modes():
    rte = load_templates(RTE)
    assert len(rte.choose("all")) == 10
    assert rte.choose("first", 2).names == rte.names[:2]
    assert rte.choose("fixed").names == [rte.names[0]]
    assert rte.choose("fixed", name="can we infer").names == ["can we infer"]
    with pytest.raises(CoretuneError, match="no template named"):
        rte.choose("fixed", name="nope")
    with pytest.raises(CoretuneError, match="unknown template mode"):
        rte.choose("some")
