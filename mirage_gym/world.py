"""The world core: camera rig + spatial memory + world model, batched over worlds.

No gymnasium import: the env, the vector env, the evaluators and the trainer all reuse
it. One :meth:`World.step` advances every world by one action:

1. move each camera (blocked if the target is closer than ``clearance`` to remembered
   geometry),
2. read each world's memory at the new pose (at latent resolution; a color memory
   renders pixels, re-encoded by the codec),
3. generate the next latent for all worlds in one batched forward,
4. decode RGB-D and move remembered content to where its points land within their cells,
5. filter sky and moving objects, and write the kept latent cells back to memory.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from mirage_gym.geometry import (
    RigConfig,
    apply_motion,
    checked_motion,
    check_intrinsics,
    intrinsics_from_fov,
    invert_pose,
    pixel_grid,
    pose_from_state,
    project_per_point,
    scale_intrinsics,
    unproject_depth,
)
from mirage_gym.constants import COVERAGE_VOXEL, FAR, MEMORY_CAPACITY, VOXEL_SIZE
from mirage_gym.memory import MEMORIES, MemoryReadout, SpatialMemory, static_keep_mask
from mirage_gym.memory.base import pool_depth
from mirage_gym.memory.coverage import CoverageGrid
from mirage_gym.memory.voxels import voxel_keys


class WorldBackend(Protocol):
    """What the world needs from a world model (codec + generator + sampler).

    Optional, for video models: ``context_frames`` (K, default 1), ``size_multiple``
    (default ``downsample``), ``new_stream()`` (a per-episode decoder state the world keeps
    and passes back to ``decode``; snapshots save it through its ``state_dict``) and
    ``embed_prompt(prompt)`` (per-episode text embeddings passed to ``generate`` as ``text``).
    """

    latent_channels: int
    downsample: int

    def encode(self, rgb: torch.Tensor, depth: torch.Tensor | None) -> torch.Tensor:
        """(B, 3, H, W) RGB in [0, 1] (+ optional (B, 1, H, W) depth) -> (B, C, h, w) latents."""

    def decode(self, latents: torch.Tensor, streams: list | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, h, w) -> RGB (B, 3, H, W), or the frames of a latent (B, T, 3, H, W), in
        [0, 1], and the z-depth of the last frame (B, 1, H, W), inf for sky."""

    def generate(
        self,
        context: torch.Tensor,
        memory: torch.Tensor,
        mask: torch.Tensor,
        memory_depth: torch.Tensor,
        camera: torch.Tensor,
        noise: torch.Tensor,
    ) -> torch.Tensor:
        """Next latents (B, C, h, w) from the K preceding latent frames (B, K, C, h, w, oldest
        first), the memory projected at the target pose (B, C, h, w) with its mask and z-depth
        (B, 1, h, w; inf where empty), the relative camera motion (B, 4, 4) and the initial
        noise (B, C, h, w)."""


