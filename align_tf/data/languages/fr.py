"""French. Cercle, carré, triangle are masculine, étoile and croix feminine; the colour adjective
follows the noun and agrees (vert/verte, bleu/bleue, violet/violette; rouge, jaune unchanged;
orange, a noun used as colour, is invariable)."""

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
    masc, fem = COLOURS[colour]
    cg = masc if gender == "m" else fem
    a = "un" if gender == "m" else "une"
    return dict(c=masc, s=noun, cg=cg, a=a, x=f"{noun} {cg}", ax=f"{a} {noun} {cg}",
                bg="sombre" if bg == "dark" else "clair",
                **{"def": "l'" if noun[0] in "éa" else ("le " if gender == "m" else "la ")})
