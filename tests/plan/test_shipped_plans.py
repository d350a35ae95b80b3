"""Offline plans `curriculum`, `curriculum_wsd` and `wiki_local`: their data loads and is derived
as documented."""

from __future__ import annotations

import importlib.util
import statistics
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from lmplay.data.batcher import StageBatcher
from lmplay.data.budget import Budget
from lmplay.data.mixture import MixtureBatcher
from lmplay.data.tokenizer import get_tokenizer
from lmplay.plan.datasets import PlanData
from lmplay.plan.registry import builtin_folder, load_plan

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def curriculum() -> PlanData:
    return PlanData(load_plan("curriculum"))


def mean_tokens(rows) -> float:
    return statistics.mean(rows["num_tokens"])


def test_curriculum_goes_from_short_scenes_to_long_ones_to_instructions(curriculum) -> None:
    plan = curriculum.plan
    assert [stage.name for stage in plan.stages] == ["simple", "harder", "instruct"]
    simple, harder = curriculum.split("simple").train, curriculum.split("harder").train
    assert 4 * mean_tokens(simple) < mean_tokens(harder)
    instruct = curriculum.split("instruct").train
    decode = get_tokenizer().decode
    row = instruct[0]
    assert decode(row["prompt_ids"]).startswith("Which play is this passage from?\n\n")
    assert decode(row["prompt_ids"]).endswith("\n\nAnswer:")
    titles = {decode(r["truth_ids"][:-1]) for r in instruct}  # without the final EOT
    assert len(titles) == 14 and " Hamlet, Prince Of Denmark" in titles
    assert set(curriculum.validation_documents()) == {"simple", "harder", "instruct"}


def test_every_curriculum_stage_produces_batches(curriculum) -> None:
    for stage in curriculum.plan.stages:
        batcher = StageBatcher(
            curriculum.stage_documents(stage),
            epochs=stage.epochs,
            seed=0,
            batch_size=16,
            context_len=256,
        )
        batch = batcher.next_batch()
        assert batch and len(batch) == 16
        if stage.name == "instruct":
            assert all(len(sample.prompt) > 10 for sample in batch)  # prompt never trained on


def test_wiki_local_has_the_shape_of_wiki() -> None:
    wiki, local = load_plan("wiki"), load_plan("wiki_local")
    assert list(wiki.datasets) == list(local.datasets) == ["wiki"]
    assert [s.name for s in wiki.stages] == [s.name for s in local.stages]
    source = local.datasets["wiki"].source
    assert source.files[0].endswith(".parquet")
    assert source.title_column == wiki.datasets["wiki"].source.title_column == "title"
    data = PlanData(local)
    text = get_tokenizer().decode(data.split("wiki").train[0]["truth_ids"])
    title, _, body = text.partition("\n\n")
    assert ", scene " in title and len(body) > 1000


def _tool(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_stand_ins_are_rebuilt_identically(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(REPO / "tools"))  # the tools import each other
    rebuilt = _tool("make_plan_standins").write_standins(tmp_path / "standins")
    rebuilt += _tool("make_grid_demo_data").write_authors(tmp_path / "authors")
    shipped = builtin_folder() / "data"
    assert sorted(p.name for p in rebuilt) == sorted(p.name for p in shipped.iterdir())
    assert sum(p.stat().st_size for p in rebuilt) < 300_000
    for path in rebuilt:
        if path.suffix == ".parquet":  # the bytes also record the pyarrow version
            assert pq.read_table(path).equals(pq.read_table(shipped / path.name))
        else:
            assert path.read_bytes() == (shipped / path.name).read_bytes(), path.name


def test_curriculum_wsd_grows_its_context_over_a_changing_mixture() -> None:
    data = PlanData(load_plan("curriculum_wsd"))
    stable, anneal = data.plan.stages
    assert (stable.get("context_len"), anneal.get("context_len")) == (128, 256)
    assert anneal.get("lr_schedule") == "wsd" and anneal.get("decay_tokens") == anneal.get("tokens")
    for stage in (stable, anneal):
        batcher = MixtureBatcher(
            data.stage_documents(stage),
            [weight for _, weight in stage.mix],
            repeat=stage.repeat,
            seed=0,
            batch_size=16,
            context_len=stage.get("context_len"),
            budget=Budget(tokens=stage.get("tokens")),
        )
        samples = [s for batch in iter(batcher.next_batch, None) for s in batch]
        assert max(s.num_tokens for s in samples) <= stage.get("context_len") + 1
        assert batcher.end_reason(batcher.cursor)[0] == "tokens"
        assert all(drawn > 0 for drawn in batcher.cursor.drawn)
    assert batcher.cursor.passes == [0, 0]  # the anneal stage sees no document twice
