"""The named EfficientNet sizes against the reference table (tensorflow/tpu efficientnet_builder,
as ALIGN_FACTS.md quotes it), typed in here independently of ``efficientnet.SIZES``."""

import os
import subprocess
import sys

import pytest

from align_tf.configs import PRESETS, default_model_dir
from align_tf.models import efficientnet

# name: (width, depth, resolution, classifier dropout); stochastic depth is 0.2 for every size.
REFERENCE = {
    "b0": (1.0, 1.0, 224, 0.2), "b1": (1.0, 1.1, 240, 0.2), "b2": (1.1, 1.2, 260, 0.3),
    "b3": (1.2, 1.4, 300, 0.3), "b4": (1.4, 1.8, 380, 0.4), "b5": (1.6, 2.2, 456, 0.4),
    "b6": (1.8, 2.6, 528, 0.5), "b7": (2.0, 3.1, 600, 0.5), "l2": (4.3, 5.3, 800, 0.5),
}
STOCHASTIC_DEPTH = 0.2


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_named_size_matches_the_reference_table(name):
    size = efficientnet.SIZES[name]
    width, depth, resolution, dropout = REFERENCE[name]
    assert (size.width, size.depth, size.resolution) == (width, depth, resolution)
    assert size.classifier_dropout == dropout
    assert size.drop_connect_rate == STOCHASTIC_DEPTH


def test_every_paper_size_is_checked():
    """No named size outside the table but the CPU test sizes (no head, no stochastic depth)."""
    assert set(efficientnet.SIZES) - set(REFERENCE) == {"nano", "tiny"}
    for name in ("nano", "tiny"):
        assert efficientnet.SIZES[name].drop_connect_rate == 0.0


def test_sizes_round_trip_through_config_dicts():
    """Both rates survive ``to_dict``/``from_dict`` (config.json's ``model.image_architecture``);
    a dict written before ``classifier_dropout`` existed still loads."""
    l2 = efficientnet.SIZES["l2"]
    assert efficientnet.EfficientNetSize.from_dict(l2.to_dict()) == l2
    old = {k: v for k, v in l2.to_dict().items() if k != "classifier_dropout"}
    assert efficientnet.EfficientNetSize.from_dict(old).drop_connect_rate == STOCHASTIC_DEPTH


@pytest.mark.parametrize("preset", PRESETS)
def test_default_model_dir_follows_the_config_name(preset):
    """A preset trains into ``align_runs/<preset>`` unless ``--model_dir`` says otherwise, so
    that runs of two presets never resume each other's checkpoints (what ``--help`` shows is the
    flag's real default)."""
    out = subprocess.run([sys.executable, "-m", "align_tf.train", f"--config={preset}", "--help"],
                         capture_output=True, text=True, timeout=120).stdout
    assert f"(default: 'align_runs/{preset}')" in out
    assert default_model_dir("runs/my_exp.py:arg") == os.path.join("align_runs", "my_exp")
    assert default_model_dir("align_runs/x/config.json") == os.path.join("align_runs", "x")
