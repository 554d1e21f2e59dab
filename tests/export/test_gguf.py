"""GGUF export: the file read back with gguf-py, and run by llama.cpp (llama-cpp-python, when installed).

Golden facts checked here, from llama.cpp's sources (ggml-org/llama.cpp):
- ``tokenizer.ggml.pre = "gpt-2"`` selects LLAMA_VOCAB_PRE_TYPE_GPT2 (src/llama-vocab.cpp), whose
  splitter is GPT-2's regex (src/unicode.cpp, unicode_regex_split_custom_gpt2);
- the llama architecture rotates adjacent pairs (2i, 2i+1) (rope type NORM), and convert_hf_to_gguf.py
  permutes the q/k rows of rotate-half checkpoints with reshape(n, 2, k/2, d).swapaxes(1, 2);
- a missing ``output.weight`` makes llama and gpt2 reuse ``token_embd.weight`` (src/models/llama.cpp, gpt2.cpp).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lmforge.errors import UserError
from lmforge.export.gguf_arch import check_spec, permute_rotary_rows, unpermute_rotary_rows
from lmforge.export.gguf_vocab import check_tokenizer
from lmforge.models.layers import apply_rotary, rotary_cos_sin
from lmforge.plan.presets import get_preset
from tests.corpora import corpus

CORPUS_NAME = "tinyshakespeare.txt"
PROMPT = "chbechcgagdfhbageegfbfdacfagbbdcded"  # text of the runs' order-2 Markov source (alphabet a-h)
LONG_PROMPT = "chbechcgagdfhbageegfbfdacfagbbdcdefcfhbahabfcdedhcgdgdfhecdcfdhcgdfefcdhcchffahabaacbhchhcceeg"
QUANTS = ("f32", "f16", "bf16", "q8_0", "q4_0")
# the largest |logit| difference llama.cpp may show per type, about 4x what it shows here on logits of 5
LOGIT_TOLERANCE = {"f32": 1e-4, "f16": 3e-3, "bf16": 2e-2, "q8_0": 5e-2, "q4_0": 0.5}


# ---- the q/k permutation, from the rotary formulas alone ------------------------------------


def _rope_interleaved(x: torch.Tensor, pos: torch.Tensor, base: float = 10_000.0) -> torch.Tensor:
    """llama.cpp's rope type NORM (GPT-J layout): pair (2i, 2i+1) rotated by pos * base^(-2i/k). x (T, k)."""
    k = x.shape[-1]
    theta = pos.double()[:, None] * base ** (-torch.arange(0, k, 2, dtype=torch.float64) / k)  # (T, k/2)
    a, b = x[:, 0::2], x[:, 1::2]
    out = torch.empty_like(x)
    out[:, 0::2] = a * theta.cos() - b * theta.sin()
    out[:, 1::2] = a * theta.sin() + b * theta.cos()
    return out


