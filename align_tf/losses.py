"""ALIGN's normalized softmax loss (Jia et al., 2021, §4.1).

With L2-normalised image embeddings x_i and text embeddings y_j and a learnable temperature σ:

    L_i2t = -(1/N) Σ_i log( exp(x_iᵀ y_i / σ) / Σ_j exp(x_iᵀ y_j / σ) )
    L_t2i = -(1/N) Σ_i log( exp(y_iᵀ x_i / σ) / Σ_j exp(y_iᵀ x_j / σ) )
    Loss  = L_i2t + L_t2i                       (summed, as in the paper; σ shared)

with label smoothing 0.1 on the one-hot targets. The negatives j run over the *global* batch: every
replica gathers all embeddings and scores its own N_local rows against the N_global gathered keys
(the "local loss"), so logits cost O(N_local × N_global) memory instead of O(N_global²). The
positive of local row i sits at column ``label_offset + i`` where ``label_offset`` is the replica's
first row in the global batch.

Logits are float32-accurate also on GPU and TPU (``logits_matmul``). By default TF runs float32
matmuls as TF32 on Ampere/Hopper GPUs (operands rounded to 10 mantissa bits) and as one bfloat16
pass on TPU (7 bits): an error of up to ~5e-4 (TF32) or ~2e-3 (bfloat16) on a cosine, i.e. up to
~0.1 on a logit cos/σ at σ ≈ 0.01-0.02, no longer small next to the logit gaps the loss learns
from. TF has no per-op precision switch, and ``tf.config.experimental.enable_tensor_float_32_
execution(False)`` is process-wide (it would slow the towers too). So the logits matmul splits each
float32 operand into three bfloat16-exact float32 pieces and multiplies them in one matmul
(bf16x6, the algorithm behind XLA's ``Precision.HIGHEST`` on TPU): products of bfloat16-exact
numbers are exact in whatever mode the device multiplies, and only the float32 accumulation rounds.
The error is then that of a float32 matmul (tested against float64 NumPy: ≤ 2e-6 of |q|·|k| at
D = 640), for 6x the logits' FLOPs, which are small next to the towers'. The gradient stays a plain
matmul. On CPU, whose float32 matmul is float32 already, the plain matmul runs, so CPU results are
unchanged.
"""

from __future__ import annotations

import math

import tensorflow as tf


# The float32 bits a bfloat16 keeps: sign, exponent and the top 7 mantissa bits.
_BF16_MASK = -(1 << 16)
# Piece index pairs (i, j) with i + j <= 2: the products bf16x6 keeps; the dropped ones are below
# float32's rounding (≤ 2⁻²⁴ relative).
_BF16X6_PAIRS = ((0, 0), (0, 1), (1, 0), (0, 2), (1, 1), (2, 0))


def bf16_pieces(x: tf.Tensor, count: int = 3) -> list:
    """``count`` float32 tensors, each exactly representable in bfloat16, summing to ``x``.

    Three pieces hold all 24 bits of a float32 mantissa, so ``sum(pieces) == x`` exactly (unless
    a piece would be subnormal). Each piece truncates the remainder to its top 8 significant bits
    by masking the float32 bit pattern rather than by casting to bfloat16 and back: XLA may drop
    such a convert pair as a no-op (GPU ``SimplifyFPConversions`` with excess precision allowed),
    which would leave one unsplit piece.
    """
    pieces, rest = [], tf.cast(x, tf.float32)
    for _ in range(count):
        piece = tf.bitcast(tf.bitwise.bitwise_and(tf.bitcast(rest, tf.int32), _BF16_MASK),
                           tf.float32)
        pieces.append(piece)
        rest = rest - piece  # exact: piece holds rest's leading bits
    return pieces


