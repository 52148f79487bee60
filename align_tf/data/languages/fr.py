"""French. Cercle, carré, triangle are masculine, étoile and croix feminine; the colour adjective
follows the noun and agrees (vert/verte, bleu/bleue, violet/violette; rouge, jaune unchanged;
orange, a noun used as colour, is invariable)."""

from align_tf.data.languages import noun_then_adjective

COLOURS = {"red": ("rouge", "rouge"), "green": ("vert", "verte"), "blue": ("bleu", "bleue"),
           "yellow": ("jaune", "jaune"), "purple": ("violet", "violette"),
           "orange": ("orange", "orange")}
SHAPES = {"circle": ("cercle", "m"), "square": ("carré", "m"), "triangle": ("triangle", "m"),
          "star": ("étoile", "f"), "cross": ("croix", "f")}
TEMPLATES = ("{ax}", "une photo d'{ax}", "une image d'{ax}", "{x}", "{ax} sur fond {bg}",
             "clipart : {ax}", "un dessin d'{ax}", "icône : {x}", "{def}{s} est {cg}")
PARTIAL_TEMPLATES = ("{a} {s}", "une photo d'{a} {s}", "quelque chose de {c}", "la couleur {c}")
JUNK = ("cliquez ici pour télécharger", "image {n}", "graphiques vectoriels gratuits", "sans titre")
PROMPTS = ("une photo d'{ax}.", "{ax}.", "une image d'{ax}.", "un dessin d'{ax}.")
# Zero-shot templates around a class name given as is ("{}": the nominative phrase ``x``).
NAME_TEMPLATES = ("une photo : {}.", "{}.", "une image : {}.", "un dessin : {}.")


def forms(colour: str, shape: str, bg: str = "light") -> dict:
    noun, gender = SHAPES[shape]
    article = "l'" if noun[0] in "éa" else ("le " if gender == "m" else "la ")
    return noun_then_adjective(noun, gender, COLOURS[colour], {"m": "un", "f": "une"},
                               bg="sombre" if bg == "dark" else "clair", **{"def": article})
