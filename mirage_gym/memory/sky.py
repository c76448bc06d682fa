"""Sky memory: latent cells of sky, kept by world direction.

Sky never enters the 3D memory: it has no depth, and a point at any finite depth would
drift against the scene as the camera moves. It is still part of the world, and turning
back toward sky seen before should show that sky, not a new one. The dome keeps each sky
cell as a direction (a point at infinity), one entry per direction bin with the first
write winning, and reads by the camera's rotation alone with the 3D memory's splat rule:
exact at a revisited orientation, from any position.
"""

from __future__ import annotations

import torch

from mirage_gym.geometry import pixel_grid, ringed_frame_rays, splat_nearest
from mirage_gym.memory.voxels import insert_new, one_per_voxel, pack_keys

# direction bins: a 0.05 cube grid on the unit sphere, about half a latent cell at the
# default 90-degree, 16-cell view (0.1 rad per cell)
BIN_SIZE = 0.05
_ANY_DEPTH = 1e6  # all sky is one surface: a read picks the direction closest to a cell centre


def _bin_keys(directions: torch.Tensor) -> torch.Tensor:
    ijk = torch.floor(directions / BIN_SIZE).long() + 64  # |d| <= 1: 0 <= ijk < 128
    return pack_keys(ijk, 7)


def cell_directions(pose: torch.Tensor, k_grid: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(h, w, 3) unit world direction through every cell centre of a camera."""
    rays = pixel_grid(*grid, device=pose.device, dtype=torch.float64) @ torch.linalg.inv(k_grid.double()).T
    world = rays @ pose[:3, :3].double().T
    return (world / world.norm(dim=-1, keepdim=True)).float()


class SkyDome:
    """Latent vectors of sky cells by direction; ``channels`` wide, stored as ``feature_dtype``."""

    def __init__(self, channels: int, feature_dtype: torch.dtype = torch.float16, device: str | torch.device = "cpu"):
        self.channels = int(channels)
        self.feature_dtype = feature_dtype
        self.device = torch.device(device)
        self.clear()

    def clear(self) -> None:
        self.directions = torch.zeros(0, 3, device=self.device)
        self.features = torch.zeros(0, self.channels, dtype=self.feature_dtype, device=self.device)
        self._keys = torch.zeros(0, dtype=torch.long, device=self.device)  # sorted, one per entry

    def __len__(self) -> int:
        return self.directions.shape[0]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.directions, self.features, self._keys))

    def write(self, features: torch.Tensor, sky_cells: torch.Tensor, pose: torch.Tensor, k_grid: torch.Tensor) -> int:
        """Remember the ``sky_cells`` (h, w) bool of a (C, h, w) latent grid (already checked
        and in storage dtype) seen with ``pose`` and grid intrinsics ``k_grid``; returns
        how many directions were new."""
        if not sky_cells.any():
            return 0
        directions = cell_directions(pose, k_grid, tuple(sky_cells.shape))[sky_cells]
        vectors = features.permute(1, 2, 0)[sky_cells]
        keys = _bin_keys(directions)
        # one entry per bin, the first cell of the frame in it; then the first write wins
        keys, first = one_per_voxel(keys, torch.arange(keys.numel(), device=keys.device))
        self._keys, (self.directions, self.features), fresh = insert_new(
            self._keys, keys, ((self.directions, directions[first]), (self.features, vectors[first])))
        return int(fresh.sum())

    def read(self, pose: torch.Tensor, k_grid: torch.Tensor, grid: tuple[int, int]):
        """Flat cell indices (M,) and float32 features (M, C) of the sky the camera's cells
        look at."""
        return read_domes([self], pose[None], k_grid[None], grid)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"sky_directions": self.directions.clone(), "sky_features": self.features.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore from :meth:`state_dict`; a state without sky (an older snapshot) is an empty dome."""
        directions = state.get("sky_directions", torch.zeros(0, 3))
        features = state.get("sky_features", torch.zeros(0, self.channels))
        n = directions.shape[0]
        if tuple(directions.shape) != (n, 3) or tuple(features.shape) != (n, self.channels):
            raise ValueError(
                f"memory state 'sky_directions' / 'sky_features' must have shapes (n, 3) / (n, {self.channels}), "
                f"got {tuple(directions.shape)} / {tuple(features.shape)}"
            )
        directions = directions.to(self.device, torch.float32)
        features = features.to(self.device, self.feature_dtype)
        if not (torch.isfinite(directions).all() and torch.isfinite(features).all()):
            raise ValueError("memory state sky entries contain NaN or inf")
        if n and not torch.allclose(directions.norm(dim=1), torch.ones(n, device=self.device), atol=1e-3):
            raise ValueError("memory state 'sky_directions' must be unit vectors")
        keys = _bin_keys(directions)
        order = torch.argsort(keys)
        if torch.unique(keys).numel() != n:
            raise ValueError("memory state 'sky_directions' has two entries in one direction bin (corrupt)")
        self.directions, self.features, self._keys = directions[order], features[order], keys[order]


def read_domes(domes: list[SkyDome], poses: torch.Tensor, k_grids: torch.Tensor, grid: tuple[int, int]):
    """:meth:`SkyDome.read` for B cameras (``poses`` (B, 4, 4), grid intrinsics ``k_grids``
    (B, 3, 3)), dome ``b`` seen by camera ``b``, in one splat. Cell indices are over the
    stacked grids (``b * h * w + row * w + col``)."""
    h, w = grid
    device = poses.device
    counts = torch.tensor([len(dome) for dome in domes], device=device)
    view = torch.repeat_interleave(torch.arange(len(domes), device=device), counts)
    directions = torch.cat([dome.directions for dome in domes])
    # only directions within the cone around the optical axis that holds the frame and
    # its one-cell ring (the splat fills edge holes from there)
    rays = ringed_frame_rays(k_grids.double(), h, w)
    widest = (rays[..., 2] / rays.norm(dim=-1)).min(dim=1).values.float()
    axis = poses[:, :3, 2].float()
    near = torch.nonzero((directions * axis[view]).sum(dim=1) >= widest[view] - 1e-4, as_tuple=True)[0]
    if near.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=device), torch.zeros(0, domes[0].channels, device=device)
    rotations = torch.eye(4, dtype=torch.float32, device=device).repeat(len(domes), 1, 1)
    rotations[:, :3, :3] = poses[:, :3, :3].float()
    cells, index, _ = splat_nearest(directions[near], k_grids.float(), rotations, h, w,
                                    depth_tolerance=_ANY_DEPTH, fill_holes=True, view=view[near])
    features = torch.cat([dome.features for dome in domes])
    return cells, features[near[index]].float()
