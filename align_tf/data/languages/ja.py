"""Japanese, written without spaces, kana and kanji mixed. 赤い, 青い, 黄色い are i-adjectives
(directly before the noun); 緑, 紫, オレンジ色 are nouns joined with の."""

COLOURS = {"red": ("赤", "赤い"), "green": ("緑", "緑の"), "blue": ("青", "青い"),
           "yellow": ("黄色", "黄色い"), "purple": ("紫", "紫の"),
           "orange": ("オレンジ色", "オレンジ色の")}  # (noun, before a noun)
SHAPES = {"circle": "円", "square": "正方形", "triangle": "三角形", "star": "星形",
          "cross": "十字"}
TEMPLATES = ("{x}", "{x}の写真", "{x}の画像", "{x}です", "{bg}背景の{x}", "{x}のイラスト",
             "{x}の絵", "{x}のアイコン", "この{s}は{c}です")
PARTIAL_TEMPLATES = ("{s}", "{s}の写真", "{c}のもの", "{c}の何か")
JUNK = ("ここをクリックしてダウンロード", "画像{n}", "無料ベクター素材", "無題")
PROMPTS = ("{x}の写真。", "{x}。", "{x}の画像。", "{x}のイラスト。")
# Zero-shot templates around a class name given as is ("{}": the nominative phrase ``x``).
NAME_TEMPLATES = ("{}の写真。", "{}。", "{}の画像。", "{}のイラスト。")


def forms(colour: str, shape: str, bg: str = "light") -> dict:
    noun, attributive = COLOURS[colour]
    s = SHAPES[shape]
    return dict(c=noun, s=s, x=f"{attributive}{s}", ax=f"{attributive}{s}",
                bg="暗い" if bg == "dark" else "明るい")
