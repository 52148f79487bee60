"""Checks a training config before anything is built: one-line ``ConfigError``s naming the field.

``validate_config`` runs one check per section, each next to what it checks:

* ``model``, ``train``, ``optim``, ``export``: here (``_check_model`` … ``_check_optim``);
* ``objective``: the registry entry named by ``objective.name`` (its section ``objective.<name>``
  and its own ``validate``), plus what it needs from the model;
* ``data``: the source's own check (``align_tf.data.sources.parse`` / ``check``);
* ``eval``: ``align_tf.evaluation.runner.plans_from_config`` (renders and embeds nothing).
"""

from __future__ import annotations

import tensorflow as tf

from align_tf import distribute, objectives, optim
from align_tf.data import sources
from align_tf.errors import ConfigError, check


def validate_config(config, num_replicas: int = 1):
    """Raises ``ConfigError`` with one line naming the field for any value that cannot run.

    A plug-in objective's section (``objective.<name>`` from its class's ``defaults``) is added
    to ``config`` here when the config lacks it, so the run's config.json records it. Returns the
    evaluation plans the ``eval`` check built (``runner.plans_from_config``; None when
    ``eval.enabled`` is off), so the run reuses them instead of building them again."""
    _check_model(config.model, num_replicas)
    _check_objective(config)
    _check_data(config.data, config.model)
    _check_train(config, num_replicas)
    _check_optim(config.optim)
    return _check_export_and_eval(config)


def _check_model(m, num_replicas: int) -> None:
    """The ``model`` section on its own (what the objective needs from it: ``_check_objective``)."""
    from align_tf.models import batch_norm, dual_encoder, efficientnet, text_encoder
    if not m.image_architecture:
        check(m.image_size_name in efficientnet.SIZES,
              f"unknown model.image_size_name {m.image_size_name!r}; choose from "
              f"{sorted(efficientnet.SIZES)}")
    if not m.text_architecture:
        check(m.text_size_name in text_encoder.SIZES,
              f"unknown model.text_size_name {m.text_size_name!r}; choose from "
              f"{sorted(text_encoder.SIZES)}")
    for name in ("temperature_init", "min_temperature", "max_sequence_length"):
        check(m[name] > 0, f"model.{name}={m[name]} must be positive")
    high = m.max_temperature if m.max_temperature is not None else float("inf")
    check(m.min_temperature <= high, f"model.max_temperature={m.max_temperature} must be >= "
          f"model.min_temperature={m.min_temperature}")
    if m.similarity == "softmax":
        check(m.min_temperature <= m.temperature_init <= high,
              f"model.temperature_init={m.temperature_init} must be within the bounds "
              f"[model.min_temperature, model.max_temperature]=[{m.min_temperature}, "
              f"{m.max_temperature}]")
    for name in ("text_dropout", "bn_momentum"):
        check(0.0 <= m[name] < 1.0, f"model.{name}={m[name]} must be in [0, 1)")
    check(m.drop_connect_rate is None or 0.0 <= m.drop_connect_rate < 1.0,
          f"model.drop_connect_rate={m.drop_connect_rate} must be in [0, 1)")
    try:
        batch_norm.check_group_size(m.bn_group_size, num_replicas)
    except ValueError as e:
        raise ConfigError(f"model.{e}") from None
    check(m.similarity in dual_encoder.SIMILARITIES, f"unknown model.similarity "
          f"{m.similarity!r}; choose from {list(dual_encoder.SIMILARITIES)}")
    check(m.logit_scale_init > 0, f"model.logit_scale_init={m.logit_scale_init} must be positive")
    if m.similarity == "sigmoid":  # t = 1/temperature: its bounds are the temperature's, inverted
        check(1.0 / high <= m.logit_scale_init <= 1.0 / m.min_temperature,
              f"model.logit_scale_init={m.logit_scale_init} must be within [1/max_temperature, "
              f"1/min_temperature]=[{1.0 / high}, {1.0 / m.min_temperature}]")
    check(m.fusion_layers >= 0, f"model.fusion_layers={m.fusion_layers} must be >= 0")
    if m.fusion_layers:
        try:
            text_encoder.split_for_fusion(m.text_architecture or m.text_size_name, m.fusion_layers)
        except ValueError as e:
            raise ConfigError(str(e)) from None


def _check_objective(config) -> None:
    """``objective.name`` names a registered objective whose section is complete and whose model
    (similarity, fusion encoder) the config builds; then the objective's own ``validate``."""
    o, m = config.objective, config.model
    try:
        objective = objectives.get(o.name)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    section = objectives.ensure_section(o)  # a plug-in's defaults, if the config lacks them
    missing = [field for field in objective.config_fields if field not in section]
    check(not missing, f"objective.{o.name} lacks the field(s) {missing} that {o.name!r} reads")
    # What the objective needs from the model (its registry entry): the similarity whose
    # parameters it trains (sigmoid: t′ and b; softmax: σ) and whether it needs a fusion encoder.
    check(m.similarity == objective.similarity,
          f"objective.name={o.name!r} needs model.similarity={objective.similarity!r}, got "
          f"{m.similarity!r}")
    fused = " or ".join(f"objective.name={name!r}"
                        for name, each in objectives.registered().items() if each.needs_fusion)
    check(objective.needs_fusion == (m.fusion_layers > 0),
          f"objective.name={o.name!r} with model.fusion_layers={m.fusion_layers}: ALBEF's fusion "
          f"encoder and {fused} go together")
    objective.validate(config)  # its own section's fields


