"""A small line chart of a guidance trace, drawn with PIL so no plotting library is needed."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from .trace import GuidanceTrace

PANELS = (("loss", "loss (mean over samples)", (200, 60, 60)), ("displacement_rms", "step size (RMS displacement)", (50, 110, 200)))


def plot_trace(trace: GuidanceTrace, width: int = 640, panel_height: int = 220) -> np.ndarray:
    """Returns an RGB float array (H, W, 3) in [0, 1]: one panel per recorded quantity, x = sampler step."""
    image = Image.new("RGB", (width, panel_height * len(PANELS)), "white")
    draw = ImageDraw.Draw(image)
    for index, (field, title, colour) in enumerate(PANELS):
        top = index * panel_height
        series = trace.first_pass_series(field) if trace.records else []
        _panel(draw, series, title, colour, (50, top + 25, width - 15, top + panel_height - 30), trace.steps)
    return np.asarray(image, dtype=np.float32) / 255.0


def _panel(draw: ImageDraw.ImageDraw, series, title, colour, box, steps):
    left, top, right, bottom = box
    draw.text((left, top - 20), title, fill="black")
    draw.rectangle(box, outline=(160, 160, 160))
    if not series:
        draw.text((left + 10, top + 10), "no guided steps recorded", fill="gray")
        return
    xs = [s for s, _ in series]
    ys = [v for _, v in series]
    x_max = max(steps - 1, max(xs), 1)
    y_min, y_max = min(ys), max(ys)
    if y_max - y_min < 1e-12:
        y_min, y_max = y_min - 0.5 * abs(y_min) - 1e-6, y_max + 0.5 * abs(y_max) + 1e-6
    points = [(left + (right - left) * s / x_max, bottom - (bottom - top) * (v - y_min) / (y_max - y_min)) for s, v in series]
    if len(points) > 1:
        draw.line(points, fill=colour, width=2)
    for px, py in points:
        draw.ellipse((px - 2, py - 2, px + 2, py + 2), fill=colour)
    draw.text((4, top), f"{y_max:.3g}", fill="black")
    draw.text((4, bottom - 10), f"{y_min:.3g}", fill="black")
    draw.text((left, bottom + 4), "step 0", fill="black")
    draw.text((right - 50, bottom + 4), f"step {x_max}", fill="black")
