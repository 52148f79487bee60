"""Czech. Kruh, čtverec, trojúhelník and kříž are masculine inanimate (adjective -ý), hvězda
feminine (-á); the adjective precedes the noun. Templates keep the noun phrase in the nominative
("fotka: červený kruh"); the background phrase is in the locative (na tmavém pozadí)."""

COLOURS = {"red": "červen", "green": "zelen", "blue": "modr", "yellow": "žlut",
           "purple": "fialov", "orange": "oranžov"}  # stems; + ý (masculine) / á (feminine)
SHAPES = {"circle": ("kruh", "m"), "square": ("čtverec", "m"), "triangle": ("trojúhelník", "m"),
          "star": ("hvězda", "f"), "cross": ("kříž", "m")}
TEMPLATES = ("{x}", "fotka: {x}", "obrázek: {x}", "{x} na {bg} pozadí", "klipart {x}",
             "kresba: {x}", "ikona {x}", "{s} je {cg}")
PARTIAL_TEMPLATES = ("{s}", "fotka: {s}", "něco {c}ého", "{c}á barva")
JUNK = ("klikněte zde pro stažení", "obrázek {n}", "vektorová grafika zdarma", "bez názvu")
PROMPTS = ("fotka: {x}.", "{x}.", "obrázek: {x}.", "kresba: {x}.")
# Zero-shot templates around a class name given as is ("{}": the nominative phrase ``x``).
NAME_TEMPLATES = ("fotka: {}.", "{}.", "obrázek: {}.", "kresba: {}.")


def forms(colour: str, shape: str, bg: str = "light") -> dict:
    noun, gender = SHAPES[shape]
    stem = COLOURS[colour]
    cg = stem + ("ý" if gender == "m" else "á")
    return dict(c=stem, s=noun, cg=cg, x=f"{cg} {noun}", ax=f"{cg} {noun}",
                bg="tmavém" if bg == "dark" else "světlém")
