"""Hindi (Devanagari). Every shape noun here is masculine; हरा, नीला, पीला agree (direct हरा,
oblique हरे before a postposition such as की), लाल, बैंगनी, नारंगी do not change. तारा itself
becomes तारे in the oblique ("हरे तारे की तस्वीर")."""

COLOURS = {"red": "लाल", "green": "हरा", "blue": "नीला", "yellow": "पीला", "purple": "बैंगनी",
           "orange": "नारंगी"}
SHAPES = {"circle": "वृत्त", "square": "वर्ग", "triangle": "त्रिभुज", "star": "तारा",
          "cross": "क्रॉस"}
TEMPLATES = ("{x}", "{xo} की तस्वीर", "{xo} का चित्र", "{bg} पृष्ठभूमि पर {ax}",
             "{xo} का क्लिपआर्ट",
             "{xo} का रेखाचित्र", "{x} आइकन", "यह {s} {c} है")
PARTIAL_TEMPLATES = ("{s}", "{so} की तस्वीर", "कुछ {c}", "{c} रंग")
JUNK = ("डाउनलोड करने के लिए यहाँ क्लिक करें", "चित्र {n}", "मुफ़्त वेक्टर ग्राफ़िक्स", "शीर्षकहीन")
PROMPTS = ("{xo} की तस्वीर।", "{ax}।", "{xo} का चित्र।", "{xo} का रेखाचित्र।")
# Zero-shot templates around a class name given as is ("{}": the nominative phrase ``x``).
NAME_TEMPLATES = ("तस्वीर: {}।", "{}।", "चित्र: {}।", "रेखाचित्र: {}।")


def _oblique(word: str) -> str:
    """Masculine -ā words (हरा, तारा) → -e (हरे, तारे) in the oblique singular."""
    return word[:-1] + "े" if word.endswith("ा") else word


def forms(colour: str, shape: str, bg: str = "light") -> dict:
    c, s = COLOURS[colour], SHAPES[shape]
    return dict(c=c, s=s, so=_oblique(s), x=f"{c} {s}", ax=f"एक {c} {s}",
                xo=f"{_oblique(c)} {_oblique(s)}", bg="गहरी" if bg == "dark" else "हल्की")
