"""``python -m align_tf.data.build``: the corpus builder's command at its old path.

The builder is the offline corpus tool ``align_tf.corpus.build`` (console script
``align-build``); this module only runs its command, so old command lines keep working.
"""

from align_tf.corpus import build

if __name__ == "__main__":
    build.run()
