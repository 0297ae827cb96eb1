"""Draws the pack's Registry icon (docs/icon.png, 256 px square) and banner (docs/banner.png).

The picture is the method: an exemplar (a small red ball, top left) is painted into the masked
region (dashed box) of a scene. Run: python docs/draw_icon.py
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

HERE = Path(__file__).resolve().parent
SKY, GRASS, SUN = (122, 176, 232), (92, 160, 84), (250, 214, 92)
BALL, INK, PAPER = (214, 58, 52), (34, 38, 48), (246, 242, 232)


def ball(draw: ImageDraw.ImageDraw, centre: tuple[float, float], radius: float) -> None:
    x, y = centre
    draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=BALL, outline=INK, width=3)
    glint = radius * 0.35
    draw.ellipse((x - radius * 0.55, y - radius * 0.6, x - radius * 0.55 + glint, y - radius * 0.6 + glint),
                 fill=(250, 190, 180))


def dashed_box(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], dash: int = 10) -> None:
    x0, y0, x1, y1 = box
    for x in range(x0, x1, 2 * dash):
        draw.line((x, y0, min(x + dash, x1), y0), fill=PAPER, width=4)
        draw.line((x, y1, min(x + dash, x1), y1), fill=PAPER, width=4)
    for y in range(y0, y1, 2 * dash):
        draw.line((x0, y, x0, min(y + dash, y1)), fill=PAPER, width=4)
        draw.line((x1, y, x1, min(y + dash, y1)), fill=PAPER, width=4)


def icon(size: int = 256) -> Image.Image:
    scale = 4  # drawn large, then reduced: smooth edges
    side = size * scale
    picture = Image.new("RGB", (side, side), INK)
    draw = ImageDraw.Draw(picture)
    s = side / 256
    draw.rounded_rectangle((0, 0, side - 1, side - 1), radius=40 * s, fill=INK)
    scene = (24 * s, 24 * s, 232 * s, 232 * s)
    draw.rounded_rectangle(scene, radius=20 * s, fill=SKY)
    draw.pieslice((-40 * s, 150 * s, 300 * s, 380 * s), 180, 360, fill=GRASS)
    draw.ellipse((176 * s, 44 * s, 212 * s, 80 * s), fill=SUN)
    region = tuple(int(v * s) for v in (108, 112, 208, 212))
    dashed_box(draw, region, dash=int(9 * s))
    ball(draw, (158 * s, 162 * s), 38 * s)
    # the exemplar, on its card
    draw.rounded_rectangle((12 * s, 12 * s, 96 * s, 96 * s), radius=12 * s, fill=PAPER, outline=INK, width=int(3 * s))
    ball(draw, (54 * s, 54 * s), 26 * s)
    draw.line((96 * s, 80 * s, 122 * s, 118 * s), fill=PAPER, width=int(6 * s))
    draw.polygon([(128 * s, 128 * s), (108 * s, 118 * s), (124 * s, 106 * s)], fill=PAPER)
    return picture.resize((size, size), Image.Resampling.LANCZOS)


def banner(width: int = 1200, height: int = 300) -> Image.Image:
    picture = Image.new("RGB", (width, height), INK)
    picture.paste(icon(height - 40), (20, 20))
    draw = ImageDraw.Draw(picture)
    try:
        title = ImageFont.truetype("DejaVuSans-Bold.ttf", 72)
        line = ImageFont.truetype("DejaVuSans.ttf", 34)
    except OSError:
        title = line = ImageFont.load_default()
    draw.text((height + 20, 70), "Paint by Example", fill=PAPER, font=title)
    draw.text((height + 24, 170), "put the object of a photo into a masked region", fill=SUN, font=line)
    return picture


if __name__ == "__main__":
    icon().save(HERE / "icon.png", optimize=True)
    banner().save(HERE / "banner.png", optimize=True)
