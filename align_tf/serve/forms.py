"""What a request carries: query-string and multipart parameters, checked into a query.

Every mistake is an ``ApiError`` (an HTTP status and a one-line message), which the server answers
as ``{"error": "..."}``; nothing here touches TensorFlow or the index.
"""

from __future__ import annotations

import email.message
import math
import urllib.parse

MAX_K = 1000  # more results than a page shows or a client needs; bounds the work per request
MAX_TERMS = 16  # plus + minus texts per query: each is one more text embedding
MAX_TEXT = 1000  # characters per text (the tokenizer truncates far earlier anyway)
SEARCH_PARAMS = ("text", "plus", "minus", "weight", "k")
REPEATABLE = ("plus", "minus")


class ApiError(Exception):
    """A bad request: ``status`` (4xx) and a one-line ``message``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, " ".join(str(message).split())


def query_pairs(query_string: str) -> dict:
    """``a=1&b=2&b=3`` → ``{"a": ["1"], "b": ["2", "3"]}``; blank values kept (so that an
    empty ``text=`` is reported as an empty query, not as a missing one)."""
    try:
        pairs = urllib.parse.parse_qsl(query_string, keep_blank_values=True, strict_parsing=False,
                                       errors="strict", max_num_fields=4 * MAX_TERMS)
    except UnicodeDecodeError:
        raise ApiError(400, "the query string is not UTF-8") from None
    except ValueError as e:  # more fields than max_num_fields
        raise ApiError(400, f"malformed query string: {e}") from None
    out = {}
    for name, value in pairs:
        out.setdefault(name, []).append(value)
    return out


def check_names(params: dict, allowed) -> None:
    """Every name in ``params`` is one of ``allowed``, and only repeatable ones repeat."""
    for name, values in params.items():
        if name not in allowed:
            raise ApiError(400, f"unknown parameter {name!r} (this route takes: "
                                f"{', '.join(allowed)})")
        if len(values) > 1 and name not in REPEATABLE:
            raise ApiError(400, f"parameter {name!r} given {len(values)} times")


def search_query(params: dict, image: bytes | None = None) -> dict:
    """Checked keyword arguments for ``Index.query``: ``text`` or ``image``, ``plus``, ``minus``,
    ``weight``, ``k``."""
    check_names(params, SEARCH_PARAMS)
    text = params.get("text", [None])[0]
    if text is not None:
        text = text.strip()
        if not text:
            raise ApiError(400, "empty query: give a non-empty text= or upload an image")
    if image is not None and text is not None:
        raise ApiError(400, "give a text or an image, not both")
    if image is None and text is None:
        raise ApiError(400, "empty query: give text= (GET) or upload an image (POST, "
                            "multipart field 'image')")
    plus, minus = params.get("plus", []), params.get("minus", [])
    for name, terms in (("plus", plus), ("minus", minus)):
        if any(not term.strip() for term in terms):
            raise ApiError(400, f"empty {name} term")
    if len(plus) + len(minus) > MAX_TERMS:
        raise ApiError(400, f"at most {MAX_TERMS} plus and minus terms in all")
    for value in [text or ""] + plus + minus:
        if len(value) > MAX_TEXT:
            raise ApiError(400, f"a text longer than {MAX_TEXT} characters")
    return {"text": text, "image": image, "plus": [t.strip() for t in plus],
            "minus": [t.strip() for t in minus], "weight": number(params, "weight", 1.0),
            "k": count(params)}


def _parameter(params: dict, name: str, default, convert, kind: str):
    """Parameter ``name`` through ``convert`` (``int``, ``float``), or ``default`` if absent."""
    raw = params.get(name, [None])[0]
    if raw is None:
        return default
    try:
        return convert(raw.strip())
    except ValueError:
        raise ApiError(400, f"{name} must be {kind}; got {raw!r}") from None


def count(params: dict, default: int = 10) -> int:
    """``k``: an integer in [1, MAX_K]."""
    k = _parameter(params, "k", default, int, "an integer")
    if not 1 <= k <= MAX_K:
        raise ApiError(400, f"k must be between 1 and {MAX_K}; got {k}")
    return k


def number(params: dict, name: str, default: float) -> float:
    """A finite float parameter."""
    value = _parameter(params, name, default, float, "a number")
    if not math.isfinite(value):
        raise ApiError(400, f"{name} must be finite; got {params[name][0]!r}")
    return value


def header_params(value: str, header: str = "content-type") -> email.message.Message:
    """A header parsed by the standard library (``get_content_type``, ``get_param``)."""
    message = email.message.Message()
    message[header] = value
    return message


def multipart(body: bytes, content_type: str, binary=("image",)) -> tuple:
    """A ``multipart/form-data`` body → ``(fields {name: [str]}, files {name: bytes})``; a part
    with a file name, or named in ``binary``, is a file.

    Parsed by hand (RFC 7578): a part's bytes are exactly what lies between its header block and
    the next ``CRLF--boundary``, so binary uploads come through untouched (``cgi`` is gone from
    the standard library, and ``email``'s parser is made for text)."""
    boundary = header_params(content_type).get_param("boundary")
    if not boundary or not isinstance(boundary, str):
        raise ApiError(400, "multipart/form-data without a boundary")
    chunks = (b"\r\n" + body).split(b"\r\n--" + boundary.encode("latin-1"))
    if len(chunks) < 2 or not chunks[-1].startswith(b"--"):
        raise ApiError(400, "malformed multipart body (no closing boundary)")
    fields, files = {}, {}
    for chunk in chunks[1:-1]:
        head, sep, data = chunk.partition(b"\r\n\r\n")
        if not sep or not head.startswith(b"\r\n"):
            raise ApiError(400, "malformed multipart body (a part without headers)")
        disposition = ""
        for line in head[2:].decode("utf-8", "replace").split("\r\n"):
            key, _, value = line.partition(":")
            if key.strip().lower() == "content-disposition":
                disposition = value.strip()
        parsed = header_params(disposition, "content-disposition")
        name = parsed.get_param("name", header="content-disposition")
        if not name or not isinstance(name, str):
            raise ApiError(400, "malformed multipart body (a part without a name)")
        if name in binary or parsed.get_param("filename", header="content-disposition"):
            if name in files:
                raise ApiError(400, f"more than one file in field {name!r}")
            files[name] = data
        else:
            try:
                fields.setdefault(name, []).append(data.decode("utf-8"))
            except UnicodeDecodeError:
                raise ApiError(400, f"field {name!r} is not UTF-8") from None
    return fields, files
