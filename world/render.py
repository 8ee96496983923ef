"""Drawing scenes: shapes as polygons on a supersampled PIL canvas, reduced to the image size.

Two rendering styles exist on purpose. The generator, the VAE and the guides learn from
`TRAIN_STYLE` (4x supersampled box-filter anti-aliasing, no noise). The shape judge learns
from `JUDGE_STYLE` (2x bilinear reduction, more jitter, pixel noise and blur), so nothing it
knows comes from the pipeline it judges.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from .scene import COLORS, IMAGE_SIZE, SIZE_RADII, Scene, ShapeSpec, place_center

STRIPE_PERIOD = 4  # pixels at the output size: 2 px of colour, 2 px of its shade
STRIPE_SHADE = 0.55


@dataclass(frozen=True)
class RenderStyle:
    supersample: int = 4
    reduce: str = "box"  # PIL filter used to reduce the supersampled canvas
    noise: float = 0.0  # std of Gaussian pixel noise, in [0, 1] units
    blur: float = 0.0  # max Gaussian blur radius in output pixels (drawn per image)


TRAIN_STYLE = RenderStyle()
JUDGE_STYLE = RenderStyle(supersample=2, reduce="bilinear", noise=0.03, blur=0.6)


def _star(points: int = 5, inner: float = 0.45) -> list[tuple[float, float]]:
    out = []
    for k in range(points * 2):
        radius = 1.0 if k % 2 == 0 else inner
        angle = -math.pi / 2 + k * math.pi / points
        out.append((radius * math.cos(angle), radius * math.sin(angle)))
    return out


def _regular(count: int, start: float = -math.pi / 2) -> list[tuple[float, float]]:
    return [(math.cos(start + 2 * math.pi * k / count), math.sin(start + 2 * math.pi * k / count)) for k in range(count)]


def _heart(samples: int = 48) -> list[tuple[float, float]]:
    pts = []
    for k in range(samples):
        t = 2 * math.pi * k / samples
        x = 16 * math.sin(t) ** 3
        y = -(13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t))
        pts.append((x / 17.0, (y + 2.5) / 17.0))
    return pts


_ARM = 0.36
# Unit outlines (circumradius about 1, y pointing down). Circle and ring are drawn as ellipses.
OUTLINES: dict[str, list[tuple[float, float]]] = {
    "square": [(-0.75, -0.75), (0.75, -0.75), (0.75, 0.75), (-0.75, 0.75)],
    "triangle": [(0.0, -1.0), (0.92, 0.7), (-0.92, 0.7)],
    "star": _star(),
    "cross": [
        (-_ARM, -1),
        (_ARM, -1),
        (_ARM, -_ARM),
        (1, -_ARM),
        (1, _ARM),
        (_ARM, _ARM),
        (_ARM, 1),
        (-_ARM, 1),
        (-_ARM, _ARM),
        (-1, _ARM),
        (-1, -_ARM),
        (-_ARM, -_ARM),
    ],
    "heart": _heart(),
    "diamond": [(0.0, -1.0), (0.62, 0.0), (0.0, 1.0), (-0.62, 0.0)],
}
RING_INNER = 0.55
ROUND = ("circle", "ring")


def transform(outline, cx: float, cy: float, radius: float, degrees: float) -> list[tuple[float, float]]:
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return [(cx + radius * (x * c - y * s), cy + radius * (x * s + y * c)) for x, y in outline]


def _mask(shape: str, cx: float, cy: float, radius: float, degrees: float, side: int, outline=None) -> Image.Image:
    mask = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(mask)
    if outline is not None:
        draw.polygon(transform(outline, cx, cy, radius, degrees), fill=255)
    elif shape in ROUND:
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=255)
        if shape == "ring":
            r = radius * RING_INNER
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=0)
    else:
        draw.polygon(transform(OUTLINES[shape], cx, cy, radius, degrees), fill=255)
    return mask


def _fill(color: tuple[int, int, int], striped: bool, side: int, scale: int) -> Image.Image:
    fill = Image.new("RGB", (side, side), color)
    if striped:
        shade = tuple(int(c * STRIPE_SHADE) for c in color)
        draw = ImageDraw.Draw(fill)
        band = STRIPE_PERIOD * scale // 2
        for top in range(band, side, 2 * band):
            draw.rectangle((0, top, side, top + band - 1), fill=shade)
    return fill


def _draw_shape(canvas: Image.Image, spec: ShapeSpec, jitter: tuple[float, ...], scale: int) -> None:
    side = canvas.size[0]
    dx, dy, radius_factor, degrees = jitter if jitter else (0.0, 0.0, 1.0, 0.0)
    fx, fy = place_center(spec.place)
    cx, cy = (fx + dx) * side, (fy + dy) * side
    radius = SIZE_RADII[spec.size] * radius_factor * side
    mask = _mask(spec.shape, cx, cy, radius, degrees, side)
    canvas.paste(_fill(COLORS[spec.color], spec.striped, side, scale), (0, 0), mask)


_FILTERS = {"box": Image.Resampling.BOX, "bilinear": Image.Resampling.BILINEAR, "lanczos": Image.Resampling.LANCZOS}


def _finish(canvas: Image.Image, style: RenderStyle, rng: np.random.Generator | None, size: int) -> np.ndarray:
    image = canvas.resize((size, size), _FILTERS[style.reduce])
    if style.blur > 0 and rng is not None:
        from PIL import ImageFilter

        image = image.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0, style.blur))))
    pixels = np.asarray(image, dtype=np.float32) / 255.0
    if style.noise > 0 and rng is not None:
        pixels = pixels + rng.normal(0.0, style.noise, pixels.shape).astype(np.float32)
    return np.clip(pixels, 0.0, 1.0)


def render(scene: Scene, style: RenderStyle = TRAIN_STYLE, rng: np.random.Generator | None = None, size: int = IMAGE_SIZE) -> np.ndarray:
    """The scene as float32 (H, W, 3) in [0, 1]. `rng` draws the style's blur and noise."""
    scale = style.supersample
    side = size * scale
    canvas = Image.new("RGB", (side, side), COLORS[scene.background])
    for k, spec in enumerate(scene.shapes):
        _draw_shape(canvas, spec, scene.jitter[4 * k : 4 * k + 4], scale)
    return _finish(canvas, style, rng, size)


