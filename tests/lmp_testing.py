"""Helpers shared by tests: a generated corpus with known sentences, plans, tiny trainer flags,
and commands run in this process or as a subprocess (`TrainerProcess` for signals)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lmplay.config import BatchConfig, DataConfig, ModelConfig, RunConfig, RunIOConfig

WORDS = [
    "the",
    "king",
    "queen",
    "castle",
    "storm",
    "night",
    "light",
    "river",
    "stone",
    "crown",
    "sword",
    "letter",
    "garden",
    "winter",
    "summer",
    "ship",
    "sea",
    "island",
    "voice",
    "song",
    "heart",
    "honour",
    "friend",
    "enemy",
    "father",
    "daughter",
    "morning",
]

TINY_FLAGS = [
    "--num-blocks", "2", "--embed-dim", "32", "--num-heads", "2", "--context-len", "64",
    "--batch-size", "8", "--mini-batch-size", "4", "--validation-samples", "8",
    "--device", "cpu", "--lr", "3e-3", "--optimizer-warmup-steps", "2",
]  # fmt: skip


def sentence(rng: random.Random, words: int) -> str:
    body = " ".join(rng.choice(WORDS) for _ in range(words))
    return body.capitalize() + rng.choice([".", "!", "?"])


def make_document(rng: random.Random) -> str:
    """Sentences of widely varying length, some longer than a 64-token context."""
    count = rng.choice([1, 2, 3, 8, 20])
    lengths = [rng.choice([2, 5, 9, 15, 30, 90]) for _ in range(count)]
    text = " ".join(sentence(rng, n) for n in lengths)
    return text.replace("! ", "!\n", 1) if rng.random() < 0.3 else text


def write_corpus(path: Path, documents: int, seed: int = 0) -> Path:
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(documents):
            f.write(json.dumps({"text": make_document(rng)}) + "\n")
    return path


def write_plan(folder: Path, stages: list[dict], datasets: dict, **extra: object) -> Path:
    plan = {"name": "test", "seed": 0, "datasets": datasets, "stages": stages, **extra}
    path = folder / "plan.json"
    path.write_text(json.dumps(plan, indent=2), encoding="utf-8")
    return path


def three_stage_plan(folder: Path) -> Path:
    write_corpus(folder / "simple.jsonl", 24, seed=1)
    write_corpus(folder / "harder.jsonl", 24, seed=2)
    with open(folder / "qa.jsonl", "w", encoding="utf-8") as f:
        rng = random.Random(3)
        for _ in range(16):
            f.write(json.dumps({"q": sentence(rng, 6), "a": sentence(rng, 12)}) + "\n")
    datasets = {
        "simple": {"files": ["simple.jsonl"], "validation_fraction": 0.1},
        "harder": {"files": ["harder.jsonl"], "validation_fraction": 0.1},
        "qa": {"files": ["qa.jsonl"], "prompt_column": "q", "truth_column": "a"},
    }
    stages = [
        {"name": "simple", "datasets": ["simple"], "epochs": 0.5},
        {"name": "mixed", "datasets": ["simple", "harder"], "epochs": 1},
        {"name": "qa", "datasets": ["qa"], "epochs": 1.5},
    ]
    return write_plan(folder, stages, datasets)


def one_stage_plan(folder: Path, documents: int = 40, epochs: float = 1.0) -> Path:
    write_corpus(folder / "corpus.jsonl", documents)
    return write_plan(
        folder,
        [{"name": "main", "datasets": ["corpus"], "epochs": epochs}],
        {"corpus": {"files": ["corpus.jsonl"], "validation_fraction": 0.1}},
    )


def tiny_run_config(folder: Path, documents: int = 12, **sections: Any) -> RunConfig:
    """An in-process run of a tiny gpt2ish on `one_stage_plan(folder)`; `sections` replace parts.

    The plan is written once per folder, so a second call resumes the same run.
    """
    plan = folder / "plan.json"
    if not plan.exists():
        one_stage_plan(folder, documents=documents)
    defaults = {
        "model": ModelConfig(num_blocks=2, embed_dim=32, num_heads=2, context_len=64),
        "data": DataConfig(training_plan=str(plan)),
        "batch": BatchConfig(batch_size=4, validation_samples=4),
        "io": RunIOConfig(out_dir=str(folder / "out")),
    }
    return RunConfig(**{**defaults, **sections})


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment for a command run as a subprocess: offline, and with this process's torch
    thread count, so a run there and a run in-process do bit-identical arithmetic."""
    import torch

    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "OMP_NUM_THREADS": str(torch.get_num_threads()),
        **extra,
    }


