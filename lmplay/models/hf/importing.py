"""`--initial-model FOLDER`: a transformers GPT-2 or Llama folder as lmplay weights.

The folder's config picks the lmplay experiment that computes the same function at the same
sizes (see `maps`); its weights become that experiment's state dict, and the run starts from
them as from an lmplay checkpoint that holds only a model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmplay.errors import UsageError
from lmplay.models.hf.folder import WEIGHT_FILES, load_weights, read_folder
from lmplay.models.hf.maps import from_hf_state, lmplay_identity


def import_folder(path: Path) -> dict[str, Any]:
    """The folder as a checkpoint's `model` component: {"state_args": ..., "state": ...}."""
    source = f"--initial-model {path}"
    folder = read_folder(path, "--initial-model")
    exp, args, family = lmplay_identity(folder.config, str(path))
    if not folder.weight_files:
        raise UsageError(f"{source}: no weight files ({', '.join(WEIGHT_FILES)} or an index)")
    state = from_hf_state(load_weights(folder.weight_files), family, args, source)
    return {"state_args": {"exp": exp, "model_args": args.to_dict()}, "state": state}
