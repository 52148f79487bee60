"""``cxc:DIR``: Crisscrossed Captions (Parekh et al., EACL 2021, arXiv 2004.15020) over the MS-COCO
Karpathy val/test splits: human similarity ratings (``agg_score``, 0–5) of caption–caption (STS),
image–image (SIS) and caption–image (SITS) pairs.

``DIR`` is a ``coco_karpathy`` directory (``dataset_coco.json``, ``val2014/``) plus ``DIR/cxc/``,
the CxC repository's ``data/`` folder as downloaded::

    DIR/cxc/sits_test.csv   caption,image,agg_score,sampling_method
    DIR/cxc/sts_test.csv    caption1,caption2,agg_score,sampling_method
    DIR/cxc/sis_test.csv    image1,image2,agg_score,sampling_method
    (and *_val.csv; *_raw.csv, each annotator's score, are ignored)

Captions are spelt ``COCO_val2014:sentid:648388`` (Karpathy's ``sentid``), images by file name
(``COCO_val2014_000000431431.jpg``). The test files are read by default; ``eval.split=val``
(``--split=val``) or a ``:val`` suffix (``cxc:DIR:val``) reads the others.

Errors and skips: a missing CSV or image, a header other than the above, a bad ``agg_score`` or
an id that is not in the Karpathy split is a one-line error naming it
(CxC rates only the split's captions and images, so such a row means the wrong files). A rated
caption that is an image's 6th or 7th sentence (the galleries keep the first 5, as the retrieval
protocol does) or whose image ``max_examples`` left out is skipped and counted
(``num_skipped_pairs``).
"""

from __future__ import annotations

import csv
import io
import os
import re

import numpy as np
import tensorflow as tf

from align_tf.data.sources.base import Source, option
from align_tf.data.sources.collections import RetrievalData
from align_tf.data.sources.karpathy import CAPTIONS_PER_IMAGE, CocoKarpathySource, KarpathySplit
from align_tf.data.sources.registry import register_source

CXC = "cxc"  # the kind of data cxc:DIR yields: a captioned split with rated pairs
TASKS = ("sits", "sts", "sis")
HEADERS = {"sits": ("caption", "image", "agg_score", "sampling_method"),
           "sts": ("caption1", "caption2", "agg_score", "sampling_method"),
           "sis": ("image1", "image2", "agg_score", "sampling_method")}
# How CxC chose each pair (documentation only: every rated pair counts, whatever its method).
SAMPLING_METHODS = {"sits": ("c2i_intrasim", "c2i_original"),
                    "sts": ("c2c_cocaption", "c2c_isim"), "sis": ("i2i_csim",)}
_CAPTION_ID = re.compile(r"^COCO_(?:val|train)2014:sentid:(\d+)$")


class CxCData(RetrievalData):
    """The Karpathy split's images and first 5 captions (``RetrievalData``) with CxC's rated pairs.

    Attributes:
      text_to_image: each caption's image index (captions in image order).
      pairs: ``{"sits": (caption, image, score), "sts": (caption, caption, score), "sis": (image,
        image, score)}``, index arrays into the captions / images and float scores.
      num_skipped: ``{task: rated pairs skipped}`` (module docstring).
    """

    def __init__(self, name, make_examples, captions_per_image, text_to_image=None, pairs=None,
                 num_skipped=None):
        super().__init__(name, make_examples, captions_per_image)
        self.text_to_image, self.pairs, self.num_skipped = text_to_image, pairs, num_skipped
        self.table = True  # its evaluators print the paper's tables

    def embeddings(self, encoder) -> tuple:
        """``(image embeddings, caption embeddings)`` as the retrieval evaluator computes them,
        once per ``encoder.fixed_weights`` block (shared by CxC retrieval and correlation)."""
        def embed():
            images, captions, text_to_image, _ = self.embed_images(encoder)
            if not np.array_equal(text_to_image, self.text_to_image):
                raise ValueError(f"{self.name}: the embedded captions are not the split's")
            return images, encoder.embed_texts(captions)
        return encoder.memoize((self, "cxc"), embed)


def _rows(path: str, task: str):
    """``(line number, row)`` of one CxC CSV after checking its header."""
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"cxc: {path} does not exist (the CxC repository's data/ folder "
                                "goes in DIR/cxc/; docs/evaluation.md)")
    with tf.io.gfile.GFile(path) as f:
        reader = csv.reader(io.StringIO(f.read()))
    header = tuple(h.strip() for h in next(reader, ()))
    if header != HEADERS[task]:
        raise ValueError(f"cxc: {path}: header {','.join(header)!r}, expected "
                         f"{','.join(HEADERS[task])!r}")
    for line, row in enumerate(reader, start=2):
        if row:
            yield line, row


