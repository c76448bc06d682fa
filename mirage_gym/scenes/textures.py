"""Procedural, view-independent surface colours, lighting and sky.

Every albedo here is a pure function of a surface point's face coordinates (metres, world
anchored), so one surface point has one colour from every camera: the latent-memory tests
compare colours across viewpoints. Shading is Lambertian with fixed directional lights per
scene (a per-face-orientation factor), again view independent. The sky colour depends only
on the ray direction, so it is the same from every position.

Feature sizes stay within about 0.2-1.5 m so 64x64 renders (about 0.1 m per pixel at 3 m)
remain learnable once supersampled.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass, field

import numpy as np

PATTERNS = ("solid", "stripes", "checker", "bricks", "tiles", "noise", "planks", "facade", "foliage")

# Box face order used everywhere: face = 2 * axis + side, side 0 = the low face (outward
# normal -axis), side 1 = the high face. Since y points down, face 2 is a box's top.
FACE_NORMALS = np.array(
    [[-1, 0, 0], [1, 0, 0], [0, -1, 0], [0, 1, 0], [0, 0, -1], [0, 0, 1]], dtype=np.float64
)


@dataclass(eq=False)
class Material:
    """A procedural albedo: ``pattern`` over palette ``colors`` with feature size ``scale`` (m).

    ``aux`` is pattern specific (stripe orientation, mortar width, window share) and
    ``seed`` decorrelates hashed variations between materials.
    """

    pattern: str
    colors: np.ndarray  # (k, 3) float32 in [0, 1]
    scale: float = 0.5
    aux: float = 0.0
    seed: int = 0

    def __post_init__(self):
        if self.pattern not in PATTERNS:
            raise ValueError(f"unknown pattern {self.pattern!r}")
        self.colors = np.asarray(self.colors, dtype=np.float32).reshape(-1, 3)
        # (3, 1) column per palette entry, for channel-first broadcasting
        self.columns = [c[:, None] for c in self.colors]


@dataclass(eq=False)
class Sky:
    """Vertical gradient from ``horizon`` to ``zenith`` with optional value-noise clouds."""

    zenith: np.ndarray
    horizon: np.ndarray
    ground: np.ndarray
    cloudiness: float = 0.3
    seed: int = 0


@dataclass(eq=False)
class Lighting:
    """Ambient plus a key and a fill directional light, reduced to one factor per face normal."""

    ambient: float
    key_dir: np.ndarray  # unit vector pointing from the surface toward the light (world, y down)
    key: float
    fill: float
    fill_up: float = -0.3  # y of the fill direction: < 0 skylight from above, > 0 floor bounce
    face_factor: np.ndarray = field(init=False)

    def __post_init__(self):
        key = np.clip(FACE_NORMALS @ self.key_dir, 0.0, None)
        fill_dir = np.array([-self.key_dir[0], self.fill_up, -self.key_dir[2]])
        fill_dir /= np.linalg.norm(fill_dir)
        fill = np.clip(FACE_NORMALS @ fill_dir, 0.0, None)
        factor = self.ambient + self.key * key + self.fill * fill
        # at most 1 so lit palette colours stay in [0, 1] without clipping
        self.face_factor = (factor / max(1.0, factor.max())).astype(np.float32)


# --------------------------------------------------------------------------- noise


_H1, _H2, _H3, _H4 = (np.uint32(c) for c in (0x27D4EB2D, 0x165667B1, 0x85EBCA6B, 0xC2B2AE35))


def _hash(ix: np.ndarray, iy: np.ndarray, seed: int) -> np.ndarray:
    """Integer lattice hash (int32 cells, wrapping uint32 arithmetic) to float32 in [0, 1)."""
    h = ix.view(np.uint32) * _H1 + iy.view(np.uint32) * _H2 + np.uint32(seed & 0xFFFFFFFF)
    h ^= h >> np.uint32(15)
    h *= _H3
    h ^= h >> np.uint32(13)
    h *= _H4
    h ^= h >> np.uint32(16)
    return (h >> np.uint32(8)).astype(np.float32) * np.float32(1.0 / (1 << 24))


def _cells(x: np.ndarray) -> np.ndarray:
    return np.floor(x).astype(np.int32)


def cell_hash(u: np.ndarray, v: np.ndarray, seed: int) -> np.ndarray:
    """Random value per integer cell ``(floor(u), floor(v))``."""
    return _hash(_cells(u), _cells(v), seed)


def _lattice_noise(u: np.ndarray, v: np.ndarray, seed: int, period: int) -> np.ndarray:
    """Exact smooth value noise in [0, 1], unit lattice spacing, periodic with ``period``."""
    fu, fv = np.floor(u), np.floor(v)
    iu, iv = fu.astype(np.int32) % period, fv.astype(np.int32) % period
    su, sv = (u - fu).astype(np.float32), (v - fv).astype(np.float32)
    su = su * su * (3.0 - 2.0 * su)
    sv = sv * sv * (3.0 - 2.0 * sv)
    a, b = _hash(iu, iv, seed), _hash((iu + 1) % period, iv, seed)
    c, d = _hash(iu, (iv + 1) % period, seed), _hash((iu + 1) % period, (iv + 1) % period, seed)
    top = a + (b - a) * su
    bottom = c + (d - c) * su
    return top + (bottom - top) * sv


# Noise is baked once into periodic tables (32 lattice units, 8 samples per unit) and read
# back bilinearly: four gathers instead of four (or eight, for two octaves) hashes per point.
_TILE_UNITS, _TILE_RES = 32, 8
_TILE = _TILE_UNITS * _TILE_RES


def _bake(octaves: int) -> np.ndarray:
    g = np.arange(_TILE, dtype=np.float64) / _TILE_RES
    u, v = np.meshgrid(g, g)
    total = 2.0 * _lattice_noise(u, v, 1, _TILE_UNITS)
    if octaves == 2:
        total = (total + _lattice_noise(2.0 * u, 2.0 * v, 2, 2 * _TILE_UNITS)) / 3.0
    else:
        total = total / 2.0
    return total.astype(np.float32).reshape(-1)


_VALUE_TABLE = _bake(1)
_FBM_TABLE = _bake(2)


def _lookup(table: np.ndarray, u: np.ndarray, v: np.ndarray, seed: int) -> np.ndarray:
    """Bilinear read of a baked noise table at lattice coordinates ``(u, v)``; ``seed`` shifts
    the window so different materials see different noise."""
    off_u = (seed * 0.6180339887) % 1.0 * _TILE_UNITS
    off_v = (seed * 0.7548776662) % 1.0 * _TILE_UNITS
    x = (u + np.float32(off_u)) * np.float32(_TILE_RES)
    y = (v + np.float32(off_v)) * np.float32(_TILE_RES)
    fx, fy = np.floor(x), np.floor(y)
    tx, ty = x - fx, y - fy
    ix = fx.astype(np.int32) & (_TILE - 1)
    iy = (fy.astype(np.int32) & (_TILE - 1)) * _TILE
    ix1 = (ix + 1) & (_TILE - 1)
    iy1 = (iy + _TILE) & (_TILE * _TILE - 1)
    a, b = table.take(iy + ix), table.take(iy + ix1)
    c, d = table.take(iy1 + ix), table.take(iy1 + ix1)
    top = a + (b - a) * tx
    bottom = c + (d - c) * tx
    return top + (bottom - top) * ty


def value_noise(u: np.ndarray, v: np.ndarray, seed: int) -> np.ndarray:
    """Smooth 2D value noise in [0, 1] with unit lattice spacing."""
    return _lookup(_VALUE_TABLE, u, v, seed)


def fbm(u: np.ndarray, v: np.ndarray, seed: int) -> np.ndarray:
    """Two octaves of value noise, in [0, 1]."""
    return _lookup(_FBM_TABLE, u, v, seed)


def _smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _mix(c0: np.ndarray, c1: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Blend colours ``(3, 1)`` or ``(3, n)`` by weights ``t (n,)``: channel-first is much
    faster than ``(n, 3)`` for numpy broadcasting."""
    return c0 + (c1 - c0) * t


