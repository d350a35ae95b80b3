"""Shared test setup: no hub access, and every cache in a temporary folder of this session."""

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


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(_CACHE_ROOT, ignore_errors=True)
