"""ALIGN's optimizer: LAMB, weight decay 1e-5 on weights only, linear warmup then linear decay (§5)."""

from __future__ import annotations

import re

import keras
import tensorflow as tf

# Variables that get neither weight decay nor LAMB's trust ratio: biases, norm scales/offsets and
# the temperature σ (as in the reference TF LAMB, where layer-adaptation exclusions default to the
# weight-decay exclusions).
NO_DECAY = ["bias", "gamma", "beta", "temperature"]


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


def build_optimizer(optim_config, total_steps: int) -> keras.optimizers.Optimizer:
    """LAMB (or AdamW, or plain SGD) from a config's ``optim`` section."""
    schedule = WarmupLinearDecay(optim_config.learning_rate, optim_config.warmup_steps, total_steps)
    name = optim_config.name.lower()
    if name == "lamb":
        optimizer = Lamb(learning_rate=schedule, weight_decay=optim_config.weight_decay,
                         exclude_from_layer_adaptation=NO_DECAY)
    elif name == "adamw":
        optimizer = keras.optimizers.AdamW(learning_rate=schedule,
                                           weight_decay=optim_config.weight_decay)
    elif name == "sgd":
        # Plain SGD: its update is the gradient itself, so runs that must agree to float
        # tolerance (multi-worker vs one process) can be compared; Adam/LAMB's early steps are
        # ~lr·sign(g) and turn rounding noise in tiny gradients into ±lr differences.
        optimizer = keras.optimizers.SGD(learning_rate=schedule)
    else:
        raise ValueError(f"Unknown optimizer {optim_config.name!r}; choose 'lamb', 'adamw' or 'sgd'.")
    optimizer.exclude_from_weight_decay(var_names=NO_DECAY)
    return optimizer