def run_cli(
    module: str, args: list[str], cwd: Path, timeout: float = 240, **popen: object
) -> subprocess.CompletedProcess:
    """Run `python -m lmplay.cli.<module>` as a user would, offline."""
    env = subprocess_env()
    return subprocess.run(
        [sys.executable, "-m", f"lmplay.cli.{module}", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        **popen,
    )


class TrainerProcess:
    """`lmp_trainer ARGS` run from `cwd` in a subprocess, or as `nproc` ranks under torchrun,
    offline. What it writes is collected as it comes (tqdm writes no newlines): its stderr, and
    under torchrun its stdout too (where torchrun reports its workers' exit codes).

    `pause="POINT:N"` sets the trainer's test hook LMPLAY_TEST_PAUSE (lmplay/train/signals.py):
    each rank stops at its N-th pass through POINT (validate, save, stage_end), prints
    "lmplay-test-pause POINT N" and waits for a line on stdin, so a signal can be delivered
    exactly there; `release` lets it go on.
    """

    def __init__(
        self, cwd: Path, args: list[str], pause: str | None = None, nproc: int = 1
    ) -> None:
        # Under torchrun each rank computes on one thread, as the distributed tests expect.
        env = subprocess_env(OMP_NUM_THREADS="1") if nproc > 1 else subprocess_env()
        env.pop("LMPLAY_TEST_PAUSE", None)
        if pause is not None:
            env["LMPLAY_TEST_PAUSE"] = pause
        command = [sys.executable, "-m", "lmplay.cli.trainer", *args]
        if nproc > 1:
            launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
            command = [sys.executable, *launcher, *command[1:]]
        self.nproc = nproc
        self.process = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE if nproc > 1 else subprocess.DEVNULL,
            stderr=subprocess.STDOUT if nproc > 1 else subprocess.PIPE,
        )
        stream = self.process.stdout if nproc > 1 else self.process.stderr
        assert stream is not None
        self._stream = stream
        self._out = bytearray()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while chunk := os.read(self._stream.fileno(), 65536):
            self._out += chunk

    @property
    def output(self) -> str:
        return self._out.decode(errors="replace")

    def wait_for(self, text: str, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.process.kill()
                pytest.fail(f"never printed {text!r} (exit {self.process.poll()}):\n{self.output}")
            time.sleep(0.01)

    def signal(self, signum: signal.Signals) -> None:
        self.process.send_signal(signum)

    def rank_pid(self, rank: int) -> int:
        """The worker process of `rank` (torchrun's child with RANK=rank in its environment)."""
        pid = self.process.pid
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
            if f"RANK={rank}".encode() in environ:
                return int(child)
        raise AssertionError(f"no worker of rank {rank} under torchrun {pid}")

    def release(self) -> None:
        """Let the ranks waiting at their pause point go on: a line for each.

        Under torchrun the ranks share stdin, and one rank's buffered read may take every line,
        so stdin is closed too: the end of the input releases a rank as a line does.
        """
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(b"\n" * self.nproc)
            self.process.stdin.flush()
            if self.nproc > 1:
                self.process.stdin.close()
        except BrokenPipeError:  # it was killed there
            pass

    def finish(self, timeout: float = 300) -> int:
        """Wait for the exit; its code (negative: the signal that killed it)."""
        assert self.process.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self.process.stdin.close()  # the end of the input releases a rank still paused
        code = self.process.wait(timeout=timeout)
        self._reader.join(timeout=10)
        self._stream.close()
        return code


def evaluate(model: Any, samples: list[Any], batch_size: int, device: Any, precision: Any) -> Any:
    """Per-token mean loss and accuracy over `samples`, (loss, accuracy, loss_tokens): a plain
    reference pass, batch by batch through the training loss, that tests compare against."""
    import torch

    from lmplay.data.samples import collate
    from lmplay.train.loss import as_loss_model
    from lmplay.train.step import split_mini_batches, token_losses

    loss_total, correct_total, tokens = 0.0, 0, 0
    loss_model = as_loss_model(model)
    with torch.no_grad():
        for chunk in split_mini_batches(samples, batch_size):
            mini = collate(chunk).to(device)
            loss_sum, correct = token_losses(loss_model, mini, precision)
            loss_total += float(loss_sum)
            correct_total += int(correct)
            tokens += mini.loss_tokens
    return loss_total / tokens, correct_total / tokens, tokens


TIMING_FIELDS = {"tokens_per_s", "time"}


@contextlib.contextmanager
def in_folder(folder: Path) -> Iterator[None]:
    """Run a command's relative paths against `folder`, as a user in that folder would."""
    before = Path.cwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)


def cli_in_process(module: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """`lmplay.cli.<module>` run in this process from `cwd`, as `run_cli` runs it outside.

    The same `main` the console script calls, without the seconds a new interpreter spends
    importing torch; runs that need real signals or a separate process use `run_cli`.
    """
    import importlib

    main = importlib.import_module(f"lmplay.cli.{module}").main
    out, err = io.StringIO(), io.StringIO()
    with in_folder(cwd), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(args) or 0
        except SystemExit as exit_:  # argparse errors, and lmp_generator's exit codes
            code = exit_.code if isinstance(exit_.code, int) else 1
    return subprocess.CompletedProcess([module, *args], code, out.getvalue(), err.getvalue())


def train_in_process(cwd: Path, args: list[str]) -> tuple[int, str]:
    """`lmp_trainer ARGS` in this process from `cwd`: (exit code, stderr)."""
    result = cli_in_process("trainer", args, cwd)
    return result.returncode, result.stderr


def load_components(path: Path) -> dict[str, Any]:
    import torch

    return torch.load(path, weights_only=True)["components"]


def assert_bitwise_equal(a: dict[str, Any], b: dict[str, Any]) -> None:
    """Model weights and optimizer state (moments, step counts, groups) are bit-identical."""
    import torch

    model_a, model_b = a["model"]["state"], b["model"]["state"]
    assert model_a.keys() == model_b.keys()
    for key in model_a:
        assert torch.equal(model_a[key], model_b[key]), key
    opt_a, opt_b = a["optimizer"]["state"], b["optimizer"]["state"]
    assert opt_a["param_groups"] == opt_b["param_groups"]
    assert opt_a["state"].keys() == opt_b["state"].keys()
    for index, state in opt_a["state"].items():
        assert state.keys() == opt_b["state"][index].keys()
        for name, value in state.items():
            other = opt_b["state"][index][name]
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(other)), (index, name)


def records_without_timing(path: Path) -> tuple[list[dict], dict[str, list[dict]]]:
    """A stats file's train and validation records, minus the fields that measure time."""
    from lmplay.stats.runs import load_stats

    stats = load_stats(path)

    def strip(records: list[dict]) -> list[dict]:
        return [{k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in records]

    return strip(stats.train), {name: strip(rs) for name, rs in stats.validation.items()}
