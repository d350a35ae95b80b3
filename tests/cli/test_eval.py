"""lmp_eval and the Python API (`lmplay.load`, `lmplay.score`) on a finished tiny run."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
from lmp_testing import cli_in_process, sentence, train_in_process, write_plan

import lmplay
from lmplay.errors import UsageError
from lmplay.stats.runs import load_stats

SIZES = ["--num-blocks", "1", "--embed-dim", "32", "--num-heads", "2", "--context-len", "32"]
RUN = [*SIZES, "--batch-size", "4", "--validation-samples", "6", "--device", "cpu"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("run")
    rng = random.Random(0)
    with open(folder / "corpus.jsonl", "w", encoding="utf-8") as f:
        for _ in range(10):  # short documents: a few steps to the end of the plan
            f.write(json.dumps({"text": f"{sentence(rng, 6)} {sentence(rng, 4)}"}) + "\n")
    write_plan(
        folder,
        [{"name": "main", "datasets": ["corpus"], "epochs": 1}],
        {"corpus": {"files": ["corpus.jsonl"], "validation_fraction": 0.3}},
    )
    flags = [*RUN, "--training-plan", "plan.json", "--out-dir", "out"]
    code, err = train_in_process(folder, flags)
    assert code == 0 and "done at" in err, err
    bars = [part for part in re.split(r"[\r\n]", err) if part.startswith("stage 1/1")]
    assert "100%|" in bars[-1]  # the plan's documents ran out: the bar is full
    return folder


def test_lmp_eval_on_a_finished_run_equals_its_last_validation(finished: Path) -> None:
    flags = ["--training-plan", "plan.json", "--validation-samples", "6"]
    flags += ["--validation-batch-size", "4", "--json", "scores.json"]
    result = cli_in_process("eval", ["out/gpt2ish.lmp", *flags], finished)
    assert result.returncode == 0, result.stderr
    written = json.loads((finished / "scores.json").read_text())
    validation = load_stats(finished / "out" / "gpt2ish.stats.jsonl").validation
    assert written.keys() == validation.keys() == {"corpus"}
    last = validation["corpus"][-1]
    assert written["corpus"]["loss"] == pytest.approx(last["loss"], rel=1e-6)
    assert written["corpus"]["perplexity"] == pytest.approx(last["perplexity"], rel=1e-6)
    assert f"corpus: loss {last['loss']:.4f}" in result.stdout
    assert written["corpus"]["tokens"] > 0


def test_python_api_loads_generates_and_scores_texts(finished: Path, tmp_path: Path) -> None:
    run = lmplay.load(finished / "out" / "gpt2ish.lmp")
    assert run.config["exp"] == "gpt2ish" and run.config["model_args"]["context_len"] == 32
    text = run.generate("The king", max_new_tokens=5, temperature=0, seed=0)
    assert text.startswith("The king") and text == run.generate("The king", 5, temperature=0)
    texts = ["The king and the queen. The castle at night!", "A storm on the sea."]
    (figures,) = lmplay.score(run, texts).values()
    assert figures.tokens == sum(len(run.tokenizer.encode(t)) + 1 for t in texts)  # + EOT each
    assert figures.perplexity == pytest.approx(2.718281828**figures.loss, rel=1e-6)
    lines = tmp_path / "texts.jsonl"
    lines.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    result = cli_in_process(
        "eval", [str(finished / "out" / "gpt2ish.lmp"), "--texts", str(lines)], tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert f"texts: loss {figures.loss:.4f}" in result.stdout
    with pytest.raises(UsageError, match="--set nope: plan 'test' has no such validation set"):
        lmplay.score(run, plan=str(finished / "plan.json"), set="nope")


def test_lmp_eval_refuses_bad_input_in_one_line(tmp_path: Path) -> None:
    result = cli_in_process("eval", ["missing.lmp", "--texts", "x.txt"], tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("error: --texts x.txt: cannot read")
    result = cli_in_process("eval", ["missing.lmp"], tmp_path)
    assert result.returncode == 2
    assert result.stderr == "error: give --texts FILE or --training-plan PLAN (one of them)\n"
