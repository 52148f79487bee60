"""Converts a HuggingFace transformers ``AlignModel`` directory (e.g. kakaobrain/align-base).

Examples (``python -m align_tf.convert`` and ``align-convert`` are the same command):
  python -m align_tf.convert --from=kakaobrain/align-base --output=/data/align_base_tf
  python -m align_tf.convert.hf_align --hf_dir=/data/align-base --output=/data/align_base_tf
  python -m align_tf.convert.hf_align --hf_dir=/data/align-base --output=/data/out --verify

``--from=REPO_ID`` downloads the checkpoint first (``align_tf.convert.hf_hub``: huggingface_hub, from
its cache when offline; ``pip install "align_tf[pretrained]"``). Otherwise only local files are
read (no network): ``config.json``, the weights (``model.safetensors``, a
sharded ``model.safetensors.index.json``, or ``pytorch_model.bin``), the tokenizer's ``vocab.txt``
(or ``tokenizer.json``, which is all transformers 5 saves) and, when present,
``preprocessor_config.json``. The output is laid out like a training
``model_dir``, so ``python -m align_tf.export --model_dir=OUTPUT`` works on it:

  OUTPUT/config.json        the align_tf config (towers spelled out in model.image_architecture /
                            model.text_architecture, so any HF width/depth/size is reproduced)
  OUTPUT/vocab.txt          the WordPiece vocabulary (our in-graph tokenizer matches HF's)
  OUTPUT/checkpoints/       ``tf.train.Checkpoint(model=...)``, incl. the learned temperature
  OUTPUT/savedmodel/        SavedModel with the export signatures
  OUTPUT/conversion.json    where it came from and which tensors were deliberately left out

Every tensor of the checkpoint must land in exactly one of our variables (with the layout
transposed as needed) and every variable of ours must receive one; anything else is an error.
The only tensors left out on purpose are HF's text pooler (``text_model.pooler.*``: ALIGN embeds
the [CLS] of the last hidden state, the pooler's output is unused) and bookkeeping buffers
(``num_batches_tracked``, ``position_ids``, ``token_type_ids``).
"""

from __future__ import annotations

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from align_tf.convert import ConversionError  # noqa: E402
from align_tf.convert.hf_config import make_config  # noqa: E402
from align_tf.convert.hf_files import (ALIGN_MAX_TOKENS, image_sizes, load_hf_config,  # noqa: E402
                                       load_hf_state_dict, load_hf_vocabulary)
from align_tf.convert.hf_weights import copy_hf_weights  # noqa: E402


def convert(hf_dir: str, output: str, export: bool = True, export_dir: str | None = None,
            max_tokens: int = ALIGN_MAX_TOKENS, verbose: bool = True):
    """Converts the ``AlignModel`` in ``hf_dir`` into a model_dir at ``output``.

    Args:
      hf_dir: directory of a transformers ``AlignModel`` (``save_pretrained`` layout).
      output: model_dir to write (created; existing files are overwritten).
      export: also write a SavedModel.
      export_dir: SavedModel path; default ``{output}/savedmodel``.
      max_tokens: tokens per text, [CLS]/[SEP] included (AlignProcessor: 64).
      verbose: print what was written.

    Returns:
      ``(model, preprocessor, config)``.
    """
    import tensorflow as tf

    from align_tf.models.dual_encoder import build_dual_encoder
    from align_tf.run_dir import RunDir
    from align_tf.tokenizer import TextPreprocessor

    hf_config = load_hf_config(hf_dir)
    vocabulary = load_hf_vocabulary(hf_dir)
    text_vocab = (hf_config.get("text_config") or {}).get("vocab_size") or 30522
    if len(vocabulary) != text_vocab:
        raise ConversionError(f"the tokenizer has {len(vocabulary)} tokens, the text config "
                              f"{text_vocab}")
    image_size, resize_size = image_sizes(hf_dir)
    config = make_config(hf_config, len(vocabulary), image_size, resize_size, max_tokens)
    state = load_hf_state_dict(hf_dir)

    model = build_dual_encoder(config.model, config.data.vocab_size)
    ignored = copy_hf_weights(model, state)
    del state

    run = RunDir(output)
    ckpt = run.save_model(model, config, vocabulary)
    preprocessor = TextPreprocessor.for_data(run.vocab_path, config.data)
    saved = None
    if export:
        saved = export_model(model, preprocessor, export_dir or run.savedmodel_path,
                             config)
    with tf.io.gfile.GFile(os.path.join(output, "conversion.json"), "w") as f:
        json.dump({"source": os.path.abspath(hf_dir), "hf_config": hf_config,
                   "ignored_tensors": ignored, "checkpoint": ckpt, "savedmodel": saved,
                   "temperature": float(model.temperature.numpy())}, f, indent=2)
    if verbose:
        print(f"converted {hf_dir} → {output} (checkpoint {ckpt}"
              + (f", SavedModel {saved})" if saved else ")"))
    return model, preprocessor, config


def export_model(model, preprocessor, path: str, config) -> str:
    """Writes the SavedModel with all of ``align_tf.export``'s signatures; images are resized and
    centre-cropped inside as the checkpoint's processor does (align-base: 346 → 289)."""
    from align_tf import export
    return export.export_saved_model(model, preprocessor, path, config=config,
                                     **export.config_export_kwargs(config))


