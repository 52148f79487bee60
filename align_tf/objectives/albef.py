"""ALBEF's pre-training objective (Li et al., NeurIPS 2021, "Align before Fuse"): ITC + ITM + MLM.

The model is a ``DualEncoder`` with a ``fusion`` part (``align_tf.models.fusion``;
``model.fusion_layers = k``). Per replica and step:

* **ITC** (align): the contrastive loss on the unimodal embeddings, ALBEF-exact: the online
  queries are scored against the *momentum* towers' features of this replica's batch followed by
  the queue (filled with momentum features gathered over all replicas), with targets
  ``α · softmax(momentum similarities) + (1 − α) · one-hot`` over the same keys (ITC-MoD; α = 0 is
  plain ITC), no label smoothing, and the two directions averaged
  (``losses.momentum_distillation_loss`` with ``average_directions``).
  ``itc_keys = "online"`` instead scores against the replica's *online* embeddings (with
  gradient, as ALIGN's loss) followed by the queue, targets unchanged. Not ALBEF: ALBEF starts
  from pre-trained encoders, and from scratch the momentum keys stay near-identical (a random
  BERT's [CLS] and an inference-mode EfficientNet map every input to almost the same vector), so
  the stop-gradient ITC did not leave chance in our tiny runs (docs/objectives.md, ALBEF).
* **ITM** (fuse): the fusion encoder's [CLS] → ``fusion.itm_head``, a binary "matches" decision on
  the B positive pairs plus, per image, one hard-negative text and, per text, one hard-negative
  image. Negatives are drawn with probability ∝ softmax of the ITC similarities
  (``sample_hard_negatives``) from ``itm_negatives``:

  - ``"local"`` (ALBEF): the replica's own batch;
  - ``"global"`` (BLIP): the global batch. Every replica gathers the candidates' text states
    ``(B, T, H)``, padding masks and token ids, the image tokens ``(B, N, H)`` *after* their
    projection to the text width (for B7 at 289 px with BERT-base: 81 × 768 floats per image)
    and the momentum features used as sampling keys. Gathered rows carry no gradient: a negative
    from another replica trains only the fusion encoder and this replica's side of the pair; a
    negative that is this replica's own row keeps its gradient, as in ``"local"``.

  Never a negative: the positive, any candidate with the same caption text (same token ids) and
  any with the same pair id (``batch["pair_id"]``, when the batch has one). A query whose every
  candidate is excluded gets no negative (its negative pair is left out of the ITM mean;
  ``itm_no_negative`` counts them).
* **MLM**: 15% of the text tokens ([CLS], [SEP] and padding never) are selected; of those 80%
  become [MASK], 10% a random token, 10% stay (``mask_tokens``). The masked text goes through the
  text tower and the fusion encoder with the image tokens, and ``MlmHead`` (BERT's transform +
  the token embedding, tied) predicts the original tokens at the selected positions.

Loss = ``itc_weight · ITC + itm_weight · ITM + mlm_weight · MLM``; a zero weight skips that part's
compute (``itm_weight = mlm_weight = 0`` is ITC alone). Not implemented: ALBEF's MLM-MoD (soft MLM
targets from a momentum fusion encoder); MoD here is on ITC only.

The MLM head, the momentum towers and the queue belong to this objective (``objective.state``,
checkpointed next to the model); the model keeps only what export and re-ranking need. Random
draws (masking, negatives) are stateless functions of ``(seed, replica, step)``, like the towers'
dropout (``align_tf.models.random_streams``): each replica draws its own, a rerun or resume the same.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from align_tf import losses
from align_tf.errors import ConfigError, check
from align_tf.objectives.base import GlobalBatch, Objective
from align_tf.objectives.momentum import (MOMENTUM_FIELDS, MomentumTowers, check_momentum_arguments,
                                          check_momentum_fields, ramped_alpha)
from align_tf.objectives.registry import register_objective

ITM_NEGATIVES = ("local", "global")  # config.objective.albef.itm_negatives
ITC_KEYS = ("momentum", "online")  # config.objective.albef.itc_keys

# Purposes folded into the stateless key, so each draw of a step is independent.
_MASK_SELECT, _MASK_KIND, _MASK_RANDOM, _NEG_TEXT, _NEG_IMAGE = range(5)


def special_token_ids(vocab_path: str = "") -> dict:
    """``{"pad", "cls", "sep", "mask"}`` ids: from the vocabulary file ``vocab_path``, or, when
    empty, the layout of a vocabulary learned by ``tokenizer.build_vocabulary`` (reserved tokens
    first). ``ValueError`` if the vocabulary has no [MASK] (MLM needs it)."""
    from align_tf import tokenizer
    vocab = tokenizer.load_vocabulary(vocab_path) if vocab_path else tokenizer.RESERVED_TOKENS
    if tokenizer.MASK not in vocab:
        raise ValueError(f"vocabulary {vocab_path or '(reserved tokens)'} has no {tokenizer.MASK} "
                         "token, which ALBEF's masked language modelling needs")
    index = {token: i for i, token in enumerate(vocab)}
    return {"pad": index[tokenizer.PAD], "cls": index[tokenizer.CLS], "sep": index[tokenizer.SEP],
            "mask": index[tokenizer.MASK]}


def stream_seed(seed: int, replica_id, step, purpose: int) -> tf.Tensor:
    """The ``[2]`` int32 stateless seed of one draw: a pure function of (seed, replica, step,
    purpose)."""
    key = tf.constant([seed & 0x7FFFFFFF, 1], tf.int32)
    for value in (replica_id, step, purpose):
        key = tf.random.fold_in(key, tf.cast(value, tf.int32))
    return key


def mask_tokens(token_ids, padding_mask, seeds, special_ids: dict, vocabulary_size: int,
                probability: float = 0.15):
    """BERT/ALBEF masking: ``(masked token ids, selected (bool))`` of ``(B, T)`` int ids.

    Each token that is not padding, [CLS] or [SEP] is selected with ``probability``; a selected
    token becomes [MASK] with probability 0.8, a uniformly random id of the vocabulary with 0.1,
    and stays with 0.1. ``seeds``: three ``[2]`` stateless seeds (selection, kind, random ids).
    """
    token_ids = tf.convert_to_tensor(token_ids, tf.int32)
    shape = tf.shape(token_ids)
    candidates = tf.cast(padding_mask, tf.bool)
    for name in ("pad", "cls", "sep"):
        candidates &= tf.not_equal(token_ids, special_ids[name])
    selected = candidates & (tf.random.stateless_uniform(shape, seeds[0]) < probability)
    kind = tf.random.stateless_uniform(shape, seeds[1])
    random_ids = tf.random.stateless_uniform(shape, seeds[2], 0, vocabulary_size, tf.int32)
    masked = tf.where(selected & (kind < 0.8), special_ids["mask"], token_ids)
    masked = tf.where(selected & (kind >= 0.8) & (kind < 0.9), random_ids, masked)
    return masked, selected


def negative_exclusions(query_tokens, candidate_tokens, positive_columns, query_pair_ids=None,
                        candidate_pair_ids=None):
    """``(Nq, Nc)`` bool: candidate j may not be query i's negative.

    Excluded: the positive (``positive_columns[i]``), any candidate whose caption has the same
    token ids as the query pair's caption (the same text: a "negative" with the positive's
    caption would teach ITM noise), and any with the same pair id when ids are given. The same
    matrix serves both directions: an image's negative texts and a text's negative images.
    """
    same_caption = tf.reduce_all(
        tf.equal(query_tokens[:, None, :], candidate_tokens[None, :, :]), axis=-1)
    num_candidates = tf.shape(candidate_tokens)[0]
    excluded = same_caption | tf.cast(tf.one_hot(positive_columns, num_candidates), tf.bool)
    if query_pair_ids is not None and candidate_pair_ids is not None:
        excluded |= tf.equal(tf.cast(query_pair_ids, tf.int64)[:, None],
                             tf.cast(candidate_pair_ids, tf.int64)[None, :])
    return excluded


def sample_hard_negatives(logits, excluded, seed):
    """One negative per row, drawn with probability ∝ softmax(``logits``) over the candidates that
    are not ``excluded`` (ALBEF: softmax of the ITC similarities with the positive zeroed).

    Returns ``(indices (Nq,) int32, valid (Nq,) bool)``; ``valid`` is False for a row whose every
    candidate is excluded (its index is then meaningless).
    """
    logits = tf.stop_gradient(tf.cast(logits, tf.float32))
    valid = tf.reduce_any(tf.logical_not(excluded), axis=1)
    masked = tf.where(excluded, tf.constant(-1e30, tf.float32), logits)
    masked = tf.where(valid[:, None], masked, tf.zeros_like(masked))
    index = tf.random.stateless_categorical(masked, 1, seed, dtype=tf.int32)[:, 0]
    return index, valid


class MlmHead(keras.layers.Layer):
    """BERT's masked-language-model head: dense + GELU + LayerNorm, then the token embedding
    (tied: passed in at call time, owned by the text tower) and an output bias."""

    def __init__(self, hidden_dim: int, vocabulary_size: int, layer_norm_epsilon: float = 1e-12,
                 **kwargs):
        super().__init__(**kwargs)
        init = keras.initializers.TruncatedNormal(stddev=0.02)
        self.dense = keras.layers.Dense(hidden_dim, activation="gelu", kernel_initializer=init,
                                        name="transform")
        self.layer_norm = keras.layers.LayerNormalization(epsilon=layer_norm_epsilon,
                                                          name="transform_layer_norm")
        self.dense.build((None, hidden_dim))
        self.layer_norm.build((None, hidden_dim))
        self.bias = self.add_weight(shape=(vocabulary_size,), initializer="zeros", name="bias")
        self.built = True

    def call(self, states, token_embeddings):
        """``(..., H)`` fused states, ``(V, H)`` token embeddings → ``(..., V)`` float32 logits."""
        h = self.layer_norm(self.dense(states))
        logits = tf.matmul(tf.cast(h, tf.float32), tf.cast(token_embeddings, tf.float32),
                           transpose_b=True)
        return logits + tf.cast(self.bias, tf.float32)


@register_objective("albef")
class AlbefObjective(Objective):
    """ITC (ALBEF-exact, optional MoD) + ITM with hard negatives + MLM.

    Args:
      model: a ``DualEncoder`` with ``fusion`` (``model.fusion_layers > 0``).
      optimizer: as for ``Objective``; it also trains the MLM head.
      itc_weight, itm_weight, mlm_weight: loss weights (0 skips that part).
      itm_negatives: ``"local"`` or ``"global"`` candidate pool of the hard negatives.
      mlm_probability: share of text tokens selected for MLM.
      itc_keys: ``"momentum"`` (ALBEF) or ``"online"`` keys of the ITC logits (module docstring).
      momentum, alpha, alpha_ramp_steps, queue_size: the momentum towers, ITC-MoD's α (ramped)
        and the queue, as for ``MomentumDistillation``.
      special_tokens: ``special_token_ids(...)`` of the model's vocabulary.
    """

    scalars = Objective.scalars + (
        "loss_itc", "loss_itm", "loss_mlm", "temperature", "i2t_accuracy", "itm_accuracy",
        "mlm_accuracy", "itm_no_negative")
    needs_fusion = True
    config_fields = ("itc_weight", "itm_weight", "mlm_weight", "itm_negatives", "mlm_probability",
                     "itc_keys") + MOMENTUM_FIELDS

    @classmethod
    def from_config(cls, section, model, optimizer, vocab_path: str = "", **context):
        return cls(model, optimizer, special_tokens=special_token_ids(vocab_path),
                   **cls.config_kwargs(section))

    @classmethod
    def validate(cls, config) -> None:
        o, vocab_path, prefix = config.objective[cls.name], config.data.vocab_path, \
            f"objective.{cls.name}"
        check(o.itm_negatives in ITM_NEGATIVES,
              f"{prefix}.itm_negatives={o.itm_negatives!r}; choose from {list(ITM_NEGATIVES)}")
        check(o.itc_keys in ITC_KEYS,
              f"{prefix}.itc_keys={o.itc_keys!r}; choose from {list(ITC_KEYS)}")
        for name in ("itc_weight", "itm_weight", "mlm_weight"):
            check(o[name] >= 0, f"{prefix}.{name}={o[name]} must be >= 0")
        check(o.itc_weight or o.itm_weight or o.mlm_weight,
              f"{prefix}.itc_weight, itm_weight and mlm_weight are all 0: no loss, so no "
              "gradient to train the model with")
        check(0.0 < o.mlm_probability < 1.0,
              f"{prefix}.mlm_probability={o.mlm_probability} must be in (0, 1)")
        check_momentum_fields(config, cls.name)
        try:
            special_token_ids(vocab_path if vocab_path and tf.io.gfile.exists(vocab_path) else "")
        except ValueError as e:
            raise ConfigError(str(e)) from None

    def __init__(self, model, optimizer, itc_weight=1.0, itm_weight=1.0, mlm_weight=1.0,
                 itm_negatives="local", mlm_probability=0.15, momentum=0.995, alpha=0.4,
                 alpha_ramp_steps=0, queue_size=0, special_tokens=None, itc_keys="momentum"):
        if getattr(model, "fusion", None) is None:
            raise ValueError("objective.name='albef' needs a fusion encoder: set "
                             "model.fusion_layers > 0")
        if itm_negatives not in ITM_NEGATIVES:
            raise ValueError(f"objective.{self.name}.itm_negatives must be one of "
                             f"{list(ITM_NEGATIVES)}, got {itm_negatives!r}")
        if itc_keys not in ITC_KEYS:
            raise ValueError(f"objective.{self.name}.itc_keys must be one of {list(ITC_KEYS)}, "
                             f"got {itc_keys!r}")
        self.itc_keys = itc_keys
        if min(itc_weight, itm_weight, mlm_weight) < 0:
            raise ValueError(f"objective.{self.name}.itc_weight, itm_weight and mlm_weight "
                             "must be >= 0")
        if not 0.0 < mlm_probability < 1.0:
            raise ValueError(f"objective.{self.name}.mlm_probability must be in (0, 1), got "
                             f"{mlm_probability}")
        check_momentum_arguments(momentum, alpha, alpha_ramp_steps, queue_size,
                                 f"objective.{self.name}")
        self.itc_weight, self.itm_weight = float(itc_weight), float(itm_weight)
        self.mlm_weight, self.itm_negatives = float(mlm_weight), itm_negatives
        self.mlm_probability = float(mlm_probability)
        self.alpha, self.alpha_ramp_steps = float(alpha), int(alpha_ramp_steps)
        self.special_tokens = dict(special_tokens or special_token_ids())
        self.token_embedding = model.text_encoder.get_layer("token_embedding")
        # Created before Objective.__init__ builds the optimizer for trainable_variables.
        self.mlm_head = MlmHead(model.fusion.hidden_dim, self.token_embedding.input_dim,
                                model.fusion.size.layer_norm_epsilon, name="mlm_head")
        super().__init__(model, optimizer)
        self.state.mlm_head = self.mlm_head
        self.towers = MomentumTowers(model, self.state, momentum, queue_size,
                                     f"objective.{self.name}")

    @property
    def trainable_variables(self) -> list:
        """The model's weights and the MLM head's, less the parts no loss reaches (the fusion
        encoder without ITM and MLM, the ITM head without ITM, σ without ITC, the MLM head
        without MLM): ITC alone trains the towers and σ."""
        unused = []
        if not (self.itm_weight or self.mlm_weight):
            unused += self.model.fusion.trainable_variables
        elif not self.itm_weight:
            unused += self.model.fusion.itm_head.trainable_variables
        if not self.itc_weight:
            unused.append(self.model.temperature)
        unused = {id(v) for v in unused}
        variables = [v for v in self.model.trainable_variables if id(v) not in unused]
        if self.mlm_weight:
            variables += self.mlm_head.trainable_variables
        return variables

    def current_alpha(self):
        """ITC-MoD's α at the current optimizer step."""
        return ramped_alpha(self.alpha, self.alpha_ramp_steps, self.optimizer.iterations)

    def _seed(self, rows: GlobalBatch, purpose: int):
        replica = rows.context.replica_id_in_sync_group if rows.num_replicas > 1 else 0
        return stream_seed(self.seed, replica, self.optimizer.iterations, purpose)

    def compute_loss(self, batch, training=True) -> dict:
        fusion, tokens = self.model.fusion, batch["text"]
        image, image_tokens = fusion.encode_image(batch["image"], training=training)
        text, text_states = fusion.encode_text(tokens, training=training)
        rows = GlobalBatch(image)
        self.towers.check_queue_size(image, rows.num_replicas)
        image_m, text_m = self.towers.embed(batch)
        temperature = self.model.clipped_temperature()
        image_queue, text_queue = self.towers.queues()
        # ALBEF-exact ITC: keys are the momentum features of this replica's batch + the queue.
        online = {"online_image_keys": image, "online_text_keys": text} \
            if self.itc_keys == "online" else {}
        itc = losses.momentum_distillation_loss(
            image, text, temperature, image_m, text_m, image_m, text_m, self.current_alpha(),
            0, 0.0, image_queue, text_queue, average_directions=True, **online)
        accuracy = tf.reduce_mean(tf.cast(tf.equal(
            tf.argmax(itc["logits_i2t"], axis=-1, output_type=tf.int32), itc["labels"]),
            tf.float32))
        zero = tf.constant(0.0, tf.float32)
        out = {"loss_itc": itc["loss"], "loss_itm": zero, "loss_mlm": zero,
               "itm_accuracy": zero, "mlm_accuracy": zero, "itm_no_negative": zero,
               "temperature": tf.identity(self.model.temperature), "i2t_accuracy": accuracy}
        # Momentum features of the global batch fill the queue (ALBEF's concat_all_gather).
        features = {"image": image_m, "text": text_m}
        if self.towers.queue_size:
            features = {"image": rows.gather(image_m), "text": rows.gather(text_m)}
        if self.itm_weight:
            out.update(self._itm(batch, rows, image, text, image_tokens, text_states, image_m,
                                 text_m, temperature, training))
        if self.mlm_weight:
            out.update(self._mlm(batch, rows, image_tokens, training))
        out["loss"] = (self.itc_weight * out["loss_itc"] + self.itm_weight * out["loss_itm"]
                       + self.mlm_weight * out["loss_mlm"])
        out["after_apply"] = features
        return out

    def _candidates(self, batch, rows, image_m, text_m, image_tokens, text_states):
        """The hard-negative pool: ``(dict of candidate tensors, positive columns, offset)``."""
        tokens = batch["text"]
        pool = {"token_ids": tokens["token_ids"], "padding_mask": tokens["padding_mask"],
                "text_states": text_states, "image_tokens": image_tokens,
                "image_m": image_m, "text_m": text_m}
        if "pair_id" in batch:
            pool["pair_id"] = tf.cast(batch["pair_id"], tf.int64)
        local_rows = tf.shape(image_m)[0]
        if self.itm_negatives == "local" or rows.num_replicas == 1:
            return pool, tf.range(local_rows), False
        # Other replicas' rows carry no gradient (a gather of constants); this replica's own rows
        # are swapped back in with their gradient by _pick.
        gathered = {k: rows.gather(tf.stop_gradient(v)) for k, v in pool.items()}
        return gathered, tf.range(local_rows) + rows.offset, True

    @staticmethod
    def _pick(local, pool, index, offset):
        """``pool[index]`` rows of a gathered pool, taking this replica's own rows (``offset`` …)
        from ``local``, with their gradient."""
        local_rows = tf.shape(local)[0]
        own = (index >= offset) & (index < offset + local_rows)
        mine = tf.gather(local, tf.clip_by_value(index - offset, 0, local_rows - 1))
        shape = tf.concat([tf.shape(own), tf.ones([tf.rank(mine) - 1], tf.int32)], 0)
        return tf.where(tf.reshape(own, shape), mine, tf.gather(pool, index))

    def _itm(self, batch, rows, image, text, image_tokens, text_states, image_m, text_m,
             temperature, training):
        tokens = batch["text"]
        pool, positives, is_global = self._candidates(batch, rows, image_m, text_m,
                                                      image_tokens, text_states)
        pair_id = batch.get("pair_id")
        excluded = negative_exclusions(tokens["token_ids"], pool["token_ids"], positives,
                                       pair_id, pool.get("pair_id"))
        # Sampling weights: softmax of the ITC similarities (online queries, momentum keys).
        scale = tf.stop_gradient(1.0 / temperature)
        sim_i2t = losses.logits_matmul(tf.stop_gradient(image), pool["text_m"]) * scale
        sim_t2i = losses.logits_matmul(tf.stop_gradient(text), pool["image_m"]) * scale
        neg_text, valid_text = sample_hard_negatives(sim_i2t, excluded,
                                                     self._seed(rows, _NEG_TEXT))
        neg_image, valid_image = sample_hard_negatives(sim_t2i, excluded,
                                                       self._seed(rows, _NEG_IMAGE))

        def pick(key, local, index):
            if not is_global:
                return tf.gather(local, index)
            return self._pick(local, pool[key], index, rows.offset)

        states = tf.concat([text_states, pick("text_states", text_states, neg_text),
                            text_states], 0)
        masks = tf.concat([tokens["padding_mask"],
                           pick("padding_mask", tokens["padding_mask"], neg_text),
                           tokens["padding_mask"]], 0)
        images = tf.concat([image_tokens, image_tokens,
                            pick("image_tokens", image_tokens, neg_image)], 0)
        logits = self.model.fusion.match_logits(states, masks, images, training=training)
        n = tf.shape(image)[0]
        labels = tf.concat([tf.ones([n], tf.int32), tf.zeros([2 * n], tf.int32)], 0)
        weights = tf.concat([tf.ones([n]), tf.cast(valid_text, tf.float32),
                             tf.cast(valid_image, tf.float32)], 0)
        per_pair = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
        correct = tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), labels),
                          tf.float32)
        total = tf.reduce_sum(weights)
        missing = 2.0 - tf.reduce_mean(tf.cast(valid_text, tf.float32)) \
            - tf.reduce_mean(tf.cast(valid_image, tf.float32))
        return {"loss_itm": tf.reduce_sum(per_pair * weights) / total,
                "itm_accuracy": tf.reduce_sum(correct * weights) / total,
                "itm_no_negative": missing / 2.0,
                "itm_negatives": {"text": neg_text, "text_valid": valid_text,
                                  "image": neg_image, "image_valid": valid_image}}

    def _mlm(self, batch, rows, image_tokens, training):
        tokens = batch["text"]
        seeds = [self._seed(rows, p) for p in (_MASK_SELECT, _MASK_KIND, _MASK_RANDOM)]
        masked, selected = mask_tokens(tokens["token_ids"], tokens["padding_mask"], seeds,
                                       self.special_tokens, self.token_embedding.input_dim,
                                       self.mlm_probability)
        fusion = self.model.fusion
        _, states = fusion.encode_text(dict(tokens, token_ids=masked), training=training)
        fused = fusion.fuse(states, tokens["padding_mask"], image_tokens, training=training)
        logits = self.mlm_head(fused, self.token_embedding.embeddings)
        weights = tf.cast(selected, tf.float32)
        count = tf.maximum(tf.reduce_sum(weights), 1.0)
        per_token = tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=tf.cast(tokens["token_ids"], tf.int32), logits=logits)
        correct = tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32),
                                   tf.cast(tokens["token_ids"], tf.int32)), tf.float32)
        return {"loss_mlm": tf.reduce_sum(per_token * weights) / count,
                "mlm_accuracy": tf.reduce_sum(correct * weights) / count}

    def after_apply(self, state):
        """EMA update of the momentum towers, then enqueue the momentum features."""
        self.towers.update(state)
