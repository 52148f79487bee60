r"""Learns the WordPiece vocabulary from the corpus' captions.

    python -m align_tf.corpus.vocab --input='corpus/pairs-*.tfrecord' --output=vocab.txt \
        --vocab_size=100000
    python -m align_tf.corpus.vocab --input=captions.txt.gz --output=vocab.txt --nolowercase
    python -m align_tf.corpus.vocab --input=captions.txt.gz --output=vocab.txt \
        --tokenizer=multilingual

    python -m align_tf.corpus.vocab --input='shards/{00000..00999}.tar' --output=vocab.txt

The paper trains BERT from scratch with a WordPiece vocabulary learned from its own corpus (100k
tokens). Captions are read from our TFRecord shards (``caption`` feature), from text files with
one text per line (``.txt``/``.txt.gz``), or from the builder's other inputs as they are (no
filters): webdataset tars (``.tar``) and img2dataset TFRecords (``--format=img2dataset_tfrecord``,
its ``txt`` feature); they are streamed through ``align_tf.tokenizer.build_vocabulary``
(tensorflow-text's WordPiece learner, fed by the in-graph pre-tokenizer so it sees the words
inference produces; BERT-uncased normalisation by default, ``--tokenizer`` as the config's
``data.tokenizer``), and saved
one token per line with ``[PAD] [UNK] [CLS] [SEP] [MASK]`` first. Train with it via
``--config.data.vocab_path=vocab.txt``.

``--input`` and ``--format`` are spelt as in ``align_tf.corpus.build`` (comma-separated globs and,
for sample shards, brace ranges allowed); the older ``--input_pattern`` still works, with a
warning.
"""

from __future__ import annotations

import glob
import os
import time
from typing import TYPE_CHECKING, NoReturn

from absl import flags

from align_tf import cli

if TYPE_CHECKING:
    import tensorflow as tf

_PROGRESS_EVERY = 100_000
PROG = __name__  # the name in messages when main runs in-process (cli.program: under cli.run)
FORMATS = ("tfrecord", "txt", "webdataset", "img2dataset_tfrecord")
# align_tf.tokenizer.MODES' names, spelt here so --help answers before TensorFlow is imported.
TOKENIZERS = ("uncased", "multilingual", "cased")


def _format(files: list, fmt: str) -> str:
    """``fmt``, or the format of ``files`` from their extension (``.txt``/``.txt.gz``, ``.tar``,
    else TFRecord); raises ``ValueError`` for a mix."""
    if fmt:
        if fmt not in FORMATS:
            raise ValueError(f"unknown --format {fmt!r}; choose from {FORMATS}")
        return fmt
    kinds = {"txt" if f.endswith((".txt", ".txt.gz")) else "webdataset" if f.endswith(".tar")
             else "tfrecord" for f in files}
    if len(kinds) > 1:
        raise ValueError(f"mix of {' and '.join(sorted(kinds))} inputs; pass one kind")
    return kinds.pop()