def verify_against_hf(hf_dir: str, model, preprocessor, image_size: int = 65, seed: int = 0) -> dict:
    """Max abs differences of embeddings and logits between HF (PyTorch) and ``model`` on random
    images and a few texts. Needs torch and transformers; used by ``--verify``."""
    import tensorflow as tf
    import torch
    from transformers import AlignModel, BertTokenizer

    hf = AlignModel.from_pretrained(hf_dir).eval()
    tokenizer = BertTokenizer.from_pretrained(hf_dir)
    rng = np.random.default_rng(seed)
    pixels = rng.uniform(size=(2, image_size, image_size, 3)).astype(np.float32)
    texts = ["a photo of a cat", "Two dogs playing in the snow.", "東京タワー at night 🌃"]
    enc = tokenizer(texts, padding="max_length", truncation=True,
                    max_length=preprocessor.sequence_length, return_tensors="pt")
    with torch.no_grad():
        out = hf(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                 token_type_ids=enc.get("token_type_ids"),
                 pixel_values=torch.from_numpy(2.0 * pixels - 1.0).permute(0, 3, 1, 2))
    tokens = preprocessor(tf.constant(texts))
    ours = model({"image": tf.constant(pixels), "text": tokens}, training=False)

    def diff(a, b):
        return float(np.abs(a.numpy() - b.numpy()).max())

    return {"token_ids_equal": bool(np.array_equal(tokens["token_ids"].numpy(),
                                                   enc["input_ids"].numpy())),
            "image_embeds": diff(ours["image_embeddings"], out.image_embeds),
            "text_embeds": diff(ours["text_embeddings"], out.text_embeds),
            "logits_per_image": diff(ours["logits_per_image"], out.logits_per_image)}


# -------------------------------------------------------------------------------------- CLI

PROG = "align_tf.convert.hf_align"  # the name in messages when main runs in-process


def _define_flags(flag_values=None):
    """The command's flags, on ``flag_values`` (absl's global ``FLAGS`` under ``run``)."""
    from absl import flags
    fv = flags.FLAGS if flag_values is None else flag_values
    flags.DEFINE_string("hf_dir", None, "Directory of a transformers AlignModel (config.json, "
                        "model.safetensors or pytorch_model.bin, vocab.txt or tokenizer.json); "
                        "or use --from.", flag_values=fv)
    flags.DEFINE_string("from", None, "A Hugging Face repo id (e.g. kakaobrain/align-base), "
                        "downloaded with huggingface_hub (pip install \"align_tf[pretrained]\"; "
                        "offline from its cache), or a local AlignModel directory. Instead of "
                        "--hf_dir.", flag_values=fv)
    flags.DEFINE_string("revision", None, "With --from: the branch, tag or commit (default main).",
                        flag_values=fv)
    flags.DEFINE_string("output", None, "model_dir to write (config.json, vocab.txt, checkpoints/, "
                        "savedmodel/) (required).", flag_values=fv)
    flags.DEFINE_integer("max_tokens", ALIGN_MAX_TOKENS,
                         "Tokens per text incl. [CLS]/[SEP] (AlignProcessor: 64).", flag_values=fv)
    flags.DEFINE_bool("export", True, "Also write a SavedModel.", flag_values=fv)
    flags.DEFINE_string("export_dir", None, "SavedModel path; default {output}/savedmodel.",
                        flag_values=fv)
    flags.DEFINE_bool("verify", False, "Compare against the HF model in PyTorch afterwards "
                      "(needs torch and transformers).", flag_values=fv)
    return fv


def _source(f) -> str:
    """The HF directory to convert: ``--hf_dir``, or ``--from`` (a local directory, or a repo id
    downloaded by ``hf_hub``)."""
    from align_tf.convert import hf_hub
    source = f["from"].value
    if bool(f.hf_dir) == bool(source):
        raise ConversionError("give either --hf_dir=DIR or --from=REPO_ID (e.g. "
                              "--from=kakaobrain/align-base)")
    if f.hf_dir:
        return f.hf_dir
    if f.revision and not hf_hub.is_repo_id(source):
        raise ConversionError("--revision needs --from=REPO_ID (a Hugging Face repo id)")
    return hf_hub.download(source, f.revision) if hf_hub.is_repo_id(source) else source


def main(argv, flag_values=None):
    """absl main: ``run`` parsed the flags (``cli.parse`` rejected positional arguments);
    ``flag_values``: flags parsed by ``cli.parse_args`` (in-process), default absl's ``FLAGS``."""
    from absl import flags

    from align_tf import cli
    del argv
    f = flags.FLAGS if flag_values is None else flag_values
    prog = cli.program(PROG)
    try:
        hf_dir = _source(f)
        model, preprocessor, _ = convert(hf_dir, f.output, export=f.export,
                                         export_dir=f.export_dir, max_tokens=f.max_tokens)
    except (ValueError, FileNotFoundError) as e:  # ConversionError, PretrainedError: ValueErrors
        cli.error(prog, e)
    if f.verify:
        try:
            diffs = verify_against_hf(hf_dir, model, preprocessor)
        except ImportError as e:
            cli.error(prog, f"--verify needs torch and transformers: {e}")
        print("max abs difference vs HF:", json.dumps(diffs))
        if not diffs["token_ids_equal"] or max(v for k, v in diffs.items()
                                               if k != "token_ids_equal") > 1e-4:
            cli.error(prog, "verification FAILED")


def run():
    """``python -m align_tf.convert(.hf_align)`` and the console script ``align-convert``."""
    from align_tf import cli
    _define_flags()
    cli.run(__name__, main, required=("output",))


if __name__ == "__main__":
    run()
