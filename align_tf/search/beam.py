"""The Beam pieces of ``align_tf.index``: read a part, embed it (RunInference), write it.

``PartModelHandler`` is RunInference's model handler for our SavedModel: ``load_model`` is
``tf.saved_model.load`` (through ``Embedder``), not Keras' ``load_model``, and an element is a
whole part (its images are embedded in ``batch_size`` batches inside), so that a part is read,
embedded and written in one fused step.
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from align_tf.search import indexer
from align_tf.search.model import Embedder


class PartModelHandler(ModelHandler):
    """RunInference over parts with the SavedModel at ``path`` (shared per worker)."""

    def __init__(self, path: str, batch_size: int = 64):
        # One part per RunInference batch: the part is already a batch of images.
        super().__init__(min_batch_size=1, max_batch_size=1)
        self._path, self._batch_size = path, batch_size

    def load_model(self) -> Embedder:
        return Embedder(self._path)

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
