"""The Python API behind `lmplay.load` and `lmplay.score`.

`load` rebuilds a model the way every command does (`restore_model` for a checkpoint, the
`hf:` experiment for a transformers folder). `score` computes loss and perplexity with the
trainer's own validation pass (`score_validation_set` through `LossModel`), over the same
samples: a plan's held-out documents cut by `validation_samples`, or given texts cut the same
way. So `score` on a finished run's plan gives the run's last validation record.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lmplay.errors import UsageError

TEXTS_SET = "texts"  # the set name of scores over given texts
DEFAULT_VALIDATION_SAMPLES = 64  # the trainer's --validation-samples default
DEFAULT_BATCH_SIZE = 16  # the trainer's validation batch by default (its --batch-size)


@dataclass(frozen=True)
class Score:
    """One set's figures, as a validation record states them."""

    loss: float  # mean cross-entropy per truth token (nats)
    perplexity: float  # exp(loss), capped at exp(50) as in the stats
    tokens: int  # truth tokens scored
    samples: int  # samples (context-sized pieces of documents) scored
    accuracy: float  # share of truth tokens the argmax predicted

    def to_dict(self) -> dict[str, float | int]:
        return {"loss": self.loss, "perplexity": self.perplexity, "tokens": self.tokens}


@dataclass
class Loaded:
    """A model ready to use: `model` (eval mode, on `device`), `tokenizer`, `config`."""

    model: nn.Module
    tokenizer: Any  # tiktoken's GPT-2 encoding, what lmplay trains with
    config: dict[str, Any]  # {"exp": ..., "model_args": {...}} (and "lora" for adapters)
    device: torch.device
    path: Path

    def generate(
        self,
        prompt: str,
        max_new_tokens: int = 100,
        *,
        temperature: float = 0.8,
        top_k: int | None = 50,
        top_p: float | None = 0.95,
        seed: int | None = None,
    ) -> str:
        """`prompt` followed by its continuation (ends early at end-of-text), as lmp_generator."""
        from lmplay.models.generation import generate

        eot = self.tokenizer.eot_token
        prompt_ids = self.tokenizer.encode(prompt, allowed_special="all") or [eot]
        new_ids = generate(
            self.model,
            prompt_ids,
            max_new_tokens,
            temperature=temperature,
            top_k=top_k or None,
            top_p=top_p,
            seed=seed,
            stop_token=eot,
        )
        return prompt + self.tokenizer.decode(new_ids)


def load(path: str | Path, device: str | torch.device = "cpu") -> Loaded:
    """A trained checkpoint (`.lmp`) or a local transformers folder, ready to generate or score."""
    from lmplay.data.tokenizer import get_tokenizer
    from lmplay.train.preflight import check_device

    path = Path(path)
    where = torch.device(device) if isinstance(device, torch.device) else check_device(device)
    if path.is_dir():
        from lmplay.models import get_experiment

        exp = f"hf:{path}"
        experiment = get_experiment(exp)
        model_args = experiment.args()
        model = experiment.build(model_args)
        config: dict[str, Any] = {"exp": exp, "model_args": model_args.to_dict()}
    elif path.is_file():
        from lmplay.train.checkpoint import load_checkpoint, restore_model

        stored = load_checkpoint(path)["components"]["model"]
        exp, model_args, model = restore_model(stored, path)
        config = {"exp": exp, "model_args": model_args.to_dict()}
        if isinstance(stored["state_args"].get("lora"), dict):
            config["lora"] = stored["state_args"]["lora"]
    else:
        raise UsageError(f"{path}: no such checkpoint file or transformers folder")
    return Loaded(model.to(where).eval(), get_tokenizer(), config, where, path)


def score(
    model: Loaded | nn.Module,
    texts: list[str] | None = None,
    *,
    plan: str | None = None,
    set: str | None = None,  # the name validation records use; shadows the builtin here only
    validation_samples: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    num_proc: int = 1,
) -> dict[str, Score]:
    """{set name: Score} of `texts` (set "texts") or of a plan's validation sets.

    `validation_samples` has the trainer's meaning: the first N samples of each set (default
    for a plan: 64, as `--validation-samples`; for texts: all of them). `set` picks one of the
    plan's validation sets.
    """
    net = model.model if isinstance(model, Loaded) else model
    if (texts is None) == (plan is None):
        raise UsageError("score needs texts or a plan (one of them)")
    if validation_samples is not None and validation_samples <= 0:
        raise UsageError(f"validation_samples {validation_samples} must be a positive integer")
    if batch_size <= 0:
        raise UsageError(f"batch size {batch_size} must be a positive integer")
    context_len = net.args.context_len
    if texts is not None:
        if set is not None:
            raise UsageError("set names a plan's validation set; texts form one set")
        count = validation_samples or sys.maxsize
        sets = {TEXTS_SET: _text_samples(texts, count, context_len)}
    else:
        assert plan is not None
        count = validation_samples or DEFAULT_VALIDATION_SAMPLES
        sets = _plan_samples(plan, set, count, context_len, num_proc)
    return {name: _score_samples(net, samples, batch_size) for name, samples in sets.items()}


def _score_samples(model: nn.Module, samples: list[Any], batch_size: int) -> Score:
    from lmplay.train.loss import as_loss_model
    from lmplay.train.placement import Placement
    from lmplay.train.validation import score_validation_set

    if not samples:
        raise UsageError("nothing to score: the texts hold no tokens")
    placement = Placement.on(next(model.parameters()).device)
    was_training = model.training
    model.eval()
    try:
        scores = score_validation_set(as_loss_model(model), samples, batch_size, placement)
    finally:
        model.train(was_training)
    perplexity = math.exp(min(scores.loss, 50.0))  # as the trainer's validation records
    return Score(scores.loss, perplexity, scores.loss_tokens, len(samples), scores.accuracy)


def _text_samples(texts: list[str], count: int, context_len: int) -> list[Any]:
    """The texts as validation documents (plain text, all trained-on truth), cut as validation
    cuts a plan's documents."""
    import datasets

    from lmplay.data.batcher import Documents, validation_samples
    from lmplay.data.documents import tokenize_documents

    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise UsageError("texts must be a list of strings")
    rows = datasets.Dataset.from_dict({"prompt": [""] * len(texts), "truth": list(texts)})
    shown = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # a few texts: no "tokenizing" bar in the caller's output
    try:
        documents = Documents([tokenize_documents(rows)])
    finally:
        if shown:
            datasets.enable_progress_bars()
    return validation_samples(documents, count=count, context_len=context_len)


def _plan_samples(
    plan_name: str, set_name: str | None, count: int, context_len: int, num_proc: int
) -> dict[str, list[Any]]:
    from lmplay.data.batcher import Documents, validation_samples
    from lmplay.plan.datasets import PlanData
    from lmplay.plan.registry import load_plan

    plan = load_plan(plan_name)
    names = [dataset.name for dataset in plan.validation_sets()]
    if set_name is not None and set_name not in names:
        raise UsageError(
            f"--set {set_name}: plan '{plan.name}' has no such validation set; choose from "
            f"{', '.join(names) or '(none)'}"
        )
    data = PlanData(plan, num_proc=num_proc)
    sets = {}
    for name in [set_name] if set_name is not None else names:
        held_out = data.split(name).validation
        if held_out is not None and len(held_out) > 0:
            documents = Documents([held_out])
            sets[name] = validation_samples(documents, count=count, context_len=context_len)
    if not sets:
        raise UsageError(f"plan '{plan.name}' holds no validation documents to score")
    return sets
