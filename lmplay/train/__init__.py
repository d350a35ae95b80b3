"""Training: how a run is set up, how it trains, and how it stays safe. Read it in this order.

The loop
    trainer.py       Trainer.fit: stage -> batch -> step -> stats -> maybe validate -> maybe save
    step.py          train_step: mini-batches, token-weighted loss, backward, clip, update
    loss.py          the output head applied in chunks (full-vocabulary logits never exist)
    optim.py         optimizers and their weight-decay groups
    schedule.py      the LR as a pure function of the step (a stage's: of its budget)
    curriculum.py    each stage's settings (lr, schedule, context, batch, freeze), checked early
    stage_run.py     one stage being trained: its batcher, schedule, frozen parameters
    validation.py    validation scores and a readable example
    sampling.py      sample continuations during training
    progress_bar.py  the stage's progress toward its nearest limit
    runner.py        the run's clocks: steps, micro-steps, samples, tokens

The run's setup (build_session, one named step each)
    session.py       Session and build_session: the recipe
    placement.py     where and how the run computes: device, world, precision (resolved once)
    resume.py        what the run starts from and takes from there (resume policy)
    model_setup.py   the model: identity, size check, adapters, freezing, compile, wrapping
    checkpoint_table.py  what a checkpoint holds: the component table, built in one function
    adapters.py      which LoRA adapters the model carries
    describe.py      the start-of-run summary

Run safety
    checkpoint.py    the .lmp format: atomic writes, checked loads, the CheckpointMap
    components.py    Stateful adapters for the model, optimizer, RNGs and schedule position
    saves.py         every checkpoint a run writes: run, stage, best, rolling, last good
    lock.py          one process per run: the lock over all of a run's files
    preflight.py     checks before any work: device, writable outputs, memory
    fingerprint.py   what a resume compares: settings and data files
    signals.py       Ctrl+C / SIGTERM / SIGUSR2 as stop requests that save
    best.py, stopping.py  the best checkpoint and stop rules

Performance
    distributed/     all rank logic: world (torchrun's environment), process group, sharding
                     (DDP, FSDP2, each rank's share of a batch), rank-aware checkpoint state
    memory.py        activation checkpointing
    mfu.py           model FLOPs utilisation
"""