def read_texts(pattern: str, max_texts: int = 0, progress_every: int = _PROGRESS_EVERY,
               fmt: str = "") -> tf.data.Dataset:
    """Captions from the files matching ``pattern`` (comma-separated globs; brace ranges too),
    in format ``fmt`` (``FORMATS``; "": from the extensions).

    Records that fail to parse, and samples without a readable caption, are skipped (the first
    few logged); ``max_texts`` > 0 stops after that many texts; progress is printed every
    ``progress_every`` texts.
    """
    import tensorflow as tf  # imported here, not at the top: --help and flag errors answer at once

    from align_tf.data import img2dataset, tfrecord, webdataset
    files = webdataset.expand(pattern)
    fmt = _format(files, fmt)
    text_files = files if fmt == "txt" else []
    if fmt == "webdataset":
        def captions():
            for path in files:
                for sample in webdataset.read_samples(path):
                    if sample is not None and not sample.error and sample.caption:
                        yield sample.caption

        ds = tf.data.Dataset.from_generator(captions,
                                            output_signature=tf.TensorSpec([], tf.string))
        ds = ds.filter(lambda t: tf.strings.length(tf.strings.strip(t)) > 0)
    elif text_files:
        ds = tf.data.TextLineDataset(
            text_files, compression_type="GZIP" if text_files[0].endswith(".gz") else None)
        ds = ds.filter(lambda t: tf.strings.length(tf.strings.strip(t)) > 0)
    else:
        records = tf.data.Dataset.from_tensor_slices(files).interleave(
            lambda f: tf.data.TFRecordDataset(f).map(lambda r: (f, r)).ignore_errors(log_warning=True),
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        keys = img2dataset.KEYS if fmt == "img2dataset_tfrecord" else tfrecord.KEYS
        caption = {keys[1]: tf.io.FixedLenFeature([], tf.string)}
        ds = tfrecord.map_skipping_errors(
            records, lambda fr: tf.io.parse_single_example(fr[1], caption)[keys[1]],
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


def _local_files(pattern: str) -> list | None:
    """The local files ``pattern`` names (``webdataset.expand``'s spelling, without TensorFlow),
    or None if any part is remote (``gs://``): for the checks made before TensorFlow loads."""
    from align_tf.data import webdataset
    if "://" in pattern:
        return None
    files = set()
    for part in filter(None, (p.strip() for p in webdataset._split_top_level_commas(pattern))):
        for name in webdataset.expand_braces(part):
            files.update(glob.glob(name) if any(c in name for c in "*?[") else
                         [name] if os.path.exists(name) else [])
    return sorted(files)


def input_problem(pattern: str, fmt: str = "") -> str | None:
    """Why ``--input=pattern`` can give no text, found without reading it (no files, a
    directory, only empty files), or None. Local files only."""
    files = _local_files(pattern)
    if files is None:
        return None
    if not files:
        return f"no files match --input={pattern}"
    folders = [f for f in files if os.path.isdir(f)]
    if folders:
        return (f"--input={pattern}: {folders[0]} is a directory; give its files, e.g. "
                f"{os.path.join(folders[0], '*.tfrecord')}")
    if all(os.path.getsize(f) == 0 for f in files):
        return f"--input={pattern}: 0 usable texts (every file is empty)"
    return None


def _no_texts(pattern: str, fmt: str) -> str:
    """The one line for an input that gave the learner no text at all."""
    files = _local_files(pattern) or []
    try:
        fmt = _format(files, fmt) if files else fmt or "tfrecord"
    except ValueError:
        fmt = fmt or "?"
    how = {"tfrecord": "as TFRecord shards with a 'caption' feature (a .csv or other file is "
                       "read so too: give .txt/.txt.gz files with one text per line, or "
                       "--format)",
           "txt": "as text files, one text per line",
           "webdataset": "as webdataset tars (the .txt/.json caption of each sample)",
           "img2dataset_tfrecord": "as img2dataset TFRecords (their 'txt' feature)"}.get(fmt, fmt)
    return f"--input={pattern} gave 0 usable texts, read {how}"


def _error(message) -> NoReturn:
    cli.error(cli.program(PROG), message)


def _define_flags(flag_values: flags.FlagValues) -> None:
    flags.DEFINE_string("input", None, "TFRecord shard glob(s), comma-separated, .txt/.txt.gz "
                        "files with one text per line, or webdataset tars (brace ranges too) "
                        "(required).", flag_values=flag_values)
    flags.DEFINE_enum("format", "", ("",) + FORMATS, "Input format (default: from the "
                      "extension: .txt/.txt.gz text, .tar webdataset, else our TFRecords).",
                      flag_values=flag_values)
    flags.DEFINE_string("output", None, "Vocabulary file to write (required).",
                        flag_values=flag_values)
    flags.DEFINE_integer("vocab_size", 30522, "Target size (tensorflow-text's learner lands near "
                         "it; paper: 100k).", lower_bound=1, flag_values=flag_values)
    flags.DEFINE_integer("max_texts", 0, "Use only the first N texts (0: all).", lower_bound=0,
                         flag_values=flag_values)
    flags.DEFINE_bool("lowercase", True, "BERT uncased normalisation (must match "
                      "TextPreprocessor's lowercase).", flag_values=flag_values)
    flags.DEFINE_enum("tokenizer", "", ("",) + TOKENIZERS, "Normalisation as the config's "
                      "data.tokenizer (wins over --lowercase): uncased, multilingual (lowercase, "
                      "keep accents), cased.", flag_values=flag_values)


# --input_pattern: the argparse-era spelling; --no-lowercase works too (cli.parse).
_PARSE = dict(required=("input", "output"), renamed={"--input_pattern": "--input"})


def parse_args(argv: list | None = None) -> flags.FlagValues:
    """``cli.parse_args`` with this command's flags (e.g. for calling ``main`` in-process)."""
    return cli.parse_args(PROG, argv, _define_flags, **_PARSE)


def main(argv: list, flag_values: flags.FlagValues | None = None) -> None:
    """absl main; ``flag_values``: parsed flags (default absl's ``FLAGS``, as ``run`` sets them)."""
    del argv  # cli.parse rejected positional arguments
    f = flags.FLAGS if flag_values is None else flag_values
    problem = input_problem(f.input, f.format)
    if problem:  # before TensorFlow is imported: one line at once
        _error(problem)
    from align_tf.tokenizer import build_vocabulary, mode_settings, save_vocabulary
    import tensorflow as tf
    start = time.time()
    try:
        texts = read_texts(f.input, f.max_texts, fmt=f.format)
    except (FileNotFoundError, ValueError) as e:  # no files match, mixed formats
        _error(e)
    try:  # now, not after learning: an unwritable --output would waste the whole run
        tf.io.gfile.makedirs(os.path.dirname(f.output) or ".")
    except Exception as e:  # tf.errors.OpError (permission, unknown scheme) is not an OSError
        _error(f"cannot write --output {f.output}: {e}")
    try:
        settings = mode_settings(f.tokenizer) if f.tokenizer else dict(lowercase=f.lowercase)
        vocab = build_vocabulary(texts, vocab_size=f.vocab_size, **settings)
    except StopIteration:  # tensorflow-text's learner, on a dataset without one text
        _error(_no_texts(f.input, f.format))
    save_vocabulary(vocab, f.output)
    print(f"wrote {len(vocab)} tokens to {f.output} in {time.time() - start:.1f}s")


def run() -> None:
    """``python -m align_tf.corpus.vocab`` (``align-vocab``)."""
    _define_flags(flags.FLAGS)
    cli.run(__name__, main, **_PARSE)


if __name__ == "__main__":
    run()
