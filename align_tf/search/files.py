"""Files of an index directory and of an input, local or remote (``gs://``, ``ram://``, ...).

A path with a scheme (``gs://B/index``) goes through ``tf.io.gfile``, any other through ``os``
as before, so local indexing keeps its exact behaviour and speed and imports no TensorFlow here.

Why ``tf.io.gfile`` and not Beam's ``FileSystems``: every process that touches these files
already has TensorFlow (workers embed with the SavedModel; ``Index.load`` embeds queries with it),
while Beam is only on the indexing side; align_tf's other readers (``data.webdataset``'s tars,
TFRecords, ``corpus``) use it already, so one input spelling reaches the same files everywhere;
``gs://`` is built into TensorFlow (Beam needs its ``[gcp]`` extra for it); and its in-process
``ram://`` filesystem lets the tests run the remote code path with no network.

Atomic writes: a file is written under a temporary name, then renamed to its final name. On an
object store (GCS) a rename is a copy then a delete, not atomic, and that is still safe: the
final name appears only once the copy is complete (an object becomes visible whole), and a
reader (resume, ``index.build``, ``Index.load``) trusts only files under their final names; a
kill between copy and delete leaves a stray temporary file, which nothing reads.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import shutil
import tempfile
import uuid


def is_remote(path: str) -> bool:
    """Whether ``path`` names a filesystem by scheme (``gs://``, ``ram://``, ``hdfs://``, ...)."""
    return "://" in str(path)


def _gfile():
    import tensorflow as tf  # lazily: only a remote path pays for TensorFlow here
    return tf.io.gfile


@contextlib.contextmanager
def as_os_error(path: str):
    """gfile raises ``tf.errors.OpError`` (NotFound, PermissionDenied, ...): as ``OSError``,
    which callers already report in one line (or count as ``unreadable``)."""
    import tensorflow as tf
    try:
        yield
    except tf.errors.OpError as e:
        raise OSError(f"{path}: {e.message or e}") from None


def join(root: str, *names: str) -> str:
    return posixpath.join(root, *names) if is_remote(root) else os.path.join(root, *names)


def abspath(path: str) -> str:
    return path if is_remote(path) else os.path.abspath(path)


def exists(path: str) -> bool:
    """(An unknown scheme, or no permission, is an ``OSError``, as everywhere here.)"""
    if not is_remote(path):
        return os.path.exists(path)
    with as_os_error(path):
        return _gfile().exists(path)


def isdir(path: str) -> bool:
    if not is_remote(path):
        return os.path.isdir(path)
    with as_os_error(path):
        return _gfile().isdir(path)


def isfile(path: str) -> bool:
    if not is_remote(path):
        return os.path.isfile(path)
    return exists(path) and not isdir(path)


def makedirs(path: str) -> None:
    if is_remote(path):
        with as_os_error(path):
            _gfile().makedirs(path)
    else:
        os.makedirs(path, exist_ok=True)


def listdir(path: str) -> list:
    """The names in directory ``path`` (files and subdirectories)."""
    if not is_remote(path):
        return os.listdir(path)
    with as_os_error(path):
        return [name.rstrip("/") for name in _gfile().listdir(path)]  # GCS: "sub/"


def read_bytes(path: str, start: int = 0, stop: int | None = None) -> bytes:
    """The file's bytes (``[start, stop)`` of them); ``OSError`` if unreadable."""
    if not is_remote(path):
        with open(path, "rb") as f:
            f.seek(start)
            return f.read() if stop is None else f.read(stop - start)
    with as_os_error(path), _gfile().GFile(path, "rb") as f:
        f.seek(start)
        return f.read() if stop is None else f.read(stop - start)


def write_bytes(path: str, data: bytes) -> None:
    """``data`` at ``path``, atomically (module docstring): a temporary name, then a rename. The
    temporary name is unique, since a runner may run the same part twice at once (a retry)."""
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    if not is_remote(path):
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
        return
    with as_os_error(path):
        with _gfile().GFile(tmp, "wb") as f:
            f.write(data)
        _gfile().rename(tmp, path, overwrite=True)


@contextlib.contextmanager
def local_copy_for_writing(path: str):
    """A local file name to write ``path`` with a library that writes local files only
    (faiss); on exit it becomes ``path``: renamed locally, or copied up then renamed (atomic as
    ``write_bytes``). Streams: the file is never held in memory."""
    with tempfile.TemporaryDirectory(dir=None if is_remote(path)
                                     else os.path.dirname(path) or ".") as tmp_dir:
        local = os.path.join(tmp_dir, "file")
        yield local
        if not is_remote(path):
            os.replace(local, path)
            return
        tmp = f"{path}.tmp-{uuid.uuid4().hex}"
        with as_os_error(path):
            _gfile().copy(local, tmp, overwrite=True)
            _gfile().rename(tmp, path, overwrite=True)


@contextlib.contextmanager
def local_copy_for_reading(path: str):
    """A local file name holding ``path``'s bytes, for a library that reads local files only
    (faiss): ``path`` itself if local, else a download into a temporary directory, removed on
    exit (streamed, so a multi-GB index shard is never held twice in memory)."""
    if not is_remote(path):
        yield path
        return
    tmp_dir = tempfile.mkdtemp(prefix="align_tf_search_")
    try:
        local = os.path.join(tmp_dir, posixpath.basename(path))
        with as_os_error(path):
            _gfile().copy(path, local, overwrite=True)
        yield local
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def walk_files(root: str) -> list:
    """Every file under ``root``, recursively, as sorted POSIX paths relative to ``root``
    (a dangling link is listed: reading it fails, and it is counted ``unreadable``)."""
    if not is_remote(root):
        ids = []
        for directory, _, names in os.walk(root):
            rel = os.path.relpath(directory, root)
            ids += [name if rel == "." else posixpath.join(*rel.split(os.sep), name)
                    for name in names]
        return sorted(ids)
    prefix, ids = root.rstrip("/"), []
    with as_os_error(root):
        for directory, _, names in _gfile().walk(root):  # directory: ROOT/REL
            rel = directory[len(prefix):].strip("/")
            ids += [posixpath.join(rel, name) if rel else name for name in names]
    return sorted(ids)
