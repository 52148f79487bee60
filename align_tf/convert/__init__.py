"""Converters from other ALIGN implementations' checkpoints to align_tf model directories.

``hf_align`` converts a HuggingFace transformers ``AlignModel`` (``python -m align_tf.convert``,
``python -m align_tf.convert.hf_align`` or ``align-convert``), by job: ``hf_files`` reads the
checkpoint directory, ``hf_config`` maps its config onto our towers, ``hf_weights`` copies each
tensor into exactly one of our variables; ``hf_hub`` downloads a checkpoint by repo id (``--from``,
and ``align_tf.pretrained``'s cache of converted models behind ``align_tf.load``).
"""


class ConversionError(ValueError):
    """The HF checkpoint cannot be reproduced exactly by align_tf's model."""