@dataclass
class WorldConfig:
    """Everything that shapes a world besides the model weights."""

    width: int = 64
    height: int = 64
    fov_deg: float = 90.0
    rig: RigConfig = field(default_factory=RigConfig)
    use_memory: bool = True  # False: the generator sees no memory (the ablation)
    memory: str = "latent"  # "latent" (Mirage) or "color" (the RGB point-cloud baseline)
    voxel_size: float = VOXEL_SIZE
    color_voxel: float = 0.02  # the color memory's de-duplication voxel: about a pixel at 64x64, 2 m away
    memory_capacity: int | None = MEMORY_CAPACITY
    far: float = FAR  # beyond this depth counts as sky
    clearance: float = 0.25  # metres kept between the camera and remembered geometry
    coverage_voxel: float = COVERAGE_VOXEL
    residual_tolerance: float | None = 0.25  # reprojection-residual filter, None = off
    generated_confidence: float = 0.75  # generated geometry is final once written
    predicted_depth_confidence: float = 0.3  # user image without depth: upgradable
    frames_per_step: int = 1

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> WorldConfig:
        data = dict(data)
        data["rig"] = RigConfig(**data.get("rig", {}))
        return cls(**data)

    def differences(self, data) -> list[str]:
        """Names of the settings in which ``data`` (a :meth:`to_dict`, e.g. a snapshot's) differs
        from this config; a snapshot saved before the ``memory`` setting existed was latent."""
        if not isinstance(data, dict):
            return sorted(self.to_dict())
        mine, theirs = self.to_dict(), {**SETTINGS_BEFORE_MEMORY_CHOICE, **data}
        return sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))

    def new_memory(self, num_worlds: int, latent_channels: int, device) -> SpatialMemory:
        """The memory bank of ``num_worlds`` worlds this config asks for."""
        if self.memory == "latent":
            return MEMORIES["latent"](num_worlds, latent_channels, voxel_size=self.voxel_size,
                                      capacity=self.memory_capacity, far=self.far, device=device)
        if self.memory == "color":
            return MEMORIES["color"](num_worlds, dedup_voxel_size=self.color_voxel, far=self.far,
                                     stats_voxel_size=self.voxel_size, device=device)
        raise ValueError(f"memory must be one of {sorted(MEMORIES)}, got {self.memory!r}")


SETTINGS_BEFORE_MEMORY_CHOICE = {"memory": "latent", "color_voxel": WorldConfig.color_voxel}


@dataclass
class WorldFrame:
    """What every world shows after a reset or a step (numpy, one row per world)."""

    rgb: np.ndarray  # (B, H, W, 3) uint8, the last frame
    depth: np.ndarray  # (B, H, W) float32, inf for sky
    pose: np.ndarray  # (B, 4, 4) float64
    novelty: np.ndarray  # (B,) share of the view memory did not cover before this frame
    new_voxels: np.ndarray  # (B,) coverage voxels seen for the first time
    collision: np.ndarray  # (B,) bool, motion blocked by near geometry
    frames: np.ndarray | None = None  # (B, T, H, W, 3) uint8: every frame of the step, ``rgb`` last


