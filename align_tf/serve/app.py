"""The routes: what each request is answered with, apart from HTTP itself (``server``).

``Service`` holds the index (and the optional caption index), loaded once; ``Service.handle``
turns ``(method, path, query string, content type, body)`` into a ``Response``. Every mistake is
a 4xx ``Response`` with ``{"error": "..."}``, so a bad request never stops the server.
"""

from __future__ import annotations

import json
import time
import urllib.parse
from dataclasses import dataclass, field

from align_tf.serve import forms, thumbnails
from align_tf.serve.forms import ApiError

JSON = "application/json; charset=utf-8"


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str = JSON
    headers: dict = field(default_factory=dict)


def json_response(obj, status: int = 200, **headers) -> Response:
    return Response(status, json.dumps(obj, ensure_ascii=False).encode("utf-8"),
                    headers={"Cache-Control": "no-store", **headers})


def error_response(status: int, message: str, **headers) -> Response:
    """``{"error": message}`` on one line."""
    return json_response({"error": " ".join(str(message).split())}, status, **headers)


class Service:
    """The server's state: ``index`` (an ``align_tf.search.Index``), ``captions`` (a caption
    index, or None) and the upload limit in bytes."""

    def __init__(self, index, captions=None, max_upload: int = 10 << 20):
        self.index, self.captions, self.max_upload = index, captions, max_upload
        self.by_id = {row["id"]: row for row in index.rows}
        self.routes = {("GET", "/"): self.page, ("GET", "/api/health"): self.health,
                       ("GET", "/api/search"): self.search_get,
                       ("POST", "/api/search"): self.search_post,
                       ("GET", "/api/thumbnail"): self.thumbnail,
                       ("POST", "/api/captions"): self.captions_post}

    def handle(self, method: str, target: str, content_type: str = "",
               body: bytes = b"") -> Response:
        """The answer to ``method target`` (``target`` the path and query string)."""
        url = urllib.parse.urlsplit(target)
        route = self.routes.get((method, url.path))
        if route is None:
            allowed = sorted(m for m, p in self.routes if p == url.path)
            if allowed:
                return error_response(405, f"{method} is not allowed on {url.path} (use "
                                           f"{', '.join(allowed)})", Allow=", ".join(allowed))
            paths = ", ".join(sorted({p for _, p in self.routes}))
            return error_response(404, f"no route {method} {url.path} (routes: {paths})")
        try:
            return route(url.query, content_type, body)
        except ApiError as e:
            return error_response(e.status, e.message)

    # -- routes: each takes (query string, content type, body) ---------------------------------

    def page(self, query, content_type, body) -> Response:
        from align_tf.serve.page import PAGE  # the query string is the page's own business
        return Response(200, PAGE.encode("utf-8"), "text/html; charset=utf-8",
                        {"Cache-Control": "no-cache"})

    def health(self, query, content_type, body) -> Response:
        forms.check_names(forms.query_pairs(query), ())
        return json_response({"status": "ok", "index": describe(self.index),
                              "captions": describe(self.captions) if self.captions else None,
                              "max_upload_bytes": self.max_upload})

    def search_get(self, query, content_type, body) -> Response:
        return self._search(self.index, forms.search_query(forms.query_pairs(query)))

    def search_post(self, query, content_type, body) -> Response:
        return self._search(self.index, self._posted(query, content_type, body))

    def captions_post(self, query, content_type, body) -> Response:
        if self.captions is None:
            raise ApiError(404, "no caption index: start the server with --captions=DIR (an "
                                "index built from --input=captions:FILE)")
        args = self._posted(query, content_type, body)
        if args["image"] is None:
            raise ApiError(400, "/api/captions takes an uploaded image (multipart field "
                                "'image')")
        return self._search(self.captions, args)

    def thumbnail(self, query, content_type, body) -> Response:
        params = forms.query_pairs(query)
        forms.check_names(params, ("id",))
        row_id = params.get("id", [""])[0]
        if not row_id:
            raise ApiError(400, "give id= (a result's id)")
        if self.index.meta.get("modality") == "text":
            raise ApiError(404, "this index holds captions, not images")
        row = self.by_id.get(row_id)
        if row is None:  # only ids in the index: an id is never taken as a path
            raise ApiError(404, f"no image with id {row_id!r} in the index")
        data, kind = thumbnails.thumbnail(row["source"], row_id)
        return Response(200, data, kind, {"Cache-Control": "max-age=3600"})

    # -- helpers ------------------------------------------------------------------------------

    def _posted(self, query: str, content_type: str, body: bytes) -> dict:
        """The query of a POST: a multipart form (field ``image`` plus text fields), a raw
        ``image/*`` body, or a urlencoded form; parameters in the query string count too."""
        params = forms.query_pairs(query)
        kind = forms.header_params(content_type or "").get_content_type()
        image = None
        if kind == "multipart/form-data":
            fields, files = forms.multipart(body, content_type)
            unexpected = sorted(set(files) - {"image"})
            if unexpected:
                raise ApiError(400, f"unexpected file field {unexpected[0]!r} (the upload "
                                    "goes in 'image')")
            image = files.get("image")
        elif kind == "application/x-www-form-urlencoded":
            if not body.isascii():
                raise ApiError(400, "a urlencoded form body must be ASCII (percent-encoded)")
            fields = forms.query_pairs(body.decode("ascii"))
        elif kind.startswith("image/") or kind == "application/octet-stream":
            fields, image = {}, body
        else:
            raise ApiError(415, f"unsupported Content-Type {kind!r}: send multipart/form-data "
                                "with the image in field 'image', or the image itself")
        for name, values in fields.items():
            params.setdefault(name, []).extend(values)
        if image is not None:
            check_image(image)
        return forms.search_query(params, image)

    def _search(self, index, args: dict) -> Response:
        from align_tf.search.model import SearchError
        start = time.perf_counter()
        try:
            results = index.query(**args)
        except SearchError as e:
            raise ApiError(400, str(e)) from None
        elapsed = (time.perf_counter() - start) * 1000
        return json_response({"results": results, "query_time_ms": round(elapsed, 3)})


def check_image(data: bytes) -> None:
    """An upload must be an image the index can embed (by its leading bytes)."""
    from align_tf.search.model import image_format
    if not data:
        raise ApiError(400, "empty upload: no image bytes")
    if image_format(data) is None:
        raise ApiError(415, "the upload is not an image (JPEG, PNG, GIF, BMP or WebP)")


def describe(index) -> dict:
    """What ``/api/health`` says of an index."""
    meta = index.meta
    return {"directory": index.directory, "count": meta["count"],
            "modality": meta.get("modality", "image"), "dim": meta["dim"],
            "kind": meta["params"]["kind"], "shards": len(meta["shards"]),
            "model": index.model_path}
