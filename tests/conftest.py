"""Shared test setup: no hub access, every cache in a temporary folder of this session, and the
session's working folder there too.

A test that runs a command with a default output path (`out_gpt/...`, `$LMP_DATASETS`) thereby
writes into the temporary folder, never into the clone the tests were started from, whose
`out_gpt/` may hold the user's own runs (possibly one running right now).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

# Set at import, before any test module imports `datasets`, which reads these variables once.
# Tests that check hub-failure behaviour undo the offline flags with monkeypatch.
_CACHE_ROOT = Path(tempfile.mkdtemp(prefix="lmplay-tests-"))
os.environ.update(
    {
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HOME": str(_CACHE_ROOT / "hf"),
        "HF_DATASETS_CACHE": str(_CACHE_ROOT / "hf" / "datasets"),
        "TIKTOKEN_CACHE_DIR": str(_CACHE_ROOT / "tiktoken"),
    }
)
# The user's own folder of saved datasets is not the tests' business: without the variable, each
# command saves into `out_gpt/datasets` of its (temporary) working folder.
os.environ.pop("LMP_DATASETS", None)
_WORKING_FOLDER = _CACHE_ROOT / "cwd"


def pytest_configure(config: pytest.Config) -> None:
    # After pytest has found the tests (relative to where it was started), before any runs.
    _WORKING_FOLDER.mkdir(exist_ok=True)
    os.chdir(_WORKING_FOLDER)


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(_CACHE_ROOT, ignore_errors=True)
