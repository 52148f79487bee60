"""Fetching a Hugging Face ``AlignModel`` snapshot with ``huggingface_hub`` (the ``pretrained``
extra, ``pip install "align_tf[pretrained]"``): only the files ``hf_files`` reads, safetensors
preferred, from the HF cache when offline. ``python -m align_tf.convert --from=REPO_ID`` and
``align_tf.pretrained`` (the cache of converted models behind ``align_tf.load``) come through here.
"""

from __future__ import annotations

import os
import re

# What the converter reads (align_tf.convert.hf_files); nothing else of a repository is fetched.
META_FILES = ["config.json", "vocab.txt", "tokenizer.json", "tokenizer_config.json",
              "preprocessor_config.json"]
SAFETENSORS = ["model.safetensors", "model.safetensors.index.json", "model-*.safetensors"]
TORCH_FILES = ["pytorch_model.bin"]
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
COMMIT = re.compile(r"^[0-9a-f]{40}$")
INSTALL = 'pip install "align_tf[pretrained]"'


class PretrainedError(ValueError):
    """A pretrained model cannot be fetched (offline, unknown name, missing extra): one line."""


def is_repo_id(name: str) -> bool:
    """``ORG/NAME`` that is not an existing local path."""
    return bool(_REPO_ID.match(str(name))) and not os.path.exists(name)


def offline() -> bool:
    # Read from the environment each call: huggingface_hub reads it once, at its import.
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")


def _hf_cache_dir() -> str | None:
    """The HF hub cache the environment names now (``HF_HUB_CACHE``, ``HF_HOME``), else the
    library's default (None)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    return None


def _hub():
    try:
        import huggingface_hub
    except ImportError:
        raise PretrainedError(f"downloading needs huggingface_hub: {INSTALL}") from None
    return huggingface_hub


def snapshot(repo_id: str, revision: str | None, patterns: list, local_only: bool) -> str:
    """``snapshot_download`` of ``patterns`` → the snapshot directory (named by its commit)."""
    hub = _hub()
    from huggingface_hub import errors
    try:
        return hub.snapshot_download(repo_id, revision=revision, allow_patterns=patterns,
                                     cache_dir=_hf_cache_dir(), local_files_only=local_only)
    except errors.RepositoryNotFoundError:
        raise PretrainedError(f"no model {repo_id!r} on the Hugging Face Hub (or it is private: "
                              "log in with `hf auth login`)") from None
    except errors.RevisionNotFoundError:
        raise PretrainedError(f"{repo_id} has no revision {revision!r}") from None
    except errors.GatedRepoError:
        raise PretrainedError(f"{repo_id} is gated: accept its terms on huggingface.co and log "
                              "in with `hf auth login`") from None


def _offline_error(repo_id: str, revision: str | None) -> PretrainedError:
    at = f" at revision {revision}" if revision else ""
    return PretrainedError(
        f"cannot download {repo_id}{at} (no network, or HF_HUB_OFFLINE=1) and no local cache holds "
        "it: run once with network access, or download it elsewhere and pass its local directory")


def download(repo_id: str, revision: str | None = None) -> str:
    """The local snapshot directory of ``repo_id`` with what the converter reads: the config,
    tokenizer and processor files and the weights (safetensors preferred; ``pytorch_model.bin``
    only when there are none). Works offline from the HF cache; one-line ``PretrainedError``
    otherwise."""
    local = offline()
    try:
        path = snapshot(repo_id, revision, META_FILES + SAFETENSORS, local)
        if not any(os.path.exists(os.path.join(path, f)) for f in SAFETENSORS[:2]):
            path = snapshot(repo_id, revision, TORCH_FILES, local)
    except PretrainedError:
        raise
    except Exception:  # noqa: BLE001  (offline or no network: huggingface_hub's many kinds)
        if local:
            raise _offline_error(repo_id, revision) from None
        try:  # the network failed: what the HF cache holds may still do
            path = snapshot(repo_id, revision, META_FILES + SAFETENSORS + TORCH_FILES, True)
        except PretrainedError:
            raise
        except Exception:  # noqa: BLE001
            raise _offline_error(repo_id, revision) from None
    return path
