"""Procedural scene layouts: indoor rooms and outdoor courtyards built from axis-aligned boxes.

Everything solid is a box, including floor and ceiling slabs, so one exact ray-box test
renders the whole scene. World frame = the reset camera frame (OpenCV axes: x right, y down,
z forward, metres): the floor's top is the plane ``y = FLOOR_Y`` (1.5 m below the camera) and
heights above the floor map to ``y = FLOOR_Y - h``. Every layout keeps the origin free and
looks along +z at something at least a couple of metres away.

Adjacent boxes that must not show a crack (floor slabs, wall pieces around an opening) share
boundaries computed by the same float expression, so the ray test is watertight across them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mirage_gym.memory.filtering import LABEL_DYNAMIC, LABEL_SKY, LABEL_STATIC  # noqa: F401  (one set of labels)

from .textures import Lighting, Material, Sky, random_lighting, random_material, random_sky

FLOOR_Y = 1.5

SLAB = 0.2  # thickness of floor and ceiling slabs
OUTDOOR_CEILING = 5.0  # free points outdoors stay below this height above the ground
START_KEEPOUT = (-0.8, 0.8, -0.8, 2.0)  # (xmin, xmax, zmin, zmax) kept clear around the reset camera


@dataclass(eq=False)
class Layout:
    """Boxes and their looks. ``face_mat[b, f]`` indexes ``materials`` (face order in textures)."""

    kind: str
    lo: np.ndarray  # (B, 3) float64
    hi: np.ndarray  # (B, 3) float64
    face_mat: np.ndarray  # (B, 6) int32
    label: np.ndarray  # (B,) uint8
    structural: np.ndarray  # (B,) bool: floor / ceiling slabs and rugs (ignored when placing objects)
    materials: list
    walk_rects: np.ndarray  # (R, 6) xmin, xmax, zmin, zmax, ymin, ymax: walkable boxes of air
    sky: Sky | None
    lighting: Lighting


Rect = tuple  # (xmin, xmax, zmin, zmax)


def _overlap(a: Rect, b: Rect, gap: float = 0.0) -> bool:
    return a[0] < b[1] + gap and b[0] < a[1] + gap and a[2] < b[3] + gap and b[2] < a[3] + gap


def _inside(a: Rect, room: Rect, margin: float = 0.0) -> bool:
    return (a[0] >= room[0] + margin and a[1] <= room[1] - margin
            and a[2] >= room[2] + margin and a[3] <= room[3] - margin)


def side_rect(room: Rect, side: str, c0: float, c1: float, w0: float, w1: float) -> Rect:
    """World rect at along-wall coords ``[c0, c1]`` and outward distances ``[w0, w1]`` past ``side``.

    ``side`` is one of ``+x, -x, +z, -z``; negative distances are inside the room.
    """
    x0, x1, z0, z1 = room
    if side == "+x":
        return (x1 + w0, x1 + w1, c0, c1)
    if side == "-x":
        return (x0 - w1, x0 - w0, c0, c1)
    if side == "+z":
        return (c0, c1, z1 + w0, z1 + w1)
    return (c0, c1, z0 - w1, z0 - w0)


def along(room: Rect, side: str) -> tuple:
    """Range of the along-wall coordinate and the room's depth perpendicular to ``side``."""
    if side in ("+x", "-x"):
        return room[2], room[3], room[1] - room[0]
    return room[0], room[1], room[3] - room[2]


def _wall_mats(side: str, inward: int, outward: int, trim: int) -> list:
    """Per-face materials of a wall piece on ``side``: room-facing, outside-facing, the rest trim."""
    mats = [trim] * 6
    axis = 0 if side in ("+x", "-x") else 2
    low_is_inward = side.startswith("+")
    mats[2 * axis] = inward if low_is_inward else outward
    mats[2 * axis + 1] = outward if low_is_inward else inward
    return mats


