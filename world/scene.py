"""The world's vocabulary: what a scene is made of, how scenes are drawn at random, and their captions.

A scene is one or two shapes on a plain background. Every attribute is recorded, so the truth
of every training image (and what a judge should read from a generated one) is known exactly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

import numpy as np

from ..errors import SteerError

SHAPES = ("circle", "square", "triangle", "star", "cross", "ring", "heart", "diamond")
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "orange": (245, 135, 20),
    "yellow": (240, 220, 40),
    "green": (40, 160, 60),
    "cyan": (40, 200, 210),
    "blue": (40, 70, 210),
    "purple": (130, 50, 170),
    "pink": (245, 140, 190),
    "white": (245, 245, 245),
    "black": (25, 25, 25),
}
COLOR_NAMES = tuple(COLORS)
SIZES = ("small", "large")
# A 3x3 grid of places, row-major from the top left; names as a caption says them.
PLACES = ("top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right")
IMAGE_SIZE = 32
PLACE_CENTERS = (0.25, 0.5, 0.75)  # grid line of each row / column, as a fraction of the side
SIZE_RADII = {"small": 0.16, "large": 0.26}  # circumradius as a fraction of the side


def place_index(place: str) -> int:
    return PLACES.index(place)


def place_center(place: str) -> tuple[float, float]:
    """(x, y) of a place's centre as fractions of the side."""
    row, col = divmod(place_index(place), 3)
    return PLACE_CENTERS[col], PLACE_CENTERS[row]


def rgb01(color: str) -> tuple[float, float, float]:
    return tuple(c / 255.0 for c in COLORS[color])


@dataclass(frozen=True)
class ShapeSpec:
    shape: str
    color: str
    size: str
    place: str
    striped: bool = False

    def __post_init__(self):
        for value, allowed, what in (
            (self.shape, SHAPES, "shape"),
            (self.color, COLOR_NAMES, "colour"),
            (self.size, SIZES, "size"),
            (self.place, PLACES, "place"),
        ):
            if value not in allowed:
                raise SteerError(f"unknown {what} {value!r}: use one of {', '.join(allowed)}")


@dataclass(frozen=True)
class Scene:
    """The truth of one image: its shapes (drawn in order) and its background colour."""

    shapes: tuple[ShapeSpec, ...]
    background: str
    jitter: tuple[float, ...] = field(default=(), compare=False)  # per shape: dx, dy, radius factor, rotation (degrees)

    def __post_init__(self):
        if not 1 <= len(self.shapes) <= 2:
            raise SteerError(f"a scene has one or two shapes, got {len(self.shapes)}")
        if self.background not in COLORS:
            raise SteerError(f"unknown background colour {self.background!r}: use one of {', '.join(COLOR_NAMES)}")
        if any(s.color == self.background for s in self.shapes):
            raise SteerError("a shape cannot have the background's colour: it would be invisible")

    @property
    def main(self) -> ShapeSpec:
        return self.shapes[0]

    def record(self) -> dict:
        return {"shapes": [asdict(s) for s in self.shapes], "background": self.background}


def random_scene(rng: np.random.Generator, two_shapes: float = 0.0, striped: float = 0.2, jitter: float = 1.0) -> Scene:
    """A uniformly drawn scene. `two_shapes`: probability of a second shape (in another place);
    `jitter` scales the small random offsets, size changes and rotations of a rendering."""
    background = COLOR_NAMES[rng.integers(len(COLOR_NAMES))]
    count = 2 if rng.random() < two_shapes else 1
    places = rng.choice(len(PLACES), size=count, replace=False)
    shapes = []
    for place in places:
        color = background
        while color == background:
            color = COLOR_NAMES[rng.integers(len(COLOR_NAMES))]
        shapes.append(
            ShapeSpec(
                shape=SHAPES[rng.integers(len(SHAPES))],
                color=color,
                size=SIZES[rng.integers(len(SIZES))],
                place=PLACES[int(place)],
                striped=bool(rng.random() < striped),
            )
        )
    values = []
    for _ in shapes:
        values += [
            rng.uniform(-1, 1) * 0.03 * jitter,
            rng.uniform(-1, 1) * 0.03 * jitter,
            1.0 + rng.uniform(-1, 1) * 0.08 * jitter,
            rng.uniform(-1, 1) * 15.0 * jitter,
        ]
    return Scene(tuple(shapes), background, tuple(values))


def with_main(scene: Scene, **changes) -> Scene:
    """The same scene with attributes of its first shape changed (e.g. shape='star')."""
    return replace(scene, shapes=(replace(scene.main, **changes),) + scene.shapes[1:])


def _shape_phrase(spec: ShapeSpec) -> str:
    stripes = "striped " if spec.striped else ""
    return f"a {spec.size} {stripes}{spec.color} {spec.shape}"


def _where(place: str) -> str:
    return "in the center" if place == "center" else f"at the {place}"


PHRASINGS = 3


def caption(scene: Scene, phrasing: int = 0) -> str:
    """The scene in words. Phrasing 0-2 orders the same facts differently."""
    parts = [f"{_shape_phrase(s)} {_where(s.place)}" for s in scene.shapes]
    things = " and ".join(parts)
    if phrasing == 0:
        return f"{things} on a {scene.background} background"
    if phrasing == 1:
        return f"{things}, {scene.background} background"
    if phrasing == 2:
        return f"a {scene.background} background with {things}"
    raise SteerError(f"phrasing must be 0 to {PHRASINGS - 1}, got {phrasing}")


def partial_caption(scene: Scene, rng: np.random.Generator) -> str:
    """A caption naming a random subset of the main shape's attributes (always its shape), for the
    contrastive guide, so short queries such as "a yellow star" have a meaning there."""
    spec = scene.main
    words = ["a"]
    if rng.random() < 0.5:
        words.append(spec.size)
    if spec.striped and rng.random() < 0.5:
        words.append("striped")
    if rng.random() < 0.7:
        words.append(spec.color)
    words.append(spec.shape)
    if rng.random() < 0.5:
        words.append(_where(spec.place))
    if rng.random() < 0.4:
        words += ["on", "a", scene.background, "background"]
    return " ".join(words)


def vocabulary() -> list[str]:
    """Every word a caption can use, for the tokenizer."""
    words = set(SHAPES) | set(COLOR_NAMES) | set(SIZES) | {"striped", "a", "at", "the", "in", "on", "and", "with", "background", ","}
    for place in PLACES:
        words |= set(place.split())
    return sorted(words)
