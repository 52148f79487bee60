"""The embedded default: tiny EfficientNet + BERT-tiny on the built-in synthetic shapes corpus (CPU)."""

from align_tf.configs import base


def get_config():
    c = base.get_config()
    # Zero-shot on the 30 classes drawn in styles training never uses (align_tf/data/shift.py;
    # docs/robustness.md): eval.json's results["synthetic_shift"]["zeroshot"][style][metric],
    # beside the in-distribution results["synthetic"]["zeroshot"]. 6 styles x 300 images.
    c.eval.evaluators.synthetic_shift = {"type": "synthetic_shift", "dataset": "synthetic_shift",
                                         "shift_styles": "all",
                                         "shift_examples_per_class": 10,
                                         "shift_seed": 30_000}
    return c