@tf.custom_gradient
def precise_matmul(queries: tf.Tensor, keys: tf.Tensor) -> tf.Tensor:
    """``queries @ keysᵀ`` with float32 accuracy whatever precision the device uses for float32
    matmuls (TF32 on GPU, bfloat16 passes on TPU): the bf16x6 split, as one matmul over the
    concatenated pieces (a contraction axis 6x as long; one dot, so no compiler pass can regroup
    the pieces). The concatenated operands are transient 6x copies of the inputs: ~1.3 GB for the
    81,920 keys of width 640 of a 16k batch plus ALBEF's 65,536 queue. The gradient is the plain
    matmul's."""
    q, k = bf16_pieces(queries), bf16_pieces(keys)
    out = tf.matmul(tf.concat([q[i] for i, _ in _BF16X6_PAIRS], axis=-1),
                    tf.concat([k[j] for _, j in _BF16X6_PAIRS], axis=-1), transpose_b=True)

    def grad(upstream):
        # Gradients tolerate TF32/bf16 rounding like every other gradient of the model.
        return tf.matmul(upstream, keys), tf.matmul(upstream, queries, transpose_a=True)
    return out, grad


def _on_accelerator(x: tf.Tensor) -> bool:
    """Whether ``x`` is (or, in a graph, will be) on a GPU or TPU: the device the tensor was placed
    on or scoped to (MirroredStrategy scopes each replica), else whether this process has an
    accelerator at all (TPUStrategy's replicated function, a graph without a device scope)."""
    device_type = tf.DeviceSpec.from_string(x.device or "").device_type
    if device_type:
        return device_type.upper() != "CPU"
    return bool(tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU"))


def logits_matmul(queries: tf.Tensor, keys: tf.Tensor, precise: bool | None = None) -> tf.Tensor:
    """Float32 similarities ``queries @ keysᵀ`` (``(N, D) x (M, D) -> (N, M)``).

    Args:
      precise: ``True``: ``precise_matmul`` (float32-accurate on any device); ``False``: the plain
        ``tf.matmul`` (TF32 on Ampere+ GPUs, one bfloat16 pass on TPU); ``None``: precise on GPU
        and TPU, plain on CPU, where it is float32 already and identical to earlier results.
    """
    if precise is None:
        precise = _on_accelerator(queries)
    if precise:
        return precise_matmul(tf.cast(queries, tf.float32), tf.cast(keys, tf.float32))
    return tf.matmul(queries, keys, transpose_b=True)


def l2_normalize(x: tf.Tensor) -> tf.Tensor:
    """L2-normalises the last axis in float32 (bf16 norms lose too much precision)."""
    return tf.math.l2_normalize(tf.cast(x, tf.float32), axis=-1, epsilon=1e-12)


def _smoothed_one_hot(logits: tf.Tensor, labels: tf.Tensor, label_smoothing: float) -> tf.Tensor:
    """one-hot(labels) over ``logits``' columns, smoothed to (1-ε)·onehot + ε/K."""
    num_classes = tf.shape(logits)[-1]
    one_hot = tf.one_hot(labels, num_classes, dtype=logits.dtype)
    return one_hot * (1.0 - label_smoothing) + label_smoothing / tf.cast(num_classes, logits.dtype)


def smoothed_cross_entropy(logits: tf.Tensor, labels: tf.Tensor, label_smoothing: float) -> tf.Tensor:
    """Mean softmax cross-entropy against one-hot(labels) smoothed to (1-ε)·onehot + ε/K."""
    targets = _smoothed_one_hot(logits, labels, label_smoothing)
    return tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(labels=targets, logits=logits))