def _pick(mask: np.ndarray, c0: np.ndarray, c1: np.ndarray) -> np.ndarray:
    return np.where(mask, c0, c1)


def _frac(x: np.ndarray) -> np.ndarray:
    return x - np.floor(x)


# --------------------------------------------------------------------------- patterns


def albedo(mat: Material, u: np.ndarray, v: np.ndarray, extent: tuple | None = None) -> np.ndarray:
    """Albedo ``(3, n)`` float32 of ``mat`` at face coordinates ``u`` (along), ``v`` (up / depth).

    ``extent`` = ``(u0, u1)`` per point (the face's span along ``u``) is only used by the
    facade pattern, which centres its window grid on each face.
    """
    c = mat.columns
    s = mat.scale
    p = mat.pattern
    if p == "solid":
        n = value_noise(u / 1.3, v / 1.3, mat.seed)
        return c[0] * (0.9 + 0.2 * n)
    if p == "stripes":
        coord = u if mat.aux < 0.5 else v
        return _pick(_frac(coord / s) < 0.5, c[0], c[1])
    if p == "checker":
        parity = (_cells(u / s) + _cells(v / s)) & 1
        return _pick(parity == 0, c[0], c[1])
    if p == "bricks":
        return _bricks(mat, u, v)
    if p == "tiles":
        return _tiles(mat, u, v)
    if p == "noise":
        n = fbm(u / s, v / s, mat.seed)
        return _mix(c[0], c[1], _smoothstep(0.35, 0.65, n))
    if p == "planks":
        return _planks(mat, u, v)
    if p == "facade":
        return _facade(mat, u, v, extent)
    if p == "foliage":
        n = fbm(u / s, v / s, mat.seed)
        fine = value_noise(u / (0.4 * s), v / (0.4 * s), mat.seed + 7)
        return _mix(c[0], c[1], _smoothstep(0.3, 0.7, 0.6 * n + 0.4 * fine))
    raise AssertionError(p)


