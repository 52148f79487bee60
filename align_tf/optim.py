"""ALIGN's optimizer: LAMB, weight decay 1e-5 on weights only, linear warmup then linear decay (§5)."""

from __future__ import annotations

import re

import keras
import tensorflow as tf

from align_tf import compat

# Variables that get neither weight decay nor LAMB's trust ratio: biases, norm scales/offsets, the
# temperature σ and SigLIP's log_logit_scale t′ (its logit_bias b matches "bias"), as in the
# reference TF LAMB, where layer-adaptation exclusions default to the weight-decay exclusions.
# Patterns are searched in Keras' short ``variable.name`` (e.g. "logit_bias", not "align/...").
NO_DECAY = ["bias", "gamma", "beta", "temperature", "logit_scale"]

NAMES = ("lamb", "adamw", "sgd")  # config.optim.name


@keras.saving.register_keras_serializable(package="align_tf")
class Lamb(keras.optimizers.Lamb):
    """Keras LAMB plus ``exclude_from_layer_adaptation``: matching variables take plain Adam steps.

    Why: the trust ratio ||w||/||update|| makes every step *relative* to the weight's size. For the
    scalar σ that caps its change at lr·σ per step, so σ could not fall from its initial 1.0 within
    a short schedule; zero-initialised biases would get ratio 1 anyway.
    """

    def __init__(self, *args, exclude_from_layer_adaptation=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.exclude_from_layer_adaptation = list(exclude_from_layer_adaptation)
        self.amsgrad = False  # read by Adam.update_step, which excluded variables use

    def update_step(self, gradient, variable, learning_rate):
        if any(re.search(p, variable.name) for p in self.exclude_from_layer_adaptation):
            return keras.optimizers.Adam.update_step(self, gradient, variable, learning_rate)
        return super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        return {**super().get_config(),
                "exclude_from_layer_adaptation": self.exclude_from_layer_adaptation}


@keras.saving.register_keras_serializable(package="align_tf")
class AdamW(keras.optimizers.AdamW):
    """Keras AdamW whose per-variable update is TF's fused ``ResourceApplyAdam`` kernel.

    Keras 3's ``Adam.update_step`` is about ten element-wise ops and three assignments per
    variable, and its ``_apply_weight_decay`` re-evaluates the learning-rate schedule for every
    decayed variable; with a few hundred variables that is a noticeable share of a CPU training
    step. Same update, same slot variables (so checkpoints are interchangeable): decoupled decay
    ``w -= w * wd * lr`` first, then ``ResourceApplyAdam`` (the formula of ``Adam.update_step``:
    ``m += (g - m)(1 - b1)``, ``v += (g² - v)(1 - b2)``,
    ``w -= lr √(1 - b2^t) / (1 - b1^t) · m / (√v + ε)``). Keras' own path runs for other backends,
    ``amsgrad`` and non-float32 variables.
    """

    def _fused(self, variable) -> bool:
        return (keras.backend.backend() == "tensorflow" and not self.amsgrad
                and variable.dtype == tf.float32)

    @compat.overrides(keras.optimizers.AdamW)
    def _apply_weight_decay(self, variables):
        if keras.backend.backend() != "tensorflow" or self.amsgrad:
            return super()._apply_weight_decay(variables)
        # Applied in update_step instead, with the step's learning rate computed once.

    def update_step(self, gradient, variable, learning_rate):
        if not self._fused(variable):
            if keras.backend.backend() == "tensorflow" and not self.amsgrad:
                self._decay(variable, learning_rate)  # _apply_weight_decay skipped it
            return super().update_step(gradient, variable, learning_rate)
        lr = tf.cast(learning_rate, tf.float32)
        self._decay(variable, lr)
        local_step = tf.cast(self.iterations + 1, tf.float32)
        m, v = compat.adam_slots(self, variable)
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle, m=m.value.handle, v=v.value.handle,
            beta1_power=tf.pow(tf.constant(self.beta_1, tf.float32), local_step),
            beta2_power=tf.pow(tf.constant(self.beta_2, tf.float32), local_step),
            lr=lr, beta1=tf.constant(self.beta_1, tf.float32),
            beta2=tf.constant(self.beta_2, tf.float32),
            epsilon=tf.constant(self.epsilon, tf.float32),
            grad=tf.convert_to_tensor(gradient, tf.float32), use_locking=False)

    def _decay(self, variable, learning_rate):
        if self.weight_decay is not None and compat.uses_weight_decay(self, variable):
            lr = tf.cast(learning_rate, variable.dtype)
            wd = tf.cast(self.weight_decay, variable.dtype)
            variable.assign_sub(variable * wd * lr)


@keras.saving.register_keras_serializable(package="align_tf")
class WarmupLinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """lr rises linearly 0 → ``peak`` over ``warmup_steps``, then falls linearly to 0 at ``total_steps``."""

    def __init__(self, peak: float, warmup_steps: int, total_steps: int):
        self.peak = float(peak)
        self.warmup_steps = int(warmup_steps)
        self.total_steps = int(total_steps)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warmup = step / max(self.warmup_steps, 1)
        decay = (self.total_steps - step) / max(self.total_steps - self.warmup_steps, 1)
        factor = tf.where(step < self.warmup_steps, warmup, decay)
        return self.peak * tf.clip_by_value(factor, 0.0, 1.0)

    def get_config(self):
        return {"peak": self.peak, "warmup_steps": self.warmup_steps, "total_steps": self.total_steps}


@keras.saving.register_keras_serializable(package="align_tf")
class WarmupCosineDecay(WarmupLinearDecay):
    """lr rises linearly 0 → ``peak`` over ``warmup_steps``, then follows half a cosine to 0 at
    ``total_steps`` (the paper's VTAB fine-tuning schedule)."""

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warmup = step / max(self.warmup_steps, 1)
        progress = tf.clip_by_value((step - self.warmup_steps) /
                                    max(self.total_steps - self.warmup_steps, 1), 0.0, 1.0)
        decay = 0.5 * (1.0 + tf.cos(3.141592653589793 * progress))
        return self.peak * tf.where(step < self.warmup_steps, warmup, decay)


SCHEDULES = {"linear": WarmupLinearDecay, "cosine": WarmupCosineDecay}  # config.optim.schedule


def build_optimizer(optim_config, total_steps: int) -> keras.optimizers.Optimizer:
    """LAMB (or AdamW, or plain SGD) from a config's ``optim`` section."""
    schedule = SCHEDULES[optim_config.get("schedule", "linear")](
        optim_config.learning_rate, optim_config.warmup_steps, total_steps)
    name = optim_config.name
    if name == "lamb":
        optimizer = Lamb(learning_rate=schedule, weight_decay=optim_config.weight_decay,
                         exclude_from_layer_adaptation=NO_DECAY)
    elif name == "adamw":
        optimizer = AdamW(learning_rate=schedule, weight_decay=optim_config.weight_decay)
    elif name == "sgd":
        # Plain SGD: its update is the gradient itself, so runs that must agree to float
        # tolerance (multi-worker vs one process) can be compared; Adam/LAMB's early steps are
        # ~lr·sign(g) and turn rounding noise in tiny gradients into ±lr differences.
        optimizer = keras.optimizers.SGD(learning_rate=schedule)
    else:
        raise ValueError(f"unknown optim.name {name!r}; choose from {list(NAMES)}")
    optimizer.exclude_from_weight_decay(var_names=NO_DECAY)
    return optimizer
