"""``python -m align_tf.serve``: every route of the JSON API and the page, every bad request
(each answered by a 4xx one-line JSON error, the server still serving after it), against exact
search the test computes itself over the SavedModel's own embeddings.

One server on one tiny index (and caption index) is shared with tests/test_serve_browser.py
(``serve_support.shared``), started through the command's ``serve`` in a thread.
"""

import json
import os
import socket
import subprocess
import sys
import threading
import urllib.parse

import numpy as np
import pytest

import serve_support as support
from serve_support import get_json, multipart, request

K = 5


@pytest.fixture(scope="module")
def served(tiny_run):
    return support.shared(tiny_run)


@pytest.fixture(scope="module")
def exact(served):
    """``search(q, ids_and_vectors=None, k)``: the exact top-k ``[(id, score)]`` of a unit
    query ``q`` over the collection's embeddings (or another ``(ids, vectors)``), plus the
    reference embedders."""
    embed_text, embed_image = support.reference(served)
    ids = sorted(served["images"])
    vectors = np.stack([embed_image(served["images"][i]) for i in ids])

    def search(q, over=(ids, vectors), k=K):
        scores = over[1] @ q
        order = np.argsort(-scores, kind="stable")[:k]
        return [(over[0][i], float(scores[i])) for i in order], dict(zip(over[0], scores))

    return search, embed_text, embed_image


def _unit(v):
    return v / np.linalg.norm(v)


def _assert_exact(answer, truth):
    """``answer`` (the API's JSON) is the exact top-k ``truth``: the pinned keys, the same
    scores rank by rank, the same ids but where two scores tie within float noise."""
    assert set(answer) == {"results", "query_time_ms"} and answer["query_time_ms"] > 0
    ranked, scores = truth
    assert len(answer["results"]) == len(ranked)
    for result, (true_id, true_score) in zip(answer["results"], ranked):
        assert list(result) == ["id", "score", "source", "caption"]
        assert result["score"] == pytest.approx(true_score, abs=2e-4)
        assert result["score"] == pytest.approx(scores[result["id"]], abs=2e-4)
        if result["id"] != true_id:
            assert abs(scores[result["id"]] - true_score) < 2e-4


def _post_image(url, data, fields=(), route="/api/search"):
    body, content_type = multipart(list(fields), {"image": ("query.bin", data)})
    status, _, out = request(url + route, body, {"Content-Type": content_type})
    return status, json.loads(out)


def _alive(url):
    status, health = get_json(url + "/api/health")
    assert status == 200 and health["status"] == "ok"


def test_start_message_and_health(served):
    banner, url = served["banner"], served["url"]
    assert f"serving {len(served['images'])} images from {served['index']}" in banner
    assert f"at {url}/ (bound to 127.0.0.1: loopback only" in banner
    status, health = get_json(url + "/api/health")
    assert status == 200
    assert health["status"] == "ok" and health["max_upload_bytes"] == int(
        support.MAX_UPLOAD_MB * (1 << 20))
    assert health["index"]["count"] == len(served["images"])
    assert health["index"]["modality"] == "image" and health["index"]["kind"] == "flat"
    assert health["captions"]["count"] == len(support.CAPTIONS)
    assert health["captions"]["modality"] == "text"
    from align_tf.serve import command
    assert command.parse_args(["--index=x"]).max_upload_mb == 10.0  # the default limit
    assert (command.parse_args(["--index=x"]).host, command.parse_args(["--index=x"]).port) == (
        "127.0.0.1", 8080)


def test_text_search_equals_exact_search(served, exact):
    search, embed_text, _ = exact
    url = served["url"]
    for text in ("a red circle", "a blue star", "something green"):
        status, answer = get_json(f"{url}/api/search?{urllib.parse.urlencode({'text': text})}"
                                  f"&k={K}")
        assert status == 200
        _assert_exact(answer, search(_unit(embed_text(text))))
    # The default k is the search CLI's, 10; + and − terms, weighted.
    status, answer = get_json(f"{url}/api/search?text=a+square")
    _assert_exact(answer, search(_unit(embed_text("a square")), k=10))
    query = urllib.parse.urlencode([("text", "a star"), ("plus", "red"), ("plus", "big"),
                                    ("minus", "blue"), ("weight", "0.5"), ("k", "7")])
    status, answer = get_json(f"{url}/api/search?{query}")
    q = embed_text("a star") + 0.5 * (embed_text("red") + embed_text("big")) \
        - 0.5 * embed_text("blue")
    _assert_exact(answer, search(_unit(q), k=7))
    top = answer["results"][0]
    assert top["source"] == os.path.join(served["root"], *top["id"].split("/"))
    assert top["caption"] is None