def _bricks(mat: Material, u, v):
    """Running-bond bricks: rows of height scale/2, bricks scale long, mortar ``aux`` m wide."""
    c = mat.columns
    length, height = mat.scale, 0.5 * mat.scale
    mortar = mat.aux if mat.aux > 0 else 0.04
    row = np.floor(v / height)
    shifted = u / length + 0.5 * (row % 2)
    col = np.floor(shifted)
    tone = _hash(col.astype(np.int32), row.astype(np.int32), mat.seed)
    brick = _mix(c[0], c[1], tone)
    in_mortar = ((v - row * height) < mortar) | ((shifted - col) * length < mortar)
    return _pick(in_mortar, c[2], brick)


def _tiles(mat: Material, u, v):
    """Square tiles of side ``scale`` whose colours are randomly drawn, with grout lines."""
    c = mat.columns
    gu, gv = u / mat.scale, v / mat.scale
    grout = mat.aux if mat.aux > 0 else 0.03
    pick = cell_hash(gu, gv, mat.seed)
    lines = (np.minimum(_frac(gu), _frac(gv)) * mat.scale) < grout
    return _pick(lines, c[2], _pick(pick < 0.5, c[0], c[1]))


def _planks(mat: Material, u, v):
    """Wood-like planks of width ``scale`` along v, with hashed tone and wavy grain bands."""
    c = mat.columns
    gu = u / mat.scale
    plank = np.floor(gu)
    tone = cell_hash(gu, np.zeros_like(gu), mat.seed)
    warp = 0.25 * value_noise(u * 2.0, v * 0.6, mat.seed + 3)
    grain = 0.5 + 0.5 * np.sin(2 * np.pi * (v / 0.6 + plank * 0.37 + warp))
    t = np.clip(0.55 * tone + 0.45 * grain, 0.0, 1.0)
    wood = _mix(c[0], c[1], t)
    seam = (_frac(gu) * mat.scale) < 0.02
    return _pick(seam, c[0] * 0.6, wood)


def _facade(mat: Material, u, v, extent):
    """Building wall with a grid of windows (storeys 3 m, bays about ``scale`` m), per face."""
    c = mat.columns
    if extent is None:
        u0 = np.zeros_like(u)
        width = np.full_like(u, 1e9)
    else:
        u0, width = extent[0], extent[1] - extent[0]
    bay = mat.scale
    n_bays = np.maximum(np.floor(width / bay), 1.0)
    bay_w = width / n_bays
    lu = (u - u0) / bay_w
    storey = 3.0
    lv = v / storey
    fu, fv = _frac(lu), _frac(lv)
    share = mat.aux if mat.aux > 0 else 0.5
    window = (np.abs(fu - 0.5) < 0.5 * share) & (fv > 0.3) & (fv < 0.8) & (v > 0.8)
    lit = cell_hash(lu, lv, mat.seed)
    glass = _mix(c[1], c[2], _smoothstep(0.6, 0.95, lit))
    wall = c[0] * (0.94 + 0.1 * lit)  # one slightly different tone per bay and storey
    return _pick(window, glass, wall)


# --------------------------------------------------------------------------- sky


