import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lmplay.cli import generate as cli
from lmplay.models import TINY_SIZES, get_experiment
from lmplay.train.checkpoint import FORMAT_VERSION, save_checkpoint


def write_checkpoint(path: Path, exp: str = "gpt2ish", vocab_size: int = 50257, **sizes) -> Path:
    """A checkpoint in the layout the trainer writes, holding only the model component."""
    experiment = get_experiment(exp)
    args = experiment.args(**{**TINY_SIZES, "vocab_size": vocab_size, **sizes})
    torch.manual_seed(0)
    model = experiment.build(args)
    state_args = {"exp": exp, "model_args": args.to_dict()}
    save_checkpoint(path, {"model": {"state_args": state_args, "state": model.state_dict()}})
    return path


class CharTokenizer:
    """Stands in for GPT-2 BPE over a 97-token vocabulary: one token per printable char."""

    n_vocab = 97
    eot_token = 96

    def encode(self, text: str, allowed_special: str = "none") -> list[int]:
        return [min(ord(c) - 32, 95) for c in text]

    def decode(self, ids: list[int]) -> str:
        return "".join(chr(i + 32) for i in ids)


@pytest.fixture
def char_tokenizer(monkeypatch):
    monkeypatch.setattr(cli, "_tokenizer", CharTokenizer)


def run_main(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        cli.main(list(argv))
        code = 0
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def test_generates_a_reproducible_continuation(tmp_path, capsys, char_tokenizer):
    ckpt = write_checkpoint(tmp_path / "m.lmp", vocab_size=97)
    argv = ("Hello", "--model", str(ckpt), "--max-new-tokens", "12", "--seed", "3")
    code, out, err = run_main(capsys, *argv)
    assert (code, err) == (0, "")
    text = out.rstrip("\n")
    assert text.startswith("Hello")
    assert 0 < len(text) - len("Hello") <= 12
    assert run_main(capsys, *argv)[1] == out


def test_greedy_matches_generate_for_modern(tmp_path, capsys, char_tokenizer):
    ckpt = write_checkpoint(tmp_path / "m.lmp", exp="modern", vocab_size=97)
    code, out, _ = run_main(capsys, "ab", "--model", str(ckpt), "--temperature", "0")
    assert code == 0
    model = cli._load_model(ckpt, torch.device("cpu"))
    expected = [t for t in cli.generate(model, [65, 66], 100, stop_token=96)]
    assert out == "ab" + CharTokenizer().decode(expected) + "\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--temperature", "-1"], "error: --temperature must be >= 0, got -1.0"),
        (["--top-p", "1.5"], "error: --top-p must be in (0, 1], got 1.5"),
        (["--top-k", "-2"], "error: --top-k must be >= 0 (0 disables top-k filtering), got -2"),
        (["--max-new-tokens", "-1"], "error: --max-new-tokens must be >= 0, got -1"),
        (["--max-new-tokens", "10000000000"], "error: --max-new-tokens must be at most 1,000,0"),
        (["--temperature", "nan"], "error: --temperature must be a finite number, got nan"),
        (["--temperature", "inf"], "error: --temperature must be a finite number, got inf"),
        (["--top-p", "nan"], "error: --top-p must be in (0, 1], got nan"),
        (["--seed", str(2**64)], "error: --seed must be an integer in [0, 2**63 - 1], got 1844"),
        (["--device", "nonsense"], "error: --device 'nonsense' is not a torch device"),
        (["--device", "meta"], "error: --device meta: the meta device holds no data"),
        (["--device", "xla"], "error: --device xla: torch has no usable xla device here"),
    ],
)
def test_bad_flags_are_one_line_usage_errors(tmp_path, capsys, char_tokenizer, argv, message):
    ckpt = write_checkpoint(tmp_path / "m.lmp", vocab_size=97)
    code, out, err = run_main(capsys, "hi", "--model", str(ckpt), *argv)
    assert (code, out) == (2, "") and err.count("\n") == 1
    assert err.startswith(message)


def test_model_that_is_a_folder(tmp_path, capsys, char_tokenizer):
    code, out, err = run_main(capsys, "hi", "--model", str(tmp_path))
    assert (code, out) == (
        2,
        "",
    ) and err == f"error: --model {tmp_path}: is a folder; name a checkpoint file\n"


def _save(path: Path, obj) -> Path:
    torch.save(obj, path)
    return path


def test_unusable_checkpoints_are_usage_errors(tmp_path, capsys, char_tokenizer):
    good = write_checkpoint(tmp_path / "good.lmp", vocab_size=97)
    ckpt = torch.load(good, weights_only=True)
    truncated = tmp_path / "truncated.lmp"
    truncated.write_bytes(good.read_bytes()[:1000])
    other_exp = dict(ckpt)
    other_exp["components"] = {"model": dict(ckpt["components"]["model"])}
    other_exp["components"]["model"]["state_args"] = {
        "exp": "modern",
        "model_args": ckpt["components"]["model"]["state_args"]["model_args"],
    }
    # Sizes that disagree with the weights: one line naming the first mismatch.
    resized = dict(ckpt)
    resized["components"] = {"model": dict(ckpt["components"]["model"])}
    resized["components"]["model"]["state_args"] = {
        "exp": "gpt2ish",
        "model_args": {**ckpt["components"]["model"]["state_args"]["model_args"], "embed_dim": 16},
    }
    cases = {
        tmp_path / "missing.lmp": "no such file",
        truncated: "cannot be read (truncated",
        _save(tmp_path / "plain.pt", {"weights": torch.zeros(2)}): "not an lmplay checkpoint",
        _save(tmp_path / "newer.lmp", {**ckpt, "format_version": FORMAT_VERSION + 1}): (
            "is newer than this lmplay"
        ),
        _save(tmp_path / "nomodel.lmp", {**ckpt, "components": {}}): "missing components: model",
        _save(tmp_path / "noargs.lmp", {**ckpt, "components": {"model": {"state": {}}}}): (
            "component 'model' must hold 'state_args' and 'state'"
        ),
        _save(tmp_path / "other.lmp", other_exp): "component 'model' does not fit this run",
        _save(
            tmp_path / "resized.lmp", resized
        ): "tensor wte.weight has shape (97, 32), the model needs (97, 16)",
        write_checkpoint(tmp_path / "big_vocab.lmp"): None,  # fine: vocab >= tokenizer's
        write_checkpoint(tmp_path / "small_vocab.lmp", vocab_size=50): "50-token vocabulary",
    }
    for path, fragment in cases.items():
        code, out, err = run_main(capsys, "x", "--model", str(path), "--max-new-tokens", "2")
        if fragment is None:
            assert code == 0, err
            continue
        assert code == 2, path
        assert out == ""
        assert err.startswith("error: ") and fragment in err, err
        assert err.count("\n") == 1, err


def _run_module(*argv: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "lmplay.cli.generate", *argv]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_module_entry_point_end_to_end_with_gpt2_tokenizer(tmp_path):
    pytest.importorskip("lmplay.data.tokenizer")
    ckpt = write_checkpoint(tmp_path / "m.lmp")
    proc = _run_module(
        "The king", "--model", str(ckpt), "--max-new-tokens", "8", "--temperature", "0"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("The king")
    assert len(proc.stdout.rstrip("\n")) > len("The king")