class Builder:
    """Accumulates boxes, materials and occupied footprints while a layout is generated."""

    def __init__(self, rng: np.random.Generator, kind: str):
        self.rng = rng
        self.kind = kind
        self.hue = float(rng.random())
        self.boxes = []  # (lo, hi, mats6, label, structural)
        self.materials = []
        self.occupied = []  # footprint rects of placed objects and keep-out zones
        self.walk = []

    def material(self, role: str) -> int:
        return self.custom(random_material(self.rng, role, self.hue))

    def custom(self, mat: Material) -> int:
        self.materials.append(mat)
        return len(self.materials) - 1

    def add(self, rect: Rect, h0: float, h1: float, mats, label: int = LABEL_STATIC, structural: bool = False):
        """Box over world ``rect`` between heights ``h0 < h1`` above the floor."""
        mats = [mats] * 6 if np.isscalar(mats) else list(mats)
        lo = (rect[0], FLOOR_Y - h1, rect[2])
        hi = (rect[1], FLOOR_Y - h0, rect[3])
        self.boxes.append((lo, hi, mats, label, structural))

    def slab(self, rect: Rect, h: float, mat: int, below: bool):
        """Floor (``below``: top face at height ``h``) or ceiling slab (bottom face at ``h``)."""
        if below:
            self.add(rect, h - SLAB, h, mat, structural=True)
        else:
            self.add(rect, h, h + SLAB, mat, structural=True)

    def wall(self, room: Rect, side: str, t: float, height: float, openings, mats, extend: float):
        """Wall of thickness ``t`` past ``side`` with rectangular openings ``(c0, c1, h0, h1)``."""
        a0, a1, _ = along(room, side)
        pos = a0 - extend
        pieces = []
        for c0, c1, h0, h1 in sorted(openings):
            pieces.append((pos, c0, 0.0, height))
            if h0 > 0:
                pieces.append((c0, c1, 0.0, h0))
            if h1 < height:
                pieces.append((c0, c1, h1, height))
            pos = c1
        pieces.append((pos, a1 + extend, 0.0, height))
        for c0, c1, h0, h1 in pieces:
            if c1 > c0 and h1 > h0:
                self.add(side_rect(room, side, c0, c1, 0.0, t), h0, h1, mats)

    def is_clear(self, rect: Rect, room: Rect, gap: float = 0.1) -> bool:
        return _inside(rect, room, 0.02) and not any(_overlap(rect, o, gap) for o in self.occupied)

    def walkable(self, rect: Rect, height: float):
        """Air above ``rect`` from the floor up to ``height`` where the camera may go."""
        self.walk.append((*rect[:4], FLOOR_Y - height, FLOOR_Y))

    def finish(self, sky: Sky | None, lighting: Lighting) -> Layout:
        lo = np.array([b[0] for b in self.boxes], dtype=np.float64)
        hi = np.array([b[1] for b in self.boxes], dtype=np.float64)
        assert np.all(hi > lo), "degenerate box"
        return Layout(
            kind=self.kind,
            lo=lo,
            hi=hi,
            face_mat=np.array([b[2] for b in self.boxes], dtype=np.int32),
            label=np.array([b[3] for b in self.boxes], dtype=np.uint8),
            structural=np.array([b[4] for b in self.boxes], dtype=bool),
            materials=self.materials,
            walk_rects=np.array(self.walk, dtype=np.float64).reshape(-1, 6),
            sky=sky,
            lighting=lighting,
        )


# --------------------------------------------------------------------------- furniture

# A part is (a0, a1, d0, d1, h0, h1, mats): along-wall span, distance from the back (the
# wall side), height span. ``place_parts`` maps it next to any side of a room.


