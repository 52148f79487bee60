"""Alias of ``python -m align_tf.data.vocab`` (the name the trainer's error messages use)."""

from align_tf.data.vocab import main

if __name__ == "__main__":
    main()
