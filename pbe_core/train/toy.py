"""The toy world: procedural scenes of coloured shapes, each object with its mask.

Nothing is downloaded: every scene is drawn from a seed. Objects are one of six shapes in one of
six well-separated, saturated hues; backgrounds are muted (gradients, stripes, smooth noise, a
floor under a horizon), so an object's colour is never the background's. The same module
classifies what a region shows (dominant hue, shape by template), which is how the toy-world
agreement is measured.
"""

from __future__ import annotations

import colorsys
import functools
import math
from dataclasses import dataclass

import numpy as np

SHAPES = ("disc", "square", "triangle", "ring", "cross", "star")
HUES = (0.0, 60.0, 120.0, 180.0, 240.0, 300.0)  # degrees
COLOURS = ("red", "yellow", "green", "cyan", "blue", "magenta")
BACKGROUNDS = ("gradient", "stripes", "noise", "horizon")
HELD_OUT = 1_000_000  # scene seeds from here on are never trained on
SCENE_SIZE = 64  # pixels a side: 8x8 latents (at 32 px, 4x4, the VAE cannot keep an object's colour)
SUPERSAMPLE = 4  # sub-pixels per side for anti-aliased shape edges
OBJECT_SATURATION = 0.6  # pixels at least this saturated (and bright) count as an object's


