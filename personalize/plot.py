"""A small chart of a training run's losses, drawn with PIL (no plotting library needed).

Two panels share the x axis (the step, counted over all stages): the diffusion loss and the
cross-attention regularizer. Each shows the raw per-step values as dots and a moving average
as a line; dashed lines mark where each stage begins.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

PANELS = (
    ("diffusion", "diffusion loss (MSE)", (200, 60, 60)),
    ("regularizer", "cross-attention regularizer", (50, 110, 200)),
)


def moving_average(values: list[float], window: int) -> list[float]:
    out, total = [], 0.0
    for index, value in enumerate(values):
        total += value
        if index >= window:
            total -= values[index - window]
        out.append(total / min(index + 1, window))
    return out


def plot_history(history: list[dict], width: int = 720, panel_height: int = 220, title: str = "") -> np.ndarray:
    """(H, W, 3) float RGB in [0, 1]. `history`: one {"stage", "step", "diffusion", "regularizer"} per step."""
    header = 22 if title else 0
    image = Image.new("RGB", (width, header + panel_height * len(PANELS)), "white")
    draw = ImageDraw.Draw(image)
    if title:
        draw.text((8, 4), title, fill="black")
    stage_starts = []
    for index, entry in enumerate(history):
        if index == 0 or entry["stage"] != history[index - 1]["stage"]:
            stage_starts.append((index, entry["stage"]))
    for panel, (field, label, colour) in enumerate(PANELS):
        top = header + panel * panel_height
        values = [float(entry.get(field, 0.0)) for entry in history]
        _panel(draw, values, label, colour, (60, top + 25, width - 15, top + panel_height - 30), stage_starts)
    return np.asarray(image, dtype=np.float32) / 255.0


def _panel(draw: ImageDraw.ImageDraw, values, label, colour, box, stage_starts):
    left, top, right, bottom = box
    draw.text((left, top - 20), label, fill="black")
    draw.rectangle(box, outline=(160, 160, 160))
    finite = [v for v in values if np.isfinite(v)]
    if not finite:
        draw.text((left + 10, top + 10), "no training steps recorded", fill="gray")
        return
    count = len(values)
    x_max = max(count - 1, 1)
    y_min, y_max = min(finite), max(finite)
    if y_max - y_min < 1e-12:
        y_min, y_max = y_min - 0.5 * abs(y_min) - 1e-6, y_max + 0.5 * abs(y_max) + 1e-6

    def point(index, value):
        return (left + (right - left) * index / x_max, bottom - (bottom - top) * (value - y_min) / (y_max - y_min))

    for index, stage in stage_starts:
        x = point(index, y_min)[0]
        for y in range(int(top), int(bottom), 8):
            draw.line([(x, y), (x, min(y + 4, bottom))], fill=(120, 120, 120))
        draw.text((x + 3, top + 2), stage, fill=(90, 90, 90))
    faint = tuple(int(c + (255 - c) * 0.6) for c in colour)
    for index, value in enumerate(values):
        if np.isfinite(value):
            x, y = point(index, value)
            draw.ellipse((x - 1.5, y - 1.5, x + 1.5, y + 1.5), fill=faint)
    window = max(1, count // 25)
    smooth = [point(index, value) for index, value in enumerate(moving_average([v if np.isfinite(v) else y_max for v in values], window))]
    if len(smooth) > 1:
        draw.line(smooth, fill=colour, width=2)
    draw.text((4, top), f"{y_max:.3g}", fill="black")
    draw.text((4, bottom - 10), f"{y_min:.3g}", fill="black")
    draw.text((left, bottom + 4), "step 1", fill="black")
    draw.text((right - 60, bottom + 4), f"step {count}", fill="black")


def png_bytes(image) -> bytes:
    """A (H, W, 3) float image in [0, 1] (a torch tensor or an array) as PNG file bytes."""
    import io

    pixels = np.asarray(image.clamp(0, 1) if hasattr(image, "clamp") else np.clip(image, 0, 1), dtype=np.float32)
    buffer = io.BytesIO()
    Image.fromarray((pixels * 255).round().astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()
