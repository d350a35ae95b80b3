"""The training loop: stage -> batch -> step -> stats -> maybe validate -> maybe save."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from lmplay.data.batcher import validation_samples
from lmplay.data.prefetch import PrefetchingBatcher, PreparedBatch
from lmplay.plan.datasets import PlanData
from lmplay.train.distributed.process_group import AgreedStop
from lmplay.train.distributed.world import resume_command
from lmplay.train.mfu import mfu, peak_flops
from lmplay.train.progress_bar import StageProgress
from lmplay.train.sampling import generate_samples
from lmplay.train.saves import RunSaves
from lmplay.train.session import Session
from lmplay.train.signals import StopRequest, pause_point
from lmplay.train.stage_run import StageRun
from lmplay.train.step import StepResult, prepare_mini_batches, train_step
from lmplay.train.stopping import Stop
from lmplay.train.validation import score_validation_set, validation_example


class TrainingDiverged(RuntimeError):
    pass


class Trainer:
    def __init__(self, session: Session, data: PlanData | None = None) -> None:
        self.s = session
        self.data = data or PlanData(session.plan, num_proc=session.cfg.data.workers())
        self.batcher: PrefetchingBatcher | None = None
        self.stage: StageRun | None = None  # the stage being trained: settings, schedule
        self._validation_cache: dict[str, list] | None = None
        self._last_flush = time.monotonic()
        self._warned_missing_grads = False
        self.saves = RunSaves(session)
        built = session.built
        self._flops_per_token = built.experiment.flops_per_token(built.args)
        self._peak_flops = peak_flops(session.placement.device, session.cfg.system.peak_tflops)

    def fit(self) -> int:
        """Train the rest of the plan; returns the process exit code."""
        s = self.s
        if s.progress.finished:
            print(
                f"plan '{s.plan.name}' is already done at {self._where()}: nothing to train, "
                f"{s.files.checkpoint} not written. --reset-history trains the plan again from "
                "these weights; another --out-dir starts a new run",
                file=sys.stderr,
            )
            return 0
        with StopRequest() as signals:
            stop = AgreedStop(signals, s.placement.world)  # every rank stops after the same step
            if s.runner.step == 0 and not self._validated_at_this_step():
                self.validate()
            stop.sync()
            while not s.progress.finished and not stop.requested and not self.max_steps_reached:
                stage = s.plan.stages[s.progress.stage_index]
                self.batcher = self._prefetching(self._begin_stage())
                s.stop_rules.begin_stage(s.progress.stage_index)
                with self._progress_bar(stage.name) as bar, self.batcher:
                    while not stop.requested and not self.max_steps_reached:
                        if s.stop_rules.stop is not None:
                            break  # a stop rule ended the stage (maybe before an interrupt)
                        batch = self.batcher.next_batch()
                        if batch is None:
                            break
                        result = self._step(batch)
                        self._record(result, stage.name, bar)
                        s.stop_rules.after_step(result.loss, self._epochs_done())
                        self._maybe_validate_and_save(len(batch.samples))
                        stop.sync()
                    if self.batcher.finished or s.stop_rules.stop is not None:
                        bar.finish()
                ended_by = s.stop_rules.stop
                if self.batcher.finished or ended_by is not None:
                    if not self._validated_at_this_step():
                        self.validate()  # each stage ends with a validation point on the plot
                    pause_point("stage_end")
                    self._record_stop(stage.name, ended_by or Stop(*self.batcher.end_reason()))
                    s.progress.complete_stage()
                    s.stop_rules.begin_stage(s.progress.stage_index)
                    self.batcher = None  # its stage is done; its position is saved no more
                    self.save(s.files.stage(stage.name))
            stop.sync()
            self._record_pause(stop)
            self.save()
            self._report_end(stop)  # inside: a late second Ctrl+C is still only recorded
        return stop.exit_code

    @property
    def max_steps_reached(self) -> bool:
        max_steps = self.s.cfg.io.max_steps
        return max_steps is not None and self.s.runner.step >= max_steps

    def _step(self, batch: PreparedBatch) -> StepResult:
        s = self.s
        samples = batch.samples
        s.train_model.train()
        assert self.batcher is not None and self.stage is not None
        lr = self.stage.lr(s.runner.step, self.batcher.cursor.counters, samples)
        started = time.perf_counter()
        result = train_step(
            s.train_model,
            s.optimizer,
            samples,
            batch.mini_batches,
            lr=lr,
            grad_clip=self.stage.settings.grad_clip,
            placement=s.placement,
            check_grads=s.cfg.system.check_grads,
            frozen=self.stage.frozen,
        )
        if not result.applied:
            self._diverged(result)
        if result.missing_grads and not self._warned_missing_grads:
            self._warned_missing_grads = True
            tqdm.write(
                f"warning: {len(result.missing_grads)} trainable parameters got no gradient "
                f"(the loss does not reach them): {', '.join(result.missing_grads[:8])}",
                file=sys.stderr,
            )
        s.runner.train_seconds += time.perf_counter() - started
        s.runner.step += 1
        s.runner.micro_step += result.micro_steps
        s.runner.samples += len(samples)
        s.runner.tokens += result.tokens
        s.runner.loss_tokens += result.loss_tokens
        self.stage.count_sources(samples, s.progress.source_tokens)
        self.batcher.cursor.counters.add_padding(result.padding_tokens, result.padded_slots)
        self._last_lr = lr
        self._last_step_seconds = time.perf_counter() - started
        return result

    def _record(self, result: StepResult, stage: str, bar: StageProgress) -> None:
        s = self.s
        tokens_per_s = result.tokens / max(self._last_step_seconds, 1e-9)
        utilisation = self._mfu(tokens_per_s)  # None without a known peak (a CPU)
        s.stats.add_train(
            {
                "samples": s.runner.samples,
                "tokens": s.runner.tokens,
                "steps": s.runner.step,
                "stage": stage,
                "loss": result.loss,
                "accuracy": result.accuracy,
                "lr": self._last_lr,
                "context_len": self.stage.settings.context_len,
                "batch_size": self.stage.settings.batch_size,
                "source_tokens": dict(s.progress.source_tokens),
                "grad_norm": result.grad_norm,
                "tokens_per_s": tokens_per_s,
                **self.batcher.cursor.counters.ratios(),
                **self._passes(),
                **({} if utilisation is None else {"mfu": utilisation}),
            }
        )
        bar.update(
            self._stage_fraction(),
            s.runner.step,
            loss=f"{result.loss:.3f}",
            lr=f"{self._last_lr:.2e}",
            tok_s=f"{tokens_per_s:,.0f}",
            **({} if utilisation is None else {"mfu": f"{utilisation:.1%}"}),
        )
        if time.monotonic() - self._last_flush > 30:
            s.stats.flush()
            self._last_flush = time.monotonic()

    def _passes(self) -> dict[str, dict[str, int]]:
        """`source_passes` of a mixed stage: how often each dataset was repeated so far."""
        assert self.stage is not None and self.batcher is not None
        passes = self.stage.passes(self.batcher.cursor)
        return {} if passes is None else {"source_passes": passes}

    def _mfu(self, tokens_per_s: float) -> float | None:
        if self._peak_flops is None:
            return None
        return mfu(self._flops_per_token, tokens_per_s, self._peak_flops)

    def _maybe_validate_and_save(self, batch_samples: int) -> None:
        io = self.s.cfg.io
        now = self.s.runner.samples
        before = now - batch_samples
        if now // io.validation_interval != before // io.validation_interval:
            self.validate()
        every = self.s.cfg.samples.generate_every
        if every and now // every != before // every:
            self._sample_prompts()
        if now // io.save_interval != before // io.save_interval:
            self.save()
            if io.keep_last:
                self.saves.rolling()

    def validate(self) -> dict[str, float]:
        s = self.s
        s.model.eval()
        losses = {}
        for name, samples in self._validation_sets().items():
            batch_size = s.cfg.batch.validation_batch()
            scores = score_validation_set(s.train_model, samples, batch_size, s.placement)
            loss, accuracy, words = scores.loss, scores.accuracy, scores.word_accuracy
            # Every rank computes it (an FSDP forward is collective); rank 0 prints and writes.
            example = validation_example(s.train_model, samples[0], s.placement)
            s.stats.add_validation(
                name,
                {
                    "samples": s.runner.samples,
                    "tokens": s.runner.tokens,
                    "steps": s.runner.step,
                    "loss": loss,
                    "perplexity": math.exp(min(loss, 50.0)),
                    "accuracy": accuracy,
                    "word_accuracy": words,
                    "example": example,
                },
            )
            losses[name] = loss
            pause_point("validate")
            tqdm.write(
                f"validation {name} @ {s.runner.tokens:,} tokens: loss {loss:.4f}, "
                f"accuracy {accuracy:.3f}, word accuracy {words:.3f}\n"
                f"  truth:      {example['truth'][:100]!r}\n"
                f"  prediction: {example['prediction'][:100]!r}",
                file=sys.stderr,
            )
        s.model.train()
        s.stop_rules.after_validation(losses, self._epochs_done())
        if s.best.improved(losses, s.runner.step):
            self._save_best()
        return losses

    def _sample_prompts(self) -> None:
        """Continue the sample prompts; records and prints them (the global RNG is untouched)."""
        s = self.s
        prompts = s.cfg.samples.prompts(s.plan.generate_prompts)
        step = s.runner.step
        for record in generate_samples(s.model, prompts, s.cfg.samples, s.cfg.data.seed, step):
            s.stats.add_generation(self._counters() | record)
            tqdm.write(
                f"sample @ step {step}: {record['prompt']!r} -> {record['text']!r}", file=sys.stderr
            )

    def _counters(self) -> dict[str, int]:
        runner = self.s.runner
        return {"samples": runner.samples, "tokens": runner.tokens, "steps": runner.step}

    def _epochs_done(self) -> float:
        """Passes over the stage's documents so far, in whole documents taken."""
        return 0.0 if self.batcher is None else self.batcher.epochs_done()

    def _record_stop(self, stage: str | None, why: Stop) -> None:
        """Say and record why training stopped; a stop rule's reason is printed when it fires."""
        added = self.s.stats.add_stop(
            self._counters() | {"stage": stage, "reason": why.reason, "message": why.message}
        )
        # A pause (--max-steps, a signal) is said by _report_end: the stage has not ended.
        if added and why.reason not in ("epochs", "max_steps", "interrupted"):
            tqdm.write(f"stage '{stage}' ended at {self._where()}: {why.message}", file=sys.stderr)

    def _record_pause(self, stop: StopRequest) -> None:
        s = self.s
        stage = None if s.progress.finished else s.plan.stages[s.progress.stage_index].name
        if stop.requested:
            self._record_stop(stage, Stop("interrupted", f"stopped by {stop.signal.name}"))
        elif self.max_steps_reached and not s.progress.finished:
            max_steps = s.cfg.io.max_steps
            self._record_stop(stage, Stop("max_steps", f"reached --max-steps {max_steps}"))

    def _save_best(self) -> None:
        self._sync_batcher_state()
        self.saves.best()

    def _validated_at_this_step(self) -> bool:
        # Read from the stats, which travel in the checkpoint: a rerun after a stop between a
        # validation and the next step must not add a second record at the same step.
        step = self.s.runner.step
        return any(
            records and records[-1]["steps"] == step for records in self.s.stats.validation.values()
        )

    def save(self, also: Path | None = None) -> None:
        """Write the run's checkpoint (and `also`, a stage checkpoint) with every component."""
        self._last_flush = time.monotonic()
        self._sync_batcher_state()
        self.saves.checkpoint(also)

    def _sync_batcher_state(self) -> None:
        # Also when the batcher just ran out: a save after the stage's last step must not keep
        # an older position, or a crash before the stage checkpoint would replay batches.
        if self.batcher is not None:
            self.s.progress.batcher_state = self.batcher.state_dict()

    def _begin_stage(self) -> Any:
        """The current stage's batcher, at its saved position, with its settings applied."""
        s = self.s
        index = s.progress.stage_index
        seed = hash_seed(s.plan.seed, s.cfg.data.seed, index)
        self.stage = StageRun(s, self.data, index, seed)
        self.stage.begin(s.optimizer, self.stage.batcher.cursor.counters)
        return self.stage.batcher

    def _prefetching(self, batcher: Any) -> PrefetchingBatcher:
        """`batcher` with its next batch split into mini-batches (pinned for CUDA) ahead."""
        assert self.stage is not None
        mini_batch = self.stage.settings.mini_batch()
        pin = self.s.placement.device.type == "cuda"
        pack_len = self.stage.pack_len
        return PrefetchingBatcher(
            batcher, lambda samples: prepare_mini_batches(samples, mini_batch, pack_len, pin)
        )

    def _validation_sets(self) -> dict[str, list]:
        if self._validation_cache is None:
            s = self.s
            self._validation_cache = {
                name: validation_samples(
                    docs, count=s.cfg.batch.validation_samples, context_len=s.model_args.context_len
                )
                for name, docs in self.data.validation_documents().items()
            }
        return self._validation_cache

    def _stage_fraction(self) -> float:
        """How far the stage is toward whichever of its limits is nearest (documents, steps or
        tokens of its budget)."""
        assert self.batcher is not None
        done, total, _ = self.batcher.progress()
        return min(1.0, done / total) if total else 1.0

    def _progress_bar(self, stage: str) -> StageProgress:
        index = self.s.progress.stage_index + 1
        return StageProgress(
            f"stage {index}/{len(self.s.plan.stages)} {stage}",
            stage_fraction=self._stage_fraction(),
            step=self.s.runner.step,
            max_steps=self.s.cfg.io.max_steps,
        )

    def _diverged(self, result: StepResult) -> None:
        """The optimizer skipped the update, so the model still holds the last good weights."""
        s = self.s
        step = s.runner.step + 1
        what = (
            f"loss is {result.loss}"
            if not math.isfinite(result.loss)
            else f"gradient norm is {result.grad_norm} (loss {result.loss:.4f})"
        )
        self._sync_batcher_state()
        stage = s.plan.stages[s.progress.stage_index].name
        self._record_stop(stage, Stop("diverged", f"{what} at step {step}"))
        last_good = self.saves.last_good()
        raise TrainingDiverged(
            f"{what} at step {step}: training stopped before applying it; the last good state "
            f"is in {last_good} and {s.files.checkpoint} was left as it is (try a lower --lr or "
            "--grad-clip)"
        )

    def _where(self) -> str:
        runner = self.s.runner
        return f"step {runner.step}, {runner.samples:,} samples, {runner.tokens:,} tokens"

    def _report_end(self, stop: AgreedStop) -> None:
        s = self.s
        where = self._where()
        if stop.requested:
            print(
                f"stopped by {stop.signal.name} at {where}; saved {s.files.checkpoint}\n"
                f"resume with: {resume_command()}",
                file=sys.stderr,
            )
        elif self.max_steps_reached and not s.progress.finished:
            print(f"reached --max-steps at {where}; saved {s.files.checkpoint}", file=sys.stderr)
        else:
            print(
                f"plan '{s.plan.name}' done at {where}; saved {s.files.checkpoint}", file=sys.stderr
            )


def hash_seed(*parts: int) -> int:
    """Combine seeds without collisions between (plan seed, run seed, stage) triples."""
    value = 0
    for part in parts:
        value = (value * 1_000_003 + part) % (2**63)
    return value
