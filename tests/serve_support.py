"""What tests/test_serve.py and tests/test_serve_browser.py share, built once per pytest process:
a generated folder of synthetic shapes (every format, nested folders, a space and non-ASCII
characters in names, one image larger than a thumbnail, a file beside the folder that no id may
reach), its index and a caption index built by ``align_tf.index`` with the session's tiny trained
SavedModel (conftest's ``tiny_run``), and one ``align_tf.serve`` server on them, started through
the command's own ``serve`` on a free loopback port. ``reference`` embeds with the SavedModel's
signatures, for the tests' own exact search.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import json
import os
import queue
import shutil
import tempfile
import threading
import urllib.error
import urllib.request

import numpy as np
from PIL import Image

from align_tf.data import synthetic

FORMATS = (("JPEG", "jpg"), ("PNG", "png"), ("GIF", "gif"), ("BMP", "bmp"), ("WEBP", "webp"))
CAPTIONS = [f"a {colour} {shape}" for colour in ("red", "green", "blue", "yellow")
            for shape in ("circle", "square", "star")] + ["something orange", "a purple cross"]
MAX_UPLOAD_MB = 0.05  # small, so the over-size request is cheap to send
BIG = "big/large render.png"  # larger than a thumbnail: the server shrinks it
_SHARED: dict = {}


def _encode(pixels: np.ndarray, fmt: str) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format=fmt)
    return out.getvalue()


def make_collection(root: str) -> dict:
    """Writes the folder; returns ``{id: bytes}`` of its images."""
    rng = np.random.default_rng(7)
    images = {}
    for i, pair in enumerate(synthetic.CLASSES[::2]):
        fmt, ext = FORMATS[i % len(FORMATS)]
        folder = f"{pair[0]}/{'more/' if i % 4 == 0 else ''}"
        name = f"{pair[1]} n°{i}" if i % 5 == 1 else f"{pair[1]} {i:02d}"
        images[f"{folder}{name}.{ext}"] = _encode(synthetic.render(pair, 40, rng)[0], fmt)
    images[BIG] = _encode(synthetic.render(("blue", "star"), 600, rng)[0], "PNG")
    for rel, data in images.items():
        os.makedirs(os.path.dirname(os.path.join(root, rel)), exist_ok=True)
        with open(os.path.join(root, rel), "wb") as f:
            f.write(data)
    return images


def index(model: str, source: str, output: str) -> None:
    """``python -m align_tf.index``, in-process, its printed stats swallowed."""
    from align_tf import index as command
    values, beam_args = command.parse_args([f"--model={model}", f"--input={source}",
                                            f"--output={output}", "--no-progress"])
    with contextlib.redirect_stdout(io.StringIO()):
        command.main(["align_tf.index"] + beam_args, values)


def start(argv: list) -> tuple:
    """``python -m align_tf.serve ARGV`` in a thread: ``(server, its start message)``."""
    from align_tf.serve import command
    values = command.parse_args(argv)
    ready, stream = queue.Queue(), io.StringIO()
    thread = threading.Thread(target=command.serve, args=(values, stream, ready.put), daemon=True)
    thread.start()
    server = ready.get(timeout=300)
    return server, stream.getvalue()


def shared(tiny_run: str) -> dict:
    """``{"root", "images", "secret", "savedmodel", "index", "captions", "server", "url",
    "banner"}``, built on first use."""
    if _SHARED:
        return _SHARED
    top = tempfile.mkdtemp(prefix="align_serve_")
    atexit.register(shutil.rmtree, top, True)
    root = os.path.join(top, "collection")
    images = make_collection(root)
    secret = os.path.join(top, "secret.jpg")  # beside the folder: no id may reach it
    shutil.copy(os.path.join(root, next(i for i in images if i.endswith(".jpg"))), secret)
    savedmodel = os.path.join(tiny_run, "savedmodel")
    with open(os.path.join(top, "captions.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(CAPTIONS) + "\n")
    index(savedmodel, f"images:{root}", os.path.join(top, "index"))
    index(savedmodel, f"captions:{os.path.join(top, 'captions.txt')}",
          os.path.join(top, "captions"))
    server, banner = start([f"--index={top}/index", f"--captions={top}/captions", "--port=0",
                            f"--max_upload_mb={MAX_UPLOAD_MB}"])
    _SHARED.update(root=root, images=images, secret=secret, savedmodel=savedmodel,
                   index=f"{top}/index", captions=f"{top}/captions", server=server,
                   url=f"http://127.0.0.1:{server.server_address[1]}", banner=banner)
    return _SHARED


def request(url: str, data: bytes | None = None, headers: dict | None = None,
            method: str | None = None) -> tuple:
    """``(status, headers, body bytes)``; a 4xx/5xx is returned, not raised."""
    req = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=60) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def get_json(url: str) -> tuple:
    status, _, body = request(url)
    return status, json.loads(body)


def multipart(fields: list, files: dict) -> tuple:
    """``(body, content type)`` of a form: ``fields`` ``[(name, value)]``, ``files``
    ``{name: (filename, bytes)}``."""
    boundary = "----align-serve-test-boundary"
    out = io.BytesIO()
    for name, value in fields:
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
                  f"{value}\r\n".encode())
    for name, (filename, data) in files.items():
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
                  f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
                  .encode() + data + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


def reference(served: dict) -> tuple:
    """``(embed_text, embed_image)`` straight from the SavedModel's ``text_embed`` and
    ``image_embed_encoded`` signatures (WebP decoded by Pillow first, as the indexer documents:
    ``tf.io.decode_image`` cannot read it). The module is the one the server loaded (loading it
    again costs seconds); only its raw signatures are called, none of the search code."""
    import tensorflow as tf
    module = served["server"].service.index.embedder.module
    assert os.path.samefile(served["server"].service.index.model_path, served["savedmodel"])
    image_fn, text_fn = module.signatures["image_embed_encoded"], module.signatures["text_embed"]

    def embed_image(data: bytes) -> np.ndarray:
        if data[8:12] == b"WEBP":
            data = _encode(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")), "PNG")
        out = image_fn(encoded=tf.constant([data]))
        assert out["valid"].numpy()[0]
        return out["embeddings"].numpy()[0].astype(np.float64)

    def embed_text(text: str) -> np.ndarray:
        return text_fn(texts=tf.constant([text]))["embeddings"].numpy()[0].astype(np.float64)

    return embed_text, embed_image