def _check_data(d, m) -> None:
    """The ``data`` section: the source (``align_tf.data.sources``) and the shared sizes."""
    try:
        sources.parse(d.name)  # names the choices
    except ValueError as e:
        raise ConfigError(str(e)) from None
    for name in ("vocab_size", "max_tokens", "image_size", "num_train_examples", "shuffle_buffer"):
        check(d[name] > 0, f"data.{name}={d[name]} must be positive")
    check(d.resize_size is None or d.resize_size >= d.image_size,
          f"data.resize_size={d.resize_size} must be >= data.image_size={d.image_size}")
    check(d.max_tokens <= m.max_sequence_length,
          f"data.max_tokens={d.max_tokens} exceeds model.max_sequence_length="
          f"{m.max_sequence_length}")
    from align_tf.tokenizer import MODES
    check(d.get("tokenizer", "uncased") in MODES,
          f"data.tokenizer={d.get('tokenizer')!r}: choose from {sorted(MODES)}")
    for name in ("caption_noise", "caption_partial", "synthetic_unnamed_colour",
                 "synthetic_colour_only", "synthetic_two_shapes"):
        check(0.0 <= d[name] <= 1.0, f"data.{name}={d[name]} must be in [0, 1]")
    try:
        sources.check(d)  # vocab_path, train_pattern or the TFDS set of the source
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _check_train(config, num_replicas: int) -> None:
    """The ``train`` section, with the batch split over ``num_replicas`` and what accumulation
    needs from the objective."""
    t, name = config.train, config.objective.name
    for field in ("batch_size", "steps", "steps_per_loop", "log_every", "checkpoint_every",
                  "keep_checkpoints", "max_consecutive_skips"):
        check(t[field] > 0, f"train.{field}={t[field]} must be positive")
    try:
        sizes = distribute.batch_sizes(t.batch_size, num_replicas)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    k = t.accumulation_steps
    check(k >= 1, f"train.accumulation_steps={k} must be positive")
    able = ", ".join(n for n in objectives.NAMES if objectives.supports_accumulation(n))
    check(k == 1 or objectives.supports_accumulation(name),
          f"train.accumulation_steps={k} needs an objective whose loss depends on the batch only "
          f"through the embeddings ({able}), not {name!r}")
    check(sizes.per_replica % k == 0,
          f"train.accumulation_steps={k} must divide the per-replica batch of {sizes.per_replica} "
          f"(train.batch_size={t.batch_size} over {num_replicas} replicas)")
    check(isinstance(config.model.remat, bool),
          f"model.remat={config.model.remat!r} must be true or false")


def _check_optim(opt) -> None:
    check(opt.name in optim.NAMES, f"unknown optim.name {opt.name!r}; choose from "
                                   f"{list(optim.NAMES)}")
    check(opt.learning_rate > 0, f"optim.learning_rate={opt.learning_rate} must be positive")
    check(opt.warmup_steps >= 0, f"optim.warmup_steps={opt.warmup_steps} must be >= 0")
    check(opt.get("schedule", "linear") in optim.SCHEDULES,
          f"unknown optim.schedule {opt.get('schedule')!r}; choose from {list(optim.SCHEDULES)}")
    check(opt.weight_decay >= 0, f"optim.weight_decay={opt.weight_decay} must be >= 0")


def _check_export_and_eval(config):
    """``export.templates`` (``align_tf.prompts``) and, when enabled, the ``eval`` section,
    whose plans it returns."""
    from align_tf import prompts
    try:
        prompts.get_templates(config.export.templates)
    except ValueError as e:
        raise ConfigError(f"export.templates: {e}") from None
    if not config.eval.enabled:
        return None
    from align_tf.evaluation import runner
    try:
        return runner.plans_from_config(config)  # checks the fields; renders and embeds nothing
    except ValueError as e:
        raise ConfigError(str(e)) from None


def check_jit_compile(config, strategy: tf.distribute.Strategy) -> None:
    """Raises ``ConfigError`` if ``train.jit_compile`` cannot work with ``strategy``.

    Mirrored and multi-worker strategies drop their cross-replica ``merge_call`` inside an XLA
    function only when every device is a GPU; on CPU replicas the step's all-gather and
    optimizer update would call ``merge_call`` inside the nested jit function, which TF refuses.
    """
    if not config.train.jit_compile or strategy.num_replicas_in_sync == 1 or \
            isinstance(strategy, tf.distribute.TPUStrategy):
        return
    devices = strategy.extended.worker_devices
    if not all((tf.DeviceSpec.from_string(d).device_type or "").upper() == "GPU" for d in devices):
        raise ConfigError("train.jit_compile with several replicas needs GPUs or a TPU "
                          f"(replicas here: {', '.join(devices)})")
