"""align_tf: ALIGN (Jia et al., ICML 2021) dual encoder in TensorFlow 2 / Keras 3.

Importing the package loads nothing heavy (no TensorFlow; ``tests/test_imports.py`` checks it), so
``python -m align_tf.X --help`` starts fast. The commands, each also a console script:

| command | console script |
| --- | --- |
| ``python -m align_tf.train`` | ``align-train`` |
| ``python -m align_tf.evaluate`` | ``align-evaluate`` |
| ``python -m align_tf.export`` | ``align-export`` |
| ``python -m align_tf.finetune`` | ``align-finetune`` |
| ``python -m align_tf.data.build`` | ``align-build`` |
| ``python -m align_tf.data.vocab`` | ``align-vocab`` |
| ``python -m align_tf.convert.hf_align`` | ``align-convert`` |
"""
