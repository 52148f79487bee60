"""Training, split by job; ``align_tf.trainer`` runs them in order (``train``).

* ``validation.py``: ``validate_config``, one-line ``ConfigError``s naming the field, by section;
* ``inputs.py``: the synthetic corpus, the vocabulary and the distributed training stream;
* ``checkpoint.py``: what a checkpoint holds, which one to resume from, restoring it;
* ``loop.py``: ``TrainLoop``, host loops of steps, logging, periodic evaluation, checkpoints;
* ``preemption.py``: SIGTERM → save and stop (``Preempted``).
"""
