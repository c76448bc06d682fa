"""Free space, geodesic distance and shortest paths for the goal tasks (no gymnasium import).

The camera walks a horizontal plane at eye height (``y = 0`` of the world frame, which is
the camera frame at reset). :class:`OccupancyGrid` discretises that plane in square cells
(``x`` across, ``z`` along the rows). A cell is **free** when the eye at its centre is:

* inside the procedural scene's walkable air and at least ``clearance`` from every solid
  box of its layout (:meth:`mirage_gym.scenes.Scene.is_free`), where the world came from
  a procedural scene (a user image has no layout: there everything not blocked below
  counts as free, unobserved space included), and
* at least ``clearance`` (horizontally) from every remembered point within ``clearance``
  of eye height: the generated geometry the world's own collision check stops the camera
  at (the world keeps 0.25 m; the planner's default 0.3 m keeps paths off that margin).

Distances are geodesic over the free cells, 16-connected (straight, diagonal and knight
moves, none cutting a blocked corner): within about 3% of the any-angle length.
:func:`shortest_path` string-pulls the grid path into an any-angle polyline, whose length
is the shortest-path length SPL divides by.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# (drow, dcol, cost, cells the move passes through besides its ends)
_MOVES = []
for _dr, _dc in [(0, 1), (1, 0), (1, 1), (1, 2), (2, 1)]:
    for _sr in (1, -1):
        for _sc in (1, -1):
            dr, dc = _dr * _sr, _dc * _sc
            if any(m[:2] == (dr, dc) for m in _MOVES):
                continue
            if abs(dr) + abs(dc) == 1:
                via = []
            elif abs(dr) == abs(dc):
                via = [(dr, 0), (0, dc)]
            elif abs(dr) == 2:
                via = [(dr // 2, 0), (dr // 2, dc)]
            else:
                via = [(0, dc // 2), (dr, dc // 2)]
            _MOVES.append((dr, dc, math.hypot(dr, dc), via))


@dataclass
class OccupancyGrid:
    """Free cells of the eye-height plane. Cell ``(row, col)`` has its centre at
    ``x = x0 + (col + 0.5) * cell``, ``z = z0 + (row + 0.5) * cell``."""

    x0: float
    z0: float
    cell: float
    free: np.ndarray  # (rows, cols) bool

    @property
    def shape(self) -> tuple[int, int]:
        return self.free.shape

    def centres(self) -> np.ndarray:
        """(rows, cols, 2) x, z of every cell centre."""
        rows, cols = self.shape
        x = self.x0 + (np.arange(cols) + 0.5) * self.cell
        z = self.z0 + (np.arange(rows) + 0.5) * self.cell
        zz, xx = np.meshgrid(z, x, indexing="ij")
        return np.stack([xx, zz], -1)

    def cell_of(self, xz) -> tuple[int, int]:
        """(row, col) of the cell holding the point ``xz`` (may lie outside the grid)."""
        return int(math.floor((xz[1] - self.z0) / self.cell)), int(math.floor((xz[0] - self.x0) / self.cell))

    def inside(self, row: int, col: int) -> bool:
        return 0 <= row < self.shape[0] and 0 <= col < self.shape[1]

    def is_free(self, xz) -> bool:
        r, c = self.cell_of(xz)
        return self.inside(r, c) and bool(self.free[r, c])

    def line_of_sight(self, a, b) -> bool:
        """Does the segment ``a`` -> ``b`` (x, z) cross free cells only? Sampled every
        quarter cell, both ends included."""
        a, b = np.asarray(a, float), np.asarray(b, float)
        n = max(2, int(math.ceil(np.linalg.norm(b - a) / (0.25 * self.cell))) + 1)
        t = np.linspace(0.0, 1.0, n)[:, None]
        p = a + t * (b - a)
        cols = np.floor((p[:, 0] - self.x0) / self.cell).astype(int)
        rows = np.floor((p[:, 1] - self.z0) / self.cell).astype(int)
        ok = (rows >= 0) & (rows < self.shape[0]) & (cols >= 0) & (cols < self.shape[1])
        return bool(ok.all() and self.free[rows, cols].all())


def build_grid(bounds, cell: float = 0.1, clearance: float = 0.3, scene=None) -> OccupancyGrid:
    """The occupancy grid over ``bounds`` = ``((xmin, xmax), (zmin, zmax))`` from the
    layout alone: free where ``scene`` (a procedural :class:`~mirage_gym.scenes.Scene`, or
    None for everywhere) leaves the eye ``clearance`` from every solid."""
    if not (cell > 0 and math.isfinite(cell)):
        raise ValueError(f"cell must be a positive number of metres, got {cell!r}")
    if not (clearance >= 0 and math.isfinite(clearance)):
        raise ValueError(f"clearance must be a non-negative number of metres, got {clearance!r}")
    (xmin, xmax), (zmin, zmax) = bounds
    cols = max(1, int(math.ceil((xmax - xmin) / cell)))
    rows = max(1, int(math.ceil((zmax - zmin) / cell)))
    grid = OccupancyGrid(float(xmin), float(zmin), float(cell), np.ones((rows, cols), dtype=bool))
    if scene is not None:
        centres = grid.centres().reshape(-1, 2)
        eye = np.stack([centres[:, 0], np.zeros(len(centres)), centres[:, 1]], -1)
        grid.free &= scene.is_free(eye, clearance).reshape(rows, cols)
    return grid


def block_points(grid: OccupancyGrid, points, clearance: float = 0.3) -> OccupancyGrid:
    """A copy of ``grid`` with every cell whose eye (at ``y = 0``) comes within
    ``clearance`` of a point of ``points`` ((N, 3) world xyz) blocked: the world's own
    collision rule for remembered geometry. Points are taken in three height bands, each
    blocking the horizontal radius its nearest height allows (so slightly conservative)."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    pts = pts[np.isfinite(pts).all(axis=1)]
    height = np.abs(pts[:, 1])
    rows, cols = grid.shape
    free = grid.free.copy()
    for low, high in ((0.0, 0.5), (0.5, 0.8), (0.8, 1.0)):
        band = pts[(height >= low * clearance) & (height < high * clearance)]
        if not len(band):
            continue
        blocked = np.zeros((rows, cols), dtype=bool)
        r = np.floor((band[:, 2] - grid.z0) / grid.cell).astype(int)
        c = np.floor((band[:, 0] - grid.x0) / grid.cell).astype(int)
        ok = (r >= 0) & (r < rows) & (c >= 0) & (c < cols)
        blocked[r[ok], c[ok]] = True
        free &= ~dilate(blocked, math.sqrt(1.0 - low**2) * clearance / grid.cell)
    return OccupancyGrid(grid.x0, grid.z0, grid.cell, free)


