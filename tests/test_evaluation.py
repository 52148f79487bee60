"""Tests of align_tf.evaluation: prompts, retrieval, zero-shot, kNN, linear probe and the CLI."""

from align_tf.evaluation import prompts


def test_clip_templates_are_80_distinct_with_one_slot():
    templates = prompts.CLIP_IMAGENET_TEMPLATES
    assert len(templates) == 80
    assert len(set(templates)) == 80
    assert all(isinstance(t, str) and t.count("{}") == 1 for t in templates)
    assert set(prompts.CLIP_IMAGENET_TEMPLATES_7) <= set(templates)
    assert prompts.get_templates("clip80") == templates
    assert prompts.get_templates("none") == ("{}",)
    assert prompts.get_templates("simple") == ("a photo of a {}.",)


def test_class_name_lists():
    assert len(prompts.CIFAR10_CLASSNAMES) == 10
    assert len(set(prompts.CIFAR100_CLASSNAMES)) == 100
    names = prompts.IMAGENET_CLASSNAMES
    assert len(names) == 1000
    # Spot checks of the TFDS/synset label order.
    assert (names[0], names[1], names[207], names[281], names[948], names[999]) == (
        "tench", "goldfish", "Golden Retriever", "tabby cat", "Granny Smith apple", "toilet paper")
    assert prompts.get_classnames("cifar10:3.0.2") == prompts.CIFAR10_CLASSNAMES