def align_loss(image_embeddings: tf.Tensor,
               text_embeddings: tf.Tensor,
               temperature: tf.Tensor,
               all_image_embeddings: tf.Tensor | None = None,
               all_text_embeddings: tf.Tensor | None = None,
               label_offset=0,
               label_smoothing: float = 0.1,
               precise_logits: bool | None = None) -> dict:
    """The paper's loss for one replica's rows against the global batch.

    Args:
      image_embeddings: ``(N_local, D)`` L2-normalised image embeddings of this replica.
      text_embeddings: ``(N_local, D)`` L2-normalised text embeddings of this replica.
      temperature: scalar σ (logits = cosine / σ).
      all_image_embeddings: ``(N_global, D)`` gathered image embeddings (negatives); defaults to the
        local ones (single replica).
      all_text_embeddings: ``(N_global, D)`` gathered text embeddings.
      label_offset: index of this replica's first row in the global batch.
      label_smoothing: ε of the smoothed one-hot targets.
      precise_logits: ``logits_matmul``'s ``precise`` (default: float32 logits on GPU/TPU too).

    Returns:
      dict with ``loss`` (= i2t + t2i, mean over local rows), ``loss_i2t``, ``loss_t2i`` and
      ``logits_i2t`` (``(N_local, N_global)``).
    """
    if all_image_embeddings is None:
        all_image_embeddings = image_embeddings
    if all_text_embeddings is None:
        all_text_embeddings = text_embeddings
    temperature = tf.cast(temperature, tf.float32)
    logits_i2t = logits_matmul(image_embeddings, all_text_embeddings, precise_logits) / temperature
    logits_t2i = logits_matmul(text_embeddings, all_image_embeddings, precise_logits) / temperature
    labels = tf.range(tf.shape(image_embeddings)[0]) + tf.cast(label_offset, tf.int32)
    loss_i2t = smoothed_cross_entropy(logits_i2t, labels, label_smoothing)
    loss_t2i = smoothed_cross_entropy(logits_t2i, labels, label_smoothing)
    return {"loss": loss_i2t + loss_t2i, "loss_i2t": loss_i2t, "loss_t2i": loss_t2i,
            "logits_i2t": logits_i2t, "labels": labels}


def momentum_distillation_loss(image_embeddings: tf.Tensor,
                               text_embeddings: tf.Tensor,
                               temperature: tf.Tensor,
                               momentum_image_embeddings: tf.Tensor,
                               momentum_text_embeddings: tf.Tensor,
                               image_keys: tf.Tensor,
                               text_keys: tf.Tensor,
                               alpha,
                               label_offset=0,
                               label_smoothing: float = 0.1,
                               image_queue: tf.Tensor | None = None,
                               text_queue: tf.Tensor | None = None,
                               average_directions: bool = False,
                               precise_logits: bool | None = None,
                               online_image_keys: tf.Tensor | None = None,
                               online_text_keys: tf.Tensor | None = None) -> dict:
    """Contrastive loss against momentum keys with ALBEF's distillation targets (ITC-MoD).

    As in ALBEF (Li et al., 2021, ``model_pretrain.py``), the online queries are scored against the
    *momentum* model's features (``image_keys`` / ``text_keys``: the key batch, no gradient) followed
    by the queue; the targets mix the momentum model's similarity distribution over the same
    columns with the (smoothed) one-hot:

        K_t = [ŷ_keys; text_queue]                                (ŷ: momentum text features)
        q_i2t = softmax(x̂_i ᵀ K_t / σ)                            (x̂: momentum image features)
        target_i2t = α · q_i2t + (1 − α) · ((1 − ε) · onehot + ε / K)
        loss_i2t = mean_i H(target_i2t, softmax(x_i ᵀ K_t / σ))

    and symmetrically for t2i; the positive of local row i is key ``label_offset + i``. Gradients
    reach only the online queries and σ (keys and targets are constants).

    The two objectives differ in the key batch and the reduction: ``albef`` passes the replica's
    own momentum features (offset 0), ε = 0 and ``average_directions`` (ALBEF's ½(i2t + t2i));
    ``momentum_distillation`` stays ALIGN-like with the momentum features gathered over all
    replicas, ε = 0.1 and the directions summed.

    Args:
      image_embeddings, text_embeddings: ``(N_local, D)`` online (query) embeddings.
      temperature: scalar σ.
      momentum_image_embeddings, momentum_text_embeddings: ``(N_local, D)`` momentum features of
        the query rows (the targets' queries).
      image_keys, text_keys: ``(N_keys, D)`` momentum features of the key batch.
      alpha: distillation weight α in [0, 1] (scalar, may be a tensor that ramps up).
      label_offset: index of local row 0's positive among the keys.
      label_smoothing: ε of the one-hot part of the targets.
      image_queue, text_queue: optional ``(Q, D)`` queued momentum features (extra negatives).
      average_directions: ``loss = (i2t + t2i) / 2`` (ALBEF) instead of the sum (ALIGN).
      precise_logits: ``logits_matmul``'s ``precise`` for the online and the momentum logits.
      online_image_keys, online_text_keys: optional ``(N_keys, D)`` *online* embeddings of the key
        batch: when given, the online logits use them (with gradient, as ``align_loss``) followed
        by the queue, while the targets stay the momentum similarities over the momentum keys.

    Returns:
      dict like ``align_loss``'s (``loss``, ``loss_i2t``, ``loss_t2i``, ``logits_i2t`` of shape
      ``(N_local, N_keys + Q)``, ``labels``).
    """
    temperature = tf.cast(temperature, tf.float32)
    text_keys, logit_text_keys = _distillation_keys(text_keys, online_text_keys, text_queue)
    image_keys, logit_image_keys = _distillation_keys(image_keys, online_image_keys, image_queue)
    labels = tf.range(tf.shape(image_embeddings)[0]) + tf.cast(label_offset, tf.int32)
    targets = dict(labels=labels, alpha=tf.cast(alpha, tf.float32), temperature=temperature,
                   label_smoothing=label_smoothing, precise_logits=precise_logits)
    loss_i2t, logits_i2t = _distillation_direction(image_embeddings, logit_text_keys,
                                                   momentum_image_embeddings, text_keys, **targets)
    loss_t2i, _ = _distillation_direction(text_embeddings, logit_image_keys,
                                          momentum_text_embeddings, image_keys, **targets)
    loss = loss_i2t + loss_t2i
    if average_directions:
        loss = loss / 2.0
    return {"loss": loss, "loss_i2t": loss_i2t, "loss_t2i": loss_t2i,
            "logits_i2t": logits_i2t, "labels": labels}


