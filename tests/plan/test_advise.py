"""Model-family advice per task (lmforge.plan.advise)."""

from __future__ import annotations

import json

import pytest

from lmforge.errors import UserError
from lmforge.plan.advise import TASKS, advise
from lmforge.plan.specs import FAMILIES

EXPECTED_TASKS = {
    "classification", "ner", "embeddings", "generation", "chat", "code",
    "translation", "summarization", "question-answering",
}
ALLOWED_PRESETS = {
    "gpt2", "gpt2-medium", "llama-2-7b", "bert-base", "bert-large", "t5-small", "t5-base", "bart-base", "bart-large",
}


def test_task_list_complete():
    assert set(TASKS) == EXPECTED_TASKS


@pytest.mark.parametrize("task", sorted(EXPECTED_TASKS))
def test_every_task_has_an_answer(task):
    a = advise(task)
    assert a.task == task
    assert a.family in FAMILIES
    assert a.objective
    assert a.preset in ALLOWED_PRESETS
    assert 2 <= len(a.reasons) <= 4
    assert a.alternatives and a.references
    assert a.n_params is None and a.n_tokens is None


@pytest.mark.parametrize("task", sorted(EXPECTED_TASKS))
def test_preset_matches_family(task):
    """The example preset is of the family advised (checked against presets.py)."""
    presets = pytest.importorskip("lmforge.plan.presets")
    a = advise(task)
    assert presets.get_preset(a.preset).spec.family == a.family


@pytest.mark.parametrize(
    ("task", "family", "objective_word"),
    [
        # Devlin et al. 2019: bidirectional encoder, masked LM, for understanding tasks.
        ("classification", "encoder", "masked"),
        ("ner", "encoder", "masked"),
        # Radford et al. 2019: causal decoder, next-token prediction, for open generation.
        ("generation", "decoder", "causal"),
        ("chat", "decoder", "causal"),
        ("code", "decoder", "causal"),
        # Raffel et al. 2020 Sec. 3.2-3.3, Lewis et al. 2020: encoder-decoder, span corruption / denoising.
        ("translation", "encoder-decoder", "span corruption"),
        ("summarization", "encoder-decoder", "denoising"),
    ],
)
def test_family_and_objective(task, family, objective_word):
    a = advise(task)
    assert a.family == family
    assert objective_word in a.objective.lower()


@pytest.mark.parametrize(
    ("alias", "task"),
    [
        ("qa", "question-answering"),
        ("question answering", "question-answering"),
        ("Question_Answering", "question-answering"),
        ("summarisation", "summarization"),
        ("SENTIMENT", "classification"),
        ("  Sentiment Analysis ", "classification"),
        ("NER", "ner"),
        ("named-entity-recognition", "ner"),
        ("Machine Translation", "translation"),
        ("chatbot", "chat"),
        ("sentence embeddings", "embeddings"),
        ("text generation", "generation"),
    ],
)
def test_aliases(alias, task):
    assert advise(alias).task == task


@pytest.mark.parametrize(("typo", "suggestion"), [("summarizaton", "summarization"), ("translaton", "translation")])
def test_unknown_task_suggests_closest(typo, suggestion):
    with pytest.raises(UserError) as info:
        advise(typo)
    assert "unknown task" in str(info.value)
    assert suggestion in str(info.value)


@pytest.mark.parametrize("bad", ["", "   ", None, 3])
def test_task_must_be_a_name(bad):
    with pytest.raises(UserError):
        advise(bad)


def test_budget_adds_compute_optimal_size():
    """With a budget, N and D from the law, with C = 6 N D (Hoffmann et al. 2022, Eq. 4)."""
    from lmforge.plan.laws import get_law

    a = advise("chat", budget_flops=5.76e23)
    n, d = get_law("chinchilla").compute_optimal(5.76e23)
    assert (a.n_params, a.n_tokens) == (n, d)
    assert 6 * a.n_params * a.n_tokens == pytest.approx(5.76e23, rel=1e-9)
    assert 1e10 < a.n_params < 2e11  # tens of billions at Gopher's budget
    assert a.law == "chinchilla" and a.note is None


def test_budget_twenty_tokens_per_param():
    """Rule of thumb D = 20 N (Hoffmann et al. 2022): C = 6 N 20 N -> N = sqrt(C / 120)."""
    a = advise("generation", budget_flops=1.2e21, law="20x")
    assert a.n_params == pytest.approx((1.2e21 / 120) ** 0.5, rel=1e-9)
    assert a.n_tokens == pytest.approx(20 * a.n_params, rel=1e-9)


def test_budget_for_non_decoder_is_flagged():
    a = advise("summarization", budget_flops=1e21)
    assert a.note and "decoder-only" in a.note


@pytest.mark.parametrize("budget", [0, -1e20, float("nan"), float("inf"), 1e60])
def test_bad_budget(budget):
    with pytest.raises(UserError):
        advise("chat", budget_flops=budget)


def test_unknown_law():
    with pytest.raises(UserError, match="scaling law"):
        advise("chat", budget_flops=1e21, law="moore")


def test_to_dict_json():
    d = json.loads(json.dumps(advise("qa", budget_flops=1e20).to_dict()))
    assert d["task"] == "question-answering" and isinstance(d["reasons"], list) and d["n_params"] > 0


def test_every_task_points_at_a_runnable_preset_and_objective():
    """Issue 4: advise names a CPU-sized preset whose family fits the objective it names."""
    from lmforge.plan.advise import TASKS, advise
    from lmforge.plan.presets import get_preset

    fits = {"causal": "decoder", "mlm": "encoder", "span": "encoder-decoder", "infill": "encoder-decoder"}
    for task in TASKS:
        data = advise(task).to_dict()
        tiny = get_preset(data["tiny_preset"])
        assert tiny.spec.family == data["family"] == fits[data["objective_name"]]
        assert f"--model.preset {tiny.name} --objective.name {data['objective_name']}" in data["command"]
