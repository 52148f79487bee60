"""ImageNet and its shifted variants (``imagenet:NAME``; ``--dataset=imagenet_variants``) on TFDS
mock data: CLIP's class names and 80 prompts, each set's split, and ImageNet-R / -A scored over their
200 classes only, against a NumPy recomputation."""

import zlib

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from align_tf import prompts
from align_tf.configs import base
from align_tf.data import imagenet_variants
from align_tf.evaluation import runner
from align_tf.evaluation.embed import Encoder

# The published lists as ImageNet-1k label indices, independent of the module's WordNet ids:
# hendrycks/imagenet-r eval.py (its imagenet_r_indices comment) and the keys mapped to a class
# (not -1) by thousand_k_to_200 in hendrycks/natural-adv-examples eval.py.
R_INDICES = [int(i) for i in """
1 2 4 6 8 9 11 13 22 23 26 29 31 39 47 63 71 76 79 84
90 94 96 97 99 100 105 107 113 122 125 130 132 144 145 147 148 150 151 155
160 161 162 163 171 172 178 187 195 199 203 207 208 219 231 232 234 235 242 245
247 250 251 254 259 260 263 265 267 269 276 277 281 288 289 291 292 293 296 299
301 308 309 310 311 314 315 319 323 327 330 334 335 337 338 340 341 344 347 353
355 361 362 365 366 367 368 372 388 390 393 397 401 407 413 414 425 428 430 435
437 441 447 448 457 462 463 469 470 471 472 476 483 487 515 546 555 558 570 579
583 587 593 594 596 609 613 617 621 629 637 657 658 701 717 724 763 768 774 776
779 780 787 805 812 815 820 824 833 847 852 866 875 883 889 895 907 928 931 932
933 934 936 937 943 945 947 948 949 951 953 954 957 963 965 967 980 981 983 988
""".split()]
A_INDICES = [int(i) for i in """
6 11 13 15 17 22 23 27 30 37 39 42 47 50 57 70 71 76 79 89
90 94 96 97 99 105 107 108 110 113 124 125 130 132 143 144 150 151 207 234
235 254 277 283 287 291 295 298 301 306 307 308 309 310 311 313 314 315 317 319
323 324 326 327 330 334 335 336 347 361 363 372 378 386 397 400 401 402 404 407
411 416 417 420 425 428 430 437 438 445 456 457 461 462 470 472 483 486 488 492
496 514 516 528 530 539 542 543 549 552 557 561 562 569 572 573 575 579 589 606
607 609 614 626 627 640 641 642 643 658 668 677 682 684 687 701 704 719 736 746
749 752 758 763 765 768 773 774 776 779 780 786 792 797 802 803 804 813 815 820
823 831 833 835 839 845 847 850 859 862 870 879 880 888 890 897 900 907 913 924
932 933 934 937 943 945 947 951 954 956 957 959 971 972 980 981 984 986 987 988
""".split()]
SUBSET = {"imagenet_r": R_INDICES, "imagenet_a": A_INDICES}

DIM = 24
_TABLE = np.random.default_rng(0).standard_normal((1 << 16, DIM))


def _text_vector(text: str) -> np.ndarray:
    """A fixed random unit vector per text (any function of the text would do)."""
    v = _TABLE[zlib.crc32(text.encode()) & 0xFFFF]
    return v / np.linalg.norm(v)


class HashEncoder(Encoder):
    """Texts embed as ``_text_vector``; a constant image of value ``i`` as ``images[i]``."""

    image_size, resize_size, batch_size = 8, None, 4096

    def __init__(self, images):
        self.images = images

    def embed_image_batch(self, pixels):
        return self.images[np.rint(np.asarray(pixels).mean(axis=(1, 2, 3)) * 255).astype(int)]

    def embed_text_batch(self, texts):
        return np.stack([_text_vector(t.decode()) for t in texts.numpy()])


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _numpy_classes(templates) -> np.ndarray:
    """CLIP's ensembling of all 1,000 classes, by hand."""
    return _unit(np.stack([_unit(np.stack([_text_vector(t.format(n)) for t in templates])).mean(0)
                           for n in prompts.IMAGENET_CLASSNAMES]))


def test_class_lists_are_the_published_ones():
    labels = tfds.builder("imagenet_r").info.features["label"].names  # TFDS' ImageNet wnids
    for name, indices in SUBSET.items():
        assert imagenet_variants.class_indices(name, labels) == indices
        assert len(set(imagenet_variants.SUBSETS[name])) == 200
    assert imagenet_variants.class_indices("imagenet_v2", labels) is None
    with pytest.raises(ValueError, match="imagenet_r: 1 of its classes"):
        imagenet_variants.class_indices("imagenet_r", [w for w in labels if w != "n01443537"])