def test_image_search_equals_exact_search(served, exact):
    search, embed_text, embed_image = exact
    url, images = served["url"], served["images"]
    for image_id in [i for i in images if i != support.BIG][:5]:  # every format
        status, answer = _post_image(url, images[image_id], [("k", K)])
        assert status == 200, answer
        _assert_exact(answer, search(_unit(embed_image(images[image_id]))))
        assert answer["results"][0]["id"] == image_id
        assert answer["results"][0]["score"] == pytest.approx(1, abs=1e-4)
    image_id = next(i for i in images if i.endswith(".webp"))
    q = embed_image(images[image_id]) + 2 * embed_text("red") - 2 * embed_text("a circle")
    status, answer = _post_image(url, images[image_id], [("plus", "red"), ("minus", "a circle"),
                                                         ("weight", "2"), ("k", "8")])
    _assert_exact(answer, search(_unit(q), k=8))
    # The raw image as the body, parameters in the query string: the same answer.
    status, _, raw = request(f"{url}/api/search?plus=red&minus=a+circle&weight=2&k=8",
                             images[image_id], {"Content-Type": "image/webp"})
    assert status == 200 and json.loads(raw)["results"] == answer["results"]


def test_image_to_caption_equals_exact_search_over_the_captions(served, exact):
    search, embed_text, embed_image = exact
    ids = [str(n) for n in range(1, len(support.CAPTIONS) + 1)]  # a caption's id: its line
    vectors = np.stack([embed_text(c) for c in support.CAPTIONS])
    for image_id in list(served["images"])[:3]:
        data = served["images"][image_id]
        status, answer = _post_image(served["url"], data, [("k", "4")], route="/api/captions")
        assert status == 200, answer
        _assert_exact(answer, search(_unit(embed_image(data)), (ids, vectors), k=4))
        for result in answer["results"]:
            assert result["caption"] == support.CAPTIONS[int(result["id"]) - 1]


def test_thumbnails_are_the_indexed_images(served):
    from PIL import Image
    import io
    url, images = served["url"], served["images"]
    for image_id, data in images.items():
        status, headers, body = request(f"{url}/api/thumbnail?"
                                        f"{urllib.parse.urlencode({'id': image_id})}")
        assert status == 200, image_id
        assert headers["Content-Type"].startswith("image/")
        with Image.open(io.BytesIO(body)) as thumb:
            if image_id == support.BIG:  # 600 px: shrunk to at most 256
                assert max(thumb.size) == 256
            else:
                assert body == data  # small: served as it is
    assert any("°" in i for i in images) and any(" " in i for i in images)


def test_page_is_self_contained(served):
    status, headers, body = request(served["url"] + "/")
    page = body.decode()
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    for element in ('id="text"', 'id="file"', 'id="plus"', 'id="minus"', 'id="results"',
                    'id="drop"', "/api/search", "/api/thumbnail", "query_time_ms"):
        assert element in page
    # Offline: nothing is fetched from another host (no CDN, no external font or script).
    assert "http://" not in page and "https://" not in page and '"//' not in page
    assert "<script src" not in page and "<link" not in page


def _raw(url, data: bytes) -> bytes:
    """Sends ``data`` on a fresh connection; returns what comes back until the server closes
    (or stops sending for a second)."""
    host, port = urllib.parse.urlsplit(url).netloc.split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(data)
        sock.settimeout(1)
        out = b""
        try:
            while chunk := sock.recv(65536):
                out += chunk
        except (TimeoutError, socket.timeout):
            pass
    return out


