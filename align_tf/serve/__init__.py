"""Serves a search index over HTTP: a JSON API and a web page (``python -m align_tf.serve``).

    python -m align_tf.serve --index=INDEX_DIR            # http://127.0.0.1:8080/

* ``command``: the command line (flags, start-up, the start message);
* ``app``: the routes (``Service.handle``: method, path, body → status, JSON);
* ``server``: HTTP (the standard library's ``ThreadingHTTPServer``, JSON errors, body limits);
* ``forms``: query-string and multipart parameters; ``thumbnails``; ``page``: the web page.

Importing this package loads neither TensorFlow nor faiss (they load when the server opens the
index). Routes and formats: docs/serve.md.
"""