def _distillation_keys(keys: tf.Tensor, online_keys: tf.Tensor | None,
                       queue: tf.Tensor | None) -> tuple:
    """``(target keys, logit keys)`` of one direction: the momentum keys (constants) and the keys
    the online logits use (``online_keys`` when given, with gradient; else the momentum keys),
    each followed by the queue."""
    keys = tf.stop_gradient(tf.cast(keys, tf.float32))
    logit_keys = keys if online_keys is None else online_keys
    if queue is not None:
        keys = tf.concat([keys, queue], axis=0)
        logit_keys = tf.concat([logit_keys, queue], axis=0)
    return keys, logit_keys


def _distillation_direction(queries, logit_keys, momentum_queries, keys, labels, alpha,
                            temperature, label_smoothing, precise_logits) -> tuple:
    """``(loss, logits)`` of one direction (i2t or t2i) of ``momentum_distillation_loss``: the
    online logits against ``target = α · softmax(momentum similarities) + (1 − α) · smoothed
    one-hot``."""
    logits = logits_matmul(queries, logit_keys, precise_logits) / temperature
    one_hot = _smoothed_one_hot(logits, labels, label_smoothing)
    # The targets are constants: no gradient into σ or the momentum features through them.
    soft = tf.nn.softmax(logits_matmul(momentum_queries, keys, precise_logits)
                         / tf.stop_gradient(temperature), axis=-1)
    targets = tf.stop_gradient(alpha * soft + (1.0 - alpha) * one_hot)
    loss = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(labels=targets, logits=logits))
    return loss, logits