def _furniture(rng: np.random.Generator, b: Builder, kind: str, height: float):
    """Parts, footprint (width, depth) and whether it stands against a wall."""
    m = b.material("furniture")
    if kind == "cabinet":
        w, d, h = rng.uniform(0.6, 1.6), rng.uniform(0.4, 0.65), rng.uniform(0.7, 1.1)
        top = b.material("furniture")
        return [(0, w, 0, d, 0, h, [m, m, top, m, m, m])], (w, d), True
    if kind == "shelf":
        w, d, h = rng.uniform(0.8, 2.0), rng.uniform(0.3, 0.6), rng.uniform(1.6, min(2.3, height - 0.3))
        return [(0, w, 0, d, 0, h, m)], (w, d), True
    if kind == "sofa":
        w, d = rng.uniform(1.4, 2.2), rng.uniform(0.8, 2.0)
        seat, back = rng.uniform(0.4, 0.55), rng.uniform(0.8, 1.0)
        return [(0, w, 0.2, d, 0, seat, m), (0, w, 0, 0.2, 0, back, m)], (w, d), True
    if kind == "table":
        w, d, h = rng.uniform(0.8, 1.8), rng.uniform(0.6, 1.0), rng.uniform(0.72, 0.78)
        leg = rng.uniform(0.05, 0.08)
        legs = b.material("furniture")
        parts = [(0, w, 0, d, h - 0.05, h, m)]
        for a in (0.04, w - 0.04 - leg):
            for e in (0.04, d - 0.04 - leg):
                parts.append((a, a + leg, e, e + leg, 0, h - 0.05, legs))
        return parts, (w, d), False
    if kind == "crate":
        s = rng.uniform(0.4, 0.9)
        parts = [(0, s, 0, s, 0, s, m)]
        if rng.random() < 0.4:
            s2 = rng.uniform(0.3, s)
            o = rng.uniform(0, s - s2)
            parts.append((o, o + s2, o, o + s2, s, s + s2, b.material("furniture")))
        return parts, (s, s), rng.random() < 0.5
    if kind == "lamp":
        shade = b.material("furniture")
        return [(0, 0.3, 0, 0.3, 0, 0.05, m), (0.13, 0.17, 0.13, 0.17, 0.05, 1.35, m),
                (0.0, 0.3, 0.0, 0.3, 1.35, 1.7, shade)], (0.3, 0.3), rng.random() < 0.5
    if kind == "pillar":
        s = rng.uniform(0.3, 0.55)
        return [(0, s, 0, s, 0, height, b.material("pillar"))], (s, s), False
    raise ValueError(kind)


def place_parts(b: Builder, parts, room: Rect, side: str, c: float, off: float, label: int = LABEL_STATIC):
    for a0, a1, d0, d1, h0, h1, mats in parts:
        b.add(side_rect(room, side, c + a0, c + a1, -(off + d1), -(off + d0)), h0, h1, mats, label)


def wall_spots(rng, rect: Rect, min_along: float, min_depth: float, end_gap: float, width: float, tries: int = 25):
    """Random spots along the walls of ``rect`` for a piece ``width`` long, one per try whose
    wall is at least ``min_along`` long with ``min_depth`` of room in front: ``(side, c,
    depth)``, ``c`` the piece's start along the wall, ``end_gap`` from either end."""
    for _attempt in range(tries):
        side = str(rng.choice(["+x", "-x", "+z", "-z"]))
        a0, a1, depth = along(rect, side)
        if a1 - a0 < min_along or depth < min_depth:
            continue
        yield side, rng.uniform(a0 + end_gap, a1 - width - end_gap), depth


def furnish(b: Builder, room: Rect, height: float, count: int, kinds, probs):
    """Place up to ``count`` furniture pieces in ``room`` by rejection sampling."""
    rng = b.rng
    for _ in range(count):
        kind = str(rng.choice(kinds, p=probs))
        parts, (w, d), wall = _furniture(rng, b, kind, height)
        for side, c, depth in wall_spots(rng, room, w + 0.1, d + 1.2, 0.02, w):
            off = 0.03 if wall else rng.uniform(0.5, depth - d - 0.5)
            foot = side_rect(room, side, c, c + w, -(off + d), -off)
            if b.is_clear(foot, room):
                place_parts(b, parts, room, side, c, off)
                b.occupied.append(foot)
                break


# --------------------------------------------------------------------------- indoor


def _openings(rng, e0: float, e1: float, height: float):
    """One or two openings (c0, c1, h0, h1) within along-range [e0, e1] of a shared wall."""
    out = []
    for _ in range(int(rng.integers(1, 3))):
        kind = rng.choice(["door", "wide", "window"], p=[0.5, 0.3, 0.2])
        if kind == "door":
            w, h0, h1 = rng.uniform(0.9, 1.3), 0.0, min(rng.uniform(2.0, 2.3), height - 0.15)
        elif kind == "wide":
            w, h0 = rng.uniform(1.8, 3.5), 0.0
            h1 = height if rng.random() < 0.5 else min(2.4, height - 0.15)
        else:
            w, h0, h1 = rng.uniform(1.0, 2.0), rng.uniform(0.8, 1.0), min(rng.uniform(2.0, 2.2), height - 0.2)
        w = min(w, e1 - e0 - 0.5)
        if w < 0.8:
            continue
        # w fits by construction; max() only absorbs rounding when it fits exactly
        c0 = e0 + 0.25 + rng.uniform(0.0, max(0.0, e1 - e0 - 0.5 - w))
        cand = (c0, c0 + w, h0, h1)
        if all(cand[1] + 0.3 < o[0] or o[1] + 0.3 < cand[0] for o in out):
            out.append(cand)
    return out


