"""A readable validation example: prompt, truth and the model's teacher-forced prediction."""

from __future__ import annotations

import torch
from torch import nn

from lmplay.data.batcher import IGNORE_INDEX, Sample, collate
from lmplay.data.tokenizer import get_tokenizer
from lmplay.train.step import Precision


@torch.no_grad()
def validation_example(
    model: nn.Module, sample: Sample, device: torch.device, precision: Precision
) -> dict[str, str]:
    """Decode the argmax prediction at every truth position of one sample."""
    batch = collate([sample])
    with precision.autocast():
        logits = model(batch.input_ids.to(device))  # (1, T, V)
    mask = batch.targets[0] != IGNORE_INDEX
    predicted = logits[0].argmax(dim=-1).cpu()[mask].tolist()
    tokenizer = get_tokenizer()
    return {
        "prompt": tokenizer.decode(list(sample.prompt)),
        "truth": tokenizer.decode(list(sample.truth)),
        "prediction": tokenizer.decode(predicted),
    }