def test_permutation_turns_rotate_half_into_interleaved_rotary():
    """P rope_half(W x) == rope_interleaved(P W x) per head, for q (h heads) and k (g heads)."""
    gen = torch.Generator().manual_seed(0)
    n, k, d, T = 3, 8, 5, 7
    w = torch.randn(n * k, d, generator=gen, dtype=torch.float64)
    x = torch.randn(T, d, generator=gen, dtype=torch.float64)
    pos = torch.arange(T) * 3 + 1
    cos, sin = rotary_cos_sin(pos, k, dtype=torch.float64)
    ours = apply_rotary((x @ w.T).view(T, n, k).transpose(0, 1), cos, sin)  # (n, T, k): lmforge's rotary
    permuted = x @ permute_rotary_rows(w, n).T  # (T, n*k): what llama.cpp's rows compute
    theirs = torch.stack([_rope_interleaved(permuted[:, h * k:(h + 1) * k], pos) for h in range(n)])
    for h in range(n):  # llama.cpp's head h, component 2i + j == lmforge's component j*k/2 + i
        expect = ours[h].view(T, 2, k // 2).transpose(1, 2).reshape(T, k)
        torch.testing.assert_close(theirs[h], expect)
    assert torch.equal(unpermute_rotary_rows(permute_rotary_rows(w, n), n), w)
    assert not torch.equal(permute_rotary_rows(w, n), w)


# ---- specs llama.cpp cannot express ------------------------------------------------------------


LLAMA = get_preset("tiny-llama").spec
GPT2 = get_preset("tiny-gpt2").spec


@pytest.mark.parametrize("base, changes, named", [
    (LLAMA, {"norm": "layernorm"}, "norm=layernorm"),
    (LLAMA, {"mlp": "geglu"}, "mlp=geglu"),
    (LLAMA, {"bias": True}, "bias=True"),
    (LLAMA, {"embedding_norm": True}, "embedding_norm=True"),
    (LLAMA, {"final_norm": False}, "final_norm=False"),
    (GPT2, {"mlp": "relu"}, "mlp=relu"),
    (GPT2, {"norm": "rmsnorm"}, "norm=rmsnorm"),
    (GPT2, {"position_offset": 2}, "position_offset=2"),
    (GPT2, {"head_dim": 48}, "head_dim=48"),
    (GPT2, {"positions": "alibi"}, "positions=alibi"),
    (LLAMA, {"positions": "relative"}, "positions=relative"),
])
def test_specs_llama_cpp_cannot_express_are_refused(base, changes, named):
    with pytest.raises(UserError) as e:
        check_spec(base.with_(**changes))
    assert named in str(e.value) and "--to hf" in str(e.value)


def test_exportable_specs():
    assert check_spec(LLAMA) == "llama" and check_spec(LLAMA.with_(tied_embeddings=True, head_dim=48)) == "llama"
    assert check_spec(GPT2) == "gpt2" and check_spec(GPT2.with_(bias=False, n_kv_heads=2)) == "gpt2"
    with pytest.raises(UserError, match="encoder"):
        check_spec(get_preset("tiny-bert").spec)


@pytest.mark.parametrize("change", [
    {"normalizer": {"type": "NFC"}},
    {"pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": True, "use_regex": True}},
    {"pre_tokenizer": {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": "\\p{N}{1,3}"}, "behavior": "Isolated"},
        {"type": "ByteLevel", "add_prefix_space": False, "use_regex": False}]}},
    {"model": {"type": "BPE", "byte_fallback": True, "merges": []}},
    {"model": {"type": "WordPiece"}},
])
def test_tokenizers_llama_cpp_cannot_reproduce_are_refused(change):
    config = {"model": {"type": "BPE", "merges": []}, "normalizer": None,
              "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}}
    check_tokenizer(config)
    with pytest.raises(UserError, match="llama.cpp cannot tokenize exactly"):
        check_tokenizer({**config, **change})


# ---- the file read back with gguf-py -------------------------------------------------------------


@pytest.fixture(scope="module")
def runs(trained_run):
    """llama layout (GQA 4/2, untied), llama tied with d_ff 344 (rows of 344 are not whole q8_0 blocks), gpt2."""
    return {"llama": trained_run("tiny-llama"), "llama-tied": trained_run("tiny-llama", tied_embeddings=True, d_ff=344),
            "gpt2": trained_run("tiny-gpt2")}


@pytest.fixture(scope="module")
def exported(request, tmp_path_factory):
    """(run key, quant) -> GGUFResult, each written once; skips before training anything when gguf is missing."""
    from lmforge.export.gguf import export_gguf

    pytest.importorskip("gguf")
    runs = request.getfixturevalue("runs")
    root = tmp_path_factory.mktemp("gguf")
    made = {}

    def get(key: str, quant: str):
        if (key, quant) not in made:
            made[key, quant] = export_gguf(runs[key], root / f"{key}-{quant}.gguf", quant=quant)
        return made[key, quant]

    return get


def _read(path):
    import gguf

    reader = gguf.GGUFReader(path)
    fields = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    tensors = {t.name: (t.tensor_type.name, tuple(int(n) for n in t.shape),
                        gguf.quants.dequantize(t.data, t.tensor_type)) for t in reader.tensors}
    return fields, tensors


def _expected_tensors(spec, w: dict) -> dict:
    """GGUF name -> lmforge fp32 tensor (q, k still in lmforge's row order), written out by hand."""
    h, g, k, f = spec.n_heads, spec.kv_heads, spec.d_head, spec.ffn
    out = {"token_embd.weight": w["tok_emb.weight"], "output_norm.weight": w["final_norm.weight"]}
    if not spec.tied_embeddings:
        out["output.weight"] = w["lm_head.weight"]
    if spec.positions == "learned":
        out["position_embd.weight"] = w["pos_emb.weight"]
        out["output_norm.bias"] = w["final_norm.bias"]
    for i in range(spec.n_decoder_layers):
        b, p = f"blk.{i}.", f"blocks.{i}."
        out[b + "attn_norm.weight"] = w[p + "norm1.weight"]
        out[b + "ffn_norm.weight"] = w[p + "norm2.weight"]
        out[b + "attn_output.weight"] = w[p + "attn.proj.weight"]
        out[b + "ffn_down.weight"] = w[p + "mlp.proj.weight"]
        if spec.positions == "rotary":
            q, kk, v = w[p + "attn.qkv.weight"].split((h * k, g * k, g * k))
            out[b + "attn_q.weight"], out[b + "attn_k.weight"], out[b + "attn_v.weight"] = q, kk, v
            out[b + "ffn_gate.weight"], out[b + "ffn_up.weight"] = w[p + "mlp.fc.weight"].split((f, f))
        else:
            out[b + "attn_qkv.weight"], out[b + "ffn_up.weight"] = w[p + "attn.qkv.weight"], w[p + "mlp.fc.weight"]
            for ours, theirs in (("norm1", "attn_norm"), ("norm2", "ffn_norm"), ("attn.qkv", "attn_qkv"),
                                 ("attn.proj", "attn_output"), ("mlp.fc", "ffn_up"), ("mlp.proj", "ffn_down")):
                out[b + theirs + ".bias"] = w[p + ours + ".bias"]
    return out


def _expected_type(name: str, shape: tuple, quant: str) -> str:
    if len(shape) == 1:
        return "F32"
    return quant.upper() if quant in ("f32", "f16", "bf16") or shape[-1] % 32 == 0 else "F16"


def _expected_keys(arch: str, spec, tokenizer, quant: str, run_name: str) -> dict:
    import gguf

    import lmforge

    file_type = {"f32": 0, "f16": 1, "bf16": 32, "q8_0": 7, "q4_0": 2}[quant]
    keys = {
        "general.architecture": arch, "general.type": "model", "general.name": run_name,
        "general.description": f"lmforge {lmforge.__version__} export of run {run_name!r} "
                               f"(preset {spec.name}, {quant})",
        "general.file_type": file_type, "general.quantization_version": gguf.GGML_QUANT_VERSION,
        "lmforge.version": lmforge.__version__, "lmforge.run": run_name,
        "lmforge.spec": json.dumps(spec.to_dict(), sort_keys=True),
        f"{arch}.context_length": spec.context, f"{arch}.embedding_length": spec.d_model,
        f"{arch}.block_count": spec.n_decoder_layers, f"{arch}.feed_forward_length": spec.ffn,
        f"{arch}.attention.head_count": spec.n_heads, f"{arch}.attention.head_count_kv": spec.kv_heads,
        f"{arch}.vocab_size": spec.vocab_size,
        "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "gpt-2",
        "tokenizer.ggml.bos_token_id": tokenizer.bos_id, "tokenizer.ggml.eos_token_id": tokenizer.eos_id,
        "tokenizer.ggml.add_bos_token": False, "tokenizer.ggml.add_eos_token": False,
    }
    if tokenizer.pad_id is not None:
        keys["tokenizer.ggml.padding_token_id"] = tokenizer.pad_id
    if arch == "llama":
        keys.update({"llama.attention.layer_norm_rms_epsilon": pytest.approx(1e-5), "llama.attention.key_length": 32,
                     "llama.attention.value_length": 32, "llama.rope.dimension_count": 32,
                     "llama.rope.freq_base": 10_000.0})
    else:
        keys["gpt2.attention.layer_norm_epsilon"] = pytest.approx(1e-5)
    return keys


@pytest.mark.parametrize("key, arch", [("llama", "llama"), ("llama-tied", "llama"), ("gpt2", "gpt2")])
@pytest.mark.parametrize("quant", QUANTS)
def test_file_holds_every_tensor_and_key(exported, runs, key, arch, quant):
    from lmforge.export.source import export_source

    result = exported(key, quant)
    source = export_source(runs[key])
    spec, tokenizer = source.run.spec, source.run.tokenizer
    assert (result.arch, result.quant, result.bytes) == (arch, quant, result.path.stat().st_size)
    fields, tensors = _read(result.path)

    expected = _expected_keys(arch, spec, tokenizer, quant, source.run.config.name)
    vocab = tokenizer.inner.get_vocab(with_added_tokens=True)
    merges = json.loads(tokenizer.inner.to_str())["model"]["merges"]
    assert len(merges) > 0
    tokens, types, file_merges = (fields.pop(k) for k in ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type",
                                                           "tokenizer.ggml.merges"))
    assert fields == expected
    assert tokens == [tok for tok, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    assert types == [3 if t in tokenizer.inner.get_added_tokens_decoder() else 1 for t in range(spec.vocab_size)]
    assert file_merges == [m if isinstance(m, str) else " ".join(m) for m in merges]

    want = _expected_tensors(spec, source.weights)
    assert set(tensors) == set(want) and result.n_tensors == len(want)
    for name, (qtype, ne, data) in tensors.items():
        ours = want[name].numpy()
        assert ne == tuple(reversed(ours.shape)), name  # ggml's ne: fastest axis first
        assert qtype == _expected_type(name, ours.shape, quant) == result.tensor_types[name], name
        if name.endswith(("attn_q.weight", "attn_k.weight")):
            n = spec.n_heads if "attn_q" in name else spec.kv_heads
            data = unpermute_rotary_rows(torch.from_numpy(np.array(data)), n).numpy()
        if qtype == "F32":
            np.testing.assert_array_equal(data, ours, err_msg=name)
        elif qtype in ("F16", "BF16"):  # 11 and 8 significant bits
            np.testing.assert_allclose(data, ours, rtol=2.0 ** -11 if qtype == "F16" else 2.0 ** -8, atol=1e-7,
                                       err_msg=name)
        else:  # one f16 scale per block of 32: q8_0 amax/127 (half a step off at most), q4_0 amax/8 (a step)
            step = 1 / 127 if qtype == "Q8_0" else 1 / 8
            bound = np.abs(ours).max() * (step * (0.5 if qtype == "Q8_0" else 1.0) + 1e-3)
            assert np.abs(data - ours).max() <= bound, name
    if key == "llama-tied":
        assert "output.weight" not in tensors and any("tied" in n for n in result.notes)
    fallback = [n for n in result.notes if "stored as f16" in n]
    if key == "llama-tied" and quant in ("q8_0", "q4_0"):
        assert fallback and all(f"blk.{i}.ffn_down.weight" in fallback[0] for i in range(spec.n_decoder_layers))
    else:
        assert not fallback


# ---- bad input: refused, nothing written -------------------------------------------------------------


def _nothing_beside(path: Path) -> None:
    assert not path.exists()
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(f".{path.name}")] == []


