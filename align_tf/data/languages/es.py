"""Spanish. Círculo, cuadrado, triángulo are masculine, estrella and cruz feminine; the colour
follows the noun and agrees in -o/-a (rojo/roja, amarillo/amarilla, morado/morada); verde and
azul do not change and naranja, a noun used as colour, is invariable."""

from align_tf.data.languages import noun_then_adjective

COLOURS = {"red": ("rojo", "roja"), "green": ("verde", "verde"), "blue": ("azul", "azul"),
           "yellow": ("amarillo", "amarilla"), "purple": ("morado", "morada"),
           "orange": ("naranja", "naranja")}
SHAPES = {"circle": ("círculo", "m"), "square": ("cuadrado", "m"), "triangle": ("triángulo", "m"),
          "star": ("estrella", "f"), "cross": ("cruz", "f")}
TEMPLATES = ("{ax}", "una foto de {ax}", "una imagen de {ax}", "{x}", "{ax} sobre fondo {bg}",
             "clipart de {ax}", "un dibujo de {ax}", "icono de {ax}", "{def} {s} es {cg}")
PARTIAL_TEMPLATES = ("{a} {s}", "una foto de {a} {s}", "algo {c}", "el color {c}")
JUNK = ("haz clic aquí para descargar", "imagen {n}", "gráficos vectoriales gratis", "sin título")
PROMPTS = ("una foto de {ax}.", "{ax}.", "una imagen de {ax}.", "un dibujo de {ax}.")
# Zero-shot templates around a class name given as is ("{}": the nominative phrase ``x``).
NAME_TEMPLATES = ("una foto: {}.", "{}.", "una imagen: {}.", "un dibujo: {}.")


def forms(colour: str, shape: str, bg: str = "light") -> dict:
    noun, gender = SHAPES[shape]
    return noun_then_adjective(noun, gender, COLOURS[colour], {"m": "un", "f": "una"},
                               bg="oscuro" if bg == "dark" else "claro",
                               **{"def": "el" if gender == "m" else "la"})
