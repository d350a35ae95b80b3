"""lmplay: a training-plan engine for small language models."""

__version__ = "0.1.0"