def test_encoder_run_refused(trained_run, tmp_path):
    from lmforge.export.gguf import export_gguf

    pytest.importorskip("gguf")
    out = tmp_path / "bert.gguf"
    with pytest.raises(UserError, match="encoder.*--to hf"):
        export_gguf(trained_run("tiny-bert"), out)
    _nothing_beside(out)


def test_bad_quant_existing_out_and_missing_gguf(tmp_path, monkeypatch):
    """All three are refused before the run is read (the run directory here does not even exist)."""
    from lmforge.export.gguf import GGUF_QUANTS, export_gguf

    run = tmp_path / "no-such-run"
    assert GGUF_QUANTS == ("f32", "f16", "bf16", "q8_0", "q4_0")
    out = tmp_path / "m.gguf"
    with pytest.raises(UserError, match="f32, f16, bf16, q8_0, q4_0"):
        export_gguf(run, out, quant="q5_k")
    _nothing_beside(out)
    out.write_bytes(b"keep")
    with pytest.raises(UserError, match="--force"):
        export_gguf(run, out)
    assert out.read_bytes() == b"keep"
    monkeypatch.setitem(sys.modules, "gguf", None)  # import gguf -> ImportError
    with pytest.raises(UserError, match=r"pip install 'lmforge\[gguf\]'"):
        export_gguf(run, out, force=True)
    assert out.read_bytes() == b"keep"


