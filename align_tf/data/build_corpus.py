"""Alias of ``python -m align_tf.data.build`` (the Beam corpus builder)."""

from align_tf.data.build import main

if __name__ == "__main__":
    main()