def sigmoid_loss(image_embeddings: tf.Tensor,
                 text_embeddings: tf.Tensor,
                 logit_scale: tf.Tensor,
                 logit_bias: tf.Tensor,
                 precise_logits: bool | None = None) -> dict:
    """SigLIP's pairwise sigmoid loss (Zhai et al., 2023), chunked over the replicas.

    With L2-normalised image embeddings x_i, text embeddings y_j, scale t = exp(t′) and bias b:

        loss = -(1/N) Σ_i Σ_j log σ(z_ij (t · x_iᵀ y_j + b)),   z_ii = +1, z_ij = -1 (i ≠ j)

    over the global batch of N pairs (big_vision's value: a sum over the columns, a mean over the
    rows). Every pair is an independent binary problem, so a replica's rows need the other
    replicas' texts but no normaliser over them: with R > 1 replicas each replica returns
    ``(1/N_local) Σ_{i local} Σ_{j global}``, whose mean over the replicas is the global loss, in
    value and gradient (each text's gradient is summed over the replicas that scored it and
    returned to the replica that owns it).

    Memory: the texts travel in C chunked gathers (C = gcd(N_local, R), so C = R whenever R divides
    the per-replica batch): gather c brings every replica's c-th slice of N_local / C texts, this
    replica's images are scored against those N_global / C texts, and the chunk is dropped. So
    ``N_local × N_global / C`` logits (``N_local²`` when C = R) and ``N_global / C`` gathered
    texts exist at a time, never ``N_local × N_global`` logits nor all N_global embeddings. A plain
    tape would keep every chunk for the backward pass; the custom gradient gathers and recomputes
    each chunk instead, so the backward pass has the same peak. (big_vision passes chunks by
    collective permute, which ``tf.distribute`` does not offer on Mirrored/MultiWorker strategies;
    all_gather and all_reduce work on all of them and on TPU.) The C chunks are unrolled in the
    graph (collectives inside a ``tf.while_loop`` are not portable across strategies); an unknown
    static per-replica batch means one gather of all texts (C = 1).

    Args:
      image_embeddings: ``(N_local, D)`` L2-normalised image embeddings of this replica.
      text_embeddings: ``(N_local, D)`` L2-normalised text embeddings of this replica.
      logit_scale: scalar t > 0 (the model learns t′ = log t).
      logit_bias: scalar b.
      precise_logits: ``logits_matmul``'s ``precise`` (default: float32 logits on GPU/TPU too).

    Returns:
      dict with ``loss`` (this replica's share, as above) and ``i2t_accuracy`` (the fraction of
      this replica's images whose highest-scoring text in the global batch is their own).
    """
    image = tf.cast(image_embeddings, tf.float32)
    texts = tf.cast(text_embeddings, tf.float32)
    chunks = _TextChunks(image, precise_logits)
    loss, accuracy = _chunked_sigmoid(chunks, image, texts, tf.cast(logit_scale, tf.float32),
                                      tf.cast(logit_bias, tf.float32))
    return {"loss": loss, "i2t_accuracy": tf.stop_gradient(accuracy)}


class _TextChunks:
    """How ``sigmoid_loss`` splits one replica's step into C chunked gathers of the texts."""

    def __init__(self, image: tf.Tensor, precise_logits: bool | None):
        self.context = tf.distribute.get_replica_context()
        self.num_replicas = self.context.num_replicas_in_sync if self.context is not None else 1
        static_rows = image.shape[0]
        # C must be static: the chunks are unrolled in the graph.
        self.count = math.gcd(static_rows, self.num_replicas) if static_rows else 1
        self.rows = tf.shape(image)[0]
        self.slice_rows = self.rows // self.count       # m: this replica's texts per gather
        self.replica = self.context.replica_id_in_sync_group if self.num_replicas > 1 else 0
        self.precise_logits = precise_logits

    def gathered(self, texts: tf.Tensor, c: int) -> tf.Tensor:
        """Every replica's c-th slice of texts, ``(R·m, D)``; row r·m + j is replica r's row
        c·m + j."""
        piece = texts[c * self.slice_rows:(c + 1) * self.slice_rows]
        return self.context.all_gather(piece, axis=0) if self.num_replicas > 1 else piece

    def positives(self, c: int) -> tf.Tensor:
        # z = +1 only where local row c·m + j meets its own text, column replica·m + j of chunk c:
        # m index pairs, so no (N_local, R·m) mask is ever built.
        j = tf.range(self.slice_rows)
        return tf.stack([c * self.slice_rows + j, self.replica * self.slice_rows + j], axis=1)

    def logits(self, image, texts_c, scale, bias) -> tuple:
        """``(cosines, logits)`` of this replica's images against one gathered chunk."""
        cosines = logits_matmul(image, texts_c, self.precise_logits)
        return cosines, scale * cosines + bias


