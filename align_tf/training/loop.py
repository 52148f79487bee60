"""The training loop: the objective's steps in host loops, and the host-side work between them
(progress bar, TensorBoard, periodic evaluation, checkpoints, preemption).

Each host loop is one ``tf.function`` call of up to ``train.steps_per_loop`` steps on every
replica; loops end on log, evaluation and checkpoint boundaries, so those happen at exact
multiples. A step whose loss or gradients are not finite is skipped by the objective
(``Objective.train_step``); ``train.max_consecutive_skips`` of them in a row stop the run.
"""

from __future__ import annotations

import time

import tensorflow as tf

from align_tf import distribute
from align_tf.data import tfrecord
from align_tf.run_dir import RunDir
from align_tf.training.checkpoint import checkpoint_for
from align_tf.training.preemption import Preempted, PreemptionFlag
from align_tf.training.progress import Progress, banner


class TrainLoop:
    """Runs the objective's steps in host loops and does the host-side work between them.

    Each host loop is one ``tf.function`` call of up to ``train.steps_per_loop`` steps; loops end
    on log, evaluation and checkpoint boundaries, so those happen at exact multiples.
    """

    def __init__(self, config, objective, strategy, run: RunDir, write_run: RunDir, preprocessor,
                 verbose: int = 1, plans=None):
        self.config, self.objective, self.strategy = config, objective, strategy
        self.run_dir, self.preprocessor, self.verbose = run, preprocessor, verbose
        self.chief = write_run.path == run.path
        self.read_stats = tfrecord.ReadStats()
        self.checkpoint = checkpoint_for(objective)
        # Non-chief workers keep one throw-away checkpoint; see distribute.worker_write_dir.
        self.manager = write_run.checkpoint_manager(
            self.checkpoint, config.train.keep_checkpoints if self.chief else 1)
        self.writer = tf.summary.create_file_writer(run.train_log_dir) if self.chief \
            else tf.summary.create_noop_writer()
        self.scalars = tuple(objective.scalars)
        self.evaluator = PeriodicEvaluator(config, objective.model, preprocessor, plans) \
            if self.chief and config.eval.enabled and config.eval.every_steps else None
        self._step_fn = self._make_step_fn()

    def _make_step_fn(self):
        strategy, objective = self.strategy, self.objective
        replica_step = objective.train_step
        if self.config.train.jit_compile and not isinstance(strategy, tf.distribute.TPUStrategy):
            # TPUStrategy compiles the replica function with XLA anyway; elsewhere the whole step
            # (towers, gather, loss, optimizer update) becomes one XLA cluster with static shapes.
            replica_step = tf.function(replica_step, jit_compile=True)
        max_skips = float(self.config.train.max_consecutive_skips)
        scalars = self.scalars

        def run_step(iterator):
            out = strategy.run(replica_step, args=(next(iterator),))
            # Gradients are all-reduced, so every replica (and worker) has the same skip count.
            return out, strategy.experimental_local_results(out["consecutive_skips"])[0]

        @tf.function
        def train_loop(iterator, num_steps):
            """Up to ``num_steps`` steps in one host call (steps_per_execution); stops early once
            ``max_consecutive_skips`` non-finite steps came in a row, so no further batch is used."""
            out, worst = run_step(iterator)
            done = tf.constant(1)
            while done < num_steps and worst < max_skips:
                out, skips = run_step(iterator)
                worst = tf.maximum(worst, skips)
                done += 1
            metrics = {k: strategy.reduce(tf.distribute.ReduceOp.MEAN, out[k], axis=None)
                       for k in scalars}
            metrics["max_consecutive_skips"] = worst
            return metrics, done
        return train_loop

    def run(self, iterator, resumed: bool) -> dict:
        """Trains to ``train.steps``; returns the last loop's metrics."""
        cfg = self.config.train
        optimizer = self.objective.optimizer
        step = int(optimizer.iterations.numpy())
        self.last_saved = step if resumed else None
        progress = None
        if self.verbose:
            print(banner(self.config, self.run_dir, self.strategy, step, resumed), flush=True)
            progress = Progress(cfg.steps, cfg.batch_size, self.scalars)
        metrics = {}
        self.last_log = (step, time.time())
        skipped = int(self.objective.skipped_steps.numpy())
        preempted = PreemptionFlag()
        try:
            while step < cfg.steps:
                if distribute.any_worker(self.strategy, bool(preempted)):
                    self.save(step)
                    raise Preempted(f"SIGTERM at step {step}; saved {self.manager.latest_checkpoint}")
                n = min(cfg.steps_per_loop, cfg.steps - step, *(
                    every - step % every for every in self._boundaries()))
                loop_metrics, _ = self._step_fn(iterator, tf.constant(n))
                metrics = {k: float(v) for k, v in loop_metrics.items()}
                step = int(optimizer.iterations.numpy())
                metrics["lr"] = float(optimizer.learning_rate)
                if self.config.data.name != "synthetic":
                    # Corrupt records/images the input pipeline skipped so far.
                    metrics["skipped_records"] = float(self.read_stats.skipped)
                new_skips = int(metrics["skipped_steps"]) > skipped
                skipped = int(metrics["skipped_steps"])
                failed = metrics["max_consecutive_skips"] >= cfg.max_consecutive_skips
                # Skipped steps are logged at once: a run that then stops would otherwise never
                # show them.
                logged = step % cfg.log_every == 0 or step == cfg.steps or new_skips or failed
                if progress is not None:
                    progress.update(step, metrics, log=logged)
                if logged:
                    self.log(step, metrics)
                if failed:
                    # Not saving keeps the last good checkpoint as the newest one.
                    raise FloatingPointError(
                        f"{int(metrics['max_consecutive_skips'])} consecutive steps had non-finite "
                        f"loss or gradients (train.max_consecutive_skips="
                        f"{cfg.max_consecutive_skips}) at step {step}; stopping. Last good "
                        f"checkpoint: {self.run_dir.latest_checkpoint()}")
                if step % cfg.checkpoint_every == 0:
                    self.save(step)
                if self.evaluator is not None and step % self.config.eval.every_steps == 0:
                    self.log(step, self.evaluator(), prefix="eval/")
            self.save(step)
        finally:
            if progress is not None:
                progress.close()
            preempted.restore()
            self.writer.flush()
        return metrics

    def _boundaries(self):
        cfg = self.config.train
        every = [cfg.log_every, cfg.checkpoint_every]
        if self.evaluator is not None:
            every.append(self.config.eval.every_steps)
        return every

    def log(self, step: int, metrics: dict, prefix: str = ""):
        """TensorBoard scalars at ``step`` (pairs/s since the previous log)."""
        if not prefix:
            last_step, last_time = self.last_log
            now = time.time()
            metrics["pairs/s"] = self.config.train.batch_size * (step - last_step) / \
                max(now - last_time, 1e-9)
            self.last_log = (step, now)
        with self.writer.as_default(step=step):
            for k, v in metrics.items():
                if k != "max_consecutive_skips":
                    tf.summary.scalar(prefix + k.replace("pairs/s", "pairs_per_sec"), v)
        self.writer.flush()

    def save(self, step: int):
        if step != self.last_saved:
            self.manager.save(checkpoint_number=step)
            self.last_saved = step


class PeriodicEvaluator:
    """The config's evaluators (``config.eval``) on the model being trained: ``() -> {name: value}``
    for TensorBoard. The evaluation data is built once (``plans``: the ones validation built)."""

    def __init__(self, config, model, preprocessor, plans=None):
        from align_tf.evaluation import runner
        from align_tf.evaluation.embed import encoder_for_model
        self._runner = runner
        self.plans = plans if plans is not None else runner.plans_from_config(config)
        self.encoder = encoder_for_model(model, preprocessor, config)

    def __call__(self) -> dict:
        return self._runner.flatten(self._runner.run_plans(self.encoder, self.plans))
