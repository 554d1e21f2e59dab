"""Import of checkpoints transformers made itself (random weights, shapes the export tests
do not use: rotary base 500,000 and eps 1e-6, head_dim apart from d_model / n_heads,
uneven stacks, T5 v1.1's gated GELU, one token type): lmforge's logits equal transformers'
within 1e-4, and continued pretraining from the import runs."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from lmforge.export.importer import import_hf
from lmforge.runs import load_run
from tests.cli.cli_run import run

transformers = pytest.importorskip("transformers")


def _models(vocab: int) -> dict:
    t = transformers
    return {
        "llama": t.LlamaForCausalLM(t.LlamaConfig(
            num_hidden_layers=3, hidden_size=96, num_attention_heads=6, num_key_value_heads=2, head_dim=24,
            intermediate_size=160, vocab_size=vocab, max_position_embeddings=64, rms_norm_eps=1e-6,
            rope_theta=500_000.0, tie_word_embeddings=True)),
        "gpt2": t.GPT2LMHeadModel(t.GPT2Config(n_layer=2, n_embd=64, n_head=2, n_inner=96, vocab_size=vocab,
                                               n_positions=48, activation_function="relu")),
        "bert": t.BertForMaskedLM(t.BertConfig(num_hidden_layers=3, hidden_size=48, num_attention_heads=3,
                                               intermediate_size=80, vocab_size=vocab, max_position_embeddings=40,
                                               type_vocab_size=1, hidden_act="gelu_new")),
        "t5": t.T5ForConditionalGeneration(t.T5Config(num_layers=2, num_decoder_layers=3, d_model=64, num_heads=2,
                                                      d_kv=24, d_ff=96, vocab_size=vocab,
                                                      relative_attention_num_buckets=16,
                                                      feed_forward_proj="gated-gelu")),
        "bart": t.BartForConditionalGeneration(t.BartConfig(
            encoder_layers=1, decoder_layers=2, d_model=64, encoder_attention_heads=4, decoder_attention_heads=4,
            encoder_ffn_dim=80, decoder_ffn_dim=80, vocab_size=vocab, max_position_embeddings=40,
            activation_function="gelu_new")),
    }


@pytest.fixture(scope="module")
def checkpoints(trained_run, tmp_path_factory):
    """model_type -> (a transformers checkpoint directory with lmforge's tokenizer.json, its model)."""
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("hf-made")
    tokenizer = trained_run("tiny-gpt2") / "tokenizer.json"
    vocab = load_run(trained_run("tiny-gpt2")).tokenizer.vocab_size
    made = {}
    for name, model in _models(vocab).items():
        model.eval()
        model.save_pretrained(root / name)
        shutil.copyfile(tokenizer, root / name / "tokenizer.json")
        made[name] = (root / name, model)
    return made


@pytest.mark.parametrize("name", ["llama", "gpt2", "bert", "t5", "bart"])
def test_imported_model_computes_transformers_logits(checkpoints, name, tmp_path):
    directory, model = checkpoints[name]
    result = import_hf(str(directory), tmp_path / "run")
    ours = load_run(result.run_dir)
    assert ours.model.num_params() == result.params
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(4, ours.spec.vocab_size, (2, 11), generator=g)
    mask = torch.ones(2, 11, dtype=torch.bool)
    mask[1, 7:] = False
    with torch.no_grad():
        if ours.spec.family == "encoder-decoder":
            dec = torch.randint(4, ours.spec.vocab_size, (2, 6), generator=g)
            a = ours.model(ids, attention_mask=mask, decoder_input_ids=dec)
            b = model(input_ids=ids, attention_mask=mask.long(), decoder_input_ids=dec).logits
            real = torch.ones(2, 6, dtype=torch.bool)
        else:
            a = ours.model(ids, attention_mask=mask)
            b = model(input_ids=ids, attention_mask=mask.long()).logits
            real = mask
    assert (a - b).abs()[real].max().item() < 1e-4
    record = json.loads((result.run_dir / "import.json").read_text())
    assert record["class"] == type(model).__name__ and len(record["config_sha256"]) == 64
    if name == "llama":
        assert (ours.spec.rotary_base, ours.spec.norm_eps, ours.spec.d_head, ours.spec.kv_heads) == (5e5, 1e-6, 24, 2)


def test_continued_pretraining_from_an_import_runs(checkpoints, tmp_path, capsys):
    directory, _ = checkpoints["llama"]
    imported = import_hf(str(directory), tmp_path / "llama")
    code, out, err = run(capsys, "train", "--init-from", imported.run_dir, "--data", "markov=builtin:markov",
                         "--data.seq-len", "32", "--train.batch-tokens", "256", "--train.micro-batch", "8",
                         "--train.max-steps", "3", "--train.warmup-steps", "1", "--train.eval-tokens", "512")
    assert code == 0, err
    continued = load_run(tmp_path / "llama-continued")
    before = load_run(imported.run_dir).model.state_dict()
    after = continued.model.state_dict()
    assert continued.spec == load_run(imported.run_dir).spec
    assert any(not torch.equal(before[k], after[k]) for k in before)  # it trained
    report = json.loads((tmp_path / "llama-continued" / "report.json").read_text())
    assert report["measured"]["tokens"] == 3 * 256


def test_a_hub_name_takes_the_same_path(checkpoints, tmp_path, monkeypatch):
    """``org/name`` goes through huggingface_hub.snapshot_download (here answered from a local
    directory, as the cache would), asking only for the files an import reads."""
    huggingface_hub = pytest.importorskip("huggingface_hub")
    directory, _ = checkpoints["gpt2"]
    asked = {}

    def snapshot_download(repo_id, allow_patterns):
        asked.update(repo_id=repo_id, allow_patterns=allow_patterns)
        return str(directory)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    result = import_hf("someone/tiny-gpt2", tmp_path / "run")
    assert asked["repo_id"] == "someone/tiny-gpt2" and "model.safetensors" in asked["allow_patterns"]
    assert "pytorch_model.bin" not in asked["allow_patterns"]
    assert json.loads((result.run_dir / "import.json").read_text())["source"] == "someone/tiny-gpt2"
    assert load_run(result.run_dir).model.num_params() == result.params


def test_an_unreachable_hub_is_one_line(tmp_path, monkeypatch, capsys):
    huggingface_hub = pytest.importorskip("huggingface_hub")

    def offline(**_):
        raise OSError("no network")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    code, _, err = run(capsys, "import", "someone/model", "--out", tmp_path / "run")
    assert code == 2 and err.startswith("error: cannot fetch someone/model from the Hugging Face Hub (OSError)")
    assert not (tmp_path / "run").exists()


def test_every_verb_takes_an_imported_run(checkpoints, tmp_path, capsys):
    """eval (on a text file: an import has no validation split), generate, quantize (with
    --calibration) and export take the imported run like a trained one."""
    directory, _ = checkpoints["gpt2"]
    text = tmp_path / "held_out.txt"
    text.write_text("abcabd hgfe " * 200, encoding="utf-8")
    code, out, err = run(capsys, "import", directory, "--out", tmp_path / "run", "--json")
    assert code == 0, err
    code, _, err = run(capsys, "eval", tmp_path / "run")
    assert code == 2 and "pass --data FILE" in err
    code, out, err = run(capsys, "eval", tmp_path / "run", "--data", text, "--json")
    assert code == 0, err
    assert json.loads(out)["all"]["tokens"] > 0
    code, out, err = run(capsys, "generate", tmp_path / "run", "--prompt", "abc", "--max-new-tokens", "5",
                         "--temperature", "0", "--json")
    assert code == 0 and len(json.loads(out)[0]["ids"]) == 5, err
    code, _, err = run(capsys, "quantize", tmp_path / "run", "--to", "int8", "--calibration", text,
                       "--max-tokens", "256", "--out", tmp_path / "int8")
    assert code == 0, err
    code, out, err = run(capsys, "export", tmp_path / "int8", "--to", "hf", "--out", tmp_path / "hf", "--json")
    assert code == 0, err
    assert json.loads(out)["class"] == "GPT2LMHeadModel"
