"""English: the synthetic corpus' own tables (``align_tf.data.synthetic``)."""

from align_tf.data import synthetic

COLOURS = {c: c for c in synthetic.COLOURS}
SHAPES = {s: s for s in synthetic.SHAPES}
TEMPLATES = tuple(t.replace("{c} {s}", "{x}") for t in synthetic.TEMPLATES)
PARTIAL_TEMPLATES = synthetic.PARTIAL_TEMPLATES
JUNK = synthetic.JUNK
PROMPTS = tuple(p.replace("{}", "{x}") for p in synthetic.PROMPTS)
NAME_TEMPLATES = synthetic.PROMPTS


def forms(colour: str, shape: str, bg: str = "light") -> dict:
    x = f"{colour} {shape}"
    return dict(c=colour, s=shape, x=x, ax=f"a {x}", bg="dark" if bg == "dark" else "light",
                size="small")
