"""Training throughput: our train step next to open_clip's on the same architecture, and the CPU's
dense matmul limit.

    python benchmarks/bench_train.py              # B0 @ 128 px + BERT-mini, batch 32, 32 tokens
    python benchmarks/bench_train.py --image_size=224 --text=small --repeats=10

Ours: the contrastive objective's ``train_step`` (towers, loss, gradients, finiteness check, AdamW
update) as a ``tf.function``, with and without XLA (``jit_compile``); the faster one is the
headline. Peer: open_clip's ``CustomTextCLIP`` — a timm ``efficientnet_b0`` trunk with average
pooling and an HF ``BertModel`` built from a local ``BertConfig`` (random init, no download) with
[CLS] pooling and a linear projection — trained with ``open_clip.ClipLoss`` and
``torch.optim.AdamW``, the way open_clip's training loop does it (eager PyTorch, float32, NCHW).
The timm trunk's 1×1 head conv (320 → 1280 + BN) is removed so both image towers end, like ALIGN's,
at the last MBConv stage (320-d), the text projection maps BERT's [CLS] to 320. Both get the same
in-memory batch (no input pipeline), dropout 0.1 in BERT and stochastic depth 0.2 in the
EfficientNet, and run on all cores. Steps alternate between the implementations
(``common.time_interleaved``).

FLOPs per step: the forward pass (towers and loss) counted on the PyTorch twin with
``torch.utils.flop_counter`` (convolutions, matmuls, attention; the architectures are the same,
parameter counts are printed side by side), times 3 for forward + backward (the usual convention;
the counter's own backward figure is unusable: it ignores the groups of depthwise convolutions and
overstates their gradients ~40×). Divided by the median step time, next to the machine limit: the
median rate of a large float32 ``tf.matmul`` measured in the same run.

``--before`` also interleaves our step as it was before issue 9's speed-ups (``ours_before``:
Keras' own ``BatchNormalization``, ``tf.nn.silu``'s gradient and ``keras.optimizers.AdamW``
instead of ``align_tf.models.batch_norm``, ``align_tf.models.activations.swish`` and
``align_tf.optim.AdamW``), so before/after come from the same run and load.

Preset mode (GPU readiness): ``--preset=align_base --device=gpu`` trains the preset's towers
(align_base: EfficientNet-B7 @ 289 px + BERT-base @ 64 tokens, LAMB) with bf16 mixed precision and
XLA for a fixed batch and step count, no peer, and prints the compile time (the first step) apart
from the step time, pairs/s per device and MFU: model FLOPs (3 × the forward FLOPs counted on the
traced graph, ``graph_flops``) per second over the device's dense bf16 peak (``PEAK_TFLOPS``, e.g.
H200 SXM 989 TFLOP/s; ``--peak_tflops`` overrides). The whole run stays under ~8 minutes
(``--max_seconds`` caps the timed steps). Checked on CPU with a tiny shape::

    python benchmarks/bench_train.py --preset=align_base --device=cpu --image_model=b0 \
        --text=nano --image_size=32 --seq_len=8 --batch_size=4 --steps=2 --xla=off --no_append

(1–3 min, most of it tracing the step: first step 141 s, whole run 165 s at load 11; with XLA, as
on the GPU, this CPU compiles even the tiny model for 4–5 minutes: 272 s at load 10.)

XLA: with ``--xla=auto`` both TF modes are compiled and timed for a few steps; the slower is
reported from those steps only and the faster one goes into the interleaved comparison. On this
CPU XLA was ~9× slower per step and took minutes to compile (RESULTS.md), so the default
(``--xla=off`` without ``--preset``) times the graph mode only, as ``train.jit_compile=False`` (the default) trains.
"""

from __future__ import annotations

import argparse
import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

import common  # noqa: E402  (also puts the repository on sys.path)

EMBED_DIM = 320  # EfficientNet-B0's last stage, ALIGN's embedding size for B0
VOCAB = 30522


