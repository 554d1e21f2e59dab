"""Generation speed through the path users call: ``lmforge.api.generate`` with a real
tokenizer, stop strings set (never hit) and a streaming callback on, against Hugging
Face transformers' ``generate()``.

A small GPT-2-shaped decoder (6 layers, d_model 384, 6 heads, vocab 8192, context 2,304;
``--size base``: 12 layers, d_model 768, 12 heads, 92M parameters) is built with
lmforge, its weights are copied into a ``GPT2LMHeadModel`` of identical shape (Conv1D
weights are the transpose of nn.Linear's; GELU tanh is transformers' "gelu_new"), and
the two are checked to give the same logits (fp32) before anything is timed. The
tokenizer is a byte-level BPE of 8,192 tokens trained on ``builtin:pydocs`` (or
``--tokenizer PATH``, a run's tokenizer.json); prompts are 16 tokens of real text.

Timed: new tokens per second for 256 new tokens at batch 1 and 8, and 2,048 at batch 1
(a per-token cost that grew with the output would show there), greedy and sampled
(temperature 1, top-k 50), fp32 (and bf16 where lmforge's probe finds it fast),
lmforge and transformers alternating in one process, median of ``--runs``. Both sides
make exactly that many tokens: transformers with ``min_new_tokens = max_new_tokens`` and
no eos, lmforge with the real tokenizer's ``eos_id`` set to None (the random model would
draw it now and then); the benchmark asserts every output ran to "length" (no stop hit).
transformers runs plain (no streamer, no stop strings): the ratio is the lower bound.
At batch 1 each result also gives the fraction of the memory-bandwidth roofline reached:
weights + KV cache bytes per token x tokens/s over the read bandwidth of a 256 MiB copy
measured here (decode at batch 1 is bound by memory bandwidth, Pope et al. 2022).
Also lmforge's no-cache loop at batch 1 (the whole sequence recomputed every step), to
show what the cache buys (Pope et al. 2022, Sec. 2).

Run from the repository root: ``python benchmarks/generate_speed.py``; prints JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import copy_bandwidth, decode_bytes_per_token, machine  # noqa: E402

from lmforge.api import generate as api_generate  # noqa: E402
from lmforge.generate.engine import draw  # noqa: E402
from lmforge.generate.processors import LogitsChain  # noqa: E402
from lmforge.models.build import build_model  # noqa: E402
from lmforge.plan.specs import ModelSpec  # noqa: E402
from lmforge.train.precision import cpu_bf16  # noqa: E402

SPEC = ModelSpec(n_decoder_layers=6, d_model=384, n_heads=6, vocab_size=8192, context=2304, name="gpt2-small-bench")
SIZES = {  # --size: "base" is GPT-2 small's body (92M parameters), whose weights no CPU cache holds
    "small": SPEC,
    "base": ModelSpec(n_decoder_layers=12, d_model=768, n_heads=12, vocab_size=8192, context=2304,
                      name="gpt2-base-bench"),
}
PROMPT_LEN = 16
NEW_TOKENS = 256
LONG = 2048  # new tokens of the long run (batch 1)
STOPS = ["\n\nTHE END\n\n", "<|never|>"]  # set, and never hit
SETTINGS = {"greedy": {"temperature": 0.0, "top_k": 0}, "top_k=50": {"temperature": 1.0, "top_k": 50}}


def real_tokenizer(path: str | None):
    """A run's tokenizer.json, or an 8,192-token byte-level BPE trained on builtin:pydocs."""
    from lmforge.data.builtin import pydocs_documents
    from lmforge.data.tokenizer import Tokenizer, train_tokenizer

    tok = Tokenizer.load(path) if path else train_tokenizer(pydocs_documents(), SPEC.vocab_size)
    tok.eos_id = None  # as transformers' eos_token_id=None: every output makes all its tokens
    return tok


def real_prompts(tok, n: int) -> list[str]:
    """``n`` prompts of real text, each exactly PROMPT_LEN tokens (decoded from the encoding)."""
    from lmforge.data.builtin import pydocs_documents

    prompts = []
    for doc in pydocs_documents():
        ids = tok.encode(doc)
        if len(ids) >= PROMPT_LEN:
            text = tok.decode(ids[:PROMPT_LEN])
            if len(tok.encode(text)) == PROMPT_LEN:
                prompts.append(text)
        if len(prompts) == n:
            return prompts
    raise SystemExit("not enough documents for the prompts")