def _chunked_sigmoid(chunks: _TextChunks, image, texts, scale, bias) -> tuple:
    """``(loss, accuracy)`` of ``sigmoid_loss``, with a gradient that recomputes each chunk rather
    than keeping every chunk's logits for the backward pass."""

    @tf.custom_gradient
    def chunked(image, texts, scale, bias):
        loss, own, best = _sigmoid_forward(chunks, image, texts, scale, bias)
        rows_f = tf.cast(chunks.rows, tf.float32)
        # A row's own text counts as its best on ties (the same logit compared with itself).
        accuracy = tf.reduce_sum(tf.cast(tf.concat(own, 0) >= best, tf.float32)) / rows_f

        def grad(upstream, _):
            return _sigmoid_backward(chunks, image, texts, scale, bias, upstream / rows_f)

        return (loss / rows_f, accuracy), grad

    return chunked(image, texts, scale, bias)


def _sigmoid_forward(chunks: _TextChunks, image, texts, scale, bias) -> tuple:
    """``(Σ_i Σ_j -log σ(z_ij s_ij), own, best)`` over this replica's rows, chunk by chunk:
    ``own`` the rows' positive logits (one tensor a chunk), ``best`` each row's highest logit."""
    loss, best, own = tf.constant(0.0), tf.fill([chunks.rows], -float("inf")), []
    for c in range(chunks.count):
        # The chunks are independent: without this dependency the executor could run them
        # at once and hold every chunk's logits together, the very peak chunking avoids.
        with tf.control_dependencies([loss, best]):
            texts_c = chunks.gathered(texts, c)
        _, logits = chunks.logits(image, texts_c, scale, bias)
        own_c = tf.gather_nd(logits, chunks.positives(c))
        # -log σ(z·s) = softplus(-z·s): softplus(s) for every pair, then the m positives'
        # softplus(s) swapped for softplus(-s) (stable for large |s|, no mask needed).
        loss += tf.reduce_sum(tf.nn.softplus(logits)) + \
            tf.reduce_sum(tf.nn.softplus(-own_c) - tf.nn.softplus(own_c))
        best = tf.maximum(best, tf.reduce_max(logits, axis=1))
        own.append(own_c)  # rows c·m … (c+1)·m - 1
    return loss, own, best


def _sigmoid_backward(chunks: _TextChunks, image, texts, scale, bias, upstream) -> tuple:
    """The gradients ``(d_image, d_texts, d_scale, d_bias)`` of the mean loss (``upstream``
    already divided by N_local): d softplus(-z·s)/ds = σ(s) - [z = +1], recomputed chunk by
    chunk."""
    d_image, d_scale, d_bias, d_texts = tf.zeros_like(image), 0.0, 0.0, []
    for c in range(chunks.count):
        with tf.control_dependencies([d_image] + d_texts):  # one chunk at a time
            texts_c = chunks.gathered(texts, c)
        cosines, logits = chunks.logits(image, texts_c, scale, bias)
        d_logits = tf.tensor_scatter_nd_sub(upstream * tf.sigmoid(logits), chunks.positives(c),
                                            tf.fill([chunks.slice_rows], upstream))
        d_cosines = scale * d_logits
        d_image += tf.matmul(d_cosines, texts_c)
        d_scale += tf.reduce_sum(d_logits * cosines)
        d_bias += tf.reduce_sum(d_logits)
        d_texts_c = tf.matmul(d_cosines, image, transpose_a=True)  # every replica's slice
        if chunks.num_replicas > 1:
            # Each replica scored every slice: sum, then keep this replica's own rows.
            d_texts_c = chunks.context.all_reduce(tf.distribute.ReduceOp.SUM, d_texts_c)
            d_texts_c = d_texts_c[chunks.replica * chunks.slice_rows:
                                  (chunks.replica + 1) * chunks.slice_rows]
        d_texts.append(d_texts_c)
    return d_image, tf.concat(d_texts, axis=0), d_scale, d_bias
