"""Chinese (simplified), written without spaces. Colours are 颜色 nouns (红色) joined to the
shape with 的 or directly; no agreement."""

COLOURS = {"red": "红色", "green": "绿色", "blue": "蓝色", "yellow": "黄色", "purple": "紫色",
           "orange": "橙色"}
SHAPES = {"circle": "圆形", "square": "正方形", "triangle": "三角形", "star": "星形",
          "cross": "十字形"}
TEMPLATES = ("{ax}", "一张{x}的照片", "一幅{x}的图片", "{x}", "{bg}背景上的{ax}", "{x}剪贴画",
             "{x}的图画", "{x}图标", "这个{s}是{c}的")
PARTIAL_TEMPLATES = ("一个{s}", "{s}的照片", "{c}的东西", "{c}")
JUNK = ("点击这里下载", "图片{n}", "免费矢量图", "无标题")
PROMPTS = ("一张{x}的照片。", "{ax}。", "一幅{x}的图片。", "{x}的图画。")
# Zero-shot templates around a class name given as is ("{}": the nominative phrase ``x``).
NAME_TEMPLATES = ("一张{}的照片。", "{}。", "一幅{}的图片。", "{}的图画。")


def forms(colour: str, shape: str, bg: str = "light") -> dict:
    c, s = COLOURS[colour], SHAPES[shape]
    return dict(c=c, s=s, x=f"{c}的{s}", ax=f"一个{c}的{s}", bg="深色" if bg == "dark" else "浅色")
