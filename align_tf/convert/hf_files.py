"""Reading a HuggingFace ``AlignModel`` directory (``save_pretrained`` layout), local files only:
``config.json``, the weights (``model.safetensors``, a sharded ``model.safetensors.index.json``,
or ``pytorch_model.bin``), the tokenizer's vocabulary and the image processor's sizes.
"""

from __future__ import annotations

import json
import os

import numpy as np

from align_tf.convert import ConversionError

ALIGN_MAX_TOKENS = 64  # AlignProcessor pads/truncates to 64 tokens
ALIGN_IMAGE_SIZE, ALIGN_RESIZE_SIZE = 289, 346  # EfficientNetImageProcessor of align-base


def load_hf_config(hf_dir: str) -> dict:
    """``config.json`` of an ``AlignModel`` as a dict (``text_config``/``vision_config`` inside)."""
    path = os.path.join(hf_dir, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"No config.json in {hf_dir}")
    with open(path) as f:
        try:
            config = json.load(f)
        except json.JSONDecodeError as e:
            raise ConversionError(f"{path} is not valid JSON ({e}): an HF AlignModel's config.json "
                                  "is needed") from None
    if not isinstance(config, dict) or config.get("model_type") != "align":
        config = config if isinstance(config, dict) else {}
        raise ConversionError(f"{path}: model_type is {config.get('model_type')!r}, not 'align'")
    return config


def load_hf_state_dict(hf_dir: str) -> dict:
    """All tensors of the checkpoint as float32/int64 numpy arrays, keyed by HF name."""
    single = os.path.join(hf_dir, "model.safetensors")
    index = os.path.join(hf_dir, "model.safetensors.index.json")
    if os.path.exists(single) or os.path.exists(index):
        if os.path.exists(single):
            files = [single]
        else:
            with open(index) as f:
                files = sorted({os.path.join(hf_dir, v) for v in json.load(f)["weight_map"].values()})
        safe_open = _require("safetensors", "model.safetensors").safe_open
        state = {}
        for path in files:
            try:
                with safe_open(path, framework="np") as f:
                    state.update({k: f.get_tensor(k) for k in f.keys()})
            except (TypeError, ValueError):  # bfloat16 has no numpy dtype: go through torch
                state.update(_torch_to_numpy(_safetensors_torch(path)))
        return _as_float32(state)
    binary = os.path.join(hf_dir, "pytorch_model.bin")
    if os.path.exists(binary):
        torch = _require("torch", "pytorch_model.bin")
        return _as_float32(_torch_to_numpy(torch.load(binary, map_location="cpu", weights_only=True)))
    raise FileNotFoundError(f"No model.safetensors(.index.json) or pytorch_model.bin in {hf_dir}")


# What to install for each optional reader (the `pretrained` extra brings safetensors).
_INSTALL = {"safetensors": 'pip install "align_tf[pretrained]"',
            "torch": "pip install torch (the CPU wheel is enough)"}


def _require(module: str, what: str):
    """``import module``, or a one-line ``ConversionError`` saying what to install."""
    import importlib
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConversionError(f"reading {what} needs {module}: {_INSTALL[module]}") from None


def _safetensors_torch(path):
    _require("torch", path + " (bfloat16)")
    from safetensors.torch import load_file
    return load_file(path)


def _torch_to_numpy(state):
    torch = _require("torch", "PyTorch tensors")
    return {k: (v.float() if v.is_floating_point() else v).numpy() for k, v in state.items()
            if isinstance(v, torch.Tensor)}


def _as_float32(state):
    return {k: v.astype(np.float32) if np.issubdtype(v.dtype, np.floating) else v
            for k, v in state.items()}


def load_hf_vocabulary(hf_dir: str) -> list:
    """The WordPiece vocabulary (bert-base-uncased for align-base), from ``vocab.txt`` or, as
    transformers 5 saves it, ``tokenizer.json``. Raises if the tokenizer is not BERT uncased."""
    from align_tf.tokenizer import load_vocabulary, RESERVED_TOKENS

    lowercase = True
    tok_config = os.path.join(hf_dir, "tokenizer_config.json")
    if os.path.exists(tok_config):
        with open(tok_config) as f:
            lowercase = json.load(f).get("do_lower_case", True)
    tok_json = os.path.join(hf_dir, "tokenizer.json")
    fast = None
    if os.path.exists(tok_json):
        with open(tok_json) as f:
            fast = json.load(f)
        lowercase = (fast.get("normalizer") or {}).get("lowercase", lowercase)
    if not lowercase:
        raise ConversionError(f"{hf_dir}: the tokenizer is cased; align_tf's is BERT uncased")
    if os.path.exists(os.path.join(hf_dir, "vocab.txt")):
        return load_vocabulary(os.path.join(hf_dir, "vocab.txt"))
    if fast is None:
        raise FileNotFoundError(f"No vocab.txt or tokenizer.json in {hf_dir}")
    model = fast.get("model") or {}
    if model.get("type") != "WordPiece" or model.get("continuing_subword_prefix", "##") != "##":
        raise ConversionError(f"{tok_json}: not a BERT WordPiece tokenizer")
    by_id = {i: token for token, i in model["vocab"].items()}
    if sorted(by_id) != list(range(len(by_id))):
        raise ConversionError(f"{tok_json}: vocabulary ids are not contiguous")
    vocab = [by_id[i] for i in range(len(by_id))]
    missing = [t for t in RESERVED_TOKENS[:4] if t not in vocab]
    if missing:
        raise ConversionError(f"{tok_json}: vocabulary lacks {missing}")
    return vocab


def image_sizes(hf_dir: str) -> tuple:
    """(crop, resize) of the HF image processor; align-base's 289/346 when there is none."""
    path = os.path.join(hf_dir, "preprocessor_config.json")
    if not os.path.exists(path):
        return ALIGN_IMAGE_SIZE, ALIGN_RESIZE_SIZE
    with open(path) as f:
        proc = json.load(f)
    proc = proc.get("image_processor", proc)
    # Our towers take [0, 1] pixels and rescale to [-1, 1] inside (x/127.5 - 1 on 0..255).
    if proc.get("do_normalize") or not proc.get("rescale_offset", True) or \
            abs(proc.get("rescale_factor", 1 / 127.5) - 1 / 127.5) > 1e-9:
        raise ConversionError(f"{path}: expected pixels scaled by x/127.5 - 1 without mean/std "
                              "normalisation (ALIGN's); this processor differs")

    def side(entry, default):
        if isinstance(entry, dict):
            return int(entry.get("height", entry.get("shortest_edge", default)))
        return int(entry) if entry else default

    return side(proc.get("crop_size"), ALIGN_IMAGE_SIZE), side(proc.get("size"), ALIGN_RESIZE_SIZE)