def _bad_requests(served):
    """``(method, target, body, headers, status, message)`` of every kind of bad request."""
    images = served["images"]
    jpeg = next(v for k, v in images.items() if k.endswith(".jpg"))
    text_file, _ = multipart([("k", "3")], {"image": ("notes.txt", b"just some text")})
    corrupt, _ = multipart([], {"image": ("bad.jpg", jpeg[:20] + bytes(200))})
    no_image, _ = multipart([("k", "3")], {})
    both, ctype = multipart([("text", "a star")], {"image": ("a.jpg", jpeg)})
    two_files, _ = multipart([], {"image": ("a.jpg", jpeg), "other": ("b.jpg", jpeg)})
    big = b"\xff\xd8\xff" + bytes(int(support.MAX_UPLOAD_MB * (1 << 20)))  # one MB-limit over
    mp = {"Content-Type": ctype}
    secret = served["secret"]
    return [
        ("GET", "/api/search", None, {}, 400, "empty query"),
        ("GET", "/api/search?text=", None, {}, 400, "empty query"),
        ("GET", "/api/search?text=%20%20", None, {}, 400, "empty query"),
        ("GET", "/api/search?text=a&k=ten", None, {}, 400, "k must be an integer"),
        ("GET", "/api/search?text=a&k=0", None, {}, 400, "k must be between 1 and 1000"),
        ("GET", "/api/search?text=a&k=100000", None, {}, 400, "k must be between"),
        ("GET", "/api/search?text=a&weight=heavy", None, {}, 400, "weight must be a number"),
        ("GET", "/api/search?text=a&weight=inf", None, {}, 400, "weight must be finite"),
        ("GET", "/api/search?text=a&colour=red", None, {}, 400, "unknown parameter 'colour'"),
        ("GET", "/api/search?text=a&text=b", None, {}, 400, "'text' given 2 times"),
        ("GET", "/api/search?text=%ff%fe", None, {}, 400, "not UTF-8"),
        ("GET", "/api/search?text=a&plus=", None, {}, 400, "empty plus term"),
        ("POST", "/api/search", text_file, mp, 415, "the upload is not an image"),
        ("POST", "/api/search", b"plain text", {"Content-Type": "image/png"}, 415,
         "not an image"),
        ("POST", "/api/search", corrupt, mp, 400, "is not a decodable image"),
        ("POST", "/api/search", big, {"Content-Type": "image/jpeg"}, 413, "over the limit"),
        ("POST", "/api/search", no_image, mp, 400, "empty query"),
        ("POST", "/api/search", both, mp, 400, "not both"),
        ("POST", "/api/search", two_files, mp, 400, "unexpected file field 'other'"),
        ("POST", "/api/search", b"", mp, 400, "malformed multipart body"),
        ("POST", "/api/search", b"x", {"Content-Type": "multipart/form-data"}, 400,
         "without a boundary"),
        ("POST", "/api/search", b"text=a", {"Content-Type": "text/plain"}, 415,
         "unsupported Content-Type"),
        ("POST", "/api/captions", b"text=a+star",
         {"Content-Type": "application/x-www-form-urlencoded"}, 400, "takes an uploaded image"),
        ("GET", "/api/nothing", None, {}, 404, "no route GET /api/nothing"),
        ("GET", "/index.html", None, {}, 404, "no route"),
        ("PUT", "/api/search", b"", {}, 405, "PUT is not allowed on /api/search"),
        ("POST", "/api/health", b"", {}, 405, "use GET"),
        ("GET", "/api/thumbnail", None, {}, 400, "give id="),
        ("GET", "/api/thumbnail?id=x&size=9", None, {}, 400, "unknown parameter 'size'"),
        ("GET", "/api/thumbnail?id=nope.png", None, {}, 404, "no image with id"),
        # Path traversal: only ids of the index, never a path.
        ("GET", "/api/thumbnail?id=../secret.jpg", None, {}, 404, "no image with id"),
        ("GET", "/api/thumbnail?id=%2e%2e%2fsecret.jpg", None, {}, 404, "no image with id"),
        ("GET", "/api/thumbnail?id=red/../../secret.jpg", None, {}, 404, "no image with id"),
        ("GET", f"/api/thumbnail?{urllib.parse.urlencode({'id': secret})}", None, {}, 404,
         "no image with id"),
        ("GET", "/api/thumbnail/../../secret.jpg", None, {}, 404, "no route"),
        ("GET", "/../secret.jpg", None, {}, 404, "no route"),
    ]


def test_bad_requests_are_one_line_json_errors_and_the_server_keeps_serving(served):
    url = served["url"]
    secret = open(served["secret"], "rb").read()
    for method, target, body, headers, code, message in _bad_requests(served):
        status, response_headers, out = request(url + target, body, headers, method)
        case = f"{method} {target}: {out[:300]!r}"
        assert status == code, case
        assert response_headers["Content-Type"].startswith("application/json"), case
        assert out.count(b"\n") == 0 and list(json.loads(out)) == ["error"], case
        assert message in json.loads(out)["error"], case
        assert secret not in out
        if code == 405:
            assert response_headers["Allow"]
        _alive(url)