def sky_color(sky: Sky, dx: np.ndarray, dy: np.ndarray, dz: np.ndarray) -> np.ndarray:
    """Sky colour ``(3, n)`` for world ray directions (any length); depends on direction only."""
    inv_norm = 1.0 / np.sqrt(dx * dx + dy * dy + dz * dz)
    elev = -dy * inv_norm  # y is down: positive elevation looks up
    col = _mix(sky.horizon[:, None], sky.zenith[:, None], np.clip(elev, 0.0, 1.0) ** 0.6)
    if sky.cloudiness > 0:
        # clouds live on a plane above the camera: coordinates = horizontal direction / elevation
        scale = 1.5 * inv_norm / np.maximum(elev, 0.02)
        n = value_noise(dx * scale, dz * scale, sky.seed)
        cover = _smoothstep(1.0 - sky.cloudiness, 1.0 - 0.4 * sky.cloudiness, n) * _smoothstep(0.02, 0.2, elev)
        col = _mix(col, np.float32([[0.96], [0.96], [0.97]]), 0.85 * cover)
    ground = _mix(sky.horizon[:, None], sky.ground[:, None], _smoothstep(0.0, 0.1, -elev))
    return np.where(elev < 0, ground, col).astype(np.float32)


# --------------------------------------------------------------------------- palettes


def hsv(h: float, s: float, v: float) -> np.ndarray:
    """RGB float32 from HSV with hue wrapped to [0, 1)."""
    return np.array(colorsys.hsv_to_rgb(h % 1.0, float(np.clip(s, 0, 1)), float(np.clip(v, 0, 1))), np.float32)


def _near(rng: np.random.Generator, base: np.ndarray, dv: float) -> np.ndarray:
    """A second colour of the same family: shifted value, slight hue shift."""
    h, s, v = colorsys.rgb_to_hsv(*base.tolist())
    return hsv(h + rng.uniform(-0.04, 0.04), s * rng.uniform(0.8, 1.2), v + dv)


def _aux(rng: np.random.Generator, pattern: str, scale: float) -> float:
    """The pattern-specific parameter: stripe direction (0 along u, 1 along v), mortar or
    grout width in metres (5-8 % of the feature size, so lines cover about 10-25 %), or 0."""
    if pattern == "stripes":
        return float(rng.random() < 0.5)
    if pattern in ("bricks", "tiles"):
        return float(scale * rng.uniform(0.05, 0.08))
    return 0.0


