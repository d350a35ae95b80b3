"""Data-parallel training: one process and N ranks train the same model, resumable across sizes.

The end-to-end tests start real torchrun jobs (gloo on the CPU, 2 ranks) and compare them with
in-process single-process runs of the same flags. "Equal" means the weight update: the norm of
the difference of two runs' weights over the norm of what training changed, at most 1e-6 for SGD
and 1e-5 for AdamW (float rounding of sums taken in a different order).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import sys
from pathlib import Path

import pytest
import torch
from lmp_testing import TINY_FLAGS, TrainerProcess, one_stage_plan

from lmplay.cli import trainer as trainer_cli
from lmplay.cli.trainer import build_parser, config_from_args
from lmplay.errors import UsageError
from lmplay.stats.runs import load_stats
from lmplay.train.checkpoint import load_checkpoint
from lmplay.train.distributed.process_group import AgreedStop
from lmplay.train.distributed.sharding import local_rank_share
from lmplay.train.distributed.world import SINGLE, World, resume_command, world_from_env
from lmplay.train.session import build_session
from lmplay.train.trainer import Trainer

# 8 samples in mini-batches of 3 (3 + 3 + 2): rank 0 takes two, rank 1 one and a stand-in;
# 8 validation samples in batches of 3 split the same way.
COMMON = [
    *TINY_FLAGS,
    "--mini-batch-size", "3", "--validation-interval", "16", "--save-interval", "1000",
]  # fmt: skip
SGD = ["--optimizer", "sgd", "--lr", "0.5"]
ADAMW = ["--optimizer", "adamw", "--grad-clip", "0"]  # FSDP's clip: docs/distributed.md


# ---------------------------------------------------------------- in-process units


@pytest.mark.parametrize("size", [1, 2, 3, 4])
@pytest.mark.parametrize("count", [0, 1, 2, 3, 5, 8])
def test_rank_shares_cover_every_item_once_in_equal_rounds(size: int, count: int) -> None:
    items = [f"mini-batch {i}" for i in range(count)]
    shares = [local_rank_share(items, World(rank=r, size=size)) for r in range(size)]
    live = [item for share in shares for item, is_live in share if is_live]
    assert sorted(live) == sorted(items)  # each exactly once
    rounds = -(-count // size)
    assert all(len(share) == rounds for share in shares)  # same number of passes everywhere
    for share in shares:
        stand_ins = [item for item, is_live in share if not is_live]
        assert all(item == items[0] for item in stand_ins)
        assert [is_live for _, is_live in share] == sorted(
            (is_live for _, is_live in share), reverse=True
        )  # stand-ins come last
    one = local_rank_share(items, SINGLE)
    assert one == [(item, True) for item in items]  # one process: everything, in order


def test_world_from_env() -> None:
    assert world_from_env(env={}) == SINGLE
    world = world_from_env("fsdp", env={"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert (world.rank, world.size, world.local_rank, world.parallel) == (3, 4, 1, "fsdp")
    assert not world.is_main and world.distributed
    for env in ({"RANK": "2", "WORLD_SIZE": "2"}, {"WORLD_SIZE": "two"}, {"WORLD_SIZE": "0"}):
        with pytest.raises(UsageError, match=r"RANK|WORLD_SIZE"):
            world_from_env(env=env)


def test_one_process_needs_no_process_group() -> None:
    assert SINGLE.sum([1.5, 2]) == [1.5, 2]
    assert SINGLE.max_int(7) == 7
    assert SINGLE.gather("x") == ["x"]

    class Local:
        signal: signal.Signals | None = None

    local = Local()
    stop = AgreedStop(local, SINGLE)
    assert not stop.requested
    local.signal = signal.SIGTERM  # read live, as the loop did before: no sync needed
    assert stop.requested and stop.exit_code == 143
    assert not torch.distributed.is_initialized()


@pytest.mark.parametrize("rank", ["0", "1"])
def test_bad_flag_reported_once_before_any_process_group(
    rank: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    for name in ("stdout", "stderr", "excepthook"):  # rank 1 swaps them; undone after the test
        monkeypatch.setattr(sys, name, getattr(sys, name))
    monkeypatch.setenv("RANK", rank)
    monkeypatch.setenv("LOCAL_RANK", rank)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(signal, "signal", lambda *args: None)  # keep pytest's own handlers
    code = trainer_cli.main(["--out-dir", str(tmp_path), "--training-plan", "no-such-plan"])
    assert code == 2
    err = capsys.readouterr().err
    if rank == "0":
        assert err.count("error:") == 1 and "no-such-plan" in err
    else:
        assert err == ""
    assert not torch.distributed.is_initialized()
    assert not any(tmp_path.iterdir())


def test_resume_command_names_the_launcher_that_started_the_run(monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", ["trainer", "--exp", "modern", "--out-dir", "my runs"])
    flags = "--exp modern --out-dir 'my runs'"
    assert resume_command({}) == f"lmp_trainer {flags}"
    one_node = {"TORCHELASTIC_RUN_ID": "x", "LOCAL_WORLD_SIZE": "4", "GROUP_WORLD_SIZE": "1"}
    assert resume_command(one_node) == (
        f"torchrun --standalone --nproc-per-node=4 -m lmplay.cli.trainer {flags}"
    )
    two_nodes = {**one_node, "GROUP_WORLD_SIZE": "2"}
    assert resume_command(two_nodes) == (
        "torchrun --nnodes=2 --nproc-per-node=4 <rendezvous flags> -m lmplay.cli.trainer " + flags
    )


# ---------------------------------------------------------------- real torchrun jobs


def args_for(folder: Path, out: str, *extra: str) -> list[str]:
    plan = str(folder / "plan.json")
    return ["--training-plan", plan, "--out-dir", str(folder / out), *COMMON, *extra]


def train_here(folder: Path, out: str, *extra: str) -> Path:
    """One process, in this process; returns the checkpoint."""
    cfg = config_from_args(build_parser().parse_args(args_for(folder, out, *extra)))
    assert Trainer(build_session(cfg)).fit() == 0
    return cfg.model_path()


def initial_weights(folder: Path) -> dict[str, torch.Tensor]:
    cfg = config_from_args(build_parser().parse_args(args_for(folder, "never-written")))
    return {k: v.clone() for k, v in build_session(cfg).model.state_dict().items()}


def update_difference(got: Path, want: Path, start: dict[str, torch.Tensor]) -> float:
    """|got - want| / |want - start| over all weights together."""
    a = load_checkpoint(got)["components"]["model"]["state"]
    b = load_checkpoint(want)["components"]["model"]["state"]
    assert a.keys() == b.keys() == start.keys()
    diff = sum(float((a[k].double() - b[k].double()).norm() ** 2) for k in start)
    moved = sum(float((b[k].double() - start[k].double()).norm() ** 2) for k in start)
    assert moved > 0
    return (diff / moved) ** 0.5


def assert_same_position(got: Path, want: Path) -> None:
    """Same counters and the same plan/batcher position: the same batch sequence follows."""
    a, b = load_checkpoint(got)["components"], load_checkpoint(want)["components"]
    counters = ("step", "micro_step", "samples", "tokens", "loss_tokens")
    assert {k: a["runner"]["state"][k] for k in counters} == {
        k: b["runner"]["state"][k] for k in counters
    }
    assert a["plan"]["state"] == b["plan"]["state"]


def assert_same_figures(got: Path, want: Path, rel: float) -> None:
    """Train and validation records agree (validation split across ranks, sums reduced)."""
    a, b = load_stats(got), load_stats(want)
    assert [r["steps"] for r in a.train] == [r["steps"] for r in b.train]
    for x, y in zip(a.train, b.train, strict=True):
        assert x["tokens"] == y["tokens"] and x["padding_ratio"] == y["padding_ratio"]
        assert x["loss"] == pytest.approx(y["loss"], rel=rel)
    assert a.validation.keys() == b.validation.keys()
    for name in a.validation:
        for x, y in zip(a.validation[name], b.validation[name], strict=True):
            for key in ("loss", "accuracy", "word_accuracy"):
                assert x[key] == pytest.approx(y[key], rel=rel, abs=1e-9), (name, key)


def copy_run(folder: Path, source: Path, out: str) -> Path:
    shutil.copytree(source.parent, folder / out)
    return folder / out / source.name


@pytest.fixture(scope="module")
def plan_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("distributed")
    one_stage_plan(folder, documents=16)
    return folder


@pytest.fixture(scope="module")
def start(plan_folder: Path) -> dict[str, torch.Tensor]:
    return initial_weights(plan_folder)


@pytest.mark.slow
def test_sigterm_to_one_rank_then_resume_at_one_and_two_ranks(
    plan_folder: Path, start: dict[str, torch.Tensor]
) -> None:
    """DDP, SGD, uneven mini-batches: SIGTERM to rank 1 during the step-2 validation."""
    folder = plan_folder
    ref2 = copy_run(folder, train_here(folder, "ref", *SGD, "--max-steps", "2"), "ref2")
    ref4 = train_here(folder, "ref", *SGD, "--max-steps", "4")  # a straight run, bit-exactly

    two = args_for(folder, "two", *SGD, "--max-steps", "4")
    job = TrainerProcess(folder, two, pause="validate:2", nproc=2)
    job.wait_for("lmplay-test-pause validate 2")  # rank 0 waits there; rank 1 too, or soon
    os.kill(job.rank_pid(1), signal.SIGTERM)
    job.release()
    code = job.finish()
    worker_codes = re.findall(r"exitcode\s+:\s*(-?\d+)", job.output)
    assert code != 0 and sorted(worker_codes) == ["143", "143"], job.output
    assert "stopped by SIGTERM at step 2" in job.output
    assert "resume with: torchrun --standalone --nproc-per-node=2 -m lmplay.cli." in job.output
    stopped = folder / "two" / "gpt2ish.lmp"
    assert load_checkpoint(stopped)["components"]["runner"]["state"]["step"] == 2
    assert not list((folder / "two").glob("*.tmp*"))
    assert update_difference(stopped, ref2, start) < 1e-6  # 2 ranks == 1 process
    assert_same_position(stopped, ref2)

    # 2 -> 1: the 2-rank checkpoint resumed by one process continues the same run.
    single = copy_run(folder, stopped, "two-then-one")
    train_here(folder, "two-then-one", *SGD, "--max-steps", "4")
    assert update_difference(single, ref4, start) < 1e-6
    assert_same_position(single, ref4)

    # The rerun of the stopped 2-rank job finishes equal to the straight run.
    rerun = TrainerProcess(folder, two, nproc=2)
    assert rerun.finish() == 0, rerun.output
    assert update_difference(stopped, ref4, start) < 1e-6
    assert_same_position(stopped, ref4)
    stats = "gpt2ish.stats.jsonl"
    assert_same_figures(folder / "two" / stats, folder / "ref" / stats, 1e-6)


@pytest.mark.slow
def test_fsdp_resumes_a_single_process_run_and_a_single_process_resumes_it(
    plan_folder: Path, start: dict[str, torch.Tensor]
) -> None:
    """FSDP2 on gloo, AdamW: 1 -> 2 ranks (moments loaded into shards) -> 1 (gathered)."""
    folder = plan_folder
    half = train_here(folder, "adam-ref", *ADAMW, "--max-steps", "2")
    sharded = copy_run(folder, half, "adam-fsdp")
    ref4 = copy_run(folder, train_here(folder, "adam-ref", *ADAMW, "--max-steps", "4"), "ref4")
    ref5 = train_here(folder, "adam-ref", *ADAMW, "--max-steps", "5")

    fsdp = ["--parallel", "fsdp", "--max-steps", "4"]
    job = TrainerProcess(folder, args_for(folder, "adam-fsdp", *ADAMW, *fsdp), nproc=2)
    assert job.finish() == 0, job.output
    assert update_difference(sharded, ref4, start) < 1e-5
    assert_same_position(sharded, ref4)

    train_here(folder, "adam-fsdp", *ADAMW, "--max-steps", "5")  # one process from FSDP's file
    assert update_difference(sharded, ref5, start) < 1e-5
    assert_same_position(sharded, ref5)
