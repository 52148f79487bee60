"""Converters from other ALIGN implementations' checkpoints to align_tf model directories."""
