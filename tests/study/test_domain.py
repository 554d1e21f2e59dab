"""``lmforge study domain`` at tiny scale on a second domain: medical (MedQuAD) against
general (Gutenberg). Asserted only what must hold: every arm at the same planned compute
(within 1%), the domain-only arm better than the general-only arm on medical text, the
table's numbers equal to ``lmforge eval`` of the arms' run directories, and every arm read
back (not trained again) when the same command runs again."""

from __future__ import annotations

import json

import pytest

from tests.cli.cli_run import run
from tests.corpora import corpus
from tests.tiny_runs import one_thread

SLICE = 300_000  # bytes of each corpus


@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    root = tmp_path_factory.mktemp("texts")
    out = {}
    for name, file in (("medical", "medquad_nih_qa_train_2MiB_slice.txt"), ("general", "gutenberg_train_18books.txt")):
        path = corpus(file)
        out[name] = root / f"{name}.txt"
        out[name].write_bytes(path.read_bytes()[:SLICE])
        if name == "medical":  # text the arms never see, for --eval-domain
            out["medical-eval"] = root / "medical-eval.txt"
            out["medical-eval"].write_bytes(path.read_bytes()[SLICE:SLICE + 40_000])
    return out


ARGS = ["--budget", "3e10", "--shares", "0,0.5,1", "--vocab-size", "512", "--seq-len", "64"]


@pytest.fixture(scope="module")
def finished(texts, tmp_path_factory):
    out = tmp_path_factory.mktemp("study") / "medical"
    capsys = _CaptureFree()
    with one_thread():
        code, stdout, err = capsys.run("study", "domain", "--domain", f"medical={texts['medical']}",
                                       "--general", f"general={texts['general']}", "--out", out, *ARGS,
                                       "--eval-domain", texts["medical-eval"])
    if code != 0:
        pytest.fail(err)
    return out, stdout


class _CaptureFree:
    """The CLI in-process for a module fixture (capsys is function-scoped)."""

    def run(self, *argv):
        import contextlib
        import io

        from lmforge.cli.main import main

        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main([str(a) for a in argv])
            except SystemExit as exc:
                code = exc.code
        return code, out.getvalue(), err.getvalue()


@pytest.mark.slow  # the study's six tiny arms (13 s): CI runs it (-m slow)
def test_every_arm_trains_at_the_same_planned_compute(finished):
    out, _ = finished
    record = json.loads((out / "study.json").read_text())
    arms = {a["name"]: a for a in record["arms"]}
    assert sorted(arms) == ["continued", "domain", "general", "mix-0.5"]
    flops = [a["flops"] for a in arms.values()]
    assert max(flops) / min(flops) - 1 < 0.01
    assert arms["continued"]["parts"] == ["general-part", "continued"]
    assert len({a["steps"] for a in arms.values()}) == 1
    specs = [json.loads((out / "runs" / n / "plan.json").read_text())["spec"] for n in ("general", "domain", "mix-0.5")]
    assert specs[0] == specs[1] == specs[2]  # one shape, planned once


@pytest.mark.slow  # the study's six tiny arms (13 s): CI runs it (-m slow)
def test_the_domain_only_arm_beats_the_general_only_arm_on_domain_text(finished):
    out, stdout = finished
    arms = {a["name"]: a for a in json.loads((out / "study.json").read_text())["arms"]}
    assert arms["domain"]["bits_per_byte"]["medical"] < arms["general"]["bits_per_byte"]["medical"]
    assert arms["general"]["bits_per_byte"]["general"] < arms["domain"]["bits_per_byte"]["general"]
    assert "best at weight 0.5" in stdout


@pytest.mark.slow  # the study's six tiny arms (13 s): CI runs it (-m slow)
def test_the_table_equals_lmforge_eval_of_each_arm(finished, texts, capsys):
    out, _ = finished
    for arm in json.loads((out / "study.json").read_text())["arms"]:
        code, stdout, err = run(capsys, "eval", arm["run_dir"], "--max-tokens", str(1 << 16), "--json")
        assert code == 0, err
        measured = json.loads(stdout)
        for text in ("medical", "general"):
            assert measured[text]["bits_per_byte"] == pytest.approx(arm["bits_per_byte"][text], rel=1e-9)
        code, stdout, err = run(capsys, "eval", arm["run_dir"], "--data", f"medical-eval={texts['medical-eval']}",
                                "--max-tokens", str(1 << 16), "--json")
        assert code == 0, err
        assert json.loads(stdout)["medical-eval"]["bits_per_byte"] == pytest.approx(
            arm["bits_per_byte"]["medical-eval"], rel=1e-9)  # the --eval-domain file