def read_pairs(path: str, task: str, caption_index: dict, image_index: dict,
               known_sentids: set, images_kept: int) -> tuple:
    """``((first, second, score) arrays, skipped)`` of one CxC CSV.

    ``caption_index``: sentid → caption index (the first 5 of each kept image);
    ``known_sentids``: every sentid of the split; ``image_index``: file name → image (the whole
    split); ``images_kept``: images embedded (``max_examples``). Unknown ids raise (module
    docstring).
    """
    kinds = {"sits": ("caption", "image"), "sts": ("caption", "caption"),
             "sis": ("image", "image")}[task]
    first, second, scores, skipped = [], [], [], 0
    for line, row in _rows(path, task):
        where = f"cxc: {os.path.basename(path)} line {line}"
        if len(row) != 4:
            raise ValueError(f"{where}: {len(row)} fields, expected 4")
        try:
            score = float(row[2])
        except ValueError:
            raise ValueError(f"{where}: agg_score {row[2]!r} is not a number") from None
        ids = []
        for kind, value in zip(kinds, row[:2]):
            ids.append(_index(kind, value.strip(), where, caption_index, image_index,
                              known_sentids, images_kept))
        if None in ids:
            skipped += 1
            continue
        first.append(ids[0])
        second.append(ids[1])
        scores.append(score)
    return (np.asarray(first, np.int64), np.asarray(second, np.int64),
            np.asarray(scores, np.float64)), skipped


def _index(kind, value, where, caption_index, image_index, known_sentids, images_kept):
    """The caption or image index of one id; None where the protocol skips it."""
    if kind == "image":
        if value not in image_index:
            raise ValueError(f"{where}: image {value!r} is not in the Karpathy split")
        index = image_index[value]
        return index if index < images_kept else None
    match = _CAPTION_ID.match(value)
    if not match:
        raise ValueError(f"{where}: caption id {value!r} is not spelt COCO_val2014:sentid:N")
    sentid = int(match.group(1))
    if sentid not in known_sentids:
        raise ValueError(f"{where}: caption {value!r} (sentid {sentid}) is not in the Karpathy "
                         "split")
    return caption_index.get(sentid)  # None: a 6th/7th sentence, or its image left out


def crisscrossed(directory: str, split: str, max_images: int | None = None,
                 name: str = CXC) -> CxCData:
    """The CxC ``split`` (``test`` or ``val``) of ``directory`` (module docstring)."""
    coco = CocoKarpathySource(directory)
    whole = coco.read(split)  # the whole split: ids are checked against all of it
    images_kept = min(len(whole), max_images or len(whole))
    kept = KarpathySplit(name, split, whole.paths[:images_kept],
                                  whole.filenames[:images_kept], whole.captions[:images_kept],
                                  whole.sentids[:images_kept])
    caption_index = {s: i for i, s in enumerate(s for ids in kept.sentids for s in ids)}
    image_index = {f: i for i, f in enumerate(whole.filenames)}
    pairs, skipped = {}, {}
    for task in TASKS:
        path = os.path.join(directory, "cxc", f"{task}_{split}.csv")
        pairs[task], skipped[task] = read_pairs(path, task, caption_index, image_index,
                                                whole.all_sentids, images_kept)
    return kept.retrieval_data(CAPTIONS_PER_IMAGE, cls=CxCData,
                               text_to_image=kept.text_to_image(), pairs=pairs,
                               num_skipped=skipped)


@register_source(CXC)
class CxCSource(Source):
    """Crisscrossed Captions (``cxc:DIR[:val]``): CxC retrieval and SITS/STS/SIS correlation."""

    takes_argument = True
    argument_name = "DIR"

    def __init__(self, argument: str = ""):
        super().__init__(argument)
        head, colon, tail = argument.rpartition(":")
        self.directory, self.split = (head, tail) if colon and tail in ("val", "test") \
            else (argument, None)

    def kinds(self, options=None) -> set:
        return {CXC}

    def crisscrossed(self, options) -> CxCData:
        """The rated split: the spec's, else ``eval.split`` (``test`` by default, or ``val``)."""
        split = self.split or option(options, "split") or "test"
        if split not in ("val", "test"):
            raise ValueError(f"{self.spec}: CxC has the splits 'val' and 'test', not {split!r}")
        return crisscrossed(self.directory, split, option(options, "max_examples"))

    def retrieval(self, options, download: bool = False):
        return self.crisscrossed(options)
