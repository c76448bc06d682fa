"""Scripted episodes on procedural scenes with their ground truth, for quality measurement.

A world starts from a render of the scene at an *anchor* pose ``A``; the world frame is
that camera's frame, so a world pose ``Q`` is the scene pose ``A @ Q`` and the scene's
exact render there is the ground truth of every generated frame. Many scenes run as the
worlds of one batched :class:`~mirage_gym.world.World` (one generator forward per step).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from mirage_gym import constants
from mirage_gym.geometry import Action, discrete_to_continuous, intrinsics_from_fov, pose_from_state
from mirage_gym.memory import static_keep_mask
from mirage_gym.scenes import make_scene
from mirage_gym.world import World, WorldConfig, to_image_tensor

HELD_OUT_SEED = constants.HELD_OUT_SEED  # held-out scenes: training uses seeds from TRAIN_SEED_BASE up

# the loops of the quality benchmark: actions, then (step a, step b) pairs that show one pose
LOOPS = {
    "turn_360": ([Action.TURN_RIGHT] * 24, [(0, 24)]),
    "out_and_back": ([Action.MOVE_FORWARD] * 8 + [Action.MOVE_BACKWARD] * 8, [(0, 16)]),
    "revisit_generated": ([Action.TURN_RIGHT] * 6 + [Action.TURN_LEFT] * 6 + [Action.TURN_RIGHT] * 6, [(6, 18)]),
}


@dataclass
class Episode:
    """Frames of one scripted run over several worlds: index [step][world]."""

    rgb: np.ndarray  # (T+1, B, H, W, 3) uint8, step 0 = the seed frame
    depth: np.ndarray  # (T+1, B, H, W)
    true_rgb: np.ndarray  # (T+1, B, H, W, 3)
    true_depth: np.ndarray  # (T+1, B, H, W)
    coverage: np.ndarray  # (T+1, B) share of the view memory covered before generating
    poses: np.ndarray  # (T+1, B, 4, 4) world poses
    collision: np.ndarray  # (T+1, B)
    seconds_per_step: float  # world.step time for all worlds together


def free_anchor(scene, distance: float = 1.8, clearance: float = 0.35) -> np.ndarray:
    """A level pose at the scene's start whose straight path of ``distance`` is free."""
    steps = np.linspace(0.0, distance, 10)
    for yaw in np.radians(np.arange(0, 360, 30)):
        heading = np.array([np.sin(yaw), 0.0, np.cos(yaw)])
        if scene.is_free(steps[:, None] * heading, clearance).all():
            return pose_from_state(np.array([0, 0, 0, yaw, 0, 0]))
    return np.eye(4)


class TruthFill:
    """A perfect generator for the same world pipeline: every cell memory does not show is
    the codec's latent of the true render at the target pose; remembered cells are held
    as the trained model holds them. Its scores are the ceiling that reads, writes, the
    latent-resolution copy and the codec leave for any generator."""

    def __init__(self, backend, scenes, anchors, fov_deg: float):
        self.backend, self.scenes, self.anchors, self.fov_deg = backend, scenes, anchors, fov_deg
        self.latent_channels, self.downsample = backend.latent_channels, backend.downsample
        self.world: World | None = None  # set once the world exists: its poses are the cameras' last

    def encode(self, rgb, depth):
        return self.backend.encode(rgb, depth)

    def decode(self, latents):
        return self.backend.decode(latents)

    def generate(self, context, memory, mask, memory_depth, camera, noise):
        poses = self.world.poses @ camera.double().cpu().numpy()  # where each camera moves to
        h, w = self.world.config.height, self.world.config.width
        truths = [s.render(a @ p, w, h, fov_deg=self.fov_deg) for s, a, p in zip(self.scenes, self.anchors, poses)]
        rgb = to_image_tensor(np.stack([t.rgb for t in truths]))
        depth = torch.as_tensor(np.stack([t.depth for t in truths]))[:, None]
        true = self.backend.encode(rgb, depth).to(memory)
        return torch.where(mask > 0, memory, true)


