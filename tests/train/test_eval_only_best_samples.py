"""Eval-only sets, the best checkpoint and samples during training leave training untouched."""

from __future__ import annotations

from pathlib import Path

import orjson
import torch
from lmp_testing import tiny_run_config, write_corpus, write_plan

from lmplay.cli.plotstats import main as plotstats_main
from lmplay.config import ModelConfig, RunIOConfig, SamplesConfig, StopConfig
from lmplay.stats.runs import load_stats
from lmplay.train.session import build_session
from lmplay.train.trainer import Trainer


def write_two_corpus_plan(folder: Path, *, eval_only: bool) -> None:
    write_corpus(folder / "corpus.jsonl", 40)
    datasets = {"corpus": {"files": ["corpus.jsonl"], "validation_fraction": 0.1}}
    extra: dict[str, object] = {}
    if eval_only:
        write_corpus(folder / "other.jsonl", 30, seed=5)
        datasets["other"] = {"files": ["other.jsonl"], "validation_fraction": 0.2}
        extra = {"eval_only": ["other"], "generate_prompts": ["The king"]}
    write_plan(folder, [{"name": "main", "datasets": ["corpus"]}], datasets, **extra)


def run(folder: Path, **sections: object):
    # dropout draws from the global RNG at every step: anything else drawing from it shows
    model = ModelConfig(num_blocks=2, embed_dim=32, num_heads=2, context_len=64, dropout=0.1)
    io = RunIOConfig(out_dir=str(folder / "out"), validation_interval=8, max_steps=4)
    session = build_session(tiny_run_config(folder, model=model, io=io, **sections))
    assert Trainer(session).fit() == 0
    return session


def test_eval_only_set_best_checkpoint_and_samples_change_no_weight(tmp_path: Path) -> None:
    plain_dir, extras_dir = tmp_path / "plain", tmp_path / "extras"
    plain_dir.mkdir()
    extras_dir.mkdir()
    write_two_corpus_plan(plain_dir, eval_only=False)
    write_two_corpus_plan(extras_dir, eval_only=True)
    plain = run(plain_dir)
    extras = run(
        extras_dir,
        stop=StopConfig(best_set="other"),
        samples=SamplesConfig(generate_every=8, generate_tokens=6),
    )

    for key, tensor in plain.model.state_dict().items():
        assert torch.equal(tensor, extras.model.state_dict()[key]), key
    assert [r["loss"] for r in extras.stats.train] == [r["loss"] for r in plain.stats.train]

    stats = load_stats(extras.cfg.stats_path())
    assert sorted(stats.validation) == ["corpus", "other"]
    steps = [r["steps"] for r in stats.validation["corpus"]]
    assert steps == [0, 2, 4] and [r["steps"] for r in stats.validation["other"]] == steps
    assert stats.validation["other"][0]["loss"] != stats.validation["corpus"][0]["loss"]

    assert [(g["steps"], g["prompt"]) for g in stats.generations] == [
        (2, "The king"),
        (4, "The king"),
    ]
    assert all(isinstance(g["text"], str) and g["temperature"] == 0.8 for g in stats.generations)
    assert stats.generations[0]["seed"] != stats.generations[1]["seed"]
    assert load_stats(plain.cfg.stats_path()).generations == []

    other = [r["loss"] for r in stats.validation["other"]]
    best = torch.load(extras_dir / "out" / "gpt2ish.best.lmp", weights_only=True)["components"]
    assert best["best"]["state"]["loss"] == min(other)
    assert best["runner"]["state"]["step"] == steps[other.index(min(other))]
    assert not (plain_dir / "out" / "gpt2ish.best.lmp").exists()

    # lmp_plotstats reads the new records and draws the eval-only set like the others
    assert plotstats_main([str(extras_dir / "out"), "--out-dir", str(tmp_path / "plots")]) == 0
    manifest = orjson.loads((tmp_path / "plots" / "plots.json").read_bytes())
    loss = next(p for p in manifest["plots"] if p["file"] == "loss.png")
    assert sorted(line["dataset"] for line in loss["series"]) == ["corpus", "other"]
