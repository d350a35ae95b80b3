"""Every command's flags come from config.py: `--config FILE`, underscore spellings, `--help`."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from lmplay.cli import generate, grid, plotstats, trainer
from lmplay.cli.flags import parse_flags
from lmplay.config import PLOT_SECTIONS, GenerateConfig, ModelConfig, PlotConfig
from lmplay.errors import UsageError

HELPS = {
    "lmp_trainer": trainer.build_parser,
    "lmp_generator": generate._parser,
    "lmp_grid": grid.build_parser,
    "lmp_plotstats": plotstats.build_parser,
}


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_config_file_sets_flags_and_the_command_line_overrides_it(tmp_path: Path) -> None:
    config = write(
        tmp_path / "run.json",
        json.dumps({"batch-size": 8, "lr": 2e-3, "amp": True, "context_len": 32, "exp": "modern"}),
    )
    cfg = trainer.parse_config(["--config", str(config), "--lr", "5e-4"])
    assert (cfg.batch.batch_size, cfg.optim.lr, cfg.system.amp) == (8, 5e-4, True)
    assert (cfg.model.context_len, cfg.model.exp) == (32, "modern")
    assert cfg.batch.mini_batch_size is None  # untouched fields keep config.py's default


def test_toml_config_for_the_generator_and_the_plotter(tmp_path: Path) -> None:
    config = write(tmp_path / "gen.toml", 'model = "m.lmp"\ntemperature = 0\ntop_k = 5\n')
    args = generate.parse_args(["hi", "--config", str(config), "--top-k", "7"])
    assert (args.model, args.temperature, args.top_k, args.prompt) == (Path("m.lmp"), 0.0, 7, "hi")
    assert args.top_p == GenerateConfig.top_p
    plot = write(tmp_path / "plot.toml", 'out-type = "svg"\nplot_train = true\n')
    args, values = parse_flags(plotstats.build_parser(), PLOT_SECTIONS, ["--config", str(plot)])
    assert values["plot"] == {**vars(PlotConfig()), "out_type": "svg", "plot_train": True}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"lr": 1, "bogus": 2, "more_bogus": 3}', "unknown keys 'bogus', 'more_bogus'"),
        ('{"batch-size": "8"}', "'batch-size' must be an integer, got '8'"),
        ('{"amp": 1}', "'amp' must be true or false, got 1"),
        ('{"optimizer": "lion"}', "'optimizer' must be one of adamw, "),
        ('{"lr": 1, "batch_size": 1, "batch-size": 2}', "'batch-size' is given twice"),
        ('{"lr": 1, "seed": 0, "lr": 2}', "key 'lr' is given twice"),
        ("[1, 2]", "must be one object of flag names"),
        ("{not json", "not valid JSON"),
    ],
)
def test_a_bad_config_file_is_one_error_line_and_exit_2(tmp_path, capsys, text, message) -> None:
    config = write(tmp_path / "bad.json", text)
    assert trainer.main(["--config", str(config), "--out-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --config ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_missing_and_bad_toml_config_files(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot read"):
        trainer.parse_config(["--config", str(tmp_path / "none.json")])
    with pytest.raises(UsageError, match="not valid TOML"):
        trainer.parse_config(["--config", str(write(tmp_path / "x.toml", "lr = = 1"))])


def test_every_flag_also_takes_its_underscore_spelling() -> None:
    spelled = trainer.parse_config(
        ["--context_len", "32", "--mini_batch_size", "2", "--batch_size", "4", "--no_packing"]
    )
    dashed = trainer.parse_config(
        ["--context-len", "32", "--mini-batch-size", "2", "--batch-size", "4", "--no-packing"]
    )
    assert spelled == dashed and spelled.model.context_len == 32


@pytest.mark.parametrize("prog", sorted(HELPS))
def test_help_states_each_default_once_and_never_none(prog: str) -> None:
    text = HELPS[prog]().format_help()
    assert "(default: None)" not in text and "(default: False)" not in text
    assert "_len" not in text and "--context_len" not in text  # aliases stay out of --help
    for block in text.split("\n  -")[1:]:
        assert " ".join(block.split()).count("default") <= 1, block


def test_trainer_help_shows_config_py_defaults() -> None:
    text = " ".join(trainer.build_parser().format_help().split())
    assert f"(default: {ModelConfig.exp})" in text and "(default: 0.001)" in text


def test_plot_flags_are_plot_options_with_the_same_defaults() -> None:
    from lmplay.stats.plot import PlotOptions

    seed_groups = {"group_seeds", "band", "compare", "csv"}  # read by lmp_plotstats itself
    flags = {
        f.name: f.default
        for f in dataclasses.fields(PlotConfig)
        if f.name not in {"out_dir", "to_tensorboard", *seed_groups}
    }
    options = {f.name: f.default for f in dataclasses.fields(PlotOptions)}
    assert flags == {name: options[name] for name in flags}
    assert not seed_groups & set(options)