def run_episode(backend, scene_seeds, actions, config: WorldConfig, seed: int = 0, truth_fill: bool = False) -> Episode:
    """Start one world per scene at a free anchor and apply ``actions`` to all of them;
    ``truth_fill`` runs :class:`TruthFill` around ``backend`` instead of its generator."""
    scenes = [make_scene(int(s)) for s in scene_seeds]
    anchors = [free_anchor(s) for s in scenes]
    if truth_fill:
        backend = TruthFill(backend, scenes, anchors, config.fov_deg)
    world = World(backend, config, num_worlds=len(scenes))
    if truth_fill:
        backend.world = world
    h, w = config.height, config.width
    rgb, depth, true_rgb, true_depth, cov, poses, coll = [], [], [], [], [], [], []
    seeds, renders = [], []
    for i, (scene, anchor) in enumerate(zip(scenes, anchors)):
        r = scene.render(anchor, w, h, fov_deg=config.fov_deg)
        keep = static_keep_mask(r.depth, r.labels, far=config.far).numpy()
        seeds.append(world.reset(i, r.rgb, r.depth, keep, seed=seed + i))
        renders.append(r)
    rgb.append(np.concatenate([f.rgb for f in seeds]))  # the decoded seed frame, as shown
    depth.append(np.concatenate([f.depth for f in seeds]))
    true_rgb.append(np.stack([r.rgb for r in renders]))
    true_depth.append(np.stack([r.depth for r in renders]))
    cov.append(np.ones(len(scenes)))
    poses.append(world.poses)
    coll.append(np.zeros(len(scenes), bool))
    stepping = 0.0
    for action in actions:
        start = time.perf_counter()
        frame = world.step(np.repeat(discrete_to_continuous(action)[None], len(scenes), 0))
        stepping += time.perf_counter() - start
        rgb.append(frame.rgb)
        depth.append(frame.depth)
        cov.append(1.0 - frame.novelty)
        poses.append(frame.pose)
        coll.append(frame.collision)
        truths = [scene.render(anchor @ pose, w, h, fov_deg=config.fov_deg) for scene, anchor, pose in zip(scenes, anchors, frame.pose)]
        true_rgb.append(np.stack([t.rgb for t in truths]))
        true_depth.append(np.stack([t.depth for t in truths]))
    seconds = stepping / max(1, len(actions))
    return Episode(
        rgb=np.stack(rgb),
        depth=np.stack(depth),
        true_rgb=np.stack(true_rgb),
        true_depth=np.stack(true_depth),
        coverage=np.stack(cov),
        poses=np.stack(poses),
        collision=np.stack(coll),
        seconds_per_step=seconds,
    )


def seed_covisible(episode: Episode, fov_deg: float = 90.0, tolerance: float = 0.05) -> np.ndarray:
    """(T+1, B, H, W) bool: pixels of each true view whose surface the seed frame showed.

    Each pixel's true 3D point (its true depth along its ray) is projected into the seed
    camera (step 0) and counts as seen when it lands inside the seed frame and is not behind
    the seed's own surface there (``tolerance`` relative depth, plus 5 cm); sky pixels count
    when their direction lands on sky in the seed frame. Everything else was invented: no
    observation backs it, only the generator (and memory of what the generator drew).
    """
    t1, b, h, w = episode.true_depth.shape
    k = intrinsics_from_fov(w, h, fov_deg)
    v, u = np.mgrid[0:h, 0:w] + 0.5
    rays = np.stack([(u - k[0, 2]) / k[0, 0], (v - k[1, 2]) / k[1, 1], np.ones_like(u)], -1)
    out = np.zeros((t1, b, h, w), bool)
    for j in range(b):
        seed_inv = np.linalg.inv(episode.poses[0, j])
        seed_depth = episode.true_depth[0, j]
        for t in range(t1):
            depth = episode.true_depth[t, j]
            sky = ~np.isfinite(depth)
            rel = seed_inv @ episode.poses[t, j]
            p = (rays * np.where(sky, 1.0, depth)[..., None]) @ rel[:3, :3].T
            p = p + np.where(sky[..., None], 0.0, rel[:3, 3])  # sky is at infinity: rotation only
            z = p[..., 2]
            safe_z = np.where(z > 1e-6, z, 1.0)
            pu, pv = k[0, 0] * p[..., 0] / safe_z + k[0, 2], k[1, 1] * p[..., 1] / safe_z + k[1, 2]
            inside = (z > 1e-6) & (pu >= 0) & (pu < w) & (pv >= 0) & (pv < h)
            seen_depth = seed_depth[np.clip(pv, 0, h - 1).astype(int), np.clip(pu, 0, w - 1).astype(int)]
            seen_sky = ~np.isfinite(seen_depth)
            front = np.isfinite(seen_depth) & (z <= np.where(seen_sky, 0.0, seen_depth) * (1 + tolerance) + 0.05)
            out[t, j] = inside & np.where(sky, seen_sky, front)
    return out
