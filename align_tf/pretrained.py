"""Pretrained ALIGN by name: download a Hugging Face ``AlignModel`` (``huggingface_hub``), convert it
once with ``align_tf.convert.hf_align`` and keep the converted model directory in a cache.

``align_tf.load("kakaobrain/align-base")`` comes through here; ``align_tf.convert.hf_hub``
downloads. Needs the ``pretrained`` extra (``pip install "align_tf[pretrained]"``:
``huggingface_hub``, ``safetensors``); ``torch`` only for a checkpoint that has nothing but
``pytorch_model.bin``.

The cache (``cache_root``): ``$ALIGN_TF_CACHE``, else ``$XDG_CACHE_HOME/align_tf``, else
``~/.cache/align_tf``, laid out as Hugging Face's own::

    models--ORG--NAME/refs/REVISION          the commit a revision name resolved to last
    models--ORG--NAME/COMMIT/                a converted model directory (run-directory layout,
                                             without savedmodel/: align_tf.export writes one)
    models--ORG--NAME/.lock                  held while converting (two processes convert once)

A commit converted before loads from the cache with no network at all; a revision name (``main``)
is resolved online when possible, else through the last resolution (ours or the HF cache's).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile

from align_tf.convert import ConversionError
from align_tf.convert.hf_hub import (COMMIT, PretrainedError, download, is_repo_id, offline,
                                     snapshot)


def cache_root() -> str:
    """Where converted models are kept: ``$ALIGN_TF_CACHE``, ``$XDG_CACHE_HOME/align_tf`` or
    ``~/.cache/align_tf``."""
    if os.environ.get("ALIGN_TF_CACHE"):
        return os.path.expanduser(os.environ["ALIGN_TF_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(xdg, "align_tf")


def _model_dir(repo_id: str) -> str:
    return os.path.join(cache_root(), "models--" + repo_id.replace("/", "--"))


def resolve_commit(repo_id: str, revision: str | None = None) -> str | None:
    """The commit ``revision`` (default ``main``) of ``repo_id`` names: asked online (one small
    download, the config), else our last resolution or the HF cache's; None if none is known."""
    revision = revision or "main"
    if COMMIT.match(revision):
        return revision
    if not offline():
        try:
            return os.path.basename(snapshot(repo_id, revision, ["config.json"], False))
        except PretrainedError:
            raise
        except Exception:  # noqa: BLE001  (no network: any transport error; fall back below)
            pass
    ref = os.path.join(_model_dir(repo_id), "refs", revision)
    if os.path.exists(ref):
        with open(ref) as f:
            return f.read().strip()
    try:
        return os.path.basename(snapshot(repo_id, revision, ["config.json"], True))
    except PretrainedError:
        raise
    except Exception:  # noqa: BLE001  (LocalEntryNotFoundError and kin: not cached)
        return None


@contextlib.contextmanager
def _lock(directory: str):
    """An exclusive ``fcntl`` lock on ``directory/.lock`` (no lock where there is no fcntl)."""
    os.makedirs(directory, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows: no lock, the atomic rename below still avoids torn dirs
        yield
        return
    with open(os.path.join(directory, ".lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _convert_into(hf_dir: str, target: str, verbose: bool) -> str:
    """Converts ``hf_dir`` to a temporary directory beside ``target``, then renames it into place
    (a directory at ``target`` is always complete)."""
    from align_tf.convert import hf_align
    tmp = tempfile.mkdtemp(prefix=".converting-", dir=os.path.dirname(target))
    try:
        hf_align.convert(hf_dir, tmp, export=False, verbose=False)  # load: from the checkpoint
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if verbose:
        print(f"align_tf: converted {hf_dir} into {target}")
    return target


def fetch(repo_id: str, revision: str | None = None, verbose: bool = True) -> str:
    """The converted model directory of ``repo_id`` at ``revision`` (default ``main``): from the
    cache, else downloaded and converted once (under a lock, so concurrent callers convert it
    once). Raises ``PretrainedError`` (one line) or ``ConversionError``."""
    model_dir = _model_dir(repo_id)
    commit = resolve_commit(repo_id, revision)
    if commit and os.path.isdir(os.path.join(model_dir, commit)):
        return os.path.join(model_dir, commit)
    with _lock(model_dir):
        hf_dir = download(repo_id, commit or revision)
        commit = os.path.basename(os.path.normpath(hf_dir))
        target = os.path.join(model_dir, commit)
        if not os.path.isdir(target):  # another process may have converted it meanwhile
            _convert_into(hf_dir, target, verbose)
        refs = os.path.join(model_dir, "refs")
        os.makedirs(refs, exist_ok=True)
        with open(os.path.join(refs, revision or "main"), "w") as f:
            f.write(commit)
    return target


def _local_key(hf_dir: str) -> str:
    """A cache key for a local HF directory: its path and its files' sizes and times."""
    h = hashlib.sha256(os.path.abspath(hf_dir).encode())
    for name in sorted(os.listdir(hf_dir)):
        st = os.stat(os.path.join(hf_dir, name))
        h.update(f"{name}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:20]


def convert_local(hf_dir: str, verbose: bool = True) -> str:
    """The converted model directory of a local HF ``AlignModel`` directory (cached by
    ``_local_key``; a changed file converts again)."""
    model_dir = os.path.join(cache_root(), "local")
    target = os.path.join(model_dir, _local_key(hf_dir))
    if os.path.isdir(target):
        return target
    with _lock(model_dir):
        if not os.path.isdir(target):
            _convert_into(hf_dir, target, verbose)
    return target


def is_hf_dir(path: str) -> bool:
    """A local directory in ``save_pretrained`` layout (``config.json`` with ``model_type``
    ``align``)."""
    import json
    config = os.path.join(path, "config.json")
    if not os.path.isfile(config):
        return False
    try:
        with open(config) as f:
            return json.load(f).get("model_type") == "align"
    except (ValueError, AttributeError, OSError):
        return False


__all__ = ["ConversionError", "PretrainedError", "cache_root", "convert_local", "download",
           "fetch", "is_hf_dir", "is_repo_id", "resolve_commit"]
