"""Uses an exported ALIGN SavedModel with only tensorflow, tensorflow-text and tensorflow-hub.

No align_tf, no keras-hub: this is what a TF Hub user runs.

    python export/consumer_example.py --savedmodel=align_runs/default/savedmodel \
        [--image=cat.jpg --image=dog.png] [--classes="cat,dog,car"] [--text="a photo of a cat"]

Prints the embedding sizes, image–text cosine similarities and zero-shot probabilities. Without
--image it makes two synthetic images (a red and a blue square) so it runs anywhere.
"""

import argparse
import sys

import numpy as np
import tensorflow as tf
import tensorflow_text  # noqa: F401  registers the tokenizer ops: import before loading


def load(path):
    """``hub.load(path)``; ``tf.saved_model.load`` where tensorflow_hub cannot be imported.

    tensorflow-hub 0.16.1 imports ``pkg_resources``, which setuptools >= 82 no longer ships
    (tensorflow/hub#934; fix: ``pip install "setuptools<82"``). For a local path both loaders
    return the same object.
    """
    try:
        import tensorflow_hub as hub
    except ImportError as e:
        print(f"note: tensorflow_hub unavailable ({e}); using tf.saved_model.load", file=sys.stderr)
        return tf.saved_model.load(path)
    return hub.load(path)


def synthetic_images():
    """Two 120×160 float images in [0, 1]: a red and a blue square on grey."""
    out = np.full((2, 120, 160, 3), 0.5, np.float32)
    out[0, 30:90, 50:110] = (1.0, 0.1, 0.1)
    out[1, 30:90, 50:110] = (0.1, 0.1, 1.0)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--savedmodel", required=True, help="exported SavedModel directory")
    parser.add_argument("--image", action="append", default=[],
                        help="image file (JPEG/PNG/GIF/BMP); repeatable")
    parser.add_argument("--classes", default="red square,blue square,green circle",
                        help="comma-separated class names for zero-shot classification")
    parser.add_argument("--text", action="append", default=[], help="text to embed; repeatable")
    args = parser.parse_args(argv)

    m = load(args.savedmodel)
    print("signatures:", sorted(m.signatures))
    classes = [c.strip() for c in args.classes.split(",") if c.strip()]
    texts = args.text or [f"a photo of a {c}" for c in classes]

    if args.image:
        # Encoded bytes go straight in: decoding and preprocessing are in the SavedModel.
        encoded = tf.constant([tf.io.read_file(p).numpy() for p in args.image])
        out = m.image_embed_encoded(encoded)
        # A file that does not decode gets valid=False (and a zero row) instead of an error.
        valid = out["valid"].numpy()
        for name in np.asarray(args.image)[~valid]:
            print(f"skipped {name}: not a decodable image", file=sys.stderr)
        if not valid.any():
            sys.exit("consumer_example: error: none of the --image files decodes")
        image_emb = tf.boolean_mask(out["embeddings"], valid)
        # zero_shot_classify takes pixels: decode here (float RGB in [0, 1], any size) and
        # classify one image at a time, since files differ in size.
        pixels = [tf.io.decode_image(e, channels=3, dtype=tf.float32, expand_animations=False)
                  for e in encoded.numpy()[valid]]
        names = list(np.asarray(args.image)[valid])
    else:
        pixels = list(synthetic_images())
        image_emb = m.image_embed(tf.constant(np.stack(pixels)))["embeddings"]
        names = ["synthetic red square", "synthetic blue square"]

    text_emb = m.text_embed(tf.constant(texts))["embeddings"]
    print(f"image embeddings {tuple(image_emb.shape)}, text embeddings {tuple(text_emb.shape)}, "
          "norms " + ", ".join(f"{n:.4f}" for n in np.linalg.norm(image_emb.numpy(), axis=1)))
    cos = tf.matmul(image_emb, text_emb, transpose_b=True).numpy()
    for name, row in zip(names, cos):
        print(f"cosine {name}: " + ", ".join(f"{t!r}={c:+.3f}" for t, c in zip(texts, row)))

    class_names = tf.constant(classes)
    print(f"zero-shot over {classes} with {m.prompt_templates.shape[0]} prompt template(s), "
          f"temperature {float(m.temperature.numpy()):.4f}:")
    for name, image in zip(names, pixels):
        probs = m.zero_shot_classify(image[None], class_names)["probabilities"].numpy()[0]
        best = int(np.argmax(probs))
        print(f"  {name}: {classes[best]} ({probs[best]:.3f}); all "
              + ", ".join(f"{c}={p:.3f}" for c, p in zip(classes, probs)))


if __name__ == "__main__":
    main()