def build_indoor(rng: np.random.Generator) -> Layout:
    """A room of random size with 0-2 neighbouring rooms/corridors through doors and openings."""
    b = Builder(rng, "indoor")
    height = rng.uniform(2.6, 3.5)
    width, depth = rng.uniform(4.0, 10.0), rng.uniform(4.0, 10.0)
    x0 = -rng.uniform(0.3, 0.7) * width
    z0 = -rng.uniform(0.15, 0.4) * depth
    main = (x0, x0 + width, z0, z0 + depth)
    t = rng.uniform(0.15, 0.3)
    trim = b.material("furniture")
    wall_mat = b.material("wall")
    accent = b.material("wall") if rng.random() < 0.5 else wall_mat
    accent_side = str(rng.choice(["+x", "-x", "+z", "-z"]))
    floor_mat, ceil_mat = b.material("floor"), b.material("ceiling")
    b.slab((main[0] - t, main[1] + t, main[2] - t, main[3] + t), 0.0, floor_mat, below=True)
    b.slab((main[0] - t, main[1] + t, main[2] - t, main[3] + t), height, ceil_mat, below=False)
    b.walkable(main, height)
    b.occupied.append(START_KEEPOUT)

    n_nb = int(rng.choice([0, 1, 2], p=[0.15, 0.55, 0.3]))
    sides = [str(x) for x in rng.permutation(["+x", "-x", "+z", "-z"])]
    if rng.random() < 0.5:  # often open the wall the reset camera faces: a view through a door
        sides.remove("+z")
        sides.insert(0, "+z")
    neighbours = []
    for side in sides[:n_nb]:
        a0, a1, _ = along(main, side)
        corridor = rng.random() < 0.45
        if corridor:
            nb_depth, e0, e1 = rng.uniform(1.4, 2.4), a0, a1
            nb_height = rng.uniform(min(2.4, height), height)
        else:
            nb_depth = rng.uniform(3.0, 6.0)
            length = rng.uniform(max(2.5, 0.4 * (a1 - a0)), a1 - a0)
            e0 = rng.uniform(a0, a1 - length)
            e1 = e0 + length
            nb_height = height if rng.random() < 0.6 else rng.uniform(min(2.5, height), height)
        openings = _openings(rng, e0, e1, nb_height)
        neighbours.append((side, corridor, nb_depth, e0, e1, nb_height, openings))

    nb_by_side = {n[0]: n for n in neighbours}
    for side in ("+x", "-x", "+z", "-z"):
        inner = accent if side == accent_side else wall_mat
        nb = nb_by_side.get(side)
        if nb is None:
            b.wall(main, side, t, height, [], _wall_mats(side, inner, inner, trim), extend=t)
            continue
        _, corridor, nb_depth, e0, e1, nb_height, openings = nb
        nb_wall = b.material("wall")
        b.wall(main, side, t, height, openings, _wall_mats(side, inner, nb_wall, trim), extend=t)
        for c0, c1, h0, h1 in openings:
            if h0 == 0.0:
                b.walkable(side_rect(main, side, c0, c1, 0.0, t), h1)
                b.occupied.append(side_rect(main, side, c0 - 0.3, c1 + 0.3, -1.2, t + 1.2))
        room = side_rect(main, side, e0, e1, t, t + nb_depth)
        _build_neighbour(b, room, side, t, nb_height, nb_wall, trim, corridor, openings)

    area = width * depth
    kinds = ["cabinet", "shelf", "sofa", "table", "crate", "lamp", "pillar"]
    probs = np.array([0.2, 0.15, 0.12, 0.18, 0.2, 0.08, 0.07 if area > 30 else 0.0])
    furnish(b, main, height, int(rng.integers(2, 4 + int(area / 10))), kinds, probs / probs.sum())
    openings = {n[0]: n[6] for n in neighbours}
    decorate(b, main, height, openings, int(rng.integers(1, 4)), trim, prefer="+z")
    if rng.random() < 0.5:
        rug(b, main)
    return b.finish(sky=None, lighting=random_lighting(rng, outdoor=False))