@pytest.mark.slow  # the study's six tiny arms (13 s): CI runs it (-m slow)
def test_outputs_and_tokenizer_table(finished):
    out, _ = finished
    record = json.loads((out / "study.json").read_text())
    assert set(record["bytes_per_token"]) == {"general", "domain", "mix"}
    bpt = record["bytes_per_token"]
    assert bpt["domain"]["medical"] > bpt["general"]["medical"]  # a tokenizer compresses its own text best
    assert bpt["general"]["general"] > bpt["domain"]["general"]
    rows = (out / "study.csv").read_text().splitlines()
    assert rows[0].startswith("arm,domain_share,flops,steps,bpb_medical,bpb_general") and len(rows) == 5
    assert (out / "study.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow  # the study's six tiny arms (13 s): CI runs it (-m slow)
def test_the_same_command_reads_every_arm_back(finished, texts):
    out, _ = finished
    before = {p.name: (p / "model.safetensors").stat().st_mtime_ns for p in (out / "runs").iterdir()}
    with one_thread():
        code, stdout, err = _CaptureFree().run("study", "domain", "--domain", f"medical={texts['medical']}",
                                               "--general", f"general={texts['general']}", "--out", out, *ARGS,
                                               "--eval-domain", texts["medical-eval"])
    assert code == 0, err
    after = {p.name: (p / "model.safetensors").stat().st_mtime_ns for p in (out / "runs").iterdir()}
    assert before == after
    assert stdout.count("not trained again") == 5


def _empty(p):
    (p / "empty.txt").write_text("")
    return p / "empty.txt"


BAD = [
    ("share above 1", lambda p, t: ["--shares", "0,1.5"], "--shares are the domain's share of the tokens, in [0, 1]"),
    ("share below 0", lambda p, t: ["--shares", "-0.2,1"], "in [0, 1]"),
    ("share not a number", lambda p, t: ["--shares", "0,half"], "cannot read a --shares value"),
    ("missing domain file", lambda p, t: ["--domain", f"medical={p / 'nope.txt'}"], "no such file"),
    ("empty domain file", lambda p, t: ["--domain", f"medical={_empty(p)}"], "no text"),
    ("budget too small", lambda p, t: ["--budget", "1e6"], "budget too small for the smallest runnable model"),
    ("same file", lambda p, t: ["--domain", f"medical={t['general']}"], "the same file"),
    ("continue fraction", lambda p, t: ["--continue-fraction", "1.5"], "--continue-fraction is the continued arm"),
]


@pytest.mark.parametrize(("extra", "needle"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_is_one_line_exit_2_nothing_written(texts, tmp_path, capsys, extra, needle):
    base = {"--domain": f"medical={texts['medical']}", "--general": f"general={texts['general']}",
            "--budget": "3e10", "--out": str(tmp_path / "study")}
    given = extra(tmp_path, texts)
    for flag, value in zip(given[::2], given[1::2], strict=True):
        base[flag] = value
    argv = ["study", "domain", *[x for kv in base.items() for x in kv]]
    code, _, err = run(capsys, *argv)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and needle in err, err
    assert not (tmp_path / "study").exists()


def test_a_study_continued_with_other_settings_is_refused(texts, tmp_path, capsys):
    out = tmp_path / "study"
    out.mkdir()
    (out / "study.json").write_text(json.dumps({"settings": {"vocab_size": 2048, "seq_len": 64}}))
    code, _, err = run(capsys, "study", "domain", "--domain", f"medical={texts['medical']}", "--general",
                       f"general={texts['general']}", "--out", out, *ARGS)
    assert code == 2 and "this study directory was made with another vocab_size" in err and "--vocab-size" in err
    assert sorted(p.name for p in out.iterdir()) == ["study.json"]