def test_failed_write_leaves_nothing(request, tmp_path, monkeypatch):
    gguf = pytest.importorskip("gguf")
    from lmforge.export.gguf import export_gguf

    runs = request.getfixturevalue("runs")
    calls = []

    def failing(data, qtype):
        calls.append(qtype)
        if len(calls) > 5:
            raise OSError(28, "No space left on device")
        return real(data, qtype)

    real = gguf.quants.quantize
    monkeypatch.setattr(gguf.quants, "quantize", failing)
    out = tmp_path / "m.gguf"
    with pytest.raises(OSError):
        export_gguf(runs["gpt2"], out, quant="q8_0")
    _nothing_beside(out)
    out.write_bytes(b"old")
    with pytest.raises(OSError):
        calls.clear()
        export_gguf(runs["gpt2"], out, quant="q8_0", force=True)
    assert out.read_bytes() == b"old"


# ---- llama.cpp runs the file -----------------------------------------------------------------------------


def _llama(path, **kw):
    llama_cpp = pytest.importorskip("llama_cpp")
    return llama_cpp.Llama(model_path=str(path), n_ctx=128, verbose=False, seed=0, n_threads=1, **kw)


def _greedy(llm, ids: list[int], n: int, eos: int) -> list[int]:
    llm.eval(ids)
    out = []
    while len(out) < n:
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        if token == eos:
            break
        out.append(token)
        llm.eval([token])
    return out