@dataclass(frozen=True)
class ToyObject:
    shape: int  # index into SHAPES
    colour: int  # index into COLOURS
    centre: tuple[float, float]  # (x, y) in pixels
    radius: float  # in pixels: the shape fits the disc of this radius
    angle: float  # degrees
    mask: np.ndarray  # (H, W) float32 in [0, 1], the object's anti-aliased coverage

    @property
    def box(self) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1), half-open, of the pixels the object covers."""
        ys, xs = np.nonzero(self.mask > 0.5)
        return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


@dataclass(frozen=True)
class ToyScene:
    image: np.ndarray  # (H, W, 3) uint8
    objects: tuple[ToyObject, ...]


# ---------------------------------------------------------------------------------------------
# Shapes


def _star_polygon(points: int = 5, inner: float = 0.45) -> np.ndarray:
    angles = np.arange(2 * points) * math.pi / points - math.pi / 2
    radii = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


_TRIANGLE = np.array([[0.0, -1.0], [0.866, 0.5], [-0.866, 0.5]])
_STAR = _star_polygon()


def _inside_polygon(x: np.ndarray, y: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Even-odd rule, vectorised over the points."""
    inside = np.zeros(x.shape, dtype=bool)
    for (x0, y0), (x1, y1) in zip(polygon, np.roll(polygon, -1, axis=0), strict=True):
        crosses = (y0 > y) != (y1 > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            at_x = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
        inside ^= crosses & (x < at_x)
    return inside


def _inside_shape(shape: int, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Whether unit-radius shape `shape` (upright, centred at 0) covers the points (x, y)."""
    name = SHAPES[shape]
    r = np.hypot(x, y)
    if name == "disc":
        return r <= 0.9
    if name == "square":
        return np.maximum(np.abs(x), np.abs(y)) <= 0.7
    if name == "triangle":
        return _inside_polygon(x, y, _TRIANGLE)
    if name == "ring":
        return (r <= 1.0) & (r >= 0.55)
    if name == "cross":
        arm = 0.32
        return ((np.abs(x) <= arm) & (np.abs(y) <= 1.0)) | ((np.abs(y) <= arm) & (np.abs(x) <= 1.0))
    return _inside_polygon(x, y, _STAR)


def render_shape(
    shape: int, centre: tuple[float, float], radius: float, angle: float, size: tuple[int, int]
) -> np.ndarray:
    """Anti-aliased coverage (H, W) float32 of a shape on a (height, width) canvas."""
    height, width = size
    coverage = np.zeros((height, width), dtype=np.float32)
    # only the pixels of the shape's bounding disc are sampled
    x0, y0 = (max(int(math.floor(c - radius * 1.1)), 0) for c in centre)
    x1 = min(int(math.ceil(centre[0] + radius * 1.1)) + 1, width)
    y1 = min(int(math.ceil(centre[1] + radius * 1.1)) + 1, height)
    if x1 <= x0 or y1 <= y0:
        return coverage
    offsets = (np.arange(SUPERSAMPLE) + 0.5) / SUPERSAMPLE
    ys = (np.arange(y0, y1)[:, None] + offsets[None, :]).reshape(-1)
    xs = (np.arange(x0, x1)[:, None] + offsets[None, :]).reshape(-1)
    gx, gy = np.meshgrid(xs - centre[0], ys - centre[1])
    theta = math.radians(angle)
    # rotate the sample points by -angle: the shape turns by +angle
    lx = (math.cos(theta) * gx + math.sin(theta) * gy) / radius
    ly = (-math.sin(theta) * gx + math.cos(theta) * gy) / radius
    covered = _inside_shape(shape, lx, ly).astype(np.float32)
    window = covered.reshape(y1 - y0, SUPERSAMPLE, x1 - x0, SUPERSAMPLE).mean(axis=(1, 3))
    coverage[y0:y1, x0:x1] = window
    return coverage


# ---------------------------------------------------------------------------------------------
# Colours


def hsv_to_rgb(hue_degrees: float, saturation: float, value: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb((hue_degrees % 360) / 360, saturation, value), dtype=np.float32)


def rgb_to_hsv(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(..., 3) floats in [0, 1] -> hue in degrees, saturation, value (vectorised)."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    high, low = rgb.max(axis=-1), rgb.min(axis=-1)
    spread = high - low
    safe = np.where(spread > 0, spread, 1.0)
    hue = np.where(
        high == r, ((g - b) / safe) % 6, np.where(high == g, (b - r) / safe + 2, (r - g) / safe + 4)
    )
    saturation = np.where(high > 0, spread / np.where(high > 0, high, 1.0), 0.0)
    return np.where(spread > 0, hue * 60.0, 0.0), saturation, high


def nearest_colour(hue_degrees: np.ndarray) -> np.ndarray:
    """Index of the palette hue nearest to each hue (circular distance)."""
    distance = np.abs((np.asarray(hue_degrees)[..., None] - np.array(HUES) + 180) % 360 - 180)
    return distance.argmin(axis=-1)


def _muted(rng: np.random.Generator) -> np.ndarray:
    """A background colour: any hue, low saturation, so it never reads as an object colour."""
    return hsv_to_rgb(rng.uniform(0, 360), rng.uniform(0.0, 0.3), rng.uniform(0.3, 0.9))


def _mix(a: np.ndarray, b: np.ndarray, weight: np.ndarray) -> np.ndarray:
    return a * (1 - weight[..., None]) + b * weight[..., None]


def background(rng: np.random.Generator, size: tuple[int, int], kind: str | None = None) -> np.ndarray:
    """A muted background (H, W, 3) float32 in [0, 1]."""
    height, width = size
    kind = kind or BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    a, b = _muted(rng), _muted(rng)
    if kind == "gradient":
        theta = rng.uniform(0, 2 * math.pi)
        along = math.cos(theta) * xx / width + math.sin(theta) * yy / height
        image = _mix(a, b, (along - along.min()) / max(np.ptp(along), 1e-6))
    elif kind == "stripes":
        theta = rng.uniform(0, math.pi)
        period = rng.uniform(6, 16) * max(height, width) / 64
        phase = (math.cos(theta) * xx + math.sin(theta) * yy) / period
        image = _mix(a, b, (np.sin(2 * math.pi * phase) > 0).astype(np.float32) * 0.8)
    elif kind == "noise":
        coarse = rng.uniform(0, 1, (5, 5)).astype(np.float32)
        image = _mix(a, b, _upsample(coarse, size))
    elif kind == "horizon":
        horizon = rng.uniform(0.3, 0.6) * height
        sky = _mix(a, a * 0.7 + 0.3, np.clip(yy / horizon, 0, 1))
        floor = _mix(b * 0.8, b, np.clip((yy - horizon) / (height - horizon), 0, 1))
        image = np.where((yy < horizon)[..., None], sky, floor)
    else:
        raise ValueError(f"background kind must be one of {BACKGROUNDS}; got {kind!r}")
    grain = rng.normal(0, 0.02, (height, width, 1)).astype(np.float32)
    return np.clip(image + grain, 0, 1).astype(np.float32)


def _upsample(grid: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a small grid to (H, W)."""
    height, width = size
    gy = np.linspace(0, grid.shape[0] - 1, height)
    gx = np.linspace(0, grid.shape[1] - 1, width)
    y0, x0 = np.floor(gy).astype(int), np.floor(gx).astype(int)
    y1, x1 = np.minimum(y0 + 1, grid.shape[0] - 1), np.minimum(x0 + 1, grid.shape[1] - 1)
    wy, wx = (gy - y0)[:, None], (gx - x0)[None, :]
    top = grid[y0][:, x0] * (1 - wx) + grid[y0][:, x1] * wx
    bottom = grid[y1][:, x0] * (1 - wx) + grid[y1][:, x1] * wx
    return (top * (1 - wy) + bottom * wy).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Scenes


def _object_pixels(rng: np.random.Generator, colour: int, coverage: np.ndarray) -> np.ndarray:
    """An object's colour with a gentle lighting gradient, (H, W, 3)."""
    height, width = coverage.shape
    base = hsv_to_rgb(HUES[colour] + rng.uniform(-8, 8), rng.uniform(0.8, 1.0), rng.uniform(0.8, 1.0))
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    theta = rng.uniform(0, 2 * math.pi)
    light = 1.0 + 0.12 * (math.cos(theta) * (xx / width - 0.5) + math.sin(theta) * (yy / height - 0.5))
    return np.clip(base[None, None, :] * light[..., None], 0, 1)


def make_scene(
    seed: int,
    size: int = SCENE_SIZE,
    objects: int | None = None,
    shape: int | None = None,
    colour: int | None = None,
) -> ToyScene:
    """One scene, deterministic in `seed`: 1 or 2 objects (or `objects`), the first of the given
    `shape` and `colour` when they are set. Objects do not overlap."""
    rng = np.random.default_rng(seed)
    count = int(rng.integers(1, 3)) if objects is None else objects
    image = background(rng, (size, size))
    placed: list[ToyObject] = []
    for index in range(count):
        for _ in range(100):
            radius = rng.uniform(0.16, 0.26) * size
            centre = (rng.uniform(radius, size - radius), rng.uniform(radius, size - radius))
            if all(math.dist(centre, o.centre) > radius + o.radius + 2 for o in placed):
                break
        else:
            break  # no room for another object
        kind = shape if index == 0 and shape is not None else int(rng.integers(len(SHAPES)))
        hue = colour if index == 0 and colour is not None else int(rng.integers(len(COLOURS)))
        angle = float(rng.uniform(-30, 30))
        coverage = render_shape(kind, centre, radius, angle, (size, size))
        image = _mix(image, _object_pixels(rng, hue, coverage), coverage)
        placed.append(ToyObject(kind, hue, centre, radius, angle, coverage))
    pixels = (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
    return ToyScene(pixels, tuple(placed))


# ---------------------------------------------------------------------------------------------
# Reading a region back: colour and shape


def object_pixels_mask(rgb: np.ndarray) -> np.ndarray:
    """Pixels saturated and bright enough to be an object's, (H, W) bool; rgb in [0, 1]."""
    _, saturation, value = rgb_to_hsv(rgb)
    return (saturation >= OBJECT_SATURATION) & (value >= 0.35)


def dominant_colour(rgb: np.ndarray, region: np.ndarray, min_pixels: int = 4) -> int | None:
    """The palette colour most of the object-like pixels inside `region` have, or None when
    fewer than `min_pixels` pixels there look like an object. rgb (H, W, 3) in [0, 1]."""
    candidates = object_pixels_mask(rgb) & region
    if candidates.sum() < min_pixels:
        return None
    hue, _, _ = rgb_to_hsv(rgb[candidates])
    return int(np.bincount(nearest_colour(hue), minlength=len(COLOURS)).argmax())


def colour_mask(rgb: np.ndarray, region: np.ndarray, colour: int) -> np.ndarray:
    """Pixels inside `region` that look like an object of palette colour `colour`."""
    hue, _, _ = rgb_to_hsv(rgb)
    return object_pixels_mask(rgb) & region & (nearest_colour(hue) == colour)


def classify_shape(blob: np.ndarray, canvas: int = 24, angles: int = 72) -> int | None:
    """The shape whose template best overlaps a binary blob (IoU over rotations), or None for
    an empty blob. The blob is centred on its centroid and scaled by its largest extent."""
    ys, xs = np.nonzero(blob)
    if len(xs) < 4:
        return None
    cy, cx = ys.mean(), xs.mean()
    extent = max(np.hypot(xs - cx, ys - cy).max(), 1.0) + 0.5
    scale = (canvas / 2 - 1) / extent
    grid = np.zeros((canvas, canvas), dtype=bool)
    gy = np.clip(np.round((ys - cy) * scale + canvas / 2).astype(int), 0, canvas - 1)
    gx = np.clip(np.round((xs - cx) * scale + canvas / 2).astype(int), 0, canvas - 1)
    # spread each blob pixel over the template grid cells it covers
    spread = max(1, int(math.ceil(scale)))
    for dy in range(spread):
        for dx in range(spread):
            grid[np.clip(gy + dy - spread // 2, 0, canvas - 1), np.clip(gx + dx - spread // 2, 0, canvas - 1)] = True
    templates = _templates(canvas, angles)  # (shapes, angles, canvas, canvas)
    overlap = (templates & grid).sum(axis=(2, 3))
    union = np.maximum((templates | grid).sum(axis=(2, 3)), 1)
    return int((overlap / union).max(axis=1).argmax())


@functools.lru_cache(maxsize=4)
def _templates(canvas: int, angles: int) -> np.ndarray:
    centre, radius = (canvas / 2, canvas / 2), canvas / 2 - 1
    return np.array([
        [
            render_shape(shape, centre, _template_radius(shape) * radius, step * 360 / angles, (canvas, canvas)) > 0.5
            for step in range(angles)
        ]
        for shape in range(len(SHAPES))
    ])


def _template_radius(shape: int) -> float:
    """Radius at which a unit shape's farthest point from its centroid is at 1."""
    return {"disc": 1 / 0.9, "square": 1 / (0.7 * math.sqrt(2)), "triangle": 1 / 1.0,
            "ring": 1.0, "cross": 1 / math.hypot(1.0, 0.32), "star": 1.0}[SHAPES[shape]]


# ---------------------------------------------------------------------------------------------
# Held-out edits


@dataclass(frozen=True)
class ToyCase:
    """One held-out edit: put the exemplar's object where the scene's first object was."""

    scene: np.ndarray  # (H, W, 3) uint8
    mask: np.ndarray  # (H, W) uint8, 255 = edit: the first object's box grown by a margin
    exemplar: np.ndarray  # (h, w, 3) uint8: another scene's object, cropped with a little pad
    colour: int  # the exemplar object's
    shape: int


def toy_cases(count: int, first: int = HELD_OUT, size: int = SCENE_SIZE, margin: int = 5) -> list[ToyCase]:
    """`count` held-out edits; each exemplar's colour differs from the object it replaces, so
    repainting the old object and following the exemplar cannot be confused."""
    cases = []
    for index in range(count):
        seed = first + 2 * index
        scene = make_scene(seed, size)
        target = scene.objects[0]
        rng = np.random.default_rng(seed)
        colour = (target.colour + 1 + int(rng.integers(len(COLOURS) - 1))) % len(COLOURS)
        donor = make_scene(seed + 1, size, objects=1, colour=colour)
        x0, y0, x1, y1 = target.box
        mask = np.zeros((size, size), dtype=np.uint8)
        mask[max(y0 - margin, 0) : y1 + margin, max(x0 - margin, 0) : x1 + margin] = 255
        dx0, dy0, dx1, dy1 = donor.objects[0].box
        pad = 2
        exemplar = donor.image[max(dy0 - pad, 0) : dy1 + pad, max(dx0 - pad, 0) : dx1 + pad]
        cases.append(ToyCase(scene.image, mask, exemplar, colour, donor.objects[0].shape))
    return cases