def decorate(b: Builder, room: Rect, height: float, openings: dict, count: int, frame: int,
             prefer: str | None = None):
    """Framed paintings on the walls (thin boxes): distinctive landmarks for memory tests.
    The first one is tried on wall ``prefer`` (the one the reset camera faces) first."""
    rng = b.rng
    for i in range(count):
        for attempt in range(15):
            side = prefer if (i == 0 and prefer and attempt < 8) else str(rng.choice(["+x", "-x", "+z", "-z"]))
            a0, a1, _ = along(room, side)
            w = rng.uniform(0.5, 1.6)
            if a1 - a0 < w + 0.6:
                continue
            c = rng.uniform(a0 + 0.3, a1 - 0.3 - w)
            if any(c < o[1] + 0.2 and o[0] - 0.2 < c + w for o in openings.get(side, [])):
                continue
            foot = side_rect(room, side, c, c + w, -0.04, 0.0)
            if any(_overlap(foot, o) for o in b.occupied):
                continue
            h0 = rng.uniform(1.0, 1.5)
            h1 = min(h0 + rng.uniform(0.4, 1.0), height - 0.2)
            art = b.material("art")
            mats = [frame] * 6
            axis = 0 if side in ("+x", "-x") else 2
            mats[2 * axis + (1 if side.startswith("-") else 0)] = art  # the room-facing face
            b.add(foot, h0, h1, mats)
            b.occupied.append(foot)
            break


def rug(b: Builder, room: Rect):
    """A thin rug on the floor (furniture may stand on it)."""
    rng = b.rng
    w, d = rng.uniform(1.2, 3.0), rng.uniform(1.0, 2.5)
    if room[1] - room[0] < w + 0.8 or room[3] - room[2] < d + 0.8:
        return
    x = rng.uniform(room[0] + 0.4, room[1] - 0.4 - w)
    z = rng.uniform(room[2] + 0.4, room[3] - 0.4 - d)
    b.add((x, x + w, z, z + d), 0.0, 0.015, b.material("rug"), structural=True)


_OPPOSITE = {"+x": "-x", "-x": "+x", "+z": "-z", "-z": "+z"}


def _build_neighbour(b: Builder, room: Rect, side: str, t: float, height: float, wall_mat: int, trim: int,
                     corridor: bool, openings: list):
    """Floor, ceiling, three walls and some furniture of a room adjoining the main one on ``side``."""
    rng = b.rng
    floor_mat = b.material("floor") if rng.random() < 0.7 else b.material("ground")
    ceil_mat = b.material("ceiling")
    # The slab stops exactly at the main room's slab on the shared side (same float expression).
    grown = list(room)
    for s in ("+x", "-x", "+z", "-z"):
        if s == _OPPOSITE[side]:
            continue
        i = {"-x": 0, "+x": 1, "-z": 2, "+z": 3}[s]
        grown[i] = room[i] + (t if s.startswith("+") else -t)
    b.slab(tuple(grown), 0.0, floor_mat, below=True)
    b.slab(tuple(grown), height, ceil_mat, below=False)
    for s in ("+x", "-x", "+z", "-z"):
        if s != _OPPOSITE[side]:
            b.wall(room, s, t, height, [], _wall_mats(s, wall_mat, wall_mat, trim), extend=t)
    b.walkable(room, height)
    if corridor:
        furnish(b, room, height, int(rng.integers(0, 3)), ["crate", "cabinet"], [0.6, 0.4])
    else:
        kinds = ["cabinet", "shelf", "sofa", "table", "crate", "lamp"]
        furnish(b, room, height, int(rng.integers(1, 5)), kinds, [0.2, 0.2, 0.15, 0.2, 0.15, 0.1])
        decorate(b, room, height, {_OPPOSITE[side]: openings}, int(rng.integers(0, 3)), trim)


# --------------------------------------------------------------------------- outdoor


