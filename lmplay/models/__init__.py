"""Model families; importing this package registers every `--exp`."""

from lmplay.models.registry import (
    TINY_SIZES,
    Experiment,
    ModelArgs,
    canonical_name,
    describe_experiments,
    experiment_aliases,
    experiment_names,
    get_experiment,
    register,
)

# Imported for their @register side effect; the registry must exist first.
from lmplay.models import gpt2ish, gpt2ish_tanh, modern, resscale  # noqa: F401  # isort: skip

__all__ = [
    "TINY_SIZES",
    "Experiment",
    "ModelArgs",
    "canonical_name",
    "describe_experiments",
    "experiment_aliases",
    "experiment_names",
    "get_experiment",
    "register",
]
