"""Everything that depends on the rank: process group, rank shares, reductions, rank-0 output.

`torchrun --nproc-per-node=N -m lmplay.cli.trainer ...` starts N processes with RANK, WORLD_SIZE
and LOCAL_RANK set. Every rank builds the same plan, batcher and cursor, so all ranks see the same
logical batch; `rank_share` gives each its deterministic part of the batch's mini-batches, and
the sums the step and validation report are reduced across ranks, so every rank holds the same
global figures (and the same stats, counters and checkpoint components). Only rank 0 writes.

With WORLD_SIZE unset or 1 the world is `SINGLE`: no process group, no collective, and every
helper here returns its input unchanged, so one process runs exactly as without this module.

Every rank-aware line of lmplay lives in this package; the loop asks it, it never reads RANK
itself:
- `world`: which rank this process is (World, from torchrun's environment), rank-0 output, the
  exit code under torchrun and the command that resumes a run. No torch import at module level:
  the command reads it before its flags are known to be valid.
- `process_group`: creating and dropping the process group; AgreedStop (a stop all ranks agree on).
- `sharding`: each rank's share of a batch, gradient sync, DDP wrapping and FSDP2 sharding.
- `state`: the rank-aware checkpoint components (whole weights and moments gathered from shards,
  every rank's generators) and per-rank seeding.
"""
