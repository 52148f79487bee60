"""``python -m align_tf.data.vocab``: the vocabulary learner's command at its old path.

The learner is the offline corpus tool ``align_tf.corpus.vocab`` (console script
``align-vocab``); this module only runs its command, so old command lines keep working.
"""

from align_tf.corpus import vocab

if __name__ == "__main__":
    vocab.run()
