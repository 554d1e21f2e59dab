"""Which model family and pretraining objective fits a task, and why.

Three families (``lmforge.plan.specs``):

- ``encoder``: bidirectional self-attention, pretrained with masked language modeling
  (Devlin et al. 2019, BERT). Every position sees the whole input: understanding tasks.
- ``decoder``: causal self-attention, pretrained with next-token prediction (Radford et
  al. 2019, GPT-2). Pretraining is generation: open-ended text, chat, code.
- ``encoder-decoder``: a bidirectional encoder reads a separate input, a causal decoder
  writes the output through cross-attention (Vaswani et al. 2017), pretrained with span
  corruption (Raffel et al. 2020, T5) or denoising (Lewis et al. 2020, BART): input ->
  output tasks such as translation and summarization.

Raffel et al. (2020, Sec. 3.2-3.3, Tables 2 and 4) compare architectures and objectives
at equal compute: the encoder-decoder with a denoising objective transferred best across
their fine-tuned benchmarks. Wang et al. (2022) find that a causal decoder trained with
the plain language-modeling objective generalizes best zero-shot after self-supervised
pretraining alone, while encoder-decoders with masked/span objectives win after
multitask fine-tuning.

The advice is a starting point grounded in those papers, not a guarantee: at large
scale a decoder-only model can do every task here by prompting, at a higher cost.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lmforge.errors import UserError, check_positive, unknown_name
from lmforge.plan.laws import MAX_FLOPS, get_law

# ---- references ----------------------------------------------------------------------

VASWANI = "Vaswani et al. 2017, Attention Is All You Need (NeurIPS)"
RADFORD_2018 = "Radford et al. 2018, Improving Language Understanding by Generative Pre-Training (GPT)"
RADFORD_2019 = "Radford et al. 2019, Language Models are Unsupervised Multitask Learners (GPT-2)"
DEVLIN = "Devlin et al. 2019, BERT: Pre-training of Deep Bidirectional Transformers (NAACL)"
RAFFEL = (
    "Raffel et al. 2020, Exploring the Limits of Transfer Learning with a Unified Text-to-Text Transformer (T5, JMLR)"
)
LEWIS = "Lewis et al. 2020, BART: Denoising Sequence-to-Sequence Pre-training (ACL)"
LIU_MBART = "Liu et al. 2020, Multilingual Denoising Pre-training for Neural Machine Translation (mBART, TACL)"
WANG_2022 = (
    "Wang et al. 2022, What Language Model Architecture and Pretraining Objective Work Best "
    "for Zero-Shot Generalization? (ICML)"
)
BROWN = "Brown et al. 2020, Language Models are Few-Shot Learners (GPT-3, NeurIPS)"
REIMERS = "Reimers & Gurevych 2019, Sentence-BERT (EMNLP)"
OUYANG = "Ouyang et al. 2022, Training language models to follow instructions with human feedback (InstructGPT)"
TOUVRON = "Touvron et al. 2023, Llama 2: Open Foundation and Fine-Tuned Chat Models"
CHEN_CODEX = "Chen et al. 2021, Evaluating Large Language Models Trained on Code (Codex)"
BAVARIAN = "Bavarian et al. 2022, Efficient Training of Language Models to Fill in the Middle"
ROZIERE = "Roziere et al. 2023, Code Llama: Open Foundation Models for Code"
WANG_CODET5 = "Wang et al. 2021, CodeT5: Identifier-aware Unified Pre-trained Encoder-Decoder Models (EMNLP)"
ROBERTS = "Roberts et al. 2020, How Much Knowledge Can You Pack Into the Parameters of a Language Model? (EMNLP)"

MLM = "masked language modeling (MLM): predict masked tokens from context on both sides"
CAUSAL = "causal language modeling: predict the next token from the tokens before it"
SPAN = "span corruption (T5) or denoising (BART): reconstruct corrupted input spans in the decoder"

PRESETS: tuple[str, ...] = (
    "gpt2", "gpt2-medium", "llama-2-7b", "bert-base", "bert-large",
    "t5-small", "t5-base", "bart-base", "bart-large",
)


@dataclass(frozen=True)
class TaskAdvice:
    """The fixed advice for one task (no budget)."""

    task: str
    family: str  # encoder | decoder | encoder-decoder
    objective: str
    preset: str  # an example preset name (see PRESETS)
    reasons: tuple[str, ...]
    alternatives: tuple[str, ...]
    references: tuple[str, ...]


TASKS: dict[str, TaskAdvice] = {
    t.task: t
    for t in (
        TaskAdvice(
            task="classification",
            family="encoder",
            objective=MLM,
            preset="bert-base",
            reasons=(
                "A label depends on the whole input at once; an encoder attends in both directions at every "
                "layer, so the representation the classifier reads has seen all of the text.",
                "Bidirectional MLM pretraining beats a left-to-right model of the same size on GLUE tasks and "
                "SQuAD (Devlin et al. 2019, Sec. 5.1, Table 5).",
                "One forward pass and a small head per input: a 110M-parameter encoder is cheap to fine-tune "
                "and to serve (Devlin et al. 2019, Table 1).",
            ),
            alternatives=(
                "decoder with a classification head on the last token (Radford et al. 2018): works, but at small "
                "sizes costs more compute per point of accuracy than an encoder",
                "large instruction-tuned decoder prompted zero- or few-shot when labeled data is scarce (Brown et "
                "al. 2020)",
            ),
            references=(DEVLIN, RADFORD_2018, BROWN),
        ),
        TaskAdvice(
            task="ner",
            family="encoder",
            objective=MLM,
            preset="bert-base",
            reasons=(
                "Every token gets a label that depends on words on both sides of it; an encoder gives each "
                "position bidirectional context in one pass.",
                "A left-to-right decoder sees only the left context at each position, so token labels cannot "
                "use the words that follow.",
                "BERT fine-tuned as a token tagger is a strong NER baseline (Devlin et al. 2019, Sec. 5.3, "
                "CoNLL-2003).",
            ),
            alternatives=(
                "encoder-decoder that writes the entities as text (T5 style, Raffel et al. 2020): flexible "
                "label sets, more expensive per token",
                "decoder LLM prompted to list the entities: no training data needed, usually weaker than a "
                "fine-tuned encoder of the same size",
            ),
            references=(DEVLIN, RAFFEL),
        ),
        TaskAdvice(
            task="embeddings",
            family="encoder",
            objective=MLM + ", then contrastive fine-tuning on text pairs",
            preset="bert-base",
            reasons=(
                "A fixed-size vector for a text is pooled from token states that each see the whole text, "
                "which a bidirectional encoder provides.",
                "Sentence-BERT fine-tunes a BERT encoder with a siamese objective on sentence pairs; this is "
                "the standard recipe for sentence embeddings (Reimers & Gurevych 2019).",
                "Encoders are small and fast, which matters when embedding a whole corpus for search.",
            ),
            alternatives=(
                "embeddings from a decoder LLM: strong on benchmarks at billions of parameters, but tens of "
                "times more compute per embedded token than a base encoder",
            ),
            references=(DEVLIN, REIMERS),
        ),
        TaskAdvice(
            task="generation",
            family="decoder",
            objective=CAUSAL,
            preset="gpt2",
            reasons=(
                "Open-ended generation is next-token prediction; a causal decoder is pretrained on exactly "
                "that, so pretraining and use match with no task head (Radford et al. 2019).",
                "Every token of the corpus is a training target (MLM predicts about 15%), and a KV cache makes "
                "sampling one token at a time cheap.",
                "A causal decoder with the plain LM objective generalizes best zero-shot after self-supervised "
                "pretraining alone (Wang et al. 2022).",
            ),
            alternatives=(
                "prefix-LM or encoder-decoder with span corruption: better after multitask fine-tuning (Wang et "
                "al. 2022), but they expect a separate input to condition on",
            ),
            references=(RADFORD_2019, WANG_2022, BROWN),
        ),
        TaskAdvice(
            task="chat",
            family="decoder",
            objective=CAUSAL + "; then instruction tuning and RLHF",
            preset="llama-2-7b",
            reasons=(
                "A conversation is one growing sequence and each reply continues it, a natural fit for a "
                "causal decoder with a KV cache over the history.",
                "Chat models are causal LMs pretrained on next-token prediction, then fine-tuned on dialogues "
                "and aligned with human feedback (Ouyang et al. 2022; Touvron et al. 2023, Llama 2-Chat).",
            ),
            alternatives=(
                "instruction-tuned encoder-decoder (e.g. Flan-T5): follows instructions well at small size, "
                "but re-encodes the whole history every turn",
            ),
            references=(OUYANG, TOUVRON, RADFORD_2019),
        ),
        TaskAdvice(
            task="code",
            family="decoder",
            objective=CAUSAL + "; part of the documents in fill-in-the-middle order",
            preset="llama-2-7b",
            reasons=(
                "Code completion is left-to-right generation; causal decoders trained on code are the standard "
                "(Chen et al. 2021, Codex; Roziere et al. 2023, Code Llama, continues Llama 2).",
                "Training some documents in fill-in-the-middle order lets the same decoder infill between a "
                "prefix and a suffix at little cost to left-to-right quality (Bavarian et al. 2022).",
            ),
            alternatives=(
                "encoder-decoder (CodeT5, Wang et al. 2021) for code-to-text and code-to-code tasks such as "
                "summarizing or translating code",
                "encoder for code search and classification",
            ),
            references=(CHEN_CODEX, BAVARIAN, ROZIERE, WANG_CODET5),
        ),
        TaskAdvice(
            task="translation",
            family="encoder-decoder",
            objective=SPAN,
            preset="t5-base",
            reasons=(
                "The source sentence is a separate input read in full: the encoder reads it bidirectionally and "
                "the decoder writes the target through cross-attention, the Transformer's original design for "
                "translation (Vaswani et al. 2017).",
                "In T5's controlled comparison the encoder-decoder with a denoising objective scored best on "
                "every benchmark, WMT translation included, against decoder-only and prefix LMs of similar "
                "compute (Raffel et al. 2020, Sec. 3.2, Table 2).",
                "Denoising pretraining of the whole encoder-decoder transfers directly to translation (Liu et "
                "al. 2020, mBART).",
            ),
            alternatives=(
                "large decoder-only LLM prompted to translate (Brown et al. 2020): good at scale, costlier at "
                "equal quality for a fixed language pair",
            ),
            references=(VASWANI, RAFFEL, LIU_MBART, BROWN),
        ),
        TaskAdvice(
            task="summarization",
            family="encoder-decoder",
            objective=SPAN,
            preset="bart-large",
            reasons=(
                "The document is a separate input, encoded once with bidirectional attention; the decoder's "
                "steps scale with the summary, not the document.",
                "BART's denoising pretraining (text infilling) reached the state of the art on CNN/DailyMail "
                "and XSum summarization (Lewis et al. 2020).",
                "Encoder-decoders with denoising objectives transferred best to CNN/DailyMail in T5's "
                "architecture comparison (Raffel et al. 2020, Sec. 3.2, Table 2).",
            ),
            alternatives=(
                "decoder-only LLM prompted with the document: also summarizes well at scale, at a higher cost "
                "per token",
                "T5 (span corruption) is an equivalent encoder-decoder choice (preset t5-base)",
            ),
            references=(LEWIS, RAFFEL, BROWN),
        ),
        TaskAdvice(
            task="question-answering",
            family="encoder",
            objective=MLM,
            preset="bert-large",
            reasons=(
                "Extractive QA predicts the start and end of the answer in a given passage; each token must "
                "see the question and the whole passage, which a bidirectional encoder provides.",
                "BERT fine-tuned this way set the state of the art on SQuAD v1.1 and v2.0 (Devlin et al. 2019, "
                "Sec. 4.2-4.3).",
            ),
            alternatives=(
                "encoder-decoder when answers are written rather than extracted (T5 casts QA as text-to-text, "
                "Raffel et al. 2020)",
                "decoder LLM for open-domain questions without a passage, answering from its parameters "
                "(closed-book QA: Roberts et al. 2020; Brown et al. 2020)",
            ),
            references=(DEVLIN, RAFFEL, ROBERTS, BROWN),
        ),
    )
}

# Other names users type, after normalization (lower case, '-'/'_' -> space).
ALIASES: dict[str, str] = {
    "sentiment": "classification",
    "sentiment analysis": "classification",
    "text classification": "classification",
    "sequence classification": "classification",
    "topic classification": "classification",
    "intent": "classification",
    "named entity recognition": "ner",
    "entity recognition": "ner",
    "token classification": "ner",
    "tagging": "ner",
    "sequence labeling": "ner",
    "sequence labelling": "ner",
    "embedding": "embeddings",
    "sentence embeddings": "embeddings",
    "sentence embedding": "embeddings",
    "semantic search": "embeddings",
    "retrieval": "embeddings",
    "similarity": "embeddings",
    "text generation": "generation",
    "completion": "generation",
    "language modeling": "generation",
    "language modelling": "generation",
    "chatbot": "chat",
    "dialogue": "chat",
    "dialog": "chat",
    "assistant": "chat",
    "instruction following": "chat",
    "code generation": "code",
    "code completion": "code",
    "coding": "code",
    "programming": "code",
    "machine translation": "translation",
    "mt": "translation",
    "translate": "translation",
    "summarisation": "summarization",
    "summary": "summarization",
    "summarize": "summarization",
    "summarise": "summarization",
    "qa": "question-answering",
    "question answering": "question-answering",
    "extractive qa": "question-answering",
    "reading comprehension": "question-answering",
}


def _normalize(name: str) -> str:
    return re.sub(r"[\s_-]+", " ", name.strip().lower())


def resolve_task(task: str) -> str:
    """The canonical task name for ``task`` or an alias, case-insensitively.

    Raises UserError suggesting the closest task names for an unknown task.
    """
    if not isinstance(task, str) or not task.strip():
        raise UserError("the task must be a name", task, "choose one of " + ", ".join(TASKS))
    key = _normalize(task)
    for name in TASKS:
        if _normalize(name) == key:
            return name
    if key in ALIASES:
        return ALIASES[key]
    raise unknown_name("task", task, TASKS)


def runnable(family: str, preset: str) -> tuple[str, str]:
    """(a CPU-sized preset of the same layout, lmforge's objective name) to start with."""
    if family == "encoder":
        return "tiny-bert", "mlm"
    if family == "decoder":
        return ("tiny-llama" if "llama" in preset else "tiny-gpt2"), "causal"
    return ("tiny-t5", "span") if preset.startswith("t5") else ("tiny-bart", "infill")


@dataclass(frozen=True)
class Advice:
    """Advice for one task; with a budget, the compute-optimal size under ``law``.

    ``n_params`` and ``n_tokens`` come from ``get_law(law).compute_optimal(budget_flops)``
    with C = 6 N D (Hoffmann et al. 2022, Eq. 4 for "chinchilla").
    """

    task: str
    family: str
    objective: str
    preset: str
    reasons: tuple[str, ...]
    alternatives: tuple[str, ...]
    references: tuple[str, ...]
    budget_flops: float | None = None
    law: str | None = None
    n_params: float | None = None
    n_tokens: float | None = None
    note: str | None = None

    @property
    def command(self) -> str:
        """A runnable first step: pretrain the CPU-sized preset with the objective."""
        tiny, objective = runnable(self.family, self.preset)
        return f"lmforge train --model.preset {tiny} --objective.name {objective} --data PATH --tokens auto"

    def to_dict(self) -> dict:
        tiny, objective = runnable(self.family, self.preset)
        return {
            "task": self.task,
            "family": self.family,
            "objective": self.objective,
            "objective_name": objective,
            "preset": self.preset,
            "tiny_preset": tiny,
            "command": self.command,
            "reasons": list(self.reasons),
            "alternatives": list(self.alternatives),
            "references": list(self.references),
            "budget_flops": self.budget_flops,
            "law": self.law,
            "n_params": self.n_params,
            "n_tokens": self.n_tokens,
            "note": self.note,
        }


def advise(task: str, budget_flops: float | None = None, law: str = "chinchilla") -> Advice:
    """Which family, objective and example preset fit ``task``, and why.

    With ``budget_flops``, also the compute-optimal parameters N and tokens D for that
    training compute under scaling law ``law`` (C = 6 N D; ``lmforge.plan.laws``).
    """
    base = TASKS[resolve_task(task)]
    fields = {
        "task": base.task,
        "family": base.family,
        "objective": base.objective,
        "preset": base.preset,
        "reasons": base.reasons,
        "alternatives": base.alternatives,
        "references": base.references,
    }
    if budget_flops is None:
        return Advice(**fields)
    check_positive("compute budget (FLOPs)", budget_flops, upper=MAX_FLOPS)
    scaling_law = get_law(law)
    n_params, n_tokens = scaling_law.compute_optimal(float(budget_flops))
    note = None
    if base.family != "decoder":
        note = (
            "the scaling laws were fit on decoder-only causal LMs (Kaplan et al. 2020; Hoffmann et al. 2022); "
            f"for an {base.family} take N and D as a rough guide"
        )
    return Advice(
        **fields,
        budget_flops=float(budget_flops),
        law=scaling_law.name,
        n_params=n_params,
        n_tokens=n_tokens,
        note=note,
    )