@pytest.fixture(scope="module")
def mock_sets():
    """Each set's mock test images (pixel value = a global image id), its labels and the
    embedding of every image id; R and A add 10 images of classes outside their 200."""
    rng = np.random.default_rng(3)
    classes = _numpy_classes(prompts.CLIP_IMAGENET_TEMPLATES)
    sets, embeddings, next_id = {}, np.zeros((256, DIM)), 0
    for name in imagenet_variants.VARIANTS:
        subset = SUBSET.get(name, list(range(1000)))
        outside = np.setdiff1d(np.arange(1000), subset)
        labels = np.concatenate([rng.choice(subset, 30), rng.choice(outside, 10 if name in SUBSET
                                                                     else 0)])
        ids = np.arange(next_id, next_id + len(labels))
        next_id += len(labels)
        # Near the true class, and nearer still to a class outside the subset: scored over the
        # 1,000 classes these images are mostly wrong, over R's or A's 200 mostly right.
        distractor = classes[rng.choice(outside, len(labels))] if name in SUBSET else 0
        embeddings[ids] = _unit(classes[labels] + 1.2 * distractor
                                + 0.5 * rng.standard_normal((len(labels), DIM)))
        sets[name] = {"image": np.repeat(ids.astype(np.uint8), 16 * 16 * 3).reshape(-1, 16, 16, 3),
                      "label": labels.astype(np.int64)}
    return sets, embeddings, classes


def test_imagenet_variants_score_as_numpy_does(mock_sets):
    sets, embeddings, classes = mock_sets
    requested = []

    def as_dataset(self, split, *args, **kwargs):
        requested.append((self.name, str(split)))
        return tf.data.Dataset.from_tensor_slices(sets[self.name])

    specs = imagenet_variants.expand_datasets(["imagenet_variants"])
    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        plans = runner.plans_from_config(base.get_config(), datasets=specs, tasks="zeroshot")
        for _, evaluators in plans:
            assert evaluators[0][1].templates == prompts.CLIP_IMAGENET_TEMPLATES  # the 80
        results = runner.run_plans(HashEncoder(embeddings), plans)
    assert sorted(results) == sorted(imagenet_variants.VARIANTS)  # keyed by the TFDS name
    assert plans.sources["imagenet_r"] == "imagenet:imagenet_r"
    assert sorted(requested) == sorted((n, imagenet_variants.TEST_SPLITS[n])
                                       for n in imagenet_variants.VARIANTS)
    assert dict(requested)["imagenet2012"] == "validation"
    for name, data in sets.items():
        got = results[name]["zeroshot"]
        subset = np.asarray(SUBSET.get(name, range(1000)))
        keep = np.isin(data["label"], subset)  # R/A: images of other classes are left out
        image = embeddings[data["image"][keep, 0, 0, 0]]
        truth = np.searchsorted(subset, data["label"][keep])
        scores = image @ classes[subset].T
        top1 = float(np.mean(scores.argmax(1) == truth))
        top5 = float(np.mean((scores > scores[np.arange(len(truth)), truth][:, None]).sum(1) < 5))
        assert got["num_examples"] == 30 and got["num_classes"] == len(subset), name
        assert got["top1"] == pytest.approx(top1, abs=1e-9), name
        assert got["top5"] == pytest.approx(top5, abs=1e-9), name
        if name in SUBSET:  # the restriction is what makes these right
            over_1000 = float(np.mean((image @ classes.T).argmax(1) == data["label"][keep]))
            assert over_1000 < top1, (name, over_1000, top1)
    row = imagenet_variants.table_row(results)
    assert f"ImageNet-R {100 * results['imagenet_r']['zeroshot']['top1']:.1f}" in row


def test_an_unknown_variant_is_one_line():
    with pytest.raises(ValueError) as e:
        runner.plans_from_config(base.get_config(), datasets="imagenet:imagenet_c",
                                 tasks="zeroshot")
    message = str(e.value)
    assert message.startswith("eval.evaluators.") and "\n" not in message
    assert "zeroshot.dataset: imagenet:imagenet_c: not an ImageNet variant; choose from " \
           "imagenet2012, imagenet_r" in message, message
    assert imagenet_variants.expand_datasets(["synthetic", "imagenet_variants", "synthetic"]) == [
        "synthetic"] + [f"imagenet:{n}" for n in imagenet_variants.VARIANTS]


def test_the_evaluate_flag_expands_imagenet_variants():
    config = runner.with_eval_overrides(base.get_config(), datasets=["imagenet_variants"],
                                        tasks=["zeroshot"])
    assert sorted(e.dataset for e in config.eval.evaluators.values()) == sorted(
        imagenet_variants.GROUPS["imagenet_variants"])
