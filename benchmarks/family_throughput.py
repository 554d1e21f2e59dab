"""Training throughput of lmforge's encoder (BERT style, masked LM), encoder-decoder
(T5 style, span corruption) and decoder (GPT-2 style, causal LM) against Hugging Face
transformers' BertForMaskedLM, T5ForConditionalGeneration and GPT2LMHeadModel of identical
shape; for the decoder also nanoGPT's GPT, given a checkout.

Both sides get the very same batches (built once by lmforge's objectives from random
tokens: 15% masking; span corruption at noise density 0.15, mean span 3), the same
precision (lmforge's ``auto`` choice: bf16 autocast only where this CPU computes it fast,
else fp32; ``--precision`` forces one), the same AdamW settings; one step = forward,
loss, backward, clipping, optimizer step.
The sides alternate in this one process after warm-up; medians and ratios as JSON.
Tokens/s counts input tokens (encoder tokens; for T5 also the decoder's target tokens).

The decoder row is train_throughput.py's shape and sides (6 x 384, vocab 8192, seq 256,
random tokens). With ``--nanogpt PATH`` (default: ``$NANOGPT_DIR``), a karpathy/nanoGPT
checkout, its ``model.py`` is imported from there (never copied here) and its GPT of the
same shape is a third side of that row, with its own loss (`nanogpt_side.py`); BERT and T5
have no nanoGPT counterpart and stay two-sided. Without it the JSON says nanoGPT was not given.

    pip install -e ".[hf]"
    python benchmarks/family_throughput.py [--repeats 5] [--steps 4] [--batch 8] [--precision auto]
                                           [--nanogpt /tmp/nanoGPT]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

import nanogpt_side
import numpy as np
import torch
import torch.nn.functional as F
from common import Side, alternate, machine, pick_precision
from train_throughput import SPEC as GPT2
from train_throughput import causal_loss, hf_model

from lmforge.data.objectives import mask_tokens, span_corruption
from lmforge.models.build import build_model
from lmforge.plan.specs import ModelSpec, param_counts

SEQ, VOCAB = 256, 8192
MASK, PAD, START, EOS = 4, 0, 1, 2
SENTINELS = list(range(VOCAB - 100, VOCAB))
BERT = ModelSpec(family="encoder", n_encoder_layers=6, n_decoder_layers=0, d_model=384, n_heads=6, vocab_size=VOCAB,
                 context=SEQ, n_token_types=2, embedding_norm=True, final_norm=False, mlm_head=True)
T5 = ModelSpec(family="encoder-decoder", n_encoder_layers=4, n_decoder_layers=4, d_model=384, n_heads=6, d_ff=1536,
               vocab_size=VOCAB, context=SEQ, mlp="relu", norm="rmsnorm", positions="relative", bias=False)


def hf_bert() -> torch.nn.Module:
    from transformers import BertConfig, BertForMaskedLM

    config = BertConfig(vocab_size=VOCAB, hidden_size=384, num_hidden_layers=6, num_attention_heads=6,
                        intermediate_size=1536, max_position_embeddings=SEQ, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)
    config._attn_implementation = "sdpa"
    return BertForMaskedLM(config)


def hf_t5() -> torch.nn.Module:
    from transformers import T5Config, T5ForConditionalGeneration

    config = T5Config(vocab_size=VOCAB, d_model=384, d_kv=64, d_ff=1536, num_layers=4, num_decoder_layers=4,
                      num_heads=6, dropout_rate=0.0, feed_forward_proj="relu", tie_word_embeddings=True)
    return T5ForConditionalGeneration(config)


def mlm_loss(logits_of):
    def loss_of(model, batch):
        ids, mask, labels = batch
        return F.cross_entropy(logits_of(model, ids, mask).float().flatten(0, 1), labels.flatten(), ignore_index=-100)

    return loss_of


def lmforge_mlm_loss(model, batch):
    """lmforge's training path (lmforge.train.objective): the MLM head on chosen positions only."""
    ids, mask, labels = batch
    chosen = labels != -100
    logits = model.logits(model.encode(ids, mask)[chosen])  # (chosen, V)
    return F.cross_entropy(logits.float(), labels[chosen])


def seq2seq_loss(logits_of):
    def loss_of(model, batch):
        ids, mask, decoder_ids, labels = batch
        logits = logits_of(model, ids, mask, decoder_ids)
        return F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100)

    return loss_of