def import_open_clip():
    """``import open_clip``, which needs torchvision (timm and open_clip import it at load time).

    The PyPI torchvision wheel for torch 2.13 is a CUDA build: with a CPU-only torch its C++ ops
    cannot load and ``import torchvision`` raises. open_clip and timm use no torchvision kernels,
    so the missing op schemas are declared first. Do not install that wheel into site-packages
    next to CPU-only torch: ``transformers`` imports torchvision when present and then fails
    (``from transformers import AlignModel`` breaks). Install it aside and put it on the path of
    this command only (benchmarks/README.md)::

        pip install --no-deps --target ~/.cache/align_tf_bench/vendor torchvision==0.28.0
        PYTHONPATH=~/.cache/align_tf_bench/vendor python benchmarks/bench_train.py
    """
    import torch
    if not hasattr(import_open_clip, "lib"):
        import_open_clip.lib = None
        try:
            import torchvision  # noqa: F401
        except RuntimeError:  # "operator torchvision::nms does not exist"
            import_open_clip.lib = torch.library.Library("torchvision", "DEF")
            for op in ("nms", "qnms"):
                import_open_clip.lib.define(
                    op + "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        except ImportError as e:
            raise SystemExit(f"open_clip needs torchvision ({e}); see {__file__}'s "
                             "import_open_clip for how to install it aside") from e
    import open_clip
    return open_clip


def make_batch(batch: int, image_size: int, seq_len: int, seed: int = 0) -> dict:
    """Random pixels in [0, 1] and token ids of random lengths (pad id 0), as numpy."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1000, VOCAB, size=(batch, seq_len)).astype(np.int32)
    lengths = rng.integers(seq_len // 4, seq_len + 1, size=batch)
    ids[np.arange(seq_len)[None, :] >= lengths[:, None]] = 0
    ids[:, 0] = 101  # [CLS]
    return {"pixels": rng.uniform(size=(batch, image_size, image_size, 3)).astype(np.float32),
            "ids": ids}


def bench_config(base, text: str, seq_len: int, lr: float):
    """The benchmark's config from a ``configs/base.py`` module: B0 + BERT-``text``, dropout 0.1,
    stochastic depth 0.2, AdamW at a constant ``lr`` (``bench_vs_revision.py`` reuses it with an
    older checkout's ``base``)."""
    config = base.get_config()
    config.model.image_size_name, config.model.text_size_name = "b0", text
    config.model.max_sequence_length = seq_len
    config.model.text_dropout = 0.1
    config.model.drop_connect_rate = 0.2
    config.model.bn_momentum = 0.99
    config.optim.name, config.optim.learning_rate, config.optim.warmup_steps = "adamw", lr, 0
    config.train.steps = 10**6
    return config


def build_ours(text: str, seq_len: int, lr: float, before: bool = False):
    """``(model, objective)``: our model and its contrastive objective with AdamW; ``before``:
    without the issue-9 speed-ups (Keras' own BatchNormalization, swish gradient and AdamW
    update), to time both in one run."""
    import keras

    from align_tf import objectives, optim, trainer
    from align_tf.configs import base

    keras.utils.set_random_seed(0)
    config = bench_config(base, text, seq_len, lr)
    if not before:
        return trainer.build(config, VOCAB)

    from align_tf.models.dual_encoder import build_dual_encoder

    # trainer.build with the speed-ups off: Keras' BatchNormalization and swish gradient, and
    # Keras' AdamW update instead of align_tf.optim.AdamW.
    model = build_dual_encoder(config.model, VOCAB, fused_batch_norm=False,
                               fused_swish_grad=False)
    optimizer = keras.optimizers.AdamW(
        learning_rate=optim.WarmupLinearDecay(lr, 0, config.train.steps),
        weight_decay=config.optim.weight_decay)
    optimizer.exclude_from_weight_decay(var_names=optim.NO_DECAY)
    return model, objectives.build_objective(config.objective, model, optimizer)


def build_open_clip(text: str, image_size: int, seq_len: int, lr: float):
    import torch
    import transformers

    from align_tf.models.text_encoder import SIZES

    open_clip = import_open_clip()
    torch.manual_seed(0)
    bert = SIZES[text]
    config_dir = tempfile.mkdtemp(prefix="bench_train_bert_")
    transformers.BertConfig(vocab_size=VOCAB, hidden_size=bert.hidden_dim,
                            num_hidden_layers=bert.num_layers, num_attention_heads=bert.num_heads,
                            intermediate_size=bert.intermediate_dim,
                            max_position_embeddings=seq_len, pad_token_id=0
                            ).save_pretrained(config_dir)
    model = open_clip.CustomTextCLIP(
        embed_dim=EMBED_DIM,
        vision_cfg=open_clip.CLIPVisionCfg(timm_model_name="efficientnet_b0", timm_pool="avg",
                                           timm_proj="none", timm_drop_path=0.2,
                                           image_size=image_size),
        text_cfg=open_clip.CLIPTextCfg(hf_model_name=config_dir, hf_model_pretrained=False,
                                       hf_proj_type="linear",
                                       hf_pooler_type="cls_last_hidden_state_pooler",
                                       context_length=seq_len, vocab_size=VOCAB))
    trunk = model.visual.trunk
    trunk.conv_head, trunk.bn2 = torch.nn.Identity(), torch.nn.Identity()  # ALIGN: no top conv
    trunk.num_features = EMBED_DIM
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-5)
    return model, optimizer, open_clip.ClipLoss()


def matmul_flops(n: int, repeats: int) -> dict:
    """Median FLOP/s of an ``n × n`` float32 matmul in TF and PyTorch."""
    import tensorflow as tf
    import torch

    a = tf.random.normal((n, n))
    b = tf.random.normal((n, n))
    ta, tb = torch.randn(n, n), torch.randn(n, n)
    tf_mm = tf.function(lambda: tf.matmul(a, b))
    flops = 2.0 * n ** 3
    times = common.time_interleaved({"tf": lambda: tf_mm().numpy(), "torch": lambda: ta @ tb},
                                    repeats, warmup=2)
    return {k: flops / v["median"] for k, v in times.items()}


# Dense (no sparsity) bf16 tensor-core peaks, TFLOP/s, from the vendors' datasheets; the first
# name contained in the device's name wins.
PEAK_TFLOPS = (("H200 NVL", 835.0), ("H200", 989.4), ("H100 NVL", 835.0), ("H100 PCIe", 756.0),
               ("H100", 989.4), ("A100", 312.0), ("L40S", 362.0), ("L4", 121.0))


def graph_flops(graph) -> tuple:
    """``(FLOPs, uncounted)`` of one run of ``graph``: 2 per multiply-add of its convolutions,
    depthwise convolutions, matmuls and einsums (static shapes needed; element-wise ops, BN and
    softmax are not counted, as is usual for MFU). ``uncounted``: such ops with unknown shapes."""
    total, uncounted = 0.0, 0
    for op in graph.get_operations():
        try:
            if op.type == "Conv2D":  # kernel [kh, kw, cin, cout]
                kh, kw, cin, _ = op.inputs[1].shape.as_list()
                total += 2.0 * np.prod(op.outputs[0].shape.as_list()) * kh * kw * cin
            elif op.type == "DepthwiseConv2dNative":  # kernel [kh, kw, cin, multiplier]
                kh, kw = op.inputs[1].shape.as_list()[:2]
                total += 2.0 * np.prod(op.outputs[0].shape.as_list()) * kh * kw
            elif op.type in ("MatMul", "BatchMatMulV2", "BatchMatMulV3"):
                a = op.inputs[0].shape.as_list()
                adj = op.get_attr("transpose_a" if op.type == "MatMul" else "adj_x")
                total += 2.0 * np.prod(op.outputs[0].shape.as_list()) * a[-2 if adj else -1]
            elif op.type == "Einsum":  # every index once: the multiply-adds of the contraction
                lhs = op.get_attr("equation").decode().split("->")[0].split(",")
                sizes = {}
                for letters, t in zip(lhs, op.inputs):
                    sizes.update(zip(letters, t.shape.as_list()))
                total += 2.0 * np.prod(list(sizes.values()))
        except (TypeError, ValueError):  # None in a shape
            uncounted += 1
    return total, uncounted


def preset_main(args) -> dict:
    """``--preset``: the GPU-readiness run (module docstring)."""
    import importlib
    import time

    import keras
    import tensorflow as tf

    from align_tf import trainer

    if args.device == "cpu":
        tf.config.set_visible_devices([], "GPU")
    elif not tf.config.list_physical_devices("GPU"):
        raise SystemExit("bench_train.py: error: --device=gpu but TensorFlow sees no GPU")
    try:
        config = importlib.import_module(f"align_tf.configs.{args.preset}").get_config()
    except ModuleNotFoundError:
        raise SystemExit(f"bench_train.py: error: no preset configs/{args.preset}.py") from None
    m = config.model
    m.image_size_name = args.image_model or m.image_size_name
    m.text_size_name = args.text or m.text_size_name
    image_size = args.image_size or config.data.image_size
    seq_len = args.seq_len or config.data.max_tokens
    m.max_sequence_length = seq_len
    m.bn_group_size = 0  # one device: BN over its own batch
    batch_size = args.batch_size or 64
    config.train.batch_size = batch_size
    config.train.mixed_precision = not args.fp32
    keras.mixed_precision.set_global_policy("float32" if args.fp32 else "mixed_bfloat16")
    keras.utils.set_random_seed(0)
    device = "/GPU:0" if args.device == "gpu" else "/CPU:0"
    name = (tf.config.experimental.get_device_details(tf.config.list_physical_devices("GPU")[0])
            .get("device_name", "GPU") if args.device == "gpu" else common.cpu_model())
    peak = args.peak_tflops or next((p for n, p in PEAK_TFLOPS if n in name), 0.0)
    xla = args.xla != "off"
    what = (f"{args.preset}: {m.image_size_name} @ {image_size} px + BERT-{m.text_size_name} @ "
            f"{seq_len} tokens, batch {batch_size}, {config.optim.name}, "
            f"{'fp32' if args.fp32 else 'bf16 mixed'}{' + XLA' if xla else ''}, {name}")
    print(what, flush=True)

    t_start = time.perf_counter()
    with tf.device(device):
        data = make_batch(batch_size, image_size, seq_len)
        ids = tf.constant(data["ids"])
        batch = {"image": tf.constant(data["pixels"]),
                 "text": {"token_ids": ids, "padding_mask": tf.cast(ids != 0, tf.int32),
                          "segment_ids": tf.zeros_like(ids)}}
        model, objective = trainer.build(config, 30522)
        # Model FLOPs: the forward pass traced at this batch (towers + similarity matmul).
        forward = tf.function(lambda b: model.logits(tf.matmul(
            model.embed_image(b["image"], training=True),
            model.embed_text(b["text"], training=True), transpose_b=True)))
        fwd_flops, uncounted = graph_flops(forward.get_concrete_function(batch).graph)
        step_flops = 3 * fwd_flops
        params = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
        build_s = time.perf_counter() - t_start
        step = tf.function(objective.train_step, jit_compile=xla)
        t0 = time.perf_counter()
        float(step(batch)["loss"])
        compile_s = time.perf_counter() - t0  # trace + XLA compile + one step
        for _ in range(args.warmup):
            float(step(batch)["loss"])
        times = []
        for _ in range(args.steps):
            t0 = time.perf_counter()
            loss = float(step(batch)["loss"])
            times.append(time.perf_counter() - t0)
            if time.perf_counter() - t_start > args.max_seconds:
                break
    t = common.summarize(times)
    mem = (tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**30
           if args.device == "gpu" else float("nan"))
    pairs = batch_size / t["median"]
    achieved = step_flops / t["median"]
    mfu = achieved / (peak * 1e12) if peak else float("nan")
    rows = [["build + FLOP count s", f"{build_s:.1f}"],
            ["first step s (trace + compile + 1 step)", f"{compile_s:.1f}"],
            ["timed steps", f"{t['n']} after {args.warmup} warm-up, loss {loss:.3f}"],
            ["step ms median / p90 / min", f"{t['median'] * 1e3:.1f} / {t['p90'] * 1e3:.1f} / "
                                           f"{t['min'] * 1e3:.1f}"],
            ["pairs/s per device", f"{pairs:.1f}"],
            ["model GFLOP/step (3 × forward)", f"{step_flops / 1e9:.1f}" + (
                f" ({uncounted} ops of unknown shape uncounted)" if uncounted else "")],
            ["achieved TFLOP/s", f"{achieved / 1e12:.2f}"],
            ["peak bf16 dense TFLOP/s", f"{peak:.1f}" if peak else "unknown (--peak_tflops)"],
            ["MFU", f"{mfu:.1%}" if peak else "n/a"],
            ["trainable parameters", f"{params:,}"],
            ["peak device memory GiB", f"{mem:.1f}"],
            ["whole run s", f"{time.perf_counter() - t_start:.0f}"]]
    print(common.markdown_table(["figure", "value"], rows))
    setup = (f"{what}; {step_flops / 1e9:.0f} GFLOP/step; first step {compile_s:.0f} s; "
             f"{t['n']} steps after {args.warmup} warm-up")
    common.record("bench_train.py", [
        (f"train pairs/s per device, preset {args.preset}", f"{pairs:.1f}", "-", "-"),
        ("train MFU vs dense bf16 peak", f"{achieved / 1e12:.1f} TFLOP/s",
         f"{peak:.0f} TFLOP/s ({name})" if peak else "unknown", f"{mfu:.1%}" if peak else "n/a"),
    ], setup, not args.no_append, args.output,
        {"step": t, "compile_s": compile_s, "build_s": build_s, "pairs_per_s": pairs,
         "step_flops": step_flops, "mfu": mfu, "peak_tflops": peak, "device": name,
         "peak_memory_gib": mem})
    return {"pairs_per_s": pairs, "mfu": mfu, "step_flops": step_flops, "compile_s": compile_s}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch_size", type=int, default=None, help="default 32 (preset: 64)")
    parser.add_argument("--image_size", type=int, default=None,
                        help="default 128 (preset: its data.image_size)")
    parser.add_argument("--seq_len", type=int, default=None,
                        help="default 32 (preset: its data.max_tokens)")
    parser.add_argument("--text", default=None,
                        help="BERT size (align_tf text_encoder.SIZES); default mini (preset: its)")
    parser.add_argument("--repeats", type=int, default=8, help="timed steps per implementation")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per implementation")
    parser.add_argument("--preset", default="",
                        help="GPU-readiness mode: train this configs/ preset (e.g. align_base) "
                             "with bf16 + XLA, no peer (module docstring)")
    parser.add_argument("--device", default="gpu", choices=("gpu", "cpu"), help="--preset only")
    parser.add_argument("--image_model", default="",
                        help="--preset only: EfficientNet size instead of the preset's")
    parser.add_argument("--steps", type=int, default=30, help="--preset only: timed steps")
    parser.add_argument("--max_seconds", type=float, default=420,
                        help="--preset only: stop timing steps after this much of the run")
    parser.add_argument("--peak_tflops", type=float, default=0.0,
                        help="--preset only: the device's dense bf16 peak (default: PEAK_TFLOPS)")
    parser.add_argument("--fp32", action="store_true", help="--preset only: no mixed precision")
    parser.add_argument("--output", default="", help="also write the results as JSON here")
    parser.add_argument("--xla", default=None, choices=("auto", "both", "on", "off"),
                        help="auto: time both TF modes briefly, compare the faster with open_clip; "
                             "both: interleave both with open_clip")
    parser.add_argument("--before", action="store_true",
                        help="also interleave our step without the issue-9 speed-ups (Keras' "
                             "BatchNormalization, swish gradient, AdamW) as ours_before")
    parser.add_argument("--bf16", action="store_true",
                        help="also interleave our step with bf16 mixed precision as ours_bf16 "
                             "(train.mixed_precision)")
    parser.add_argument("--probe_steps", type=int, default=2, help="--xla=auto: steps per mode")
    parser.add_argument("--matmul_size", type=int, default=3072)
    parser.add_argument("--no_append", action="store_true", help="do not write RESULTS.md")
    args = parser.parse_args(argv)
    if args.preset:
        args.xla = args.xla or "on"  # the preset run is bf16 + XLA unless told otherwise
        return preset_main(args)
    args.xla = args.xla or "off"
    args.batch_size = args.batch_size or 32
    args.image_size = args.image_size or 128
    args.seq_len = args.seq_len or 32
    args.text = args.text or "mini"

    import tensorflow as tf
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    lr = 1e-4
    data = make_batch(args.batch_size, args.image_size, args.seq_len)
    model, ours = build_ours(args.text, args.seq_len, lr)
    batch = {"image": tf.constant(data["pixels"]),
             "text": {"token_ids": tf.constant(data["ids"]),
                      "padding_mask": tf.constant((data["ids"] != 0).astype(np.int32)),
                      "segment_ids": tf.zeros_like(tf.constant(data["ids"]))}}
    steps = {}
    if args.xla != "on":
        steps["ours"] = tf.function(ours.train_step)
    if args.xla != "off":
        steps["ours_xla"] = tf.function(ours.train_step, jit_compile=True)
    if args.before:
        steps["ours_before"] = tf.function(build_ours(args.text, args.seq_len, lr,
                                                      before=True)[1].train_step)
    if args.bf16:
        import keras
        keras.mixed_precision.set_global_policy("mixed_bfloat16")  # as train.mixed_precision
        try:
            steps["ours_bf16"] = tf.function(build_ours(args.text, args.seq_len, lr)[1].train_step)
        finally:
            keras.mixed_precision.set_global_policy("float32")
    fns = {name: (lambda s=s: s(batch)["loss"].numpy()) for name, s in steps.items()}
    probe = {}
    if args.xla == "auto":
        probe = common.time_interleaved({k: v for k, v in fns.items()
                                         if k not in ("ours_before", "ours_bf16")},
                                        args.probe_steps, warmup=1)
        slower = max(probe, key=lambda k: probe[k]["median"])
        print("XLA probe: " + ", ".join(f"{k} {v['median'] * 1e3:.0f} ms/step (first "
                                        f"{v['first']:.0f} s)" for k, v in probe.items())
              + f"; {slower} is left out of the comparison", flush=True)
        del fns[slower]

    peer, optimizer, clip_loss = build_open_clip(args.text, args.image_size, args.seq_len, lr)
    images = torch.from_numpy(data["pixels"]).permute(0, 3, 1, 2).contiguous()
    ids = torch.from_numpy(data["ids"]).long()

    def peer_step():
        optimizer.zero_grad(set_to_none=True)
        image_features, text_features, logit_scale = peer(images, ids)
        loss = clip_loss(image_features, text_features, logit_scale)
        loss.backward()
        optimizer.step()
        return loss

    with FlopCounterMode(display=False) as counter:
        clip_loss(*peer(images, ids))
    step_flops = 3 * counter.get_total_flops()
    params = {"ours": sum(int(np.prod(v.shape)) for v in model.trainable_variables),
              "open_clip": sum(p.numel() for p in peer.parameters() if p.requires_grad)}
    print(f"B0 @ {args.image_size} px + BERT-{args.text} ({args.seq_len} tokens), batch "
          f"{args.batch_size}: {step_flops / 1e9:.1f} GFLOP per training step; trainable "
          f"parameters ours {params['ours']:,} / open_clip {params['open_clip']:,} (HF's unused BERT pooler "
          "included)", flush=True)

    fns["open_clip"] = lambda: float(peer_step().detach())
    times = common.time_interleaved(fns, args.repeats, warmup=args.warmup)
    times.update({k: v for k, v in probe.items() if k not in times})
    peak = matmul_flops(args.matmul_size, repeats=5)

    rate = {k: args.batch_size / v["median"] for k, v in times.items()}
    best = max((k for k in times if k in ("ours", "ours_xla")), key=rate.get)
    rows = []
    for name, t in times.items():
        flops = step_flops / t["median"]
        rows.append([name, f"{t['median'] * 1e3:.0f}", f"{t['p90'] * 1e3:.0f}",
                     f"{t['first']:.1f}", f"{rate[name]:.1f}", f"{flops / 1e9:.1f}",
                     f"{flops / peak['tf']:.0%}", common.fmt_ratio(rate[name], rate["open_clip"])])
    print(common.markdown_table(["implementation", "step ms (median)", "p90 ms", "first step s",
                                 "pairs/s", "GFLOP/s", "of tf.matmul peak", "vs open_clip"], rows))
    print(f"\ndense float32 matmul {args.matmul_size}²: tf {peak['tf'] / 1e9:.0f} GFLOP/s, torch "
          f"{peak['torch'] / 1e9:.0f} GFLOP/s; {args.repeats} timed steps each after "
          f"{args.warmup} warm-up steps, interleaved; headline: {best}"
          + (f" (the other TF mode: {args.probe_steps} probe steps)" if probe else ""))

    setup = (f"B0@{args.image_size}px + BERT-{args.text}, seq {args.seq_len}, batch "
             f"{args.batch_size}, AdamW, fp32, CPU; {step_flops / 1e9:.1f} GFLOP/step; "
             f"{args.repeats} steps after {args.warmup} warm-up")
    results = {"times": times, "pairs_per_s": rate, "step_flops": step_flops, "matmul": peak,
               "parameters": params, "best": best}
    if not args.no_append:
        other = "ours_xla" if best == "ours" else "ours"
        common.append_results("bench_train.py", [
            ("train pairs/s vs open_clip", f"{rate[best]:.1f} ({best})",
             f"{rate['open_clip']:.1f} (open_clip)", common.fmt_ratio(rate[best],
                                                                       rate["open_clip"])),
            *([(f"train pairs/s, {other}" + (f" ({args.probe_steps} probe steps, not "
                                               "interleaved)" if other in probe else ""),
                f"{rate[other]:.1f} ({other})",
                f"{rate['open_clip']:.1f} (open_clip)",
                common.fmt_ratio(rate[other], rate["open_clip"]))] if other in rate else []),
            *([("train pairs/s, ours without the fused BatchNorm/swish gradient/AdamW (before)",
                f"{rate['ours_before']:.1f} (ours_before)",
                f"{rate['open_clip']:.1f} (open_clip)",
                common.fmt_ratio(rate["ours_before"], rate["open_clip"]))]
              if "ours_before" in rate else []),
            *([("train pairs/s, ours with bf16 mixed precision (train.mixed_precision)",
                f"{rate['ours_bf16']:.1f} (ours_bf16)", f"{rate['ours']:.1f} (ours, fp32)",
                common.fmt_ratio(rate["ours_bf16"], rate["ours"]))]
              if "ours_bf16" in rate and "ours" in rate else []),
            ("train FLOP/s vs tf.matmul fp32 peak",
             f"{step_flops / times[best]['median'] / 1e9:.1f} GFLOP/s", f"{peak['tf'] / 1e9:.0f} GFLOP/s (matmul {args.matmul_size}²)",
             f"{step_flops / times[best]['median'] / peak['tf']:.0%}"),
        ], setup)
    common.record("bench_train.py", [], setup, False, args.output, results)
    return results


if __name__ == "__main__":
    main()
