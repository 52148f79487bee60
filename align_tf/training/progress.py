"""The training console: one start banner, then progress with pairs/s and an honest ETA.

On a terminal the progress line is redrawn in place (a carriage return, no ANSI codes, cut to
the terminal's width); written to a file or a pipe (nohup, CI) it is a plain line at each log
step (``train.log_every``) and at the end. The ETA and pairs/s come from the steps after the
first host loop, whose time is mostly tracing and compiling (Keras' bar counted it, and at step
10 of a run that took 4:40 promised 1:54:18); evaluation and checkpoint pauses between loops are
counted, as they recur. Metrics keep one order: the loss, the objective's other scalars as it
lists them, the learning rate, then the counters (as integers).
"""

from __future__ import annotations

import shutil
import sys
import time

# Counters shown as integers, after the losses; the per-loop skip streak is internal.
COUNTERS = ("skipped_steps", "skipped_records")
HIDDEN = ("consecutive_skips", "max_consecutive_skips")

# The name of the config the command read (``--config``: a preset, a file, a run's config.json),
# for the banner; set by the command line before it trains (the config itself has no name).
config_name: str | None = None


def banner(config, run, strategy, step: int, resumed: bool) -> str:
    """The one start line: config, model_dir (``run``, a ``RunDir``), strategy and devices,
    fresh or resumed step."""
    devices = sorted({d.split("/device:")[-1] for d in getattr(
        strategy.extended, "worker_devices", ())}) or ["?"]
    replicas = strategy.num_replicas_in_sync
    # CheckpointManager names each checkpoint by the step it was saved at (TrainLoop.save).
    what = f"resumed at step {step} from {run.checkpoint_dir}/ckpt-{step}" if resumed \
        else "fresh run"
    name = config_name or f"model {config.model.image_size_name}/{config.model.text_size_name}"
    return (f"align_tf: training config {name} (objective {config.objective.name}, data "
            f"{config.data.name}) in {run.path} on {type(strategy).__name__} ({replicas} "
            f"replica{'s' if replicas != 1 else ''}: {', '.join(devices)}); {what}; "
            f"{config.train.steps} steps of {config.train.batch_size} pairs")


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _format_metric(name: str, value: float) -> str:
    if name in COUNTERS:
        return f"{name}={int(value)}"
    return f"{name}={value:.3g}" if name == "lr" else f"{name}={value:.4g}"


class Progress:
    """``update(step, metrics, log)`` after each host loop; ``close()`` at the end.

    Args:
      total: the run's last step.
      batch_size: pairs per step (for pairs/s).
      order: the objective's scalars, in its order: shown first, then the learning rate and
        the counters; any other metric follows, sorted.
      stream: where to write (default stdout); ``interactive``: redraw in place (default: the
        stream is a terminal).
      clock: ``time.monotonic``; tests pass their own.
    """

    def __init__(self, total: int, batch_size: int, order=(), stream=None,
                 interactive: bool | None = None, clock=time.monotonic):
        self.total, self.batch_size = total, batch_size
        self.order = tuple(k for k in order if k not in COUNTERS) + ("lr",) + COUNTERS
        self.stream = stream or sys.stdout
        self.interactive = self.stream.isatty() if interactive is None else interactive
        self.clock = clock
        self.anchor = None  # (step, time) at the end of the first host loop
        self.width = 0  # of the line drawn in place

    def rate(self, step: int) -> float | None:
        """Steps per second since the first host loop ended; None until a second one has."""
        if self.anchor is None or step <= self.anchor[0]:
            return None
        return (step - self.anchor[0]) / max(self.clock() - self.anchor[1], 1e-9)

    def line(self, step: int, metrics: dict) -> str:
        rate = self.rate(step)
        parts = [f"step {step}/{self.total}"]
        if rate:
            parts.append(f"{rate * self.batch_size:.1f} pairs/s")
            parts.append(f"ETA {_clock((self.total - step) / rate)}")
        shown = [k for k in self.order if k in metrics] + sorted(
            k for k in metrics if k not in self.order)
        parts.append(" ".join(_format_metric(k, metrics[k]) for k in shown
                              if k not in HIDDEN and k != "pairs/s"))
        return " | ".join(parts)

    def update(self, step: int, metrics: dict, log: bool = False) -> None:
        """Shows ``step``: redrawn in place on a terminal; elsewhere a line when ``log``."""
        if self.anchor is None:
            self.anchor = (step, self.clock())
        if self.interactive:
            width = max(shutil.get_terminal_size((120, 24)).columns - 1, 20)
            text = self.line(step, metrics)[:width]
            self.stream.write("\r" + text.ljust(self.width))
            self.width = len(text)
        elif log or step >= self.total:
            self.stream.write(self.line(step, metrics) + "\n")
        self.stream.flush()

    def close(self) -> None:
        """Ends the line drawn in place."""
        if self.interactive and self.width:
            self.stream.write("\n")
            self.stream.flush()
            self.width = 0


class _Announced:
    """An evaluator that says which one of how many is starting before it runs (evaluations of
    large sets take minutes); everything else is the evaluator's."""

    def __init__(self, evaluator, label: str, stream):
        self._evaluator, self._label, self._stream = evaluator, label, stream

    def __getattr__(self, name):
        return getattr(self._evaluator, name)

    def run(self, encoder):
        start = time.monotonic()
        self._stream.write(f"evaluating {self._label} ... ")
        self._stream.flush()
        metrics = self._evaluator.run(encoder)
        self._stream.write(f"{time.monotonic() - start:.1f}s\n")
        self._stream.flush()
        return metrics


def announce_plans(plans, stream=None):
    """``plans`` (``evaluation.runner``'s ``[(source key, [(type, evaluator), ...]), ...]``) with
    each evaluator printing ``evaluating [i/n] SOURCE TYPE ... `` as it starts and its time when
    it ends; changed in place and returned."""
    total = sum(len(evaluators) for _, evaluators in plans)
    i = 0
    for source, evaluators in plans:
        for k, (task, evaluator) in enumerate(evaluators):
            i += 1
            if not isinstance(evaluator, _Announced):
                evaluators[k] = (task, _Announced(evaluator, f"[{i}/{total}] {source} {task}",
                                                  stream or sys.stdout))
    return plans
