"""Arabic (right to left). دائرة and نجمة are feminine, مربع, مثلث, صليب masculine; the colour
follows the noun and agrees: أحمر/حمراء, أخضر/خضراء, أزرق/زرقاء, أصفر/صفراء (colour pattern
أفعل/فعلاء), بنفسجي/بنفسجية, برتقالي/برتقالية (nisba adjectives)."""

COLOURS = {"red": ("أحمر", "حمراء"), "green": ("أخضر", "خضراء"), "blue": ("أزرق", "زرقاء"),
           "yellow": ("أصفر", "صفراء"), "purple": ("بنفسجي", "بنفسجية"),
           "orange": ("برتقالي", "برتقالية")}
SHAPES = {"circle": ("دائرة", "f"), "square": ("مربع", "m"), "triangle": ("مثلث", "m"),
          "star": ("نجمة", "f"), "cross": ("صليب", "m")}
COLOUR_NOUNS = {"red": "الأحمر", "green": "الأخضر", "blue": "الأزرق", "yellow": "الأصفر",
                "purple": "البنفسجي", "orange": "البرتقالي"}  # "اللون الأحمر"
TEMPLATES = ("{x}", "صورة {x}", "صورة ل{x}", "{x} على خلفية {bg}", "رسم {x}", "أيقونة {x}",
             "رسم توضيحي ل{x}", "شكل {x}")
PARTIAL_TEMPLATES = ("{s}", "صورة {s}", "شيء {c}", "اللون {cn}")
JUNK = ("انقر هنا للتحميل", "صورة {n}", "رسومات متجهة مجانية", "بدون عنوان")
PROMPTS = ("صورة {x}.", "{x}.", "رسم {x}.", "صورة ل{x}.")
# Zero-shot templates around a class name given as is ("{}": the nominative phrase ``x``).
NAME_TEMPLATES = ("صورة {}.", "{}.", "رسم {}.", "صورة ل{}.")


def forms(colour: str, shape: str, bg: str = "light") -> dict:
    noun, gender = SHAPES[shape]
    masc, fem = COLOURS[colour]
    cg = masc if gender == "m" else fem
    return dict(c=masc, s=noun, cn=COLOUR_NOUNS[colour], x=f"{noun} {cg}", ax=f"{noun} {cg}",
                bg="داكنة" if bg == "dark" else "فاتحة")
