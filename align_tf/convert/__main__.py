"""``python -m align_tf.convert``: the HuggingFace ALIGN converter, ``align_tf.convert.hf_align``."""

from align_tf.convert import hf_align

if __name__ == "__main__":
    hf_align.run()