def sample_goal(grid: OccupancyGrid, start_xz, rng: np.random.Generator, min_distance: float, max_distance: float):
    """A free cell centre (x, z) whose geodesic distance from ``start_xz`` lies in
    ``[min_distance, max_distance]``, uniform over such cells; None if there is none.
    Cells the start cannot reach have infinite distance, so they are never drawn."""
    from_start = distance_field(grid, start_xz)
    rows, cols = np.nonzero((from_start >= min_distance) & (from_start <= max_distance))
    if rows.size == 0:
        return None
    i = int(rng.integers(rows.size))
    return grid.centres()[rows[i], cols[i]]


def dilate(mask: np.ndarray, radius_cells: float) -> np.ndarray:
    """Cells within ``radius_cells`` (centre to any point of a set cell, so conservative by
    up to half a cell diagonal) of a set cell."""
    reach = int(math.ceil(radius_cells + 0.5))
    out = mask.copy()
    rows, cols = mask.shape
    for dr in range(-reach, reach + 1):
        for dc in range(-reach, reach + 1):
            if (dr, dc) == (0, 0) or math.hypot(max(abs(dr) - 0.5, 0), max(abs(dc) - 0.5, 0)) > radius_cells:
                continue
            src = mask[max(0, -dr):rows - max(0, dr), max(0, -dc):cols - max(0, dc)]
            out[max(0, dr):rows - max(0, -dr), max(0, dc):cols - max(0, -dc)] |= src
    return out


def _edge_masks(free: np.ndarray) -> list[tuple[int, int, float, np.ndarray]]:
    """For each move, where it may start: both ends and every cell it passes free."""
    rows, cols = free.shape
    pad = 2
    padded = np.zeros((rows + 2 * pad, cols + 2 * pad), dtype=bool)
    padded[pad:pad + rows, pad:pad + cols] = free

    def shifted(dr, dc):
        return padded[pad + dr:pad + dr + rows, pad + dc:pad + dc + cols]

    out = []
    for dr, dc, cost, via in _MOVES:
        ok = free & shifted(dr, dc)
        for vr, vc in via:
            ok = ok & shifted(vr, vc)
        out.append((dr, dc, cost, ok))
    return out


def distance_field(grid: OccupancyGrid, goal_xz, reach: float | None = None) -> np.ndarray:
    """Geodesic distance (metres) from every cell to the point ``goal_xz``; ``inf`` where
    blocked or cut off. Free cells within ``reach`` (default: the grid's clearance-sized
    neighbourhood, 3 cells) of the goal start at their straight distance to it."""
    goal = np.asarray(goal_xz, dtype=np.float64)
    reach = 3 * grid.cell if reach is None else float(reach)
    centres = grid.centres()
    straight = np.linalg.norm(centres - goal, axis=-1)
    field = np.where(grid.free & (straight <= reach), straight, np.inf)
    edges = _edge_masks(grid.free)
    rows, cols = grid.shape
    while True:
        before = field.copy()
        for dr, dc, cost, ok in edges:
            # a cell reaches the goal through its neighbour (row + dr, col + dc)
            dst = field[max(0, -dr):rows - max(0, dr), max(0, -dc):cols - max(0, dc)]
            src = field[max(0, dr):rows - max(0, -dr), max(0, dc):cols - max(0, -dc)]
            allowed = ok[max(0, -dr):rows - max(0, dr), max(0, -dc):cols - max(0, dc)]
            np.minimum(dst, np.where(allowed, src + cost * grid.cell, np.inf), out=dst)
        if np.array_equal(before, field):
            return field


