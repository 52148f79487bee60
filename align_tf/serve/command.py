"""Serves a search index built by ``python -m align_tf.index``: a JSON API and a web page.

    python -m align_tf.serve --index=INDEX_DIR [--captions=CAPTION_INDEX_DIR] [--port=8080]

Then open http://127.0.0.1:8080/ (text box, image drag-and-drop, +/− terms, a grid of results),
or query the API:

  GET  /api/search?text=T[&plus=T]...[&minus=T]...[&weight=1.0][&k=10]
  POST /api/search          an image (multipart field 'image', or the raw image body), with
                            optional plus / minus / weight / k
  POST /api/captions        an image → the best captions of the --captions index
  GET  /api/thumbnail?id=ID a result's image (ids in the index only)
  GET  /api/health

/api/search answers {"results": [{"id", "score", "source", "caption"}, ...], "query_time_ms"}:
the same results as ``python -m align_tf.search``. A bad request is a 4xx with
{"error": "..."} and the server goes on serving. It listens on 127.0.0.1 (this machine only)
unless --host says otherwise; there is no authentication.
"""

from __future__ import annotations

import ipaddress
import os
import sys

from absl import flags

from align_tf import cli

PROG = "align_tf.serve"


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """The command's flags on ``flag_values``."""
    fv = {"flag_values": flag_values}
    flags.DEFINE_string("index", None, "Index directory written by align_tf.index (required).",
                        **fv)
    flags.DEFINE_string("captions", None, "A caption index (align_tf.index "
                        "--input=captions:FILE) for image → caption queries "
                        "(POST /api/captions).", **fv)
    flags.DEFINE_string("host", "127.0.0.1", "Address to listen on; 127.0.0.1 serves this "
                        "machine only, 0.0.0.0 every network interface (no authentication).",
                        **fv)
    flags.DEFINE_integer("port", 8080, "Port to listen on (0: any free port).", lower_bound=0,
                         upper_bound=65535, **fv)
    flags.DEFINE_float("max_upload_mb", 10.0, "Largest accepted upload (request body), in MB "
                       "(2^20 bytes); a bigger one is answered 413.", lower_bound=0.001, **fv)
    flags.DEFINE_string("model", None, "The indexes' SavedModel, if it moved since indexing "
                        "(must be the same model); default the path each index records.", **fv)
    flags.DEFINE_bool("access_log", False, "Log one line per request on stderr.", **fv)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_service(f, stream=sys.stdout):
    """The ``app.Service`` of the flags: the index (and caption index) opened, the model loaded
    and warmed up once, so that the first request is as fast as the others."""
    from align_tf.search.index import Index
    from align_tf.search.model import SearchError
    from align_tf.serve.app import Service
    index = Index.load(f.index, model=f.model)
    captions = None
    if f.captions:
        captions = Index.load(f.captions, model=f.model)
        if captions.meta.get("modality") != "text":
            raise SearchError(f"--captions={f.captions} is an index of images; build a caption "
                              "index with --input=captions:FILE")
        captions.share_model(index)
    print(f"{PROG}: loading the model…", file=stream, flush=True)
    warm_up(index)
    if captions is not None:
        warm_up(captions)  # its own model, if another, is loaded now, not by two requests at once
    return Service(index, captions, max_upload=int(f.max_upload_mb * (1 << 20)))


def warm_up(index) -> None:
    """One text and one image query: traces both signatures before the first request."""
    import io

    from PIL import Image
    png = io.BytesIO()
    Image.new("RGB", (8, 8), (128, 64, 32)).save(png, format="PNG")
    index.query(text="warm up", k=1)
    index.query(image=png.getvalue(), k=1)


def serve(f, stream=sys.stdout, on_ready=None) -> None:
    """Listens, loads, says where, serves until interrupted; ``on_ready(server)`` is called just
    before serving (tests stop it with ``server.shutdown()``)."""
    prog = cli.program(PROG)
    if not os.path.exists(os.path.join(f.index, "index.json")):
        cli.error(prog, f"--index={f.index} is not a built index (no index.json); build it "
                        "with python -m align_tf.index")
    from align_tf.serve.server import Server
    try:  # listen first: a port in use is one line now, not after loading the model
        server = Server((f.host, f.port), access_log=f.access_log)
    except OSError as e:
        cli.error(prog, f"cannot listen on {f.host}:{f.port}: {e.strerror or e}")
    from align_tf.search.model import SearchError
    try:
        server.service = load_service(f, stream)
    except SearchError as e:
        server.server_close()
        cli.error(prog, e)
    host, port = server.server_address[:2]
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}/"
    where = ("loopback only: other machines cannot connect; --host=0.0.0.0 serves the network"
             if is_loopback(f.host) else "reachable from the network, with no authentication")
    print(f"{PROG}: serving {describe(server.service)} at {url} (bound to {host}: {where}); "
          "Ctrl-C stops", file=stream, flush=True)
    if on_ready is not None:
        on_ready(server)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print(f"{PROG}: stopped", file=stream, flush=True)
    finally:
        server.server_close()


def describe(service) -> str:
    meta = service.index.meta
    what = "captions" if meta.get("modality") == "text" else "images"
    text = f"{meta['count']} {what} from {service.index.directory}"
    if service.captions is not None:
        text += f" (+ {service.captions.meta['count']} captions from {service.captions.directory})"
    return text


def main(argv, flag_values: flags.FlagValues | None = None) -> None:
    """absl main; ``flag_values`` parsed by ``parse_args`` (in-process), default absl's
    ``FLAGS``."""
    del argv
    serve(flags.FLAGS if flag_values is None else flag_values)


def parse_args(argv: list | None = None) -> flags.FlagValues:
    """Command-line args (no program name) → a private ``FlagValues`` for ``main``/``serve``."""
    return cli.parse_args(PROG, argv, define_flags, required=("index",))


def run() -> None:
    """``python -m align_tf.serve`` (console script ``align-serve``)."""
    define_flags()
    cli.run(__name__, main, required=("index",))


if __name__ == "__main__":
    run()
