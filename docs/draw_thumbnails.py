"""Draws the template thumbnails of the colour match and best-of-N example workflows
(example_workflows/*.jpg, 512x384). Run: python docs/draw_thumbnails.py"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

WORKFLOWS = Path(__file__).resolve().parents[1] / "example_workflows"
INK, PAPER, GOLD, GREY = (34, 38, 48), (246, 242, 232), (250, 214, 92), (190, 194, 204)
SKY, GROUND, RED = (150, 186, 226), (160, 112, 72), (214, 58, 52)


def font(size: int, bold: bool = False):
    try:
        return ImageFont.truetype("DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf", size)
    except OSError:
        return ImageFont.load_default()


def card(title: str, subtitle: str, chain: str) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    picture = Image.new("RGB", (512, 384), INK)
    draw = ImageDraw.Draw(picture)
    draw.text((18, 14), title, fill=PAPER, font=font(20, bold=True))
    draw.text((18, 42), subtitle, fill=GREY, font=font(14))
    draw.text((18, 330), chain, fill=GREY, font=font(14))
    return picture, draw


def scene(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], ball: tuple | None, tint=None):
    x0, y0, x1, y1 = box
    horizon = y0 + (y1 - y0) * 3 // 5
    draw.rectangle((x0, y0, x1, horizon), fill=SKY)
    draw.rectangle((x0, horizon, x1, y1), fill=GROUND)
    if ball is not None:
        cx, cy, r = ball
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=tint or RED, outline=INK, width=2)


def colour_match() -> Image.Image:
    picture, draw = card(
        "Colour match the edit",
        "the painted object takes the light of its scene",
        "Load > Paint by Example (all-in-one) > Colour Match > Save",
    )
    scene(draw, (18, 90, 238, 300), (128, 220, 34), tint=(240, 90, 150))
    draw.text((70, 304), "edit: a colour cast", fill=GREY, font=font(13))
    draw.line((248, 195, 282, 195), fill=PAPER, width=4)
    draw.polygon([(290, 195), (278, 187), (278, 203)], fill=PAPER)
    scene(draw, (294, 90, 494, 300), (394, 220, 34), tint=(196, 70, 58))
    draw.text((350, 304), "matched", fill=GOLD, font=font(13))
    return picture


def best_of_n() -> Image.Image:
    picture, draw = card(
        "Best of 4 by CLIP score",
        "four seeds, ranked by the paper's region CLIP similarity",
        "Repeat Image Batch > all-in-one > Rank by CLIP Score > Save",
    )
    shades = [(214, 58, 52), (200, 120, 60), (150, 150, 150), (120, 90, 180)]
    scores = ["81.4", "74.9", "63.0", "58.2"]
    for index, (shade, score) in enumerate(zip(shades, scores, strict=True)):
        x = 18 + index * 122
        scene(draw, (x, 100, x + 110, 250), (x + 55, 205, 20), tint=shade)
        draw.text((x + 34, 258), score, fill=GOLD if index == 0 else GREY, font=font(16, index == 0))
    draw.rectangle((16, 98, 130, 252), outline=GOLD, width=3)
    draw.text((18, 290), "best first", fill=GOLD, font=font(14, bold=True))
    return picture


if __name__ == "__main__":
    colour_match().save(WORKFLOWS / "Paint by Example - colour match.jpg", quality=88)
    best_of_n().save(WORKFLOWS / "Paint by Example - best of 4 by CLIP score.jpg", quality=88)