def geodesic(grid: OccupancyGrid, field: np.ndarray, xz, goal_xz=None, reach: float | None = None) -> float:
    """Geodesic distance from the point ``xz`` to the field's goal: through the best free
    cell within ``reach`` (default 3 cells; the eye may stand inside the planner's margin),
    or straight to ``goal_xz`` when that is closer than ``reach``. ``inf`` if cut off."""
    p = np.asarray(xz, dtype=np.float64)
    reach = 3 * grid.cell if reach is None else float(reach)
    best = _entry(grid, field, p, reach)[0]
    if goal_xz is not None:
        straight = float(np.linalg.norm(p - np.asarray(goal_xz, dtype=np.float64)))
        if straight <= reach:
            best = min(best, straight)
    return best


def _entry(grid: OccupancyGrid, field: np.ndarray, p: np.ndarray, reach: float):
    """The best way onto the grid from the point ``p``: (distance to the goal through it,
    its cell), over the cells within ``reach``; (inf, None) if none leads to the goal."""
    r, c = grid.cell_of(p)
    k = int(math.ceil(reach / grid.cell)) + 1
    r0, r1 = max(0, r - k), min(grid.shape[0], r + k + 1)
    c0, c1 = max(0, c - k), min(grid.shape[1], c + k + 1)
    if r0 >= r1 or c0 >= c1:
        return math.inf, None
    gap = np.linalg.norm(_centres_window(grid, r0, r1, c0, c1) - p, axis=-1)
    total = np.where(gap <= reach, field[r0:r1, c0:c1] + gap, np.inf)
    i = int(np.argmin(total))
    if not np.isfinite(total.flat[i]):
        return math.inf, None
    return float(total.flat[i]), (r0 + i // total.shape[1], c0 + i % total.shape[1])


def _centres_window(grid: OccupancyGrid, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
    x = grid.x0 + (np.arange(c0, c1) + 0.5) * grid.cell
    z = grid.z0 + (np.arange(r0, r1) + 0.5) * grid.cell
    zz, xx = np.meshgrid(z, x, indexing="ij")
    return np.stack([xx, zz], -1)


def grid_path(grid: OccupancyGrid, field: np.ndarray, xz, reach: float | None = None) -> list[tuple[int, int]]:
    """Cells from the best cell near ``xz`` down the field to the goal (empty if cut off)."""
    reach = 3 * grid.cell if reach is None else float(reach)
    cell = _entry(grid, field, np.asarray(xz, dtype=np.float64), reach)[1]
    if cell is None:
        return []
    path = [cell]
    free = grid.free
    while True:
        r, c = cell
        here = field[r, c]
        best, best_cell = math.inf, None
        for dr, dc, cost, via in _MOVES:
            nr, nc = r + dr, c + dc
            if not grid.inside(nr, nc) or not free[nr, nc]:
                continue
            if any(not grid.inside(r + vr, c + vc) or not free[r + vr, c + vc] for vr, vc in via):
                continue
            if field[nr, nc] < here - 1e-9 and field[nr, nc] + cost * grid.cell < best:
                best, best_cell = field[nr, nc] + cost * grid.cell, (nr, nc)
        if best_cell is None:
            return path
        cell = best_cell
        path.append(cell)


def shortest_path(grid: OccupancyGrid, field: np.ndarray, start_xz, goal_xz, reach: float | None = None) -> list[np.ndarray]:
    """The any-angle path (x, z) from ``start_xz`` to ``goal_xz``: the grid path down the
    field, string-pulled (each corner is the farthest path point still in line of sight).
    Empty if the goal cannot be reached from a free cell within ``reach`` of the start."""
    cells = grid_path(grid, field, start_xz, reach)
    if not cells:
        return []
    start = np.asarray(start_xz, dtype=np.float64)
    goal = np.asarray(goal_xz, dtype=np.float64)
    centres = [np.array([grid.x0 + (c + 0.5) * grid.cell, grid.z0 + (r + 0.5) * grid.cell]) for r, c in cells]
    points = centres + [goal]
    path = [start]
    i = -1  # index into points of the current corner (-1: the start)
    while True:
        here = path[-1]
        nxt = None
        for j in range(len(points) - 1, i, -1):
            if grid.line_of_sight(here, points[j]) or j == i + 1:
                nxt = j
                break
        path.append(points[nxt])
        i = nxt
        if i == len(points) - 1:
            return path


def path_length(path) -> float:
    return float(sum(np.linalg.norm(b - a) for a, b in zip(path, path[1:])))


def heading_to(state: np.ndarray, target_xz) -> float:
    """Signed yaw (radians, positive = turn right) from rig ``state`` (x, y, z, yaw, ...)
    to face ``target_xz``."""
    dx, dz = target_xz[0] - state[0], target_xz[1] - state[2]
    return wrap_angle(math.atan2(dx, dz) - state[3])


def wrap_angle(a: float) -> float:
    return (a + math.pi) % (2 * math.pi) - math.pi