def build_outdoor(rng: np.random.Generator) -> Layout:
    """An open courtyard closed by a front row of buildings, low walls and alleys, and a taller
    back ring of buildings, with pillars, crates, benches, planters and lamp posts inside."""
    b = Builder(rng, "outdoor")
    width, depth = rng.uniform(8.0, 18.0), rng.uniform(8.0, 18.0)
    x0 = -rng.uniform(0.3, 0.7) * width
    z0 = -rng.uniform(0.15, 0.4) * depth
    court = (x0, x0 + width, z0, z0 + depth)
    x1, z1 = court[1], court[3]
    ring_in = rng.uniform(9.0, 13.0)
    far = ring_in + 4.0  # outer edge of the back ring
    big = far + 2.0
    paving, street = b.material("ground"), b.material("street")
    b.slab(court, 0.0, paving, below=True)
    for rect in ((x0 - big, x0, z0 - big, z1 + big), (x1, x1 + big, z0 - big, z1 + big),
                 (x0, x1, z0 - big, z0), (x0, x1, z1, z1 + big)):
        b.slab(rect, 0.0, street, below=True)
    b.walkable(court, OUTDOOR_CEILING)
    b.occupied.append(START_KEEPOUT)
    facades = [b.material("facade") for _ in range(int(rng.integers(2, 5)))]
    roof = b.material("street")

    def building(rect, h):
        f = int(rng.choice(facades))
        b.add(rect, 0.0, h, [f, f, roof, f, f, f])

    # Back ring: four sides, each split into blocks of varied height (a skyline).
    for side in ("+x", "-x", "+z", "-z"):
        a0, a1, _ = along(court, side)
        pos, end = a0 - far, a1 + far
        while pos < end - 1e-9:
            nxt = min(end, pos + rng.uniform(6.0, 15.0))
            if end - nxt < 3.0:
                nxt = end
            building(side_rect(court, side, pos, nxt, ring_in, far), rng.uniform(7.0, 16.0))
            pos = nxt
    # Front row along the courtyard edge: buildings, low walls and gaps (alleys).
    wall_mat = b.material("wall")
    for side in ("+x", "-x", "+z", "-z"):
        a0, a1, _ = along(court, side)
        pos, end = (a0, a1) if side in ("+x", "-x") else (a0 - ring_in, a1 + ring_in)
        while pos < end - 1e-9:
            kind = rng.choice(["building", "gap", "low"], p=[0.6, 0.2, 0.2])
            seg = {"building": rng.uniform(3.0, 9.0), "gap": rng.uniform(1.5, 3.5), "low": rng.uniform(2.0, 6.0)}[kind]
            nxt = min(end, pos + seg)
            setback = rng.uniform(0.0, 1.0) if rng.random() < 0.4 else 0.0
            if kind == "building":
                bd = rng.uniform(3.0, min(8.0, ring_in - 2.5))
                building(side_rect(court, side, pos, nxt, setback, setback + bd), rng.uniform(3.0, 12.0))
            elif kind == "low":
                th = rng.uniform(0.3, 0.5)
                b.add(side_rect(court, side, pos, nxt, setback, setback + th), 0.0, rng.uniform(0.9, 2.2), wall_mat)
            pos = nxt
    if rng.random() < 0.3:
        _colonnade(b, court)
    kinds = ["crate", "bench", "planter", "pillar", "kiosk", "lowwall", "lamppost"]
    probs = [0.25, 0.15, 0.15, 0.15, 0.08, 0.1, 0.12]
    _place_outdoor(b, court, int(rng.integers(3, 5 + int(width * depth / 25))), kinds, probs)
    return b.finish(sky=random_sky(rng), lighting=random_lighting(rng, outdoor=True))


def _colonnade(b: Builder, court: Rect):
    """A row of pillars carrying a roof beam along one side of the courtyard."""
    rng = b.rng
    side = str(rng.choice(["+x", "-x", "-z"]))
    a0, a1, depth = along(court, side)
    inset, s, h = rng.uniform(2.0, 3.0), rng.uniform(0.4, 0.6), rng.uniform(3.0, 3.6)
    if depth < 2 * inset + 3.0:
        return
    pillar, beam = b.material("pillar"), b.material("pillar")
    n = max(2, int((a1 - a0 - 1.0) / rng.uniform(2.5, 3.5)))
    for c in np.linspace(a0 + 0.5, a1 - 0.5 - s, n):
        foot = side_rect(court, side, c, c + s, -inset - s, -inset)
        if not any(_overlap(foot, o, 0.3) for o in b.occupied):
            b.add(foot, 0.0, h, pillar)
    b.add(side_rect(court, side, a0 + 0.5, a1 - 0.5, -inset - s, 0.0), h, h + 0.35, beam)
    b.occupied.append(side_rect(court, side, a0, a1, -inset - s - 0.3, 0.0))


