"""The Beam pipeline of ``align_tf.index``: read a part, embed it (RunInference), write it;
then build the index (``index``: what the command runs).

``PartModelHandler`` is RunInference's model handler for our SavedModel: ``load_model`` is
``tf.saved_model.load`` (through ``Embedder``), not Keras' ``load_model``, and an element is a
whole part (its images are embedded in ``batch_size`` batches inside), so that a part is read,
embedded and written in one fused step.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from concurrent.futures import ThreadPoolExecutor

import apache_beam as beam
from apache_beam.ml.inference.base import ModelHandler, PredictionResult, RunInference
from apache_beam.options.pipeline_options import PipelineOptions

from align_tf.search import files
from align_tf.search import index as index_lib
from align_tf.search import indexer
from align_tf.search.model import Embedder, SearchError, identity, resolve


PARTS_PER_BATCH = 100  # parts per todo file: 10^5 ids at --shard_size=1000, a few MB


class PartModelHandler(ModelHandler):
    """RunInference over parts with the SavedModel at ``path`` (shared per worker)."""

    def __init__(self, path: str, batch_size: int = 64):
        # One part per RunInference batch: the part is already a batch of images.
        super().__init__(min_batch_size=1, max_batch_size=1)
        self._model_path, self._batch_size = path, batch_size

    def load_model(self) -> Embedder:
        return Embedder(self._model_path)

    def run_inference(self, batch, model, inference_args=None):
        for part in batch:
            yield PredictionResult(part["name"], indexer.embed_part(part, model, self._batch_size))

    def get_metrics_namespace(self) -> str:
        return "align_tf_index"


class ReadPart(beam.DoFn):
    """A planned part → its files read and classified (``indexer.read_part``)."""

    def process(self, part):
        yield indexer.read_part(part)


class WritePart(beam.DoFn):
    """Writes an embedded part atomically; reports progress; the fault-injection stop."""

    def __init__(self, index_dir: str, dtype: str, total_images: int, total_parts: int,
                 stop_after: int = 0, progress: bool = True):
        self.index_dir, self.dtype, self.stop_after = index_dir, dtype, stop_after
        self.totals, self.show = (total_images, total_parts), progress

    def setup(self):
        self.progress = indexer.Progress(*self.totals, enabled=self.show)

    def process(self, result):
        part = result.inference
        indexer.write_part(self.index_dir, part, self.dtype)
        indexer.COUNTERS["parts"] += 1
        self.progress.update(len(part["ids"]))
        if self.stop_after and indexer.COUNTERS["parts"] >= self.stop_after:
            raise indexer.Stopped(f"{indexer.STOP_ENV}={self.stop_after}")
        return []


def index(model: str, spec: str, index_dir: str, *, append: bool = False,
          shard_size: int = indexer.SHARD_SIZE, dtype: str = "float32", batch_size: int = 64,
          pipeline_args: list | None = None, progress: bool = True, **build_kwargs) -> dict:
    """What ``python -m align_tf.index`` does; returns the contents of ``stats.json``.

    ``build_kwargs`` (``exact_below``, ``budget_bytes``) go to ``index.build``.
    """
    if dtype not in ("float32", "float16"):
        raise SearchError(f"dtype must be float32 or float16; got {dtype!r}")
    path = resolve(model)
    recorded = {"path": path, "hash": identity(path)}
    indexer.parse_input(spec)
    files.makedirs(index_dir)
    plan = indexer.make_plan(index_dir, spec, recorded, shard_size, append)
    # Resume: a part is done iff its file exists under its final name (written atomically). One
    # listing, not an existence check per part: 10^4 parts on gs:// are 10 requests, not 10^4.
    done = set(files.listdir(files.join(index_dir, "parts")))
    todo = [p for p in plan["parts"] if p["name"] + ".npz" not in done]
    if todo:
        _run_pipeline(todo, path, index_dir, dtype, batch_size, pipeline_args or [], progress)
    return index_lib.build(index_dir, plan, recorded, **build_kwargs)


def write_todo(index_dir: str, parts: list) -> list:
    """The parts to embed as ``todo/batch-NNNNN.json`` files (``PARTS_PER_BATCH`` each); their
    paths. Parts reach the runner as files, not as ``beam.Create`` values: those travel inside
    the job description, which Dataflow caps at about 10 MB (a few 10^5 ids of ``images:DIR``).
    Each run rewrites them (atomically: an earlier run's file is replaced whole) before its
    pipeline, and hands the pipeline exactly the paths it wrote."""
    todo_dir = files.join(index_dir, "todo")
    files.makedirs(todo_dir)
    batches = {files.join(todo_dir, f"batch-{number:05d}.json"):
               parts[start:start + PARTS_PER_BATCH]
               for number, start in enumerate(range(0, len(parts), PARTS_PER_BATCH))}

    def write(path):
        files.write_bytes(path, json.dumps(batches[path]).encode("utf-8"))

    with ThreadPoolExecutor(16) as pool:  # 10^3 batch files on gs://: seconds, not minutes
        list(pool.map(write, batches))
    return list(batches)


def read_todo(path: str) -> list:
    """The parts of one ``write_todo`` file."""
    return json.loads(files.read_bytes(path).decode("utf-8"))


def _run_pipeline(parts, model_path, index_dir, dtype, batch_size, args, progress) -> None:
    args = list(args)
    if not any(a.startswith("--runner") for a in args):
        args.append("--runner=DirectRunner")
    if not any(a.startswith("--direct_running_mode") for a in args):
        args.append("--direct_running_mode=in_memory")
    # Beam's INFO lines (BatchElements statistics, ...) would interleave with the progress line.
    logging.getLogger("apache_beam").setLevel(logging.WARNING)
    stop_after = int(os.environ.get(indexer.STOP_ENV, "0") or 0)
    indexer.COUNTERS["parts"] = 0
    total = sum(len(p.get("ids", ())) for p in parts)  # sample shards: counted as read
    batches = write_todo(index_dir, parts)
    try:
        with beam.Pipeline(options=PipelineOptions(args)) as pipeline:
            _ = (pipeline
                 | "Batches" >> beam.Create(batches)
                 | "Parts" >> beam.FlatMap(read_todo)
                 | "Spread" >> beam.Reshuffle()
                 | "Read" >> beam.ParDo(ReadPart())
                 | "Embed" >> RunInference(PartModelHandler(model_path, batch_size))
                 | "Write" >> beam.ParDo(WritePart(index_dir, dtype, total, len(parts),
                                                   stop_after, progress)))
    except Exception as e:  # Beam wraps what a DoFn raised
        if stop_after and indexer.COUNTERS["parts"] >= stop_after:
            raise indexer.Stopped(f"stopped after {indexer.COUNTERS['parts']} parts "
                                  f"({indexer.STOP_ENV})") from e
        raise
    if progress:
        sys.stderr.write("\n")
