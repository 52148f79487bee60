"""Thumbnails of indexed images, read through the index's source pointers.

Only a row's recorded ``source`` is ever opened (the server looks the id up in the index first,
so a made-up id such as ``../../etc/passwd`` never becomes a path), and only bytes that are an
image are served: a source that is no longer an image (a replaced file) is refused too.
"""

from __future__ import annotations

import functools
import io
import os

from align_tf.search.model import image_format
from align_tf.serve.forms import ApiError

THUMB_PX = 256  # longest side of a served thumbnail; smaller images are served as they are
MAX_SOURCE_BYTES = 64 << 20  # a bigger file is not worth decoding for a thumbnail
CONTENT_TYPES = {"jpeg": "image/jpeg", "png": "image/png", "gif": "image/gif",
                 "bmp": "image/bmp", "webp": "image/webp"}


def read_source(row: dict) -> bytes:
    """The image bytes of an index row (``{"id", "source", ...}``); ``ApiError`` 404 when its
    source is not a readable local image file (a URL, a member of a tar or TFRecord)."""
    source = row.get("source") or ""
    if "://" in source or not os.path.isfile(source):
        raise ApiError(404, f"no local image file for id {row['id']!r} (its source "
                            f"{source!r} is not a file on this machine)")
    try:
        if os.path.getsize(source) > MAX_SOURCE_BYTES:
            raise ApiError(404, f"the image of id {row['id']!r} is too large for a thumbnail")
        with open(source, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ApiError(404, f"cannot read the image of id {row['id']!r}: "
                            f"{e.strerror or e}") from None
    if image_format(data) is None:
        raise ApiError(404, f"the source of id {row['id']!r} is no longer an image")
    return data


@functools.lru_cache(maxsize=512)  # a result page asks for the same few dozen again and again
def thumbnail(source: str, row_id: str) -> tuple:
    """``(bytes, content type)``: the image as it is when its longest side is at most
    ``THUMB_PX``, else shrunk to that (JPEG, or PNG when it has transparency)."""
    data = read_source({"id": row_id, "source": source})
    fmt = image_format(data)
    from PIL import Image
    try:
        with Image.open(io.BytesIO(data)) as image:
            if max(image.size) <= THUMB_PX:
                return data, CONTENT_TYPES[fmt]
            image.thumbnail((THUMB_PX, THUMB_PX))
            alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
            out = io.BytesIO()
            if alpha:
                image.convert("RGBA").save(out, format="PNG")
            else:
                image.convert("RGB").save(out, format="JPEG", quality=85)
            return out.getvalue(), "image/png" if alpha else "image/jpeg"
    except Exception:  # noqa: BLE001 (Pillow raises many kinds for damaged data)
        # The indexer embedded it, so TensorFlow decodes it; serve it as it is.
        return data, CONTENT_TYPES[fmt]
