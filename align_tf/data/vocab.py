"""Learns the WordPiece vocabulary from the corpus' captions.

    python -m align_tf.data.vocab --input_pattern='corpus/pairs-*.tfrecord' --output=vocab.txt \
        --vocab_size=100000

The paper trains BERT from scratch with a WordPiece vocabulary learned from its own corpus (100k
tokens). Captions are read from TFRecord shards (``caption`` feature) or from text files with one
text per line (``.txt``/``.txt.gz``), streamed through ``align_tf.tokenizer.build_vocabulary``
(tensorflow-text's ``bert_vocab_from_dataset``, BERT-uncased normalisation by default), and saved
one token per line with ``[PAD] [UNK] [CLS] [SEP] [MASK]`` first. Train with it via
``--config.data.vocab_path=vocab.txt``.
"""

from __future__ import annotations

import argparse
import logging
import time

import tensorflow as tf

from align_tf.tokenizer import build_vocabulary, save_vocabulary

log = logging.getLogger(__name__)
_PROGRESS_EVERY = 100_000


def read_texts(pattern: str, max_texts: int = 0, progress_every: int = _PROGRESS_EVERY) -> tf.data.Dataset:
    """Captions from TFRecord shards or ``.txt`` files matching ``pattern`` (comma-separated globs).

    Records that fail to parse are skipped (``tfrecord.STATS`` counts them); ``max_texts`` > 0
    stops after that many texts; progress is printed every ``progress_every`` texts.
    """
    from align_tf.data import tfrecord
    files = sorted({f for p in pattern.split(",") if p for f in tf.io.gfile.glob(p.strip())})
    if not files:
        raise FileNotFoundError(f"no files match {pattern!r}")
    text_files = [f for f in files if f.endswith((".txt", ".txt.gz"))]
    if text_files and len(text_files) != len(files):
        raise ValueError("mix of .txt and TFRecord inputs; pass one kind")
    if text_files:
        ds = tf.data.TextLineDataset(
            text_files, compression_type="GZIP" if text_files[0].endswith(".gz") else None)
        ds = ds.filter(lambda t: tf.strings.length(tf.strings.strip(t)) > 0)
    else:
        records = tf.data.Dataset.from_tensor_slices(files).interleave(
            lambda f: tf.data.TFRecordDataset(f).map(lambda r: (f, r)).ignore_errors(log_warning=True),
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        caption = {"caption": tf.io.FixedLenFeature([], tf.string)}
        ds = tfrecord.map_skipping_errors(
            records, lambda fr: tf.io.parse_single_example(fr[1], caption)["caption"],
            "corrupt_record", source_of=lambda fr: fr[0])
    if max_texts:
        ds = ds.take(max_texts)
    if progress_every:
        def report(i, text):
            tf.cond(tf.equal((i + 1) % progress_every, 0),
                    lambda: tf.print("vocab: read", i + 1, "texts"), tf.no_op)
            return text
        ds = ds.enumerate().map(report)
    return ds


def main(argv=None) -> list:
    """CLI entry point; returns the vocabulary."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="python -m align_tf.data.vocab",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--input_pattern", required=True,
                        help="TFRecord shard glob, or .txt files with one text per line")
    parser.add_argument("--output", required=True, help="vocabulary file to write")
    parser.add_argument("--vocab_size", type=int, default=30522,
                        help="target size (tensorflow-text's learner lands near it; paper: 100k)")
    parser.add_argument("--max_texts", type=int, default=0, help="use only the first N texts (0: all)")
    parser.add_argument("--lowercase", action=argparse.BooleanOptionalAction, default=True,
                        help="BERT uncased normalisation (must match TextPreprocessor's lowercase)")
    args = parser.parse_args(argv)
    start = time.time()
    texts = read_texts(args.input_pattern, args.max_texts)
    vocab = build_vocabulary(texts, vocab_size=args.vocab_size, lowercase=args.lowercase)
    save_vocabulary(vocab, args.output)
    log.info("wrote %d tokens to %s in %.1fs", len(vocab), args.output, time.time() - start)
    return vocab


if __name__ == "__main__":
    main()
