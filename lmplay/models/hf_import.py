"""Old path of `lmplay.models.hf.importing`, still imported by lmplay/train/session.py; it goes
when session.py imports `import_folder` from there."""

from lmplay.models.hf.importing import import_folder

__all__ = ["import_folder"]