def batches(kind: str, steps: int, batch: int) -> tuple[list, int]:
    rng = np.random.default_rng(0)
    out, tokens = [], 0
    for _ in range(steps):
        if kind == "gpt2":  # causal LM: SEQ inputs and their SEQ next tokens
            out.append(torch.from_numpy(rng.integers(0, VOCAB, size=(batch, SEQ + 1), dtype=np.int64)))
            tokens = batch * SEQ
            continue
        raw = rng.integers(8, VOCAB - 100, size=(batch, SEQ), dtype=np.int64)
        if kind == "bert":
            b = mask_tokens(raw, rng, vocab_size=VOCAB, mask_id=MASK, special_ids={PAD, START, EOS, MASK})
            out.append(tuple(torch.from_numpy(x) for x in (b.input_ids, b.attention_mask, b.labels)))
            tokens = b.input_ids.size
        else:
            b = span_corruption(raw, rng, sentinel_ids=SENTINELS, eos_id=EOS, pad_id=PAD, decoder_start_id=START)
            out.append(tuple(torch.from_numpy(x) for x in (b.input_ids, b.attention_mask, b.decoder_input_ids,
                                                             b.labels)))
            tokens = b.input_ids.size + b.labels.size
    return out, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    nanogpt_side.add_argument(parser)
    args = parser.parse_args()
    nanogpt = nanogpt_side.load(args.nanogpt) if args.nanogpt else None
    if nanogpt is None:
        print(f"nanoGPT: {nanogpt_side.NOT_GIVEN}", file=sys.stderr, flush=True)
    precision = pick_precision(args.precision)
    torch.manual_seed(0)
    report = {"machine": machine(), "batch_sequences": args.batch, "seq": SEQ, "repeats": args.repeats,
              "precision": f"{precision} ({'autocast, ' if precision != 'fp32' else ''}fp32 weights and AdamW)",
              "nanogpt": nanogpt_side.NOT_GIVEN, "results": {}}
    rows = {
        "bert (6 x 384, masked LM)": (
            "bert", BERT, [
                Side("lmforge", build_model(BERT), lmforge_mlm_loss, precision=precision),
                Side("transformers", hf_bert(), mlm_loss(
                    lambda m, ids, mask: m(input_ids=ids, attention_mask=mask).logits), precision=precision),
            ],
        ),
        "t5 (4+4 x 384, span corruption)": (
            "t5", T5, [
                Side("lmforge", build_model(T5), seq2seq_loss(lambda m, ids, mask, dec: m(ids, mask, dec)),
                     precision=precision),
                Side("transformers", hf_t5(), seq2seq_loss(
                    lambda m, ids, mask, dec: m(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits),
                    precision=precision),
            ],
        ),
        "gpt2 (6 x 384, causal LM)": (
            "gpt2", GPT2, [
                Side("lmforge", build_model(GPT2), causal_loss(lambda m, x: m(x)), precision=precision),
                Side("transformers", hf_model(), causal_loss(lambda m, x: m(input_ids=x).logits),
                     precision=precision),
            ],
        ),
    }
    if nanogpt is not None:  # only the decoder layout has a nanoGPT counterpart
        third, info = nanogpt_side.side(nanogpt, GPT2, precision)
        report["nanogpt"] = {**nanogpt_side.revision(args.nanogpt), "row": "gpt2 (6 x 384, causal LM)", **info}
        rows["gpt2 (6 x 384, causal LM)"][2].append(third)
    for title, (kind, spec, sides) in rows.items():
        assert sides[0].params == param_counts(spec).total
        data, tokens = batches(kind, args.steps, args.batch)
        rates = alternate(sides, data, tokens, args.repeats)
        medians = {k: statistics.median(v) for k, v in rates.items()}
        report["results"][title] = {
            "params": {side.name: side.params for side in sides},
            "tokens_per_s_median": {k: round(v) for k, v in medians.items()},
            "tokens_per_s_all": {k: [round(x) for x in v] for k, v in rates.items()},
            "ratio_lmforge_over_transformers": round(medians["lmforge"] / medians["transformers"], 3),
        }
        if nanogpt_side.NAME in medians:
            report["results"][title]["ratio_lmforge_over_nanogpt"] = round(
                medians["lmforge"] / medians[nanogpt_side.NAME], 3)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