def render_outline(
    outline,
    color: tuple[int, int, int],
    background: tuple[int, int, int],
    cx: float,
    cy: float,
    radius: float,
    degrees: float,
    stripe_color: tuple[int, int, int] | None = None,
    size: int = IMAGE_SIZE,
    style: RenderStyle = TRAIN_STYLE,
) -> np.ndarray:
    """Any polygon outline (unit coordinates) drawn like a shape: for the held-out concepts."""
    scale = style.supersample
    side = size * scale
    canvas = Image.new("RGB", (side, side), background)
    mask = _mask("", cx * side, cy * side, radius * side, degrees, side, outline=outline)
    fill = Image.new("RGB", (side, side), color)
    if stripe_color is not None:
        draw = ImageDraw.Draw(fill)
        band = STRIPE_PERIOD * scale // 2
        for left in range(0, 2 * side, 2 * band):
            draw.polygon([(left, 0), (left + band, 0), (left + band - side, side), (left - side, side)], fill=stripe_color)
    canvas.paste(fill, (0, 0), mask)
    return _finish(canvas, style, None, size)


def render_batch(scenes, style: RenderStyle = TRAIN_STYLE, seed: int = 0) -> np.ndarray:
    """float32 (N, H, W, 3). Noise and blur of image i are drawn from seed + i."""
    return np.stack([render(s, style, np.random.default_rng(seed + i)) for i, s in enumerate(scenes)])