def _place_outdoor(b: Builder, court: Rect, count: int, kinds, probs):
    rng = b.rng
    for _ in range(count):
        kind = str(rng.choice(kinds, p=probs))
        m = b.material("pillar" if kind in ("pillar", "lamppost") else "furniture")
        if kind == "crate":
            s = rng.uniform(0.5, 1.1)
            parts = [(0, s, 0, s, 0, s, m)]
            if rng.random() < 0.5:
                s2 = rng.uniform(0.4, s)
                parts.append((0, s2, 0, s2, s, s + s2, b.material("furniture")))
            w, d = s, s
        elif kind == "bench":
            w, d = rng.uniform(1.2, 2.2), rng.uniform(0.4, 0.6)
            parts = [(0, w, 0, d, 0.0, 0.45, m)]
        elif kind == "planter":
            w, d = rng.uniform(0.8, 2.5), rng.uniform(0.8, 2.5)
            g = b.material("foliage")
            parts = [(0, w, 0, d, 0.0, rng.uniform(0.4, 0.8), [m, m, g, m, m, m])]
        elif kind == "pillar":
            s = rng.uniform(0.4, 0.8)
            w, d = s, s
            parts = [(0, s, 0, s, 0.0, rng.uniform(2.5, 5.0), m)]
        elif kind == "kiosk":
            w, d = rng.uniform(1.8, 3.0), rng.uniform(1.8, 3.0)
            h = rng.uniform(2.3, 3.0)
            top = b.material("furniture")
            parts = [(0, w, 0, d, 0.0, h, m), (-0.2, w + 0.2, -0.2, d + 0.2, h, h + 0.15, top)]
        elif kind == "lowwall":
            w, d = rng.uniform(2.0, 5.0), rng.uniform(0.25, 0.45)
            parts = [(0, w, 0, d, 0.0, rng.uniform(0.6, 1.2), b.material("wall"))]
        else:  # lamppost
            w = d = 0.3
            lamp = b.material("dynamic")
            parts = [(0.09, 0.21, 0.09, 0.21, 0.0, 3.2, m), (0.0, 0.3, 0.0, 0.3, 3.2, 3.6, lamp)]
        for side, c, depth in wall_spots(rng, court, w + 1.0, d + 1.0, 0.5, w):
            off = rng.uniform(0.3, depth - d - 0.3)
            foot = side_rect(court, side, c - 0.25, c + w + 0.25, -(off + d + 0.25), -off + 0.25)
            if b.is_clear(foot, (court[0] - 0.3, court[1] + 0.3, court[2] - 0.3, court[3] + 0.3), gap=0.3):
                place_parts(b, parts, court, side, c, off)
                b.occupied.append(foot)
                break


# --------------------------------------------------------------------------- dynamic objects


def _dynamic_parts(rng: np.random.Generator, b: Builder, kind: str):
    """Person-, cart- or car-sized stand-ins as parts (a0, a1, d0, d1, h0, h1, mats)."""
    if kind == "person":
        h = rng.uniform(1.55, 1.9)
        shirt, trousers = b.material("dynamic"), b.material("dynamic")
        tone = rng.uniform(0.35, 0.9)
        skin = b.custom(Material("solid", [[0.95 * tone, 0.72 * tone, 0.55 * tone]], seed=int(rng.integers(1 << 30))))
        return [(0.03, 0.42, 0.02, 0.26, 0.0, 0.45 * h, trousers), (0.0, 0.45, 0.0, 0.28, 0.45 * h, 0.86 * h, shirt),
                (0.12, 0.33, 0.03, 0.25, 0.86 * h, h, skin)], (0.45, 0.28)
    if kind == "cart":
        m, top = b.material("dynamic"), b.material("dynamic")
        w, d, h = rng.uniform(0.5, 0.8), rng.uniform(0.6, 1.0), rng.uniform(0.8, 1.2)
        return [(0, w, 0, d, 0.1, h, m), (0.05, w - 0.05, 0.05, d - 0.05, 0.0, 0.1, top)], (w, d)
    body = b.material("dynamic")
    glass = b.custom(Material("solid", [[0.12, 0.15, 0.2]], seed=int(rng.integers(1 << 30))))
    tyre = b.custom(Material("solid", [[0.06, 0.06, 0.06]], seed=int(rng.integers(1 << 30))))
    cabin = [glass, glass, body, body, glass, glass]  # windows all round, body-coloured roof
    parts = [(0, 1.8, 0, 4.2, 0.3, 0.95, body), (0.1, 1.7, 1.0, 3.2, 0.95, 1.45, cabin)]
    for a in (-0.02, 1.57):
        for e in (0.5, 3.05):
            parts.append((a, a + 0.25, e, e + 0.65, 0.0, 0.6, tyre))
    return parts, (1.8, 4.2)


