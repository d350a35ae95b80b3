"""Run statistics: the stats file (runs.py), recording it (recorder.py), plotting it (plot.py).

`plot` is not imported here: it pulls in matplotlib, which the trainer does not need.
"""

from lmplay.stats.recorder import StatsRecorder
from lmplay.stats.runs import RunStats, find_stats_files, load_stats

__all__ = ["RunStats", "StatsRecorder", "find_stats_files", "load_stats"]
