"""German. Every shape noun is masculine (Kreis, Stern) or neuter (Quadrat, Dreieck, Kreuz);
after "ein" the adjective takes the strong ending (roter / rotes), after "einem" (dative) -en.
"lila" and "orange" do not decline, so the tables use "violett" and "orangefarben"."""

COLOURS = {"red": "rot", "green": "grün", "blue": "blau", "yellow": "gelb",
           "purple": "violett", "orange": "orangefarben"}
SHAPES = {"circle": ("Kreis", "m"), "square": ("Quadrat", "n"), "triangle": ("Dreieck", "n"),
          "star": ("Stern", "m"), "cross": ("Kreuz", "n")}
TEMPLATES = ("{ax}", "ein Foto von einem {xd}", "ein Bild von einem {xd}", "{x}",
             "{ax} auf {bg} Hintergrund", "Clipart: {ax}", "Zeichnung von einem {xd}",
             "{x} als Symbol", "{def} {s} ist {c}")
PARTIAL_TEMPLATES = ("ein Foto von einem {s}", "ein {c}er Fleck", "{s}", "die Farbe {c}")
JUNK = ("hier klicken zum Herunterladen", "Bild {n}", "kostenlose Vektorgrafik", "ohne Titel")
PROMPTS = ("ein Foto von einem {xd}.", "{ax}.", "ein Bild von einem {xd}.", "Clipart: {ax}.")
# Zero-shot templates around a class name given as is ("{}": the nominative phrase ``x``).
NAME_TEMPLATES = ("ein Foto: {}.", "{}.", "ein Bild: {}.", "Clipart: {}.")


def forms(colour: str, shape: str, bg: str = "light") -> dict:
    noun, gender = SHAPES[shape]
    c = COLOURS[colour]
    strong = c + ("er" if gender == "m" else "es")
    return dict(c=c, s=noun, x=f"{strong} {noun}", ax=f"ein {strong} {noun}", xd=f"{c}en {noun}",
                bg="dunklem" if bg == "dark" else "hellem",
                **{"def": "der" if gender == "m" else "das"})