def to_hf(model: torch.nn.Module):
    """A ``GPT2LMHeadModel`` of the same shape holding ``model``'s weights (copied)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    spec = model.spec
    config = GPT2Config(
        vocab_size=spec.vocab_size, n_positions=spec.context, n_embd=spec.d_model, n_layer=spec.n_decoder_layers,
        n_head=spec.n_heads, n_inner=spec.ffn, activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0,
        attn_pdrop=0.0, layer_norm_epsilon=1e-5, tie_word_embeddings=True, bos_token_id=None, eos_token_id=None,
        pad_token_id=0,
    )
    hf = GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        t = hf.transformer
        t.wte.weight.copy_(model.tok_emb.weight)
        t.wpe.weight.copy_(model.pos_emb.weight)
        for ours, theirs in zip(model.blocks, t.h, strict=True):
            theirs.ln_1.load_state_dict(ours.norm1.state_dict())
            theirs.ln_2.load_state_dict(ours.norm2.state_dict())
            # Conv1D keeps weight as (in, out): the transpose of nn.Linear's (out, in); qkv rows [q|k|v] either way
            for conv, lin in ((theirs.attn.c_attn, ours.attn.qkv), (theirs.attn.c_proj, ours.attn.proj),
                              (theirs.mlp.c_fc, ours.mlp.fc), (theirs.mlp.c_proj, ours.mlp.proj)):
                conv.weight.copy_(lin.weight.t())
                conv.bias.copy_(lin.bias)
        t.ln_f.load_state_dict(model.final_norm.state_dict())
    hf.tie_weights()
    assert hf.lm_head.weight.data_ptr() == t.wte.weight.data_ptr(), "HF head is not tied"
    return hf


def check_same_logits(model, hf) -> float:
    idx = torch.randint(0, SPEC.vocab_size, (2, 64), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        ours = model(idx)
        theirs = hf(idx).logits
    diff = float((ours - theirs).abs().max())
    assert torch.allclose(ours, theirs, atol=1e-4, rtol=0), f"logits differ by {diff}"
    return diff


def greedy_agreement(model, hf, tok, prompt: str) -> int:
    """How many of the 256 greedy fp32 tokens the two sides agree on before the first difference."""
    ours = api_generate(model, [prompt], tokenizer=tok, max_new_tokens=NEW_TOKENS, temperature=0.0, top_k=0)[0].ids
    idx = torch.tensor([tok.encode(prompt)])  # (1, P)
    with torch.inference_mode():
        theirs = hf.generate(idx, attention_mask=torch.ones_like(idx), max_new_tokens=NEW_TOKENS,
                             min_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=0, eos_token_id=None)
    theirs = theirs[0, idx.shape[1]:].tolist()
    return next((i for i, (a, b) in enumerate(zip(ours, theirs, strict=True)) if a != b), len(ours))


def run_lmforge(model, tok, prompts: list[str], setting: dict, new_tokens: int) -> int:
    """lmforge.api.generate with the real tokenizer, stop strings and a streaming callback."""
    streamed = [0]

    def on_token(row: int, piece: str) -> None:
        streamed[0] += len(piece)

    results = api_generate(model, prompts, tokenizer=tok, max_new_tokens=new_tokens, stop=STOPS, on_token=on_token,
                           temperature=setting["temperature"], top_k=setting["top_k"])
    made = sum(len(r.ids) for r in results)
    assert all(r.finish_reason == "length" for r in results) and made == new_tokens * len(prompts), \
        [r.finish_reason for r in results]
    assert streamed[0] == sum(len(r.text) for r in results)
    return made


def run_hf(hf, prompts: list[list[int]], setting: dict, new_tokens: int) -> int:
    idx = torch.tensor(prompts)  # (B, P)
    kwargs = {"do_sample": False} if setting["temperature"] == 0 else {
        "do_sample": True, "temperature": setting["temperature"], "top_k": setting["top_k"], "top_p": 1.0}
    with torch.inference_mode():
        out = hf.generate(idx, attention_mask=torch.ones_like(idx), max_new_tokens=new_tokens,
                          min_new_tokens=new_tokens, pad_token_id=0, eos_token_id=None, **kwargs)
    made = (out.shape[1] - idx.shape[1]) * idx.shape[0]
    assert made == new_tokens * len(prompts), made
    return made


def run_no_cache(model, prompts: list[list[int]], setting: dict) -> int:
    """Recompute the whole sequence every step (the engine's chain and `draw`)."""
    chain = LogitsChain.from_settings(temperature=setting["temperature"], top_k=setting["top_k"])
    gen = torch.Generator().manual_seed(0)
    seq = torch.tensor(prompts)  # (B, P) token ids
    rows = list(range(len(prompts)))
    with torch.inference_mode():
        for _ in range(NEW_TOKENS):
            tokens, _ = draw(chain, model(seq)[:, -1, :], seq, [gen] * len(rows), rows)
            seq = torch.cat((seq, torch.tensor(tokens).view(-1, 1)), dim=1)  # (B, T + 1)
    return NEW_TOKENS * len(prompts)


def roofline_fraction(tok_s: float, precision: str, new_tokens: int, read_bandwidth: float) -> float:
    """The fraction of ``read_bandwidth`` that ``tok_s`` batch-1 tokens/s read (weights and
    KV cache once per token: `common.decode_bytes_per_token`)."""
    return tok_s * decode_bytes_per_token(SPEC, precision, PROMPT_LEN, new_tokens) / read_bandwidth


def timed(fn, *args) -> float:
    """Tokens per second of one call."""
    start = time.perf_counter()
    made = fn(*args)
    return made / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--long", type=int, default=LONG, help="new tokens of the long batch-1 run (0: skip it)")
    parser.add_argument("--tokenizer", default=None, help="a tokenizer.json of 8,192 tokens (default: train one)")
    parser.add_argument("--dtypes", nargs="+", default=None,
                        help="default: float32, and bfloat16 where this CPU computes it fast (lmforge's probe)")
    parser.add_argument("--size", choices=list(SIZES), default="small",
                        help="small: 6 x 384 (14.7M parameters); base: 12 x 768 (92M, GPT-2 small's body)")
    args = parser.parse_args()
    global SPEC
    SPEC = SIZES[args.size]
    if args.dtypes is None:
        args.dtypes = ["float32"] + (["bfloat16"] if cpu_bf16().fast else [])
    import transformers

    tok = real_tokenizer(args.tokenizer)
    assert tok.vocab_size == SPEC.vocab_size, f"the tokenizer has {tok.vocab_size} tokens, the model {SPEC.vocab_size}"
    torch.manual_seed(0)
    model = build_model(SPEC).eval()
    hf = to_hf(model)
    diff = check_same_logits(model, hf)
    prompt_pool = real_prompts(tok, max(args.batches))
    agree = greedy_agreement(model, hf, tok, prompt_pool[0])
    cases = [(batch, NEW_TOKENS) for batch in args.batches] + ([(1, args.long)] if args.long else [])
    bandwidth = copy_bandwidth(torch.device("cpu"), 256, repeats=8) / 2  # the read half of a 256 MiB copy

    results: dict[str, dict] = {}
    for dtype_name in args.dtypes:
        dtype = getattr(torch, dtype_name)
        model.to(dtype)
        hf.to(dtype)
        for setting_name, setting in SETTINGS.items():
            for batch, new_tokens in cases:
                prompts = prompt_pool[:batch]
                ids = [tok.encode(p) for p in prompts]
                run_lmforge(model, tok, prompts, setting, 8)  # warm-up both sides
                run_hf(hf, ids, setting, 8)
                ours, theirs = [], []
                for _ in range(args.runs):  # alternate
                    ours.append(timed(run_lmforge, model, tok, prompts, setting, new_tokens))
                    theirs.append(timed(run_hf, hf, ids, setting, new_tokens))
                key = f"{dtype_name}/{setting_name}/batch{batch}/new{new_tokens}"
                results[key] = {
                    "lmforge_tok_s": round(statistics.median(ours), 1),
                    "transformers_tok_s": round(statistics.median(theirs), 1),
                    "ratio": round(statistics.median(ours) / statistics.median(theirs), 2),
                }
                if batch == 1:
                    precision = "fp32" if dtype == torch.float32 else "bf16"
                    results[key]["lmforge_roofline_fraction"] = round(roofline_fraction(
                        statistics.median(ours), precision, new_tokens, bandwidth), 3)
                    results[key]["transformers_roofline_fraction"] = round(roofline_fraction(
                        statistics.median(theirs), precision, new_tokens, bandwidth), 3)
                print(key, results[key], file=sys.stderr, flush=True)
    model.float()
    one = [tok.encode(prompt_pool[0])]
    no_cache = statistics.median(timed(run_no_cache, model, one, SETTINGS["greedy"])
                                 for _ in range(max(1, args.runs - 1)))
    cached = results.get(f"float32/greedy/batch1/new{NEW_TOKENS}", {}).get("lmforge_tok_s")
    report = {
        "benchmark": "generate_speed",
        "machine": machine(),
        "transformers": transformers.__version__,
        "settings": {
            "model": {"n_layers": SPEC.n_decoder_layers, "d_model": SPEC.d_model, "n_heads": SPEC.n_heads,
                      "vocab_size": SPEC.vocab_size, "context": SPEC.context, "params": model.num_params()},
            "path": "lmforge.api.generate, real tokenizer, stop strings (never hit), streaming callback on; "
                    "transformers generate() plain",
            "prompt_tokens": PROMPT_LEN, "new_tokens": sorted({n for _, n in cases}), "runs": args.runs,
            "statistic": "median", "sampling": SETTINGS, "stops": STOPS, "max_abs_logit_diff_fp32": diff,
            "greedy_fp32_tokens_identical_of_256": agree,
        },
        "copy_read_bandwidth_gb_s": round(bandwidth / 1e9, 1),
        "results": results,
        "lmforge_no_cache_fp32_greedy_batch1_tok_s": round(no_cache, 1),
        "cache_speedup_fp32_greedy_batch1": round(cached / no_cache, 2) if cached else None,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