@pytest.mark.parametrize("key", ["llama", "llama-tied", "gpt2"])
@pytest.mark.parametrize("quant", QUANTS)
def test_llama_cpp_computes_lmforge_logits(exported, runs, key, quant):
    """Every position of a 41-token prompt within LOGIT_TOLERANCE. Measured here at f32: 2e-5 to 3e-5;
    without the q/k permutation 5e-3 for the untied llama run, 5e-4 for the tied one (so f32 catches it)."""
    from lmforge.runs import load_run

    llm = _llama(exported(key, quant).path, logits_all=True)
    run = load_run(runs[key])
    ids = run.tokenizer.encode(LONG_PROMPT)
    assert llm.tokenize(LONG_PROMPT.encode(), add_bos=False, special=False) == ids
    llm.eval(ids)
    with torch.no_grad():
        ours = run.model(torch.tensor([ids]))[0].numpy()  # (T, V)
    assert np.abs(np.asarray(llm.scores[: len(ids)]) - ours).max() < LOGIT_TOLERANCE[quant]


@pytest.mark.parametrize("key", ["llama", "llama-tied", "gpt2"])
@pytest.mark.parametrize("quant", ["f16", "q8_0"])
def test_llama_cpp_greedy_continuation_matches_lmforge(exported, runs, key, quant):
    from lmforge.api import generate

    llm = _llama(exported(key, quant).path, logits_all=True)
    ours = generate(runs[key], [PROMPT], max_new_tokens=20, temperature=0)[0]
    ids = llm.tokenize(PROMPT.encode(), add_bos=False, special=False)
    assert ids == ours.prompt_ids
    assert _greedy(llm, ids, 20, eos=llm.token_eos()) == ours.ids
    assert len(ours.ids) == 20 or ours.finish_reason == "eos"