def test_malformed_http_and_early_size_refusal(served):
    """What the HTTP layer itself refuses is JSON too: a garbage request line, a POST with no
    Content-Length; a client that asks first (``Expect: 100-continue``) with an over-size
    upload gets the 413 before sending it."""
    url = served["url"]
    port = urllib.parse.urlsplit(url).port
    out = _raw(url, b"GARBAGE\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400") or out.startswith(b"HTTP/1.0 400")
    assert json.loads(out.split(b"\r\n\r\n", 1)[1])["error"]
    out = _raw(url, f"POST /api/search HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                    "Content-Type: image/png\r\n\r\n".encode())
    assert out.startswith(b"HTTP/1.1 411") and b"needs a Content-Length" in out
    out = _raw(url, f"POST /api/search HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                    "Content-Type: image/png\r\nContent-Length: 999999999\r\n"
                    "Expect: 100-continue\r\n\r\n".encode())
    assert out.startswith(b"HTTP/1.1 413") and b"100 Continue" not in out
    assert json.loads(out.split(b"\r\n\r\n", 1)[1])["error"].startswith(
        "the upload of 999999999 bytes is over the limit")
    _alive(url)


def test_concurrent_queries_get_the_same_answers(served):
    """Eight clients at once, text and image queries: every answer equals the one-at-a-time
    answer (the model and index are shared by the server's threads)."""
    url, images = served["url"], served["images"]
    image = next(v for k, v in images.items() if k.endswith(".png"))
    texts = ["a red circle", "a green square", "a blue star", "yellow"]
    alone = {t: get_json(f"{url}/api/search?text={urllib.parse.quote(t)}")[1]["results"]
             for t in texts}
    alone["image"] = _post_image(url, image)[1]["results"]
    answers, errors = [], []

    def client(n):
        try:
            for i in range(4):
                if (n + i) % 3 == 0:
                    answers.append(("image", _post_image(url, image)[1]["results"]))
                else:
                    t = texts[(n + i) % 4]
                    answers.append((t, get_json(f"{url}/api/search?text={urllib.parse.quote(t)}")
                                    [1]["results"]))
        except Exception as e:  # noqa: BLE001  reported below
            errors.append(e)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors and len(answers) == 32
    for key, results in answers:
        assert [r["id"] for r in results] == [r["id"] for r in alone[key]]
        np.testing.assert_allclose([r["score"] for r in results],
                                   [r["score"] for r in alone[key]], atol=1e-5)


def test_keep_alive_requests_do_not_wait_for_delayed_acks(served):
    """Twenty requests on one keep-alive connection: with Nagle's algorithm on, each answer's
    body would wait for the client's delayed ACK (≥ 40 ms on Linux), 0.8 s in all."""
    import http.client
    import time
    conn = http.client.HTTPConnection("127.0.0.1", served["server"].server_address[1],
                                      timeout=30)
    start = time.perf_counter()
    for _ in range(20):
        conn.request("GET", "/api/health")
        response = conn.getresponse()
        assert response.status == 200 and json.loads(response.read())["status"] == "ok"
    elapsed = time.perf_counter() - start
    conn.close()
    assert elapsed < 0.6, f"{elapsed:.2f} s for 20 keep-alive requests"


def test_command_line_mistakes_are_one_line(served, tmp_path):
    from align_tf.serve import command
    port = served["server"].server_address[1]
    cases = [(["--port=8080"], "--index is required"),
             ([f"--index={served['index']}", "--port=70000"], "--port"),
             ([f"--index={served['index']}", "--max_upload_mb=0"], "--max_upload_mb"),
             ([f"--index={tmp_path}"], "is not a built index"),
             ([f"--index={served['index']}", f"--port={port}"], f"cannot listen on 127.0.0.1:"
                                                               f"{port}"),
             ([f"--index={served['index']}", f"--captions={served['index']}", "--port=0"],
              "is an index of images; build a caption index")]
    for argv, message in cases:
        with pytest.raises(SystemExit) as e:
            command.main([], command.parse_args(argv))
        assert str(e.value).startswith("align_tf.serve: error: ") and message in str(e.value), \
            str(e.value)
        assert "\n" not in str(e.value)
    _alive(served["url"])


def test_import_and_help_do_not_load_tensorflow():
    """The package and its flags load without TensorFlow or faiss (they load when the server
    opens the index), so --help and flag mistakes are instant."""
    code = ("import sys; from align_tf.serve import app, command, server; "
            "command.parse_args(['--index=x', '--port=0']); "
            "print(','.join(sorted({m.split('.')[0] for m in sys.modules} "
            "& {'tensorflow', 'faiss', 'keras'})) or 'light')")
    light = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert light.stdout.strip() == "light", light.stdout + light.stderr[-2000:]
    helped = subprocess.run([sys.executable, "-m", "align_tf.serve", "--help"],
                            capture_output=True, text=True, timeout=120)
    assert "--max_upload_mb" in helped.stdout and "/api/thumbnail" in helped.stdout
    assert "Traceback" not in helped.stderr, helped.stderr[-2000:]