def random_material(rng: np.random.Generator, role: str, hue: float) -> Material:
    """A material for a surface ``role``, around the scene's base ``hue``.

    Roles: wall, floor, ceiling, furniture, pillar, facade, ground, street, dynamic, foliage,
    art (wall paintings), rug.
    """
    seed = int(rng.integers(0, 2**31))
    h = hue + rng.uniform(-0.12, 0.12) if rng.random() < 0.6 else rng.random()

    def base(s_lo, s_hi, v_lo, v_hi):
        return hsv(h, rng.uniform(s_lo, s_hi), rng.uniform(v_lo, v_hi))

    if role == "wall":
        pat = rng.choice(["solid", "solid", "stripes", "bricks", "tiles", "noise", "checker"])
        c0 = base(0.05, 0.45, 0.55, 0.92)
        contrast = rng.choice([-0.25, 0.2])
        c1 = _near(rng, c0, contrast)
        c2 = _near(rng, c0, 0.12 if contrast < 0 else -0.3)
        scale = {"stripes": rng.uniform(0.3, 0.9), "checker": rng.uniform(0.4, 0.9),
                 "bricks": rng.uniform(0.4, 0.6), "tiles": rng.uniform(0.3, 0.6)}.get(pat, rng.uniform(0.6, 1.5))
        return Material(pat, [c0, c1, c2], scale, aux=_aux(rng, pat, scale), seed=seed)
    if role == "floor":
        pat = rng.choice(["planks", "planks", "tiles", "checker", "noise", "solid"])
        c0 = base(0.15, 0.6, 0.3, 0.7)
        c1 = _near(rng, c0, rng.choice([-1, 1]) * rng.uniform(0.12, 0.25))
        c2 = _near(rng, c0, -0.2)
        scale = {"planks": rng.uniform(0.15, 0.3), "tiles": rng.uniform(0.4, 0.8),
                 "checker": rng.uniform(0.4, 0.8)}.get(pat, rng.uniform(0.6, 1.4))
        return Material(pat, [c0, c1, c2], scale, seed=seed)
    if role == "ceiling":
        pat = rng.choice(["solid", "solid", "tiles", "noise"])
        c0 = base(0.0, 0.15, 0.75, 0.95)
        return Material(pat, [c0, _near(rng, c0, -0.08), _near(rng, c0, -0.25)], rng.uniform(0.5, 1.0), seed=seed)
    if role in ("furniture", "pillar", "dynamic"):
        choices = {"furniture": ["planks", "solid", "stripes", "checker", "noise", "tiles"],
                   "pillar": ["solid", "stripes", "bricks", "noise"],
                   "dynamic": ["solid", "stripes", "checker"]}[role]
        pat = rng.choice(choices)
        sat = (0.5, 0.95) if role == "dynamic" else (0.1, 0.75)
        c0 = hsv(rng.random() if role == "dynamic" else h, rng.uniform(*sat), rng.uniform(0.35, 0.9))
        c1 = _near(rng, c0, rng.choice([-0.3, 0.25]))
        c2 = _near(rng, c0, -0.35)
        scale = {"planks": rng.uniform(0.15, 0.3), "bricks": rng.uniform(0.4, 0.6)}.get(pat, rng.uniform(0.2, 0.6))
        return Material(pat, [c0, c1, c2], scale, aux=_aux(rng, pat, scale), seed=seed)
    if role == "facade":
        pat = "facade" if rng.random() < 0.75 else "bricks"
        c0 = base(0.05, 0.5, 0.45, 0.9)
        glass = hsv(rng.uniform(0.5, 0.65), rng.uniform(0.2, 0.5), rng.uniform(0.12, 0.3))
        lit = hsv(rng.uniform(0.1, 0.16), 0.4, 0.85)
        if pat == "bricks":
            scale = rng.uniform(0.45, 0.6)
            palette = [c0, _near(rng, c0, -0.2), _near(rng, c0, 0.15)]
            return Material(pat, palette, scale, _aux(rng, pat, scale), seed=seed)
        return Material(pat, [c0, glass, lit], rng.uniform(1.6, 2.8), aux=rng.uniform(0.35, 0.6), seed=seed)
    if role == "ground":
        pat = rng.choice(["tiles", "bricks", "checker", "noise"])
        c0 = base(0.05, 0.35, 0.4, 0.75)
        scale = rng.uniform(0.5, 1.0)
        return Material(pat, [c0, _near(rng, c0, -0.15), _near(rng, c0, -0.3)], scale, _aux(rng, pat, scale), seed=seed)
    if role == "street":
        c0 = hsv(rng.random(), rng.uniform(0.0, 0.1), rng.uniform(0.22, 0.38))
        return Material("noise", [c0, _near(rng, c0, 0.08)], rng.uniform(1.0, 2.0), seed=seed)
    if role in ("art", "rug"):
        choices = ["noise", "stripes", "checker", "solid"] if role == "art" else ["stripes", "checker", "noise", "tiles"]
        pat = rng.choice(choices)
        c0 = hsv(rng.random(), rng.uniform(0.4, 0.9), rng.uniform(0.35, 0.9))
        c1 = hsv(rng.random(), rng.uniform(0.4, 0.9), rng.uniform(0.35, 0.9))
        c2 = _near(rng, c0, -0.3)
        scale = rng.uniform(0.2, 0.45)
        return Material(pat, [c0, c1, c2], scale, aux=_aux(rng, pat, scale), seed=seed)
    if role == "foliage":
        c0 = hsv(rng.uniform(0.22, 0.38), rng.uniform(0.5, 0.8), rng.uniform(0.25, 0.45))
        return Material("foliage", [c0, _near(rng, c0, 0.25)], rng.uniform(0.3, 0.6), seed=seed)
    raise ValueError(f"unknown material role {role!r}")


def random_sky(rng: np.random.Generator) -> Sky:
    """A day sky: blue to pale gradient, sometimes hazy or overcast-ish."""
    h = rng.uniform(0.55, 0.63)
    zenith = hsv(h, rng.uniform(0.35, 0.7), rng.uniform(0.65, 0.9))
    horizon = hsv(h + rng.uniform(-0.05, 0.05), rng.uniform(0.05, 0.25), rng.uniform(0.85, 0.98))
    ground = hsv(rng.random(), 0.1, 0.45)
    return Sky(zenith, horizon, ground, cloudiness=float(rng.uniform(0.0, 0.6)), seed=int(rng.integers(0, 2**31)))


def random_lighting(rng: np.random.Generator, outdoor: bool) -> Lighting:
    """Key light from above at a random azimuth; outdoors brighter and more directional."""
    az = rng.uniform(0, 2 * np.pi)
    elev = np.radians(rng.uniform(35, 65))
    key_dir = np.array([np.cos(elev) * np.cos(az), -np.sin(elev), np.cos(elev) * np.sin(az)])
    if outdoor:
        return Lighting(ambient=0.42, key_dir=key_dir, key=0.62, fill=0.12)
    return Lighting(ambient=0.48, key_dir=key_dir, key=0.42, fill=0.32, fill_up=1.2)
