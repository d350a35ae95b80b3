"""Grids of runs: the grid file (spec), the queue over devices (queue), the status table (status).

Cells run as `lmp_trainer` processes; nothing here imports `lmplay.train`.
"""
