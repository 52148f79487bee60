"""Offline corpus tools, kept apart from the online input pipeline (``align_tf.data``).

* ``build``: the Beam corpus builder (raw image/alt-text pairs → filtered TFRecord shards), split
  by job into ``config`` (settings), ``inputs`` (tables and sample shards → rows), ``filters``
  (the paper's §3 filters), ``images`` (fetch, check, re-encode), ``transforms`` (the Beam graph)
  and ``output`` (deterministic shards, ``stats.json``);
* ``vocab``: the WordPiece vocabulary learned from a corpus' captions.

Training never imports this package; it imports ``align_tf.data`` (the shard format
``data.tfrecord``, the sample readers ``data.webdataset`` and ``data.img2dataset``).
"""
