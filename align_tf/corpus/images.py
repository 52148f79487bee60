"""The corpus builder's image stage: read an image (local, ``tf.io.gfile`` URI or http(s) URL),
apply the paper's image filters, and keep the bytes TensorFlow decodes as they are (JPEG, PNG) or
re-encode them as JPEG.
"""

from __future__ import annotations

import io
import logging
import time
import urllib.error
import urllib.request
from typing import Tuple

import apache_beam as beam
from apache_beam.metrics import Metrics

from align_tf.corpus import filters
from align_tf.corpus.config import METRICS_NAMESPACE, BuildConfig
from align_tf.corpus.inputs import Row

log = logging.getLogger(__name__)
_TF_READY_FORMATS = {"JPEG": ("L", "RGB"), "PNG": ("1", "L", "LA", "P", "RGB", "RGBA")}
MAX_FETCH_BYTES = 64 << 20  # larger downloads are treated as unreadable
_PROGRESS_EVERY = 1000

Kept = Tuple[Row, bytes, int, int]  # a row that passed every filter: (row, encoded, width, height)


def _gfile():
    import tensorflow as tf  # imported lazily: workers that never touch files skip the cost
    return tf.io.gfile


def read_image_bytes(ref: str, timeout: float = 20.0, retries: int = 2) -> bytes:
    """Bytes of a local/``tf.io.gfile`` path or an http(s) URL; raises ``OSError`` if unreadable."""
    if ref.startswith(("http://", "https://")):
        for attempt in range(retries + 1):
            try:
                request = urllib.request.Request(ref, headers={"User-Agent": "align_tf-build/0.1"})
                with urllib.request.urlopen(request, timeout=timeout) as response:
                    data = response.read(MAX_FETCH_BYTES + 1)
                if len(data) > MAX_FETCH_BYTES:
                    raise OSError(f"{ref}: larger than {MAX_FETCH_BYTES} bytes")
                return data
            except urllib.error.HTTPError as e:
                if e.code < 500 or attempt == retries:
                    raise OSError(f"{ref}: HTTP {e.code}") from None
            except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
                if attempt == retries:
                    raise OSError(f"{ref}: {e}") from None
            time.sleep(0.5 * 2 ** attempt)  # back off before retrying a flaky server
    try:
        with _gfile().GFile(ref, "rb") as f:
            return f.read()
    except Exception as e:  # gfile raises NotFoundError, PermissionDeniedError, ...
        raise OSError(f"{ref}: {e}") from None


def check_image(data: bytes, config: BuildConfig):
    """``(reason, None)`` for a dropped image, else ``(None, (encoded, width, height))``.

    The size filters read only the header; the full decode (which catches truncated files) runs
    only on images that pass them. Bytes TensorFlow decodes as they are (baseline/progressive
    JPEG in L/RGB, PNG) are kept byte for byte; anything else is re-encoded as JPEG.
    """
    import warnings

    from PIL import Image
    try:
        with warnings.catch_warnings():
            # A decompression-bomb warning means a huge image: treat it like an error.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            fmt, mode = image.format, image.mode
    except Exception:
        return "undecodable_image", None
    reason = filters.image_reason(width, height, config)
    if reason:
        return reason, None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image.load()  # full decode: raises on truncated/corrupt data
    except Exception:
        return "undecodable_image", None
    limit = config.max_shorter_side
    too_big = limit and min(width, height) > limit
    if not too_big and mode in _TF_READY_FORMATS.get(fmt, ()):
        return None, (data, width, height)
    image = image.convert("RGB")
    if too_big:
        scale = limit / min(width, height)
        width, height = max(1, round(width * scale)), max(1, round(height * scale))
        image = image.resize((width, height), Image.BICUBIC, reducing_gap=3.0)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=config.jpeg_quality)
    return None, (out.getvalue(), width, height)


class LoadImage(beam.DoFn):
    """``Row`` → ``(Row, encoded, width, height)``; drops go to ``dropped`` with their reason."""

    def __init__(self, config: BuildConfig):
        self.config = config
        self.checked = Metrics.counter(METRICS_NAMESPACE, "images_checked")

    def setup(self):
        self._seen, self._start = 0, time.time()

    def process(self, row: Row):
        self._seen += 1
        self.checked.inc()
        if self._seen % _PROGRESS_EVERY == 0:  # per worker: Beam has no global progress hook
            log.info("checked %d images (%.0f/s in this worker)", self._seen,
                     self._seen / max(time.time() - self._start, 1e-9))
        data = row.data
        if data is None:
            try:
                data = read_image_bytes(row.image, self.config.fetch_timeout,
                                        self.config.fetch_retries)
            except OSError:
                yield beam.pvalue.TaggedOutput("dropped", "missing_image")
                return
        reason, image = check_image(data, self.config)
        if reason:
            yield beam.pvalue.TaggedOutput("dropped", reason)
        else:
            yield (row,) + image
