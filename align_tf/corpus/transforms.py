"""The corpus builder's Beam graph: parse, corpus-wide text statistics, the paper's filters,
images, deterministic shards and ``stats.json`` (``build_pipeline``).

Corpus-wide statistics are Beam combines over the whole input, never per-worker guesses: distinct
images per alt-text, and n-gram counts whose top-``ngram_vocab_size`` boundary comes from a
histogram of counts. Text filters run before any image is fetched.
"""

from __future__ import annotations

import posixpath

import apache_beam as beam
from apache_beam.metrics import Metrics

from align_tf.corpus import filters, output
from align_tf.corpus.config import METRICS_NAMESPACE, BuildConfig
from align_tf.corpus.images import Kept, LoadImage
from align_tf.corpus.inputs import (SAMPLE_FORMATS, ParseRow, ReadSamples, ReadTable, Row,
                                    input_format)
from align_tf.data import webdataset


def _decide(element):
    """Joins a text's rows with its corpus-wide statistics; yields rows or tagged drops."""
    _, grouped = element
    shared = bool(grouped["shared"])
    rare = bool(grouped["rare"])
    for row in grouped["rows"]:
        if shared:
            yield beam.pvalue.TaggedOutput("dropped", "shared_text")
        elif rare:
            yield beam.pvalue.TaggedOutput("dropped", "rare_token")
        else:
            yield row


def _word_filter(row: Row, config: BuildConfig):
    reason = filters.word_count_reason(row.text, config)
    if reason:
        yield beam.pvalue.TaggedOutput("dropped", reason)
    else:
        yield row


def _with_drops(transform, main_type, main="rows"):
    """``transform`` with a main output of ``main_type`` and a ``dropped`` output of reasons.

    The tagged output's type is declared, not inferred: Beam >= 2.78 infers the main output of a
    DoFn that also yields ``TaggedOutput`` as ``Union[main, TaggedOutput]``, which then fails the
    type check of the next transform.
    """
    return transform.with_output_types(main_type, dropped=str).with_outputs("dropped", main=main)


def _count(reason: str) -> str:
    Metrics.counter(METRICS_NAMESPACE, reason).inc()
    return reason


def build_pipeline(pipeline: beam.Pipeline, input_pattern: str, output_dir: str,
                   config: BuildConfig) -> None:
    """Adds the builder's transforms to ``pipeline`` (run it to build the corpus)."""
    if config.num_shards < 1:
        raise ValueError("num_shards must be >= 1")
    parsed, damaged = _read(pipeline, input_pattern, config)
    rows = parsed.rows

    # Corpus-wide statistics over every parsed row (the paper's "raw dataset").
    shared, top_shared = _shared_texts(pipeline, rows, config)
    words_ok = rows | "WordCount" >> _with_drops(beam.FlatMap(_word_filter, config), Row)
    threshold, rare_texts = _rare_texts(pipeline, rows, words_ok.rows, config)

    joined = ({"rows": words_ok.rows | "ByKey" >> beam.Map(lambda r: (r.key, r)),
               "shared": shared, "rare": rare_texts}
              | "JoinText" >> beam.CoGroupByKey()
              | "TextFilters" >> _with_drops(beam.FlatMap(_decide), Row))

    images = joined.rows | "LoadImage" >> _with_drops(beam.ParDo(LoadImage(config)), Kept,
                                                      main="kept")
    shards = _write_shards(pipeline, images.kept, output_dir, config)

    outcomes = ((parsed.dropped, words_ok.dropped, joined.dropped, images.dropped,
                 images.kept | "Kept" >> beam.Map(lambda _: "kept"))
                | "AllOutcomes" >> beam.Flatten()
                | "Metrics" >> beam.Map(_count)
                | "CountOutcomes" >> beam.combiners.Count.PerElement()
                | "OutcomeList" >> beam.combiners.ToList())
    AsS, AsL = beam.pvalue.AsSingleton, beam.pvalue.AsList  # noqa: N806
    _ = (pipeline | "StatsTrigger" >> beam.Create([None])
         | "WriteStats" >> beam.Map(
             output.write_stats, path=posixpath.join(output_dir, "stats.json"),
             outcomes=AsS(outcomes), shards=AsL(shards), threshold=AsS(threshold),
             shared=AsS(top_shared), damaged=AsL(damaged), config=config))