@pytest.fixture(scope="module")
def shakespeare_run(tmp_path_factory):
    """A run whose tokenizer learned 600+ merges on Shakespeare (2 training steps: only its vocabulary is used)."""
    from lmforge.train.loop import train
    from tests.tiny_runs import run_config

    pytest.importorskip("llama_cpp")
    shakespeare = corpus(CORPUS_NAME)
    root = tmp_path_factory.mktemp("shakespeare")
    text = root / "shakespeare.txt"  # the first 200 kB: enough for 1024 tokens, quick to prepare
    text.write_bytes(shakespeare.read_bytes()[:200_000].rsplit(b"\n", 1)[0])
    config = run_config(root, "shakespeare", "tiny-gpt2", **{"data.sources": [str(text)], "data.vocab_size": 1024,
                                                              "train.max_steps": 2, "train.warmup_steps": 1})
    return train(config, quiet=True, log=lambda _: None).run_dir


def test_llama_cpp_tokenizes_like_lmforge(shakespeare_run, tmp_path, monkeypatch):
    """The gpt-2 pre-tokenizer reproduces lmforge's ids; llama.cpp's default one does not (the test can fail)."""
    pytest.importorskip("llama_cpp")
    import lmforge.export.gguf_vocab as gguf_vocab
    from lmforge.export.gguf import export_gguf
    from lmforge.runs import load_run

    tokenizer = load_run(shakespeare_run).tokenizer
    paragraph = corpus(CORPUS_NAME).read_bytes()[:600].decode("utf-8", "ignore")
    tricky = "I'll pay 1234567 ducats -- (twice)!\n\n   Done,  'tis DONE's;\tend  \n"
    path = export_gguf(shakespeare_run, tmp_path / "s.gguf").path
    llm = _llama(path, vocab_only=True)
    for text in (paragraph, tricky):
        assert llm.tokenize(text.encode(), add_bos=False, special=False) == tokenizer.encode(text)
    assert len(tokenizer.encode(paragraph)) < 0.6 * len(paragraph.encode())  # merges were used
    monkeypatch.setattr(gguf_vocab, "PRE_TOKENIZER", "default")
    llm = _llama(export_gguf(shakespeare_run, tmp_path / "d.gguf").path, vocab_only=True)
    assert llm.tokenize(paragraph.encode(), add_bos=False, special=False) != tokenizer.encode(paragraph)


def test_quantized_run_exports_dequantized_weights(request, tmp_path):
    """The file holds the int8 run's dequantized weights; llama.cpp's greedy tokens are those of the
    float model with those weights (lmforge's own int8 kernels, picked by measurement, may differ)."""
    pytest.importorskip("gguf")
    from lmforge.api import generate
    from lmforge.export.gguf import export_gguf
    from lmforge.export.source import export_source
    from lmforge.quantize.report import quantize_run

    runs = request.getfixturevalue("runs")
    quantized = tmp_path / "q"
    quantize_run(runs["llama"], "int8", out=quantized, max_tokens=512)
    result = export_gguf(quantized, tmp_path / "q.gguf", quant="f32")
    assert "dequantized" in result.notes[0]
    fields, tensors = _read(result.path)
    assert fields["lmforge.dequantized_from"] == "int8"
    source = export_source(quantized)
    weights = source.weights
    for ours, theirs in (("blocks.0.mlp.proj.weight", "blk.0.ffn_down.weight"), ("lm_head.weight", "output.weight")):
        np.testing.assert_array_equal(tensors[theirs][2], weights[ours].numpy())
    original = export_source(runs["llama"]).weights["blocks.0.mlp.proj.weight"]
    assert not torch.equal(weights["blocks.0.mlp.proj.weight"], original)  # int8-rounded, not the float run
    llm = _llama(result.path, logits_all=True)
    ours = generate(source.run.model, [PROMPT], tokenizer=source.run.tokenizer, max_new_tokens=20, temperature=0)[0]
    assert _greedy(llm, ours.prompt_ids, 20, eos=llm.token_eos()) == ours.ids
    q8 = export_gguf(quantized, tmp_path / "q8.gguf", quant="q8_0")
    assert _llama(q8.path).n_vocab() == source.run.spec.vocab_size
