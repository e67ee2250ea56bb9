"""Generated street scenes: a pure function of a seed, drawn with numpy only.

A scene is drawn back to front (sky, buildings, ground, walls and fences, trees, poles with signs and lights,
then vehicles, riders and people from far to near) and every pixel's label is the Cityscapes train id of
whatever was drawn last there, so all 19 classes occur. Colours are distinct per class but jittered per
instance and shaded, with texture (windows, tiles, lane marks, leaves) and sensor noise, so the task is not a
colour lookup; shapes are consistent, so a small HRNet learns it in minutes on a CPU. Every scene is a pure
function of (seed, split, index).

This is the project's one generator of synthetic images: the demo DataModule, the dataset-layout writers,
export checks and benchmarks all draw through it. It imports numpy and the label sets only, so the
deployment path can use it without the training stack.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from hrseg.metadata import get_label_set

GENERATOR_VERSION = 3
"""Bumped whenever the drawing changes, so on-disk caches of older scenes are not reused."""

#: the classes of the scenes: the 19 Cityscapes train ids
SCENE_LABELS = get_label_set("cityscapes")
_T = {name: i for i, name in enumerate(SCENE_LABELS.class_names)}
ROAD, SIDEWALK, BUILDING, WALL, FENCE = _T["road"], _T["sidewalk"], _T["building"], _T["wall"], _T["fence"]
POLE, LIGHT, SIGN, VEGETATION, TERRAIN = (
    _T["pole"],
    _T["traffic light"],
    _T["traffic sign"],
    _T["vegetation"],
    _T["terrain"],
)
SKY, PERSON, RIDER, CAR = _T["sky"], _T["person"], _T["rider"], _T["car"]
TRUCK, BUS, TRAIN, MOTORCYCLE, BICYCLE = _T["truck"], _T["bus"], _T["train"], _T["motorcycle"], _T["bicycle"]
#: road objects and how often each is drawn: every Cityscapes class occurs in the demo, cars most often
ROAD_OBJECTS = {"car": 0.46, "truck": 0.12, "bus": 0.12, "train": 0.06, "bicycle": 0.12, "motorcycle": 0.12}

SPLIT_CODES = {"train": 0, "val": 1, "test": 2}


class _Canvas:
    """An RGB float image and its label map, with clipped drawing primitives."""

    def __init__(self, height: int, width: int) -> None:
        self.h, self.w = height, width
        self.rgb = np.zeros((height, width, 3), dtype=np.float32)
        self.label = np.full((height, width), SCENE_LABELS.ignore_index, dtype=np.uint8)

    def _box(self, y0: float, y1: float, x0: float, x1: float) -> tuple[int, int, int, int] | None:
        a, b = max(round(y0), 0), min(round(y1), self.h)
        c, d = max(round(x0), 0), min(round(x1), self.w)
        return (a, b, c, d) if a < b and c < d else None

    def paint(self, box: tuple[int, int, int, int], where: np.ndarray, color: np.ndarray, label: int) -> None:
        """Paint ``color`` (RGB or an image the size of the box) where ``where`` is true inside ``box``."""
        a, b, c, d = box
        region = self.rgb[a:b, c:d]
        col = np.broadcast_to(np.asarray(color, dtype=np.float32), region.shape)
        region[where] = col[where]
        self.label[a:b, c:d][where] = label

    def rect(self, y0: float, y1: float, x0: float, x1: float, color: Any, label: int) -> None:
        """Fill an axis-aligned rectangle; ``color`` may be a callable (h, w) -> (h, w, 3) texture."""
        box = self._box(y0, y1, x0, x1)
        if box is None:
            return
        a, b, c, d = box
        col = color(b - a, d - c) if callable(color) else color
        self.paint(box, np.ones((b - a, d - c), dtype=bool), col, label)

    def ellipse(self, cy: float, cx: float, ry: float, rx: float, color: Any, label: int) -> None:
        """Fill an ellipse with centre (cy, cx) and radii (ry, rx)."""
        box = self._box(cy - ry, cy + ry + 1, cx - rx, cx + rx + 1)
        if box is None:
            return
        a, b, c, d = box
        yy, xx = np.mgrid[a:b, c:d].astype(np.float32)
        where = ((yy - cy) / max(ry, 0.5)) ** 2 + ((xx - cx) / max(rx, 0.5)) ** 2 <= 1.0
        col = color(b - a, d - c) if callable(color) else color
        self.paint(box, where, col, label)


def _jitter(rng: np.random.Generator, base: Sequence[float] | np.ndarray, amount: float) -> np.ndarray:
    return np.clip(np.asarray(base, dtype=np.float32) + rng.uniform(-amount, amount, 3), 0, 255)


def _vgrad(color: np.ndarray, top: float, bottom: float) -> Callable[[int, int], np.ndarray]:
    """Vertical shading: the colour scaled from ``top`` to ``bottom`` brightness."""

    def fn(h: int, w: int) -> np.ndarray:
        k = np.linspace(top, bottom, h, dtype=np.float32)[:, None, None]
        return np.broadcast_to(color * k, (h, w, 3))

    return fn


def _hgrad(color: np.ndarray, left: float, right: float) -> Callable[[int, int], np.ndarray]:
    """Horizontal shading (round poles, lit sides)."""

    def fn(h: int, w: int) -> np.ndarray:
        k = np.linspace(left, right, w, dtype=np.float32)[None, :, None]
        return np.broadcast_to(color * k, (h, w, 3))

    return fn


def _wheels(
    cv: _Canvas, oy: float, ox: float, cw: float, ch: float, label: int, at: Sequence[float] = (-0.3, 0.3)
) -> None:
    """Dark wheels at the given fractions of the width."""
    for wxo in at:
        cv.ellipse(oy - ch * 0.13, ox + wxo * cw, ch * 0.14, cw * 0.1, (25, 25, 25), label)


def _draw_car(cv: _Canvas, rng: np.random.Generator, oy: float, ox: float, cw: float) -> None:
    """A car seen from behind or the front: body, cabin, windows, wheels and lamps."""
    ch = cw * rng.uniform(0.5, 0.65)
    palette = [(200, 30, 30), (30, 60, 170), (225, 225, 225), (40, 40, 45), (160, 165, 175), (30, 120, 60)]
    body = _jitter(rng, rng.choice(np.array(palette, dtype=np.float32)), 20)
    cv.rect(oy - ch * 0.55, oy - ch * 0.12, ox - cw / 2, ox + cw / 2, _vgrad(body, 1.15, 0.85), CAR)
    cv.rect(oy - ch, oy - ch * 0.5, ox - cw * 0.32, ox + cw * 0.32, body * 0.95, CAR)
    glass = _jitter(rng, (70, 95, 120), 10)
    cv.rect(oy - ch * 0.92, oy - ch * 0.58, ox - cw * 0.27, ox + cw * 0.27, glass, CAR)
    _wheels(cv, oy, ox, cw, ch, CAR)
    lamp = (245, 235, 190) if rng.random() < 0.5 else (210, 40, 30)
    cv.rect(oy - ch * 0.45, oy - ch * 0.35, ox - cw / 2, ox - cw * 0.4, lamp, CAR)
    cv.rect(oy - ch * 0.45, oy - ch * 0.35, ox + cw * 0.4, ox + cw / 2, lamp, CAR)


def _draw_truck(cv: _Canvas, rng: np.random.Generator, oy: float, ox: float, cw: float) -> None:
    """A box truck from the side: a tall cargo box and a lower cab with a windscreen."""
    ch = cw * rng.uniform(0.7, 0.85)
    box_col = _jitter(rng, (215, 215, 205) if rng.random() < 0.6 else (60, 95, 150), 15)
    cab_col = _jitter(rng, (190, 60, 40), 20)
    cab = 1 if rng.random() < 0.5 else -1  # cab at the right or the left end
    x0, x1 = ox - cw / 2, ox + cw / 2
    split = ox + cab * cw * 0.22
    bx0, bx1 = (x0, split) if cab > 0 else (split, x1)
    cx0, cx1 = (split, x1) if cab > 0 else (x0, split)
    cv.rect(oy - ch, oy - ch * 0.15, bx0, bx1, _vgrad(box_col, 1.05, 0.9), TRUCK)
    cv.rect(oy - ch * 0.62, oy - ch * 0.15, cx0, cx1, cab_col, TRUCK)
    cv.rect(oy - ch * 0.58, oy - ch * 0.38, cx0 + cw * 0.03, cx1 - cw * 0.03, (70, 95, 120), TRUCK)
    cv.rect(oy - ch * 0.2, oy - ch * 0.1, x0, x1, (45, 45, 45), TRUCK)  # chassis
    _wheels(cv, oy, ox, cw, ch * 0.8, TRUCK, at=(-0.35, 0.05, 0.35))


def _draw_bus(cv: _Canvas, rng: np.random.Generator, oy: float, ox: float, cw: float) -> None:
    """A city bus from the side: a long body with a band of windows, a door and three wheels."""
    ch = cw * rng.uniform(0.42, 0.5)
    body = _jitter(rng, [(235, 190, 40), (200, 40, 40), (40, 110, 190)][int(rng.integers(0, 3))], 15)
    cv.rect(oy - ch, oy - ch * 0.1, ox - cw / 2, ox + cw / 2, _vgrad(body, 1.1, 0.9), BUS)
    glass = _jitter(rng, (60, 80, 100), 10)
    n = 6
    for k in range(n):
        wx = ox - cw / 2 + cw * (k + 0.15) / n
        cv.rect(oy - ch * 0.85, oy - ch * 0.5, wx, wx + cw * 0.7 / n, glass, BUS)
    cv.rect(oy - ch * 0.8, oy - ch * 0.12, ox - cw * 0.05, ox + cw * 0.05, glass * 0.8, BUS)  # door
    _wheels(cv, oy, ox, cw, ch, BUS, at=(-0.35, 0.0, 0.35))


def _draw_train(cv: _Canvas, rng: np.random.Generator, oy: float, ox: float, cw: float) -> None:
    """A tram on the road: a very long, low body with a coloured stripe, windows and bogies."""
    ch = cw * rng.uniform(0.22, 0.28)
    body = _jitter(rng, (235, 235, 230), 10)
    stripe = _jitter(rng, (190, 30, 40) if rng.random() < 0.5 else (30, 130, 90), 15)
    cv.rect(oy - ch, oy - ch * 0.12, ox - cw / 2, ox + cw / 2, body, TRAIN)
    cv.rect(oy - ch * 0.4, oy - ch * 0.28, ox - cw / 2, ox + cw / 2, stripe, TRAIN)
    glass = _jitter(rng, (55, 75, 95), 10)
    n = 9
    for k in range(n):
        wx = ox - cw / 2 + cw * (k + 0.2) / n
        cv.rect(oy - ch * 0.85, oy - ch * 0.5, wx, wx + cw * 0.6 / n, glass, TRAIN)
    cv.rect(oy - ch * 0.14, oy, ox - cw * 0.45, ox + cw * 0.45, (40, 40, 40), TRAIN)  # bogies


def _draw_person(
    cv: _Canvas, rng: np.random.Generator, oy: float, ox: float, ph: float, label: int, legs: bool = True
) -> None:
    """A standing person (or, with ``legs=False`` and ``label=RIDER``, the upper body of a rider)."""
    pw = max(ph * 0.4, 5.0)
    skin = _jitter(rng, (215, 170, 135), 25)
    shirt = _jitter(rng, rng.uniform(40, 230, 3), 10)
    pants = _jitter(rng, (50, 55, 75), 15)
    if legs:
        cv.rect(oy - ph * 0.48, oy, ox - pw * 0.42, ox + pw * 0.42, pants, label)
        cv.rect(oy - ph * 0.3, oy, ox - pw * 0.04, ox + pw * 0.04, pants * 0.6, label)
    cv.rect(oy - ph * 0.85, oy - ph * 0.45, ox - pw / 2, ox + pw / 2, shirt, label)
    cv.ellipse(oy - ph * 0.92, ox, ph * 0.08, pw * 0.3, skin, label)


def _draw_two_wheeler(
    cv: _Canvas, rng: np.random.Generator, oy: float, ox: float, cw: float, label: int
) -> None:
    """A bicycle (thin frame) or motorcycle (engine block) from the side, ridden by a rider."""
    r = cw * 0.22
    for wx in (ox - cw * 0.3, ox + cw * 0.3):
        cv.ellipse(oy - r, wx, r, r, (20, 20, 20), label)
        cv.ellipse(oy - r, wx, r * 0.6, r * 0.6, _jitter(rng, (120, 120, 115), 10), label)
    frame = _jitter(rng, rng.uniform(60, 220, 3), 10)
    if label == MOTORCYCLE:
        cv.rect(oy - r * 2.0, oy - r * 0.7, ox - cw * 0.28, ox + cw * 0.25, frame, label)
        cv.rect(oy - r * 1.5, oy - r * 0.8, ox - cw * 0.1, ox + cw * 0.1, (60, 60, 65), label)  # engine
    else:
        cv.rect(oy - r * 1.9, oy - r * 1.6, ox - cw * 0.3, ox + cw * 0.25, frame, label)
        cv.rect(oy - r * 1.9, oy - r, ox - cw * 0.03, ox + cw * 0.03, frame, label)
    ph = cw * 1.1  # seated: the torso (0.45-0.85 of ph above the base) starts at the frame
    _draw_person(cv, rng, oy - r * 1.8 + ph * 0.45, ox - cw * 0.05, ph, RIDER, legs=False)


DRAW_VEHICLE: dict[str, Callable[[_Canvas, np.random.Generator, float, float, float], None]] = {
    "car": _draw_car,
    "truck": _draw_truck,
    "bus": _draw_bus,
    "train": _draw_train,
    "bicycle": lambda cv, rng, oy, ox, cw: _draw_two_wheeler(cv, rng, oy, ox, cw, BICYCLE),
    "motorcycle": lambda cv, rng, oy, ox, cw: _draw_two_wheeler(cv, rng, oy, ox, cw, MOTORCYCLE),
}


def generate_scene(
    seed: int | Sequence[int] | np.random.Generator, size: tuple[int, int] = (128, 256)
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one street scene.

    Args:
        seed: an int, a sequence of ints (e.g. ``[seed, split, index]``) or a Generator.
        size: (H, W) of the output.

    Returns:
        (image RGB uint8 (H, W, 3), mask uint8 (H, W) of Cityscapes train ids; every pixel is labelled).
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    h, w = int(size[0]), int(size[1])
    if h < 16 or w < 16:
        raise ValueError(f"scene size must be at least 16x16, got {h}x{w}")
    cv = _Canvas(h, w)
    s = w / 256.0  # object scale relative to the default width
    horizon = h * rng.uniform(0.42, 0.55)

    # --- sky: blue gradient, lighter near the horizon, with soft clouds
    sky = _jitter(rng, (95, 150, 215), 20)
    cv.rect(0, horizon + 1, 0, w, _vgrad(sky, 0.85, 1.15), SKY)
    for _ in range(rng.integers(0, 4)):
        cloud = _jitter(rng, (215, 225, 240), 12)
        cv.ellipse(
            rng.uniform(0, horizon * 0.5),
            rng.uniform(0, w),
            h * rng.uniform(0.03, 0.07),
            w * rng.uniform(0.06, 0.15),
            cloud,
            SKY,
        )

    # --- buildings along the horizon, with window grids
    x = -rng.uniform(0, 30) * s
    while x < w:
        bw = w * rng.uniform(0.12, 0.3)
        if rng.random() < 0.18:  # a gap shows the sky
            x += bw * 0.5
            continue
        top = horizon - h * rng.uniform(0.12, 0.42)
        base = _jitter(
            rng,
            rng.choice(
                np.array(
                    [(150, 110, 85), (175, 160, 135), (125, 115, 110), (165, 135, 110)], dtype=np.float32
                )
            ),
            18,
        )
        cv.rect(top, horizon + 2, x, x + bw, _vgrad(base, 1.05, 0.85), BUILDING)
        win = _jitter(rng, (55, 65, 85), 15) if rng.random() < 0.7 else _jitter(rng, (225, 215, 150), 15)
        step_y, step_x = max(5.0, 9 * s), max(5.0, 10 * s)
        wy = top + step_y * 0.6
        while wy + step_y * 0.5 < horizon - 2:
            wx = x + step_x * 0.5
            while wx + step_x * 0.5 < x + bw:
                cv.rect(wy, wy + step_y * 0.5, wx, wx + step_x * 0.5, win, BUILDING)
                wx += step_x
            wy += step_y
        x += bw

    # --- ground: road trapezoid to a vanishing point, sidewalks, optional terrain strips
    vx = w * rng.uniform(0.35, 0.65)
    cx_bottom = w * rng.uniform(0.4, 0.6)
    road_bottom = w * rng.uniform(0.32, 0.42)
    walk_bottom = w * rng.uniform(0.18, 0.28)
    terrain_side = [rng.random() < 0.4, rng.random() < 0.4]
    road_col = _jitter(rng, (85, 82, 92), 10)
    walk_col = _jitter(rng, (190, 170, 165), 14)
    terr_col = _jitter(rng, (150, 185, 85), 15)
    y0 = int(np.floor(horizon))
    ys = np.arange(y0, h, dtype=np.float32)
    t = (ys - horizon) / max(h - horizon, 1.0)
    t = np.clip(t, 0.0, 1.0)
    centre = vx + (cx_bottom - vx) * t
    half_road = w * 0.02 + road_bottom * t
    walk = w * 0.01 + walk_bottom * t
    xx = np.arange(w, dtype=np.float32)[None, :]
    dist = np.abs(xx - centre[:, None])
    left = xx < centre[:, None]
    lab = np.where(dist <= half_road[:, None], ROAD, SIDEWALK).astype(np.uint8)
    outer = dist > (half_road + walk)[:, None]
    for side, is_left in ((0, True), (1, False)):
        if terrain_side[side]:
            lab[outer & (left if is_left else ~left)] = TERRAIN
    shade = (0.8 + 0.35 * t)[:, None, None]
    rgb = np.empty((len(ys), w, 3), dtype=np.float32)
    rgb[:] = road_col
    rgb[lab == SIDEWALK] = walk_col
    rgb[lab == TERRAIN] = terr_col
    # sidewalk tiles: darker grout lines
    grout = ((xx.astype(np.int32) // max(int(6 * s), 3)) % 4 == 0) | ((ys[:, None].astype(np.int32) % 5) == 0)
    rgb[(lab == SIDEWALK) & grout] *= 0.82
    # dashed centre line on the road
    dash = (dist < 0.8 + 1.2 * t[:, None]) & ((ys[:, None] * (1.5 - t[:, None])).astype(np.int32) % 8 < 4)
    rgb[(lab == ROAD) & dash] = (225, 225, 215)
    rgb *= shade
    cv.rgb[y0:] = rgb
    cv.label[y0:] = lab

    def ground_span(y: float) -> tuple[float, float, float]:
        """Centre, road half-width and sidewalk width at row ``y``."""
        tt = float(np.clip((y - horizon) / max(h - horizon, 1.0), 0.0, 1.0))
        return vx + (cx_bottom - vx) * tt, w * 0.02 + road_bottom * tt, w * 0.01 + walk_bottom * tt

    # --- a wall or a fence along the back of the sidewalk
    for _ in range(rng.integers(0, 3)):
        barrier = WALL if rng.random() < 0.5 else FENCE
        fx0 = rng.uniform(-0.1, 0.8) * w
        fw = w * rng.uniform(0.2, 0.4)
        fh = h * rng.uniform(0.1, 0.18)
        bottom = horizon + h * rng.uniform(0.0, 0.04)
        if barrier == WALL:
            col = _jitter(rng, (75, 145, 140), 12)

            def wall_tex(hh: int, ww: int, col: np.ndarray = col) -> np.ndarray:
                out = np.broadcast_to(col, (hh, ww, 3)).copy()
                out[np.arange(hh) % 4 == 0] *= 0.8
                return out

            cv.rect(bottom - fh, bottom, fx0, fx0 + fw, wall_tex, WALL)
        else:
            # the whole panel is fence (as in Cityscapes polygons); slats and rails are its texture
            col = _jitter(rng, (230, 228, 215), 10)
            slat = max(2, int(3 * s))
            fy0, fy1 = bottom - fh, bottom
            cv.rect(fy0, fy1, fx0, fx0 + fw, col * 0.35, FENCE)
            for sx in np.arange(fx0, fx0 + fw, 2 * slat):
                cv.rect(fy0, fy1, sx, sx + slat, col, FENCE)
            cv.rect(fy0, fy0 + max(1.5, 2 * s), fx0, fx0 + fw, col * 0.85, FENCE)
            cv.rect(fy1 - fh * 0.45, fy1 - fh * 0.45 + max(1.5, 2 * s), fx0, fx0 + fw, col * 0.85, FENCE)

    # --- trees: trunk plus a leafy crown (both vegetation), and bushes at the horizon
    for _ in range(rng.integers(1, 5)):
        ty = horizon + h * rng.uniform(0.0, 0.12)
        c, half_road_y, walk_y = ground_span(ty)
        side = -1 if rng.random() < 0.5 else 1
        tx = c + side * (half_road_y + walk_y * rng.uniform(0.4, 1.2))
        th = h * rng.uniform(0.2, 0.38)
        green = _jitter(rng, (60, 115, 40), 18)
        trunk = _jitter(rng, (85, 70, 50), 10)
        cv.rect(ty - th * 0.6, ty, tx - 2 * s, tx + 2 * s, trunk, VEGETATION)

        def leaves(hh: int, ww: int, green: np.ndarray = green) -> np.ndarray:
            return green * rng.uniform(0.7, 1.25, (hh, ww, 1)).astype(np.float32)

        cv.ellipse(ty - th * 0.7, tx, th * 0.35, th * rng.uniform(0.3, 0.5), leaves, VEGETATION)
    for _ in range(rng.integers(0, 3)):
        green = _jitter(rng, (70, 125, 45), 18)

        def bush(hh: int, ww: int, green: np.ndarray = green) -> np.ndarray:
            return green * rng.uniform(0.75, 1.2, (hh, ww, 1)).astype(np.float32)

        cv.ellipse(
            horizon,
            rng.uniform(0, w),
            h * rng.uniform(0.04, 0.08),
            w * rng.uniform(0.05, 0.12),
            bush,
            VEGETATION,
        )

    # --- poles on the sidewalks, some carrying a sign or a traffic light
    for _ in range(rng.integers(1, 4)):
        py = horizon + (h - horizon) * rng.uniform(0.3, 0.85)
        c, half_road_y, walk_y = ground_span(py)
        side = -1 if rng.random() < 0.5 else 1
        px = c + side * (half_road_y + walk_y * rng.uniform(0.3, 0.7))
        depth = (py - horizon) / max(h - horizon, 1.0)
        ph = h * (0.25 + 0.45 * depth)
        pw = max(5.0, (7 + 6 * depth) * s)
        metal = _jitter(rng, (120, 135, 150), 10)
        cv.rect(py - ph, py, px - pw / 2, px + pw / 2, _hgrad(metal, 1.2, 0.75), POLE)
        top = py - ph
        what = rng.random()
        if what < 0.4:  # traffic light: dark box with three lamps, one lit
            bw = pw * 1.8
            bh = bw * 2.4
            cv.rect(top, top + bh, px - bw / 2, px + bw / 2, _jitter(rng, (35, 38, 35), 6), LIGHT)
            lit = rng.integers(0, 3)
            for k, lamp in enumerate(((230, 40, 30), (240, 190, 40), (40, 220, 90))):
                col = np.array(lamp, dtype=np.float32) * (1.0 if k == lit else 0.35)
                cv.ellipse(top + bh * (k + 0.5) / 3, px, bh / 9, bw / 3.5, col, LIGHT)
        elif what < 0.8:  # sign: a yellow plate or a red-rimmed disc
            r = pw * 1.5 + 1.5 * s
            if rng.random() < 0.5:
                cv.rect(top - r * 0.2, top + r * 1.6, px - r, px + r, _jitter(rng, (235, 205, 30), 12), SIGN)
                cv.rect(top + r * 0.2, top + r * 1.2, px - r * 0.6, px + r * 0.6, (40, 40, 40), SIGN)
            else:
                cv.ellipse(top + r * 0.8, px, r, r, _jitter(rng, (215, 30, 35), 12), SIGN)
                cv.ellipse(top + r * 0.8, px, r * 0.65, r * 0.65, (240, 240, 240), SIGN)

    # --- vehicles (and riders) on the road, people on the sidewalks, far to near
    objects: list[tuple[float, str]] = []
    kinds, weights = list(ROAD_OBJECTS), np.array(list(ROAD_OBJECTS.values()))
    for _ in range(rng.integers(1, 5)):
        kind = str(rng.choice(kinds, p=weights / weights.sum()))
        objects.append((horizon + (h - horizon) * rng.uniform(0.1, 1.0), kind))
    for _ in range(rng.integers(0, 4)):
        objects.append((horizon + (h - horizon) * rng.uniform(0.25, 0.95), "person"))
    for oy, kind in sorted(objects):
        c, half_road_y, walk_y = ground_span(oy)
        depth = (oy - horizon) / max(h - horizon, 1.0)
        if kind == "person":
            side = -1 if rng.random() < 0.5 else 1
            ox = c + side * (half_road_y + walk_y * rng.uniform(0.2, 0.8))
            _draw_person(cv, rng, oy, ox, h * (0.16 + 0.3 * depth), PERSON)
            continue
        width = w * (0.07 + 0.22 * depth) * {"truck": 1.3, "bus": 1.6, "train": 2.4}.get(kind, 1.0)
        if kind in ("bicycle", "motorcycle"):
            width = w * (0.07 + 0.2 * depth)
        ox = c + rng.uniform(-0.8, 0.8) * max(half_road_y - width / 2, 0)
        DRAW_VEHICLE[kind](cv, rng, oy, ox, width)

    # --- camera: global exposure, a colour cast and sensor noise
    img = cv.rgb * rng.uniform(0.85, 1.15) + rng.uniform(-8, 8, 3).astype(np.float32)
    img += rng.normal(0.0, 6.0, img.shape).astype(np.float32)
    image = np.clip(img + 0.5, 0, 255).astype(np.uint8)
    label = cv.label
    if (label == SCENE_LABELS.ignore_index).any():  # every pixel is drawn; this guards future edits
        label[label == SCENE_LABELS.ignore_index] = SKY
    return image, label


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of scene ``index`` of ``split``: independent of order, workers and other splits."""
    return np.random.default_rng([int(seed), SPLIT_CODES.get(split, 3), int(index), GENERATOR_VERSION])


def generate_split(
    num: int, split: str, seed: int = 0, size: tuple[int, int] = (128, 256)
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Generate ``num`` scenes of ``split`` (deterministic by seed)."""
    images, masks = [], []
    for i in range(num):
        img, msk = generate_scene(scene_rng(seed, split, i), size)
        images.append(img)
        masks.append(msk)
    return images, masks


__all__ = [
    "GENERATOR_VERSION",
    "SPLIT_CODES",
    "generate_scene",
    "generate_split",
    "scene_rng",
]