def align_depth_to_memory(depth: torch.Tensor, memory_depth: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Rescale decoded depth (B, 1, H, W) cell by cell so every remembered cell sits at
    the depth of its remembered point (``memory_depth`` / ``mask``, (B, 1, h, w)).

    Latents copied from memory still encode the z-depth of the view they were first seen
    from; the memory's points, projected into this view, carry its exact z. Cells with
    no memory, or with sky in them, are left as decoded.
    """
    grid = tuple(memory_depth.shape[-2:])
    pooled, solid = pool_depth(depth, torch.ones_like(depth, dtype=torch.bool), grid)
    use = (mask > 0) & solid & torch.isfinite(memory_depth) & (pooled > 0)
    ratio = torch.where(use, memory_depth / pooled.clamp(min=1e-6), torch.ones_like(pooled))
    return depth * F.interpolate(ratio, size=depth.shape[-2:], mode="nearest")


def place_at_landings(rgb: torch.Tensor, depth: torch.Tensor, offset: torch.Tensor):
    """Move decoded content (B, C, H, W) to where the remembered points really land.

    Memory copies a point into the cell its projection falls in, so the decoder draws it
    at that cell's centre, up to half a cell off (2 px at 64x64). ``offset`` (B, 2, h, w)
    says how far off, in cells (zero where the generator drew). Resampling the frame along
    that field, smoothly interpolated, puts remembered content back at sub-cell precision;
    the latents memory and context keep are untouched. Colour is resampled bicubically
    (bilinear visibly blurs), depth by nearest pixel so no depth is blended across an edge.
    """
    height, width = rgb.shape[-2:]
    shift = F.interpolate(offset * (height / offset.shape[-2]), size=(height, width), mode="bilinear",
                          align_corners=False)
    centres = pixel_grid(height, width, device=rgb.device, dtype=rgb.dtype)
    grid = torch.stack([2 * (centres[..., 0] - shift[:, 0]) / width - 1,
                        2 * (centres[..., 1] - shift[:, 1]) / height - 1], -1)
    rgb = F.grid_sample(rgb, grid, mode="bicubic", padding_mode="border", align_corners=False).clamp(0, 1)
    sky = ~torch.isfinite(depth)
    depth = F.grid_sample(depth.masked_fill(sky, -1.0), grid, mode="nearest", padding_mode="border", align_corners=False)
    return rgb, depth.masked_fill(depth < 0, float("inf"))


def to_image_tensor(rgb: np.ndarray) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float in [0, 1]."""
    return torch.as_tensor(rgb).permute(0, 3, 1, 2).float() / 255.0


def to_uint8(rgb: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) float in [0, 1] -> (B, H, W, 3) uint8."""
    return (rgb.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def to_uint8_frames(frames: torch.Tensor) -> np.ndarray:
    """(B, T, 3, H, W) float in [0, 1] -> (B, T, H, W, 3) uint8."""
    return to_uint8(frames.flatten(0, 1)).reshape(*frames.shape[:2], *frames.shape[-2:], 3)


class World:
    """``num_worlds`` independent worlds that share one world model and step together."""

    def __init__(self, backend: WorldBackend, config: WorldConfig | None = None, num_worlds: int = 1, device="cpu"):
        if num_worlds < 1:
            raise ValueError(f"num_worlds must be at least 1, got {num_worlds}")
        self.backend = backend
        self.config = config or WorldConfig()
        self.num_worlds = num_worlds
        self.device = torch.device(device)
        ds = backend.downsample
        multiple = getattr(backend, "size_multiple", ds)
        if self.config.width % multiple or self.config.height % multiple:
            raise ValueError(f"width and height must be multiples of {multiple} for this world model, "
                             f"got {self.config.width}x{self.config.height}")
        self.grid = (self.config.height // ds, self.config.width // ds)
        self.intrinsics = [intrinsics_from_fov(self.config.width, self.config.height, self.config.fov_deg)] * num_worlds
        self.states = np.zeros((num_worlds, 6))
        self.memory = self.config.new_memory(num_worlds, backend.latent_channels, self.device)
        # the memory's read grid: latent cells, or pixels for a memory that stores pixels
        self.memory_grid = self.grid if self.memory.stores == "latents" else (self.config.height, self.config.width)
        self.coverage = [CoverageGrid(self.config.coverage_voxel, self.device) for _ in range(num_worlds)]
        # the K latest latent frames of each world, oldest first
        frames = int(getattr(backend, "context_frames", 1))
        self.context = torch.zeros(num_worlds, frames, backend.latent_channels, *self.grid, device=self.device)
        self.streams = [self._new_stream() for _ in range(num_worlds)]  # decoder state (video models)
        self.text = [None] * num_worlds  # prompt embeddings (models that take prompts)
        self.rngs = [torch.Generator(device="cpu").manual_seed(i) for i in range(num_worlds)]
        self.steps = np.zeros(num_worlds, dtype=np.int64)
        self.depth = np.full((num_worlds, self.config.height, self.config.width), np.inf, dtype=np.float32)

    def check_prompt(self, prompt) -> None:
        """Refuse a prompt this world model cannot take (before anything changes)."""
        if prompt is None:
            return
        if not isinstance(prompt, str):
            raise ValueError(f"prompt must be a string or None, got {type(prompt).__name__}")
        if not getattr(self.backend, "takes_prompts", False):
            raise ValueError("prompt given, but this world model takes no text (a Wan2.2 directory needs "
                             "text_encoder/ and tokenizer/)")

    def _new_stream(self):
        new = getattr(self.backend, "new_stream", None)
        return None if new is None else new()

    @property
    def poses(self) -> np.ndarray:
        return pose_from_state(self.states)

    # ------------------------------------------------------------------ reset

    def reset(
        self,
        index: int,
        rgb: np.ndarray,
        depth: np.ndarray | None = None,
        keep_mask: np.ndarray | None = None,
        fov_deg: float | None = None,
        seed: int = 0,
        prompt: str | None = None,
    ) -> WorldFrame:
        """Start world ``index`` from an initial frame at the origin.

        The frame shown is the codec's decode of the initial frame, not the image itself:
        every frame of a world comes through the same decoder, so coming back to the
        start shows what was shown at the start.

        ``rgb`` is (H, W, 3) uint8 at the world's size; ``depth`` (H, W) metres with inf
        for sky, or None to use the codec's estimate; ``keep_mask`` (H, W) bool marks
        pixels safe to remember (False on sky / moving objects). ``seed`` seeds the
        world's noise generator; ``prompt`` conditions models that take text.
        """
        c = self.config
        h, w = c.height, c.width
        if rgb.shape != (h, w, 3) or rgb.dtype != np.uint8:
            raise ValueError(f"rgb must be ({h}, {w}, 3) uint8, got {rgb.shape} {rgb.dtype}")
        self.check_prompt(prompt)
        embed_prompt = getattr(self.backend, "embed_prompt", None)
        text = None if embed_prompt is None else embed_prompt(prompt)
        self.intrinsics[index] = intrinsics_from_fov(w, h, fov_deg if fov_deg is not None else c.fov_deg)
        self.states[index] = 0.0
        self.steps[index] = 0
        self.memory.reset(index)
        self.coverage[index] = CoverageGrid(c.coverage_voxel, self.device)
        self.rngs[index] = torch.Generator(device="cpu").manual_seed(int(seed))
        image = to_image_tensor(rgb[None]).to(self.device)
        known = None if depth is None else torch.as_tensor(depth, dtype=torch.float32, device=self.device)[None, None]
        self.streams[index] = self._new_stream()
        self.text[index] = text
        with torch.no_grad():
            latent = self.backend.encode(image, known)
            shown, decoded_depth = self._decode(latent, [index])
        if known is None:
            known = decoded_depth
        self.context[index] = latent[0]  # the seed stands for the frames before it
        confidence = 1.0 if depth is not None else c.predicted_depth_confidence
        depth_np = known[0, 0].cpu().numpy()
        self.depth[index] = depth_np
        new = int(self._remember([index], latent, shown[:, -1], known[:, 0],
                                 None if keep_mask is None else keep_mask[None], confidence)[0])
        frames = to_uint8_frames(shown)
        return WorldFrame(
            rgb=frames[:, -1].copy(),
            depth=depth_np[None].astype(np.float32),
            pose=self.poses[index][None],
            novelty=np.ones(1),
            new_voxels=np.array([new]),
            collision=np.zeros(1, dtype=bool),
            frames=frames,
        )

    # ------------------------------------------------------------------ step

    def step(self, motions: np.ndarray) -> WorldFrame:
        """Advance every world by one continuous action each, ``motions`` (B, 6) in [-1, 1]."""
        motions = checked_motion(motions, "motions", (self.num_worlds, 6))
        c = self.config
        target = apply_motion(self.states, motions, c.rig)
        collision = self._blocked(target)
        target[collision, :3] = self.states[collision, :3]  # blocked: turn but do not move
        n_sub = max(1, int(c.frames_per_step))
        novelty = np.zeros(self.num_worlds)
        new_voxels = np.zeros(self.num_worlds, dtype=np.int64)
        frames = []
        for sub in range(1, n_sub + 1):
            states = self.states + (target - self.states) * (sub / n_sub) if n_sub > 1 else target
            frame = self._advance(states)
            novelty = np.maximum(novelty, frame.novelty)
            new_voxels += frame.new_voxels
            frames.append(frame.frames)
        self.steps += 1
        frame.novelty, frame.new_voxels, frame.collision = novelty, new_voxels, collision
        frame.frames = np.concatenate(frames, axis=1)
        return frame

    def _blocked(self, target: np.ndarray) -> np.ndarray:
        """Which worlds' moves to rig states ``target`` (B, 6) would come closer than
        ``clearance`` to known geometry?

        Checked against remembered points and against the current frame's depth along
        the ray to the target (memory points thin out as a surface is approached).
        """
        blocked = np.zeros(self.num_worlds, dtype=bool)
        moving = np.flatnonzero(~np.isclose(target[:, :3], self.states[:, :3]).all(axis=1))
        if moving.size == 0:
            return blocked
        clearance = self.config.clearance
        points = target[moving, :3]
        near = self.memory.distances(points, worlds=moving.tolist())
        blocked[moving] = np.array(near) < clearance
        # the target in each moving camera
        k = torch.as_tensor(np.stack([self.intrinsics[i] for i in moving]))
        u, v, z = (t.numpy() for t in project_per_point(torch.as_tensor(points), k, torch.as_tensor(self.poses[moving]),
                                                         torch.arange(moving.size)))
        height, width = self.depth.shape[1:]
        seen = (z > 0) & (u >= 0) & (u < width) & (v >= 0) & (v < height)
        col, row = np.where(seen, np.floor(u), 0).astype(int), np.where(seen, np.floor(v), 0).astype(int)
        blocked[moving] |= seen & (z + clearance > self.depth[moving, row, col])
        return blocked

    def _advance(self, states: np.ndarray) -> WorldFrame:
        """One generated frame per world at rig ``states``; writes memory."""
        c = self.config
        poses = pose_from_state(states)
        old_poses = torch.as_tensor(self.poses)
        new_poses = torch.as_tensor(poses)
        readout = self.memory.read(poses, self.intrinsics, self.memory_grid, image_size=(c.height, c.width))
        novelty = 1.0 - readout.mask.flatten(1).mean(dim=1).cpu().numpy()
        if c.use_memory:
            memory, mask, memory_depth = self._conditioning(readout)
        else:  # the ablation: the generator sees no memory (and a color render is not even encoded)
            memory = torch.zeros(self.num_worlds, self.backend.latent_channels, *self.grid, device=self.device)
            mask = torch.zeros(self.num_worlds, 1, *self.grid, device=self.device)
            memory_depth = torch.full_like(mask, float("inf"))
        camera = (invert_pose(old_poses) @ new_poses).float().to(self.device)
        noise = torch.stack(
            [torch.randn(self.context.shape[2:], generator=g).to(self.device) for g in self.rngs]
        )
        text = {} if any(t is None for t in self.text) else {"text": torch.cat(self.text)}
        with torch.no_grad():
            latents = self.backend.generate(self.context, memory, mask, memory_depth, camera, noise, **text)
            frames, depth = self._decode(latents, range(self.num_worlds))
        rgb = frames[:, -1]
        depth = align_depth_to_memory(depth, memory_depth.to(depth.device), mask.to(depth.device))
        if c.use_memory and readout.offset is not None:
            rgb, depth = place_at_landings(rgb, depth, readout.offset.to(depth.device))
        self.states = states.copy()
        self.context = torch.cat([self.context[:, 1:], latents[:, None].to(self.context)], 1)
        self.depth = depth[:, 0].cpu().numpy().astype(np.float32)
        shown = to_uint8_frames(torch.cat([frames[:, :-1], rgb[:, None]], 1))  # the last frame as placed
        worlds = list(range(self.num_worlds))
        new_voxels = self._remember(worlds, latents, rgb, depth[:, 0], None, c.generated_confidence,
                                    remembered=readout)
        return WorldFrame(
            rgb=shown[:, -1].copy(),
            depth=self.depth.copy(),
            pose=poses,
            novelty=novelty,
            new_voxels=new_voxels,
            collision=np.zeros(self.num_worlds, dtype=bool),
            frames=shown,
        )

    def _conditioning(self, readout: MemoryReadout):
        """What the generator is given of memory: latents (B, C, h, w), mask and z-depth
        (B, 1, h, w). A latent memory's read is that already; a color memory's render is
        re-encoded by the codec (the cost the latent memory avoids), and a cell counts as
        remembered only if every pixel of it was rendered."""
        if self.memory.stores == "latents":
            return readout.features, readout.mask, readout.depth
        with torch.no_grad():
            latents = self.backend.encode(readout.features.to(self.device), readout.depth.to(self.device))
        depth, covered = pool_depth(readout.depth[:, 0], readout.mask[:, 0] > 0, self.grid)
        mask = covered[:, None].to(latents.dtype)
        return latents * mask, mask, torch.where(covered, depth, torch.full_like(depth, float("inf")))[:, None]

    def _decode(self, latents: torch.Tensor, worlds) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode one latent per world of ``worlds``, continuing their decoder streams;
        frames come back as (B, T, 3, H, W) whatever the model returns."""
        streams = [self.streams[i] for i in worlds]
        if all(s is None for s in streams):
            frames, depth = self.backend.decode(latents)
        else:
            frames, depth = self.backend.decode(latents, streams)
        return (frames if frames.ndim == 5 else frames[:, None]), depth

    def _remember(self, indices, latents, rgb, depth, keep_mask, confidence, remembered=None) -> np.ndarray:
        """Filter and write one frame into each world of ``indices`` (``latents`` (B, C, h, w)
        or, for a memory that stores pixels, ``rgb`` (B, 3, H, W); ``depth`` (B, H, W),
        ``keep_mask`` (B, H, W) or None), all in one batched write; returns the new coverage
        voxels of each.

        ``remembered`` is the memory readout the frames were generated from: its cells
        are not written again, since re-lifting a copy at a slightly different depth would
        add a drifted duplicate that can later occlude the original. For coverage they
        count at the remembered depth, so coming back to a place never pays as new ground.
        """
        c = self.config
        dynamic = None if keep_mask is None else ~torch.as_tensor(np.asarray(keep_mask, bool), device=depth.device)
        keep = static_keep_mask(depth, dynamic_mask=dynamic, far=c.far)
        poses = torch.as_tensor(self.poses[indices])
        ks = torch.as_tensor(np.stack([self.intrinsics[i] for i in indices]))
        features = latents if self.memory.stores == "latents" else rgb
        conf = torch.full((len(indices), *self.memory_grid), float(confidence), device=self.device)
        skip = None if remembered is None else remembered.mask[:, 0] > 0
        results = self.memory.write(
            features, depth, poses, ks, keep, conf, readout=remembered,
            residual_tolerance=c.residual_tolerance if remembered is not None else None,
            skip_cells=skip, worlds=list(indices),
        )
        # the points each frame showed: its static cells, and remembered cells at memory's depth
        seen = torch.cat([r.static_xyz for r in results])
        static = torch.stack([r.static_cells for r in results])
        owner = torch.nonzero(static, as_tuple=True)[0]  # the world of each static cell, as ``seen`` lists them
        if remembered is not None:
            generated = ~skip[static]
            k_grid = scale_intrinsics(ks, (c.height, c.width), self.memory_grid)
            remembered_depth = remembered.depth[:, 0]
            surface = skip & torch.isfinite(remembered_depth)  # remembered sky covers no ground
            at_memory = unproject_depth(remembered_depth.double(), k_grid, poses)[surface].to(seen.dtype)
            seen = torch.cat([seen[generated], at_memory])
            owner = torch.cat([owner[generated], torch.nonzero(surface, as_tuple=True)[0]])
        keys, in_range = voxel_keys(seen, c.coverage_voxel)
        return np.array([self.coverage[i].add_keys(keys[in_range & (owner == j)]) for j, i in enumerate(indices)],
                        dtype=np.int64)

    # ------------------------------------------------------------------ snapshots

    def snapshot(self, index: int) -> tuple[dict[str, torch.Tensor], dict]:
        """Everything world ``index`` needs to continue exactly: tensors and JSON metadata."""
        tensors = {
            "state": torch.as_tensor(self.states[index]),
            "steps": torch.tensor(int(self.steps[index])),
            "intrinsics": torch.as_tensor(np.asarray(self.intrinsics[index], dtype=np.float64)),
            "context": self.context[index].cpu().clone(),
            "depth": torch.as_tensor(self.depth[index]),
            "rng": self.rngs[index].get_state(),
            "coverage": self.coverage[index].keys.cpu().clone(),
        }
        tensors.update({f"memory.{k}": v.cpu() for k, v in self.memory.state_dict(index).items()})
        meta = {"world": self.config.to_dict(), "latent_channels": self.backend.latent_channels, "downsample": self.backend.downsample}
        if self.text[index] is not None:
            tensors["text"] = self.text[index].cpu().clone()
        if self.streams[index] is not None:
            stream, meta["stream"] = self.streams[index].state_dict()
            tensors.update({f"stream.{k}": v for k, v in stream.items()})
        return tensors, meta

    def restore(self, index: int, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        """Load a :meth:`snapshot` into world ``index``; validates fully before changing anything."""
        differ = self.config.differences(meta.get("world", {}))
        if differ:
            raise ValueError(f"snapshot was made with a different world configuration: {differ}")
        if (meta.get("latent_channels"), meta.get("downsample")) != (self.backend.latent_channels, self.backend.downsample):
            raise ValueError("snapshot was made with a different world model (latent channels or downsample differ)")
        shapes = {
            "state": (6,),
            "steps": (),
            "intrinsics": (3, 3),
            "context": tuple(self.context.shape[1:]),
            "depth": (self.config.height, self.config.width),
        }
        old = tensors.get("context")
        if old is not None and self.context.shape[1] == 1 and tuple(old.shape) == shapes["context"][1:]:
            tensors = dict(tensors, context=old[None])  # saved before worlds kept a window of context frames
        for name, shape in shapes.items():
            if name not in tensors or tuple(tensors[name].shape) != shape:
                got = tuple(tensors[name].shape) if name in tensors else "missing"
                raise ValueError(f"snapshot tensor {name!r} must have shape {shape}, got {got}")
        check_snapshot_tensors(self.snapshot(index)[0], tensors, self.config)
        coverage = CoverageGrid(self.config.coverage_voxel, self.device)
        coverage.keys = tensors["coverage"].to(self.device, torch.long)
        rng = torch.Generator(device="cpu")
        try:
            rng.set_state(tensors["rng"].to(torch.uint8))
        except (RuntimeError, KeyError) as exc:
            raise ValueError(f"snapshot tensor 'rng' is not a valid generator state: {exc}") from exc
        text = self._restored_text(tensors)
        stream = None
        if self.streams[index] is not None:
            if not isinstance(meta.get("stream"), list) or len(meta["stream"]) != len(self.streams[index].cache):
                raise ValueError("snapshot lacks this world model's decoder stream, or it has another layout")
            stream = type(self.streams[index]).from_state_dict(
                {k.removeprefix("stream."): v for k, v in tensors.items() if k.startswith("stream.")}, meta["stream"],
                self.device)
        # the memory checks its state fully before changing anything: the first change made
        self.memory.load_state_dict(index, {k.removeprefix("memory."): v for k, v in tensors.items()
                                            if k.startswith("memory.")})
        self.states[index] = tensors["state"].numpy()
        self.steps[index] = int(tensors["steps"])
        self.intrinsics[index] = tensors["intrinsics"].numpy().copy()
        self.context[index] = tensors["context"].to(self.device)
        self.depth[index] = tensors["depth"].numpy()
        self.rngs[index] = rng
        self.coverage[index] = coverage
        self.text[index] = text
        self.streams[index] = stream

    def _restored_text(self, tensors: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """The prompt embeddings of a snapshot, checked against what this model embeds."""
        embed_prompt = getattr(self.backend, "embed_prompt", None)
        if embed_prompt is None:
            if "text" in tensors:
                raise ValueError("snapshot holds prompt embeddings, but this world model takes no text")
            return None
        expected = embed_prompt(None)
        text = tensors.get("text")
        if text is None or text.shape != expected.shape:
            got = "missing" if text is None else tuple(text.shape)
            raise ValueError(f"snapshot tensor 'text' must have shape {tuple(expected.shape)}, got {got}")
        return text.to(expected)

    # ------------------------------------------------------------------ stats

    def memory_stats(self, index: int) -> dict:
        stats = self.memory.stats(index)
        stats["coverage_voxels"] = len(self.coverage[index])
        return stats


def check_snapshot_tensors(reference: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor],
                           config: WorldConfig) -> None:
    """Raise ``ValueError`` unless snapshot ``tensors`` have exactly the names, dtypes and
    ranks of ``reference`` (a snapshot this world makes) and values a world can continue
    from: finite numbers (depth may be ``inf``, for sky, but not NaN or negative), a rig
    state within its pitch and roll limits, pinhole intrinsics, a non-negative step count
    and strictly increasing coverage keys. Fixed shapes are checked by the caller first.
    A decoder stream's tensors (``stream.*``) vary with its state and are checked against
    the stream's own layout when it is rebuilt."""
    reference = {k: v for k, v in reference.items() if not k.startswith("stream.")}
    names = {k for k in tensors if not k.startswith("stream.")}
    missing, unexpected = sorted(set(reference) - names), sorted(names - set(reference))
    if missing or unexpected:
        raise ValueError(f"snapshot tensors do not fit this world: missing {missing}, unexpected {unexpected}")
    for name, ref in reference.items():
        t = tensors[name]
        if t.dtype != ref.dtype or t.ndim != ref.ndim:
            raise ValueError(f"snapshot tensor {name!r} must be {ref.dtype} of rank {ref.ndim}, got {t.dtype} of rank {t.ndim}")
        if t.is_floating_point() and name != "depth" and not torch.isfinite(t).all():
            raise ValueError(f"snapshot tensor {name!r} contains NaN or inf")
    depth = tensors["depth"]
    if torch.isnan(depth).any() or (depth < 0).any():
        raise ValueError("snapshot tensor 'depth' must be non-negative metres (inf for sky), got NaN or negative values")
    state = tensors["state"].numpy()
    limits = np.radians([config.rig.pitch_limit_deg, config.rig.roll_limit_deg]) + 1e-9
    if np.any(np.abs(state[4:]) > limits):
        raise ValueError(f"snapshot tensor 'state' has pitch/roll {state[4:].tolist()} beyond the rig's limits {limits.tolist()}")
    check_intrinsics(tensors["intrinsics"], "snapshot tensor 'intrinsics'")
    if int(tensors["steps"]) < 0:
        raise ValueError(f"snapshot tensor 'steps' must be >= 0, got {tensors['steps'].tolist()}")
    keys = tensors["coverage"]
    if keys.numel() > 1 and not (keys[1:] > keys[:-1]).all():
        raise ValueError("snapshot tensor 'coverage' must hold strictly increasing voxel keys")


def resize_image(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """Area-resize an (H, W, 3) uint8 image (antialiased when shrinking)."""
    x = torch.as_tensor(rgb).permute(2, 0, 1)[None].float()
    y = F.interpolate(x, size=(height, width), mode="area" if x.shape[-1] >= width else "bilinear")
    return y[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()