def _spot(rng: np.random.Generator, room, w: float, d: float, in_view: bool):
    """Random corner ``(x, z)`` of a ``w x d`` footprint inside ``room``; with ``in_view``,
    1.2-6 m ahead of the reset camera and inside its 90-degree field of view."""
    if not in_view:
        if room[1] - room[0] < w or room[3] - room[2] < d:
            return None
        return rng.uniform(room[0], room[1] - w), rng.uniform(room[2], room[3] - d)
    z_hi = min(6.0, room[3] - d - 0.05)
    if z_hi < 1.2:
        return None
    z = rng.uniform(1.2, z_hi)
    x_lo, x_hi = max(room[0] + 0.05, -0.9 * z), min(room[1] - 0.05, 0.9 * z) - w
    if x_hi < x_lo:
        return None
    return rng.uniform(x_lo, x_hi), z


def add_dynamic(layout: Layout, rng: np.random.Generator, count: int) -> Layout:
    """A copy of ``layout`` with ``count`` dynamic-labelled objects placed in free floor space.

    Uses its own random stream, so the static scene is the same with or without them. The
    first object is tried in view of the reset camera so that filters can be tested at once.
    """
    b = Builder(rng, layout.kind)
    b.materials = list(layout.materials)
    static_feet = [(lo[0], hi[0], lo[2], hi[2]) for lo, hi, s in zip(layout.lo, layout.hi, layout.structural) if not s]
    b.occupied = static_feet + [(-0.7, 0.7, -0.7, 0.7)]
    rects = layout.walk_rects
    area = (rects[:, 1] - rects[:, 0]) * (rects[:, 3] - rects[:, 2])
    for i in range(count):
        kinds = ["person"] if i == 0 else ["person", "person", "car" if layout.kind == "outdoor" else "cart"]
        kind = str(rng.choice(kinds))
        parts, (w, d) = _dynamic_parts(rng, b, kind)
        if rng.random() < 0.5:
            parts = [(p[2], p[3], p[0], p[1], p[4], p[5], p[6]) for p in parts]
            w, d = d, w
        for attempt in range(200):
            in_view = i == 0 and attempt < 150
            room = rects[0] if in_view else rects[int(rng.choice(len(rects), p=area / area.sum()))]
            spot = _spot(rng, room, w, d, in_view)
            if spot is None:
                continue
            x, z = spot
            foot = (x, x + w, z, z + d)
            if b.is_clear(foot, tuple(room), gap=0.15):
                for a0, a1, d0, d1, h0, h1, mats in parts:
                    b.add((x + a0, x + a1, z + d0, z + d1), h0, h1, mats, label=LABEL_DYNAMIC)
                b.occupied.append(foot)
                break
    if not b.boxes:
        return layout
    extra = b.finish(layout.sky, layout.lighting)
    return Layout(
        kind=layout.kind,
        lo=np.concatenate([layout.lo, extra.lo]),
        hi=np.concatenate([layout.hi, extra.hi]),
        face_mat=np.concatenate([layout.face_mat, extra.face_mat]),
        label=np.concatenate([layout.label, extra.label]),
        structural=np.concatenate([layout.structural, extra.structural]),
        materials=b.materials,
        walk_rects=layout.walk_rects,
        sky=layout.sky,
        lighting=layout.lighting,
    )
