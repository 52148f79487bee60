"""Linear probe: a softmax classifier trained on frozen image embeddings.

Two backends:
  * ``"sklearn"`` (default): L-BFGS multinomial logistic regression as in CLIP's linear-probe
    protocol. The L2 strength (inverse ``C``) is picked on a held-out part of the training split
    from a log grid unless given; the probe is then refit on the whole training split.
  * ``"keras"``: a ``Dense(num_classes)`` layer trained with Adam and weight decay, in minibatches;
    for training sets too large for L-BFGS in memory (ImageNet's 1.28M × D features).
"""

from __future__ import annotations

import numpy as np

from align_tf.evaluation.registry import register_evaluator
from align_tf.evaluation.zero_shot import TOPK, label_ranks

BACKENDS = ("sklearn", "keras")

DEFAULT_C_GRID = (0.01, 0.1, 1.0, 10.0, 100.0)


def _fit_sklearn(x, y, c: float, max_iter: int, seed: int):
    from sklearn.linear_model import LogisticRegression  # optional dependency (scikit-learn)
    return LogisticRegression(C=c, max_iter=max_iter, random_state=seed).fit(x, y)


def _sklearn_scores(clf, x, num_classes: int) -> np.ndarray:
    """Decision scores in the full label space (classes absent from training score -inf)."""
    scores = np.full((len(x), num_classes), -np.inf, np.float32)
    decision = clf.decision_function(x)
    if decision.ndim == 1:  # binary problems return one column: the score of classes_[1]
        decision = np.stack([-decision, decision], axis=1)
    scores[:, clf.classes_] = decision
    return scores


def _keras_scores(train_x, train_y, test_x, num_classes: int, epochs: int, batch_size: int,
                  learning_rate: float, weight_decay: float, seed: int) -> np.ndarray:
    import keras
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((train_x.shape[1],)), keras.layers.Dense(num_classes)])
    model.compile(optimizer=keras.optimizers.AdamW(learning_rate, weight_decay=weight_decay),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(train_x, train_y, epochs=epochs, batch_size=batch_size, verbose=0, shuffle=True)
    return np.asarray(model.predict(test_x, batch_size=4096, verbose=0), np.float32)


def linear_probe(train_x, train_y, test_x, test_y, num_classes: int | None = None,
                 backend: str = "sklearn", c: float | None = None, c_grid=DEFAULT_C_GRID,
                 val_fraction: float = 0.2, max_iter: int = 1000, epochs: int = 30,
                 batch_size: int = 256, learning_rate: float = 1e-2, weight_decay: float = 1e-4,
                 topk=(1, 5), seed: int = 0) -> dict:
    """Trains a linear classifier on ``train_x`` and reports its top-k accuracy on ``test_x``.

    Args:
      train_x, train_y, test_x, test_y: features ``(N, D)`` and int labels.
      num_classes: label space size; default ``max label + 1``.
      backend: ``"sklearn"`` (logistic regression, L-BFGS) or ``"keras"`` (softmax layer, AdamW).
      c: sklearn inverse L2 strength; None: chosen from ``c_grid`` on a ``val_fraction`` split.
      max_iter: sklearn L-BFGS iterations.
      epochs, batch_size, learning_rate, weight_decay: the Keras backend's training.
      topk: reported k's.
      seed: the validation split and the Keras initialisation.

    Returns:
      ``{"top1": ..., "top5": ...}`` in [0, 1] (plus ``"C"`` for sklearn).
    """
    train_x = np.asarray(train_x, np.float32)
    test_x = np.asarray(test_x, np.float32)
    train_y = np.asarray(train_y, np.int64)
    test_y = np.asarray(test_y, np.int64)
    if num_classes is None:
        num_classes = int(max(train_y.max(), test_y.max()) + 1)
    out = {}
    if backend == "sklearn":
        if c is None:
            rng = np.random.default_rng(seed)
            order = rng.permutation(len(train_x))
            n_val = max(1, int(round(val_fraction * len(train_x))))
            val, fit = order[:n_val], order[n_val:]
            best = None
            for candidate in c_grid:
                clf = _fit_sklearn(train_x[fit], train_y[fit], candidate, max_iter, seed)
                acc = np.mean(label_ranks(_sklearn_scores(clf, train_x[val], num_classes),
                                          train_y[val]) == 0)
                if best is None or acc > best[0]:  # strict: the smallest C wins ties
                    best = (acc, candidate)
            c = best[1]
        clf = _fit_sklearn(train_x, train_y, c, max_iter, seed)
        scores = _sklearn_scores(clf, test_x, num_classes)
        out["C"] = float(c)
    elif backend == "keras":
        scores = _keras_scores(train_x, train_y, test_x, num_classes, epochs, batch_size,
                               learning_rate, weight_decay, seed)
    else:
        raise ValueError(f"unknown linear probe backend {backend!r}; choose 'sklearn' or 'keras'")
    ranks = label_ranks(scores, test_y)
    out.update({f"top{k}": float(np.mean(ranks < k)) for k in topk if k <= num_classes})
    return out


@register_evaluator("linear")
class LinearProbeEvaluator:
    """Named evaluator: linear probe on frozen image embeddings (train split → test split).

    Args:
      train_data, test_data: ``ClassificationData`` of one label space.
      **probe_kwargs: passed to ``linear_probe`` (backend, c, epochs, ...).

    Config entry (``type: linear``): ``defaults`` below; fits on the source's ``train_split``.
    """

    name = "linear"
    needs = "classification"
    defaults = {
        "linear_backend": "sklearn",  # "sklearn" (logistic regression) | "keras" (a softmax layer)
        "linear_c": None,             # sklearn's C; None: swept on 20% of the fit split
    }

    @classmethod
    def validate(cls, entry, where: str) -> None:
        if entry.linear_c is not None and not entry.linear_c > 0:
            raise ValueError(f"{where}.linear_c must be > 0 or None (swept), "
                             f"got {entry.linear_c!r}")
        if entry.linear_backend not in BACKENDS:
            raise ValueError(f"{where}.linear_backend must be one of {list(BACKENDS)}, "
                             f"got {entry.linear_backend!r}")

    @classmethod
    def from_config(cls, entry, data):
        return cls(data.classification(entry, train=True), data.classification(entry, train=False),
                   backend=entry.linear_backend, c=entry.linear_c, topk=TOPK)

    def __init__(self, train_data, test_data, **probe_kwargs):
        self.train_data, self.test_data, self.probe_kwargs = train_data, test_data, probe_kwargs

    def run(self, encoder) -> dict:
        """``encoder``: an ``align_tf.evaluation.embed.Encoder``. Returns a flat dict of floats."""
        train_emb, train_labels = self.train_data.embed_images(encoder)
        test_emb, test_labels = self.test_data.embed_images(encoder)
        out = linear_probe(train_emb, train_labels, test_emb, test_labels,
                           num_classes=len(self.test_data.classnames), **self.probe_kwargs)
        out.update(num_train=float(len(train_labels)), num_examples=float(len(test_labels)))
        return out