def _read(pipeline, input_pattern: str, config: BuildConfig):
    """``(parsed, damaged)``: the parsed rows (``.rows``, ``.dropped``) and the input files that
    ended early (sample inputs; none for tables)."""
    fmt = input_format(input_pattern, config.format)
    if fmt in SAMPLE_FORMATS:
        parsed = pipeline | "ReadSamples" >> ReadSamples(webdataset.expand(input_pattern), fmt)
        return parsed, parsed.damaged
    image_root = config.image_root or posixpath.dirname(input_pattern) or "."
    parsed = (pipeline | "Read" >> ReadTable(input_pattern, config)
              | "Parse" >> _with_drops(beam.ParDo(ParseRow(config, image_root)), Row))
    return parsed, pipeline | "NoDamage" >> beam.Create([])


def _shared_texts(pipeline, rows, config: BuildConfig):
    """``(shared, top_shared)``: ``(text key, distinct images)`` of the alt-texts shared by more
    than ``max_images_per_text`` images, and the 10 most shared of them (for ``stats.json``)."""
    if not config.max_images_per_text:
        return (pipeline | "NoShared" >> beam.Create([]),
                pipeline | "NoTop" >> beam.Create([[]]))
    images_per_text = (rows | "TextImage" >> beam.Map(lambda r: (r.key, r.image))
                       | "DistinctTextImage" >> beam.Distinct()
                       | "TextOf" >> beam.Map(lambda kv: kv[0])
                       | "ImagesPerText" >> beam.combiners.Count.PerElement())
    shared = images_per_text | "Shared" >> beam.Filter(
        lambda kv, limit: kv[1] > limit, config.max_images_per_text)
    return shared, shared | "TopShared" >> beam.combiners.Top.Of(10, key=lambda kv: (kv[1], kv[0]))


def _rare_texts(pipeline, rows, candidates, config: BuildConfig):
    """``(threshold, rare_texts)``: the n-gram count the top ``ngram_vocab_size`` need (counted
    over all ``rows``), and ``(text key, True)`` for each of ``candidates``' texts with a rare
    n-gram."""
    if not config.rare_filter_enabled:
        return pipeline | "NoThreshold" >> beam.Create([0]), pipeline | "NoRare" >> beam.Create([])
    ngram_counts = (rows | "Ngrams" >> beam.FlatMap(lambda r: filters.ngrams(r.text))
                    | "CountNgrams" >> beam.combiners.Count.PerElement())
    histogram = (ngram_counts | "CountOf" >> beam.Map(lambda kv: kv[1])
                 | "Histogram" >> beam.combiners.Count.PerElement()
                 | "HistogramList" >> beam.combiners.ToList())
    threshold = histogram | "Threshold" >> beam.Map(
        filters.count_threshold, config.ngram_vocab_size, config.min_ngram_count)
    rare_ngrams = (ngram_counts
                   | "RareNgrams" >> beam.Filter(lambda kv, t: kv[1] < t,
                                                 beam.pvalue.AsSingleton(threshold))
                   | "RareMark" >> beam.Map(lambda kv: (kv[0], True)))
    # Which texts contain a rare n-gram: a join on the n-gram, then back to the text key.
    text_ngrams = (candidates | "Keys" >> beam.Map(lambda r: r.key)
                   | "DistinctKeys" >> beam.Distinct()
                   | "TextNgrams" >> beam.FlatMap(
                       lambda k: [(g, k) for g in filters.checked_ngrams(k, config)]))
    rare_texts = ({"rare": rare_ngrams, "texts": text_ngrams} | "JoinNgrams" >> beam.CoGroupByKey()
                  | "RareTexts" >> beam.FlatMap(
                      lambda kv: [(k, True) for k in kv[1]["texts"]] if kv[1]["rare"] else [])
                  | "DistinctRare" >> beam.Distinct())
    return threshold, rare_texts


def _write_shards(pipeline, kept, output_dir: str, config: BuildConfig):
    """Writes the kept examples into ``num_shards`` deterministic shards; ``(index, count)`` per
    shard. Every shard index is present, so empty shards are written too."""
    n = config.num_shards
    output_prefix = posixpath.join(output_dir, config.shard_prefix)
    examples = kept | "Serialize" >> beam.Map(output.keyed_example, n)
    indices = pipeline | "ShardIndices" >> beam.Create([(i, None) for i in range(n)])
    return ({"examples": examples, "index": indices} | "GroupShards" >> beam.CoGroupByKey()
            | "WriteShards" >> beam.ParDo(output.WriteShard(output_prefix, n)))
