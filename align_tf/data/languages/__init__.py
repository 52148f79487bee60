"""Per-language word tables of the synthetic corpus: colour and shape words with agreement,
caption templates, junk alt-texts and zero-shot prompts, for ``LANGUAGES``.

Each language is one module with the same names:

* ``COLOURS`` / ``SHAPES``: the English key (``synthetic.COLOURS`` / ``synthetic.SHAPES``) → the
  word standing alone (colour-only and shape-only captions);
* ``forms(colour, shape, bg)``: the fields its templates use, with the adjective agreeing with
  the noun in gender (and case, where a template needs another case): ``ax`` is the indefinite
  noun phrase ("ein roter Kreis", "une étoile verte", "赤い円"), ``x`` the same without the
  article ("roter Kreis": the class name), ``c``/``s`` the bare words, ``bg`` the background;
* ``TEMPLATES`` (full captions), ``PARTIAL_TEMPLATES`` (``{c}`` or ``{s}`` only), ``JUNK``
  (language-specific boilerplate; file names stay shared), ``PROMPTS`` (zero-shot, with the
  forms) and ``NAME_TEMPLATES`` ("{}" for a class name given as is, e.g. to export).

English reuses ``synthetic``'s tables, so its captions read as the English corpus' do.
"""

from __future__ import annotations

import importlib

LANGUAGES = ("en", "de", "fr", "cs", "es", "ru", "zh", "ja", "ar", "hi")


def get(code: str):
    """The table module of language ``code``; a one-line ``ValueError`` for another code."""
    if code not in LANGUAGES:
        raise ValueError(f"unknown language {code!r}; choose from {', '.join(LANGUAGES)}")
    return importlib.import_module(f"{__name__}.{code}")


def phrase(code: str, pair, bg: str = "light") -> str:
    """The noun phrase (class name) for ``pair = (colour, shape)`` in language ``code``."""
    return get(code).forms(pair[0], pair[1], bg)["x"]


def prompts(code: str, pair) -> list:
    """The zero-shot prompts for ``pair`` in language ``code``."""
    lang = get(code)
    fields = lang.forms(pair[0], pair[1], "light")
    return [p.format(**fields) for p in lang.PROMPTS]


def noun_then_adjective(noun: str, gender: str, colour_forms, articles: dict, **extra) -> dict:
    """``forms`` of a language whose colour follows the noun and agrees in gender (fr, es):
    ``c`` (masculine), ``s``, ``cg`` (agreeing), ``a`` (indefinite article), ``x``, ``ax``,
    plus ``extra``. ``colour_forms``: (masculine, feminine); ``articles``: gender → article."""
    masc, fem = colour_forms
    cg = masc if gender == "m" else fem
    a = articles[gender]
    return dict(c=masc, s=noun, cg=cg, a=a, x=f"{noun} {cg}", ax=f"{a} {noun} {cg}", **extra)
