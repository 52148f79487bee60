"""Russian. Круг, квадрат, треугольник, крест are masculine (-ый/-ий), звезда feminine (-ая/-яя);
синий is a soft-stem adjective (синий/синяя). Templates keep the noun phrase in the nominative;
the background phrase is prepositional (на тёмном фоне)."""

COLOURS = {"red": ("красный", "красная"), "green": ("зелёный", "зелёная"),
           "blue": ("синий", "синяя"), "yellow": ("жёлтый", "жёлтая"),
           "purple": ("фиолетовый", "фиолетовая"), "orange": ("оранжевый", "оранжевая")}
SHAPES = {"circle": ("круг", "m"), "square": ("квадрат", "m"), "triangle": ("треугольник", "m"),
          "star": ("звезда", "f"), "cross": ("крест", "m")}
COLOUR_NOUNS = {"red": "красного", "green": "зелёного", "blue": "синего", "yellow": "жёлтого",
                "purple": "фиолетового", "orange": "оранжевого"}  # genitive: "цвета красного"
TEMPLATES = ("{x}", "фото: {x}", "картинка: {x}", "{x} на {bg} фоне", "клипарт: {x}",
             "рисунок: {x}", "значок: {x}", "{s} {cg} цвета")
PARTIAL_TEMPLATES = ("{s}", "фото: {s}", "что-то {cn} цвета", "{c} цвет")
JUNK = ("нажмите здесь, чтобы скачать", "изображение {n}", "бесплатная векторная графика",
        "без названия")
PROMPTS = ("фото: {x}.", "{x}.", "картинка: {x}.", "рисунок: {x}.")
# Zero-shot templates around a class name given as is ("{}": the nominative phrase ``x``).
NAME_TEMPLATES = ("фото: {}.", "{}.", "картинка: {}.", "рисунок: {}.")


def forms(colour: str, shape: str, bg: str = "light") -> dict:
    noun, gender = SHAPES[shape]
    masc, fem = COLOURS[colour]
    cg = masc if gender == "m" else fem
    return dict(c=masc, s=noun, cg=COLOUR_NOUNS[colour], cn=COLOUR_NOUNS[colour],
                x=f"{cg} {noun}", ax=f"{cg} {noun}", bg="тёмном" if bg == "dark" else "светлом")
