"""Latent spatial memory vs the color point-cloud memory, end to end in the real ``World``.

The same tiny world model runs the same walk twice, once with each memory (the env's
``memory="latent"`` and ``memory="color"``): nothing here re-implements the world's read
and write sequence, so the benchmark cannot drift from the product. The two worlds are
stepped side by side, alternately (which one goes first alternates every step), so load
from other processes falls on both.

* ``latent`` (Mirage): memory read at the new pose on the latent grid, no pixel rendering
  and no encoder call.
* ``color`` (Voyager / Spatia style): RGB points at pixel resolution, one per 2 cm voxel,
  rendered at the target pose at full resolution and re-encoded by the codec every step.

The walk (deterministic, collision-free in the true scene: forward runs, turns,
look-arounds, glances up and down) opens with a 360-degree turn in 24 steps. Reported per
frame size and memory: per-step time (median of ``World.step`` over steps 10-30 and over
the last 20 steps), memory bytes at the last step (``info["memory_bytes"]``), loop closure
(PSNR of the frame after the opening turn against the frame first shown there),
fidelity (mean PSNR of every 10th frame against the procedural scene's true render at the
world's pose) and the mean share of the view memory covered.

    python benchmarks/memory.py            # 300 steps at 64, 128 and 256 pixels
    python benchmarks/memory.py --quick    # 30 steps at 64 pixels (a test runs it)
    python benchmarks/memory.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mirage_gym.geometry import Action, RigConfig, apply_motion, discrete_to_continuous, pose_from_state  # noqa: E402
from mirage_gym.memory import static_keep_mask  # noqa: E402
from mirage_gym.metrics import psnr  # noqa: E402
from mirage_gym.scenes import make_scene  # noqa: E402
from mirage_gym.threads import torch_threads  # noqa: E402
from mirage_gym.world import World, WorldConfig  # noqa: E402

MEMORIES = ("latent", "color")
CLEARANCE = 0.4  # metres from any solid (scene.is_free)
MIN_VIEW = 0.9  # median depth (metres) the camera keeps ahead of it
LOOP = 24  # the walk opens with a full turn: step 24 shows the pose of step 0
FIDELITY_EVERY = 10


# --------------------------------------------------------------------------- trajectory


def walk(scene, steps: int, seed: int = 0) -> tuple[list[np.ndarray], list[Action]]:
    """A deterministic, collision-free camera walk of ``steps`` poses (the first is the reset
    pose) and the ``steps - 1`` actions that take it.

    Segments drawn from a seeded RNG: forward runs, turns, strafes, glances up and down, and a
    full 360-degree look-around every few segments. A move is taken only if the new position
    is free (``scene.is_free``) and the view stays open (median depth of a coarse probe
    render at least ``MIN_VIEW`` metres); otherwise the camera turns until the way is open,
    as an explorer would, instead of staring at a wall from 30 cm.
    """
    rng = np.random.default_rng(seed)
    rig = RigConfig()
    state = np.zeros(6)
    poses = [pose_from_state(state)]
    actions: list[Action] = []
    plan: list[Action] = []
    since_look_around = 0

    def open_view(st: np.ndarray) -> bool:
        probe = scene.render(pose_from_state(st), 16, 16, supersample=1).depth
        return float(np.median(probe)) >= MIN_VIEW

    while len(poses) < steps:
        if not plan:
            since_look_around += 1
            r = rng.random()
            if since_look_around >= 12 or len(poses) == 1:
                since_look_around = 0
                plan = [Action.TURN_LEFT if rng.random() < 0.5 else Action.TURN_RIGHT] * 24  # look around
            elif r < 0.6:
                plan = [Action.MOVE_FORWARD] * int(rng.integers(5, 15))
            elif r < 0.8:
                plan = [Action.TURN_LEFT if rng.random() < 0.5 else Action.TURN_RIGHT] * int(rng.integers(2, 7))
            elif r < 0.9:
                plan = [Action.LOOK_UP] * 2 + [Action.LOOK_DOWN] * 4 + [Action.LOOK_UP] * 2
            else:
                plan = [Action.STRAFE_LEFT if rng.random() < 0.5 else Action.STRAFE_RIGHT] * int(rng.integers(2, 5))
        action = plan.pop(0)
        nxt = apply_motion(state, discrete_to_continuous(int(action)), rig)
        moves = action in (Action.MOVE_FORWARD, Action.MOVE_BACKWARD, Action.STRAFE_LEFT, Action.STRAFE_RIGHT)
        if moves and not (scene.is_free(nxt[:3], CLEARANCE)[0] and open_view(nxt)):
            # blocked: turn one way until the view is open again (at most a full turn), then walk on
            turn = Action.TURN_LEFT if rng.random() < 0.5 else Action.TURN_RIGHT
            turned, n_turns = state, 0
            while n_turns < 24:
                turned, n_turns = apply_motion(turned, discrete_to_continuous(int(turn)), rig), n_turns + 1
                if open_view(turned):
                    break
            plan = [turn] * (n_turns - 1) + [Action.MOVE_FORWARD] * int(rng.integers(3, 8))
            nxt = apply_motion(state, discrete_to_continuous(int(turn)), rig)
            action = turn
        state = nxt
        actions.append(action)
        poses.append(pose_from_state(state))
    return poses, actions


def revisit_share(poses: list[np.ndarray], cell: float = 0.5) -> float:
    """Share of steps whose camera position is in a 0.5 m floor cell visited >= 10 steps earlier."""
    seen: dict[tuple[int, int], int] = {}
    hits = 0
    for t, p in enumerate(poses):
        key = (math.floor(p[0, 3] / cell), math.floor(p[2, 3] / cell))
        if key in seen and t - seen[key] >= 10:
            hits += 1
        seen.setdefault(key, t)
    return hits / len(poses)


# --------------------------------------------------------------------------- runs


def worlds_for(backend, size: int) -> dict[str, World]:
    """One world per memory, each as ``gym.make(..., memory=name, width=size, height=size)`` builds it."""
    return {name: World(backend, replace(WorldConfig(), width=size, height=size, memory=name)) for name in MEMORIES}


def run(backend, scene, actions: list[Action], size: int, seed: int = 0) -> dict:
    """Step one world per memory through ``actions`` side by side; per memory: step times,
    coverage, loop-closure PSNR, fidelity PSNRs and memory stats."""
    worlds = worlds_for(backend, size)
    start = scene.render(np.eye(4), size, size)
    keep = static_keep_mask(start.depth, start.labels, far=WorldConfig().far).numpy()
    out = {name: {"times": [], "coverage": [], "fidelity": []} for name in MEMORIES}
    first = {}
    for name, world in worlds.items():
        first[name] = world.reset(0, start.rgb, start.depth, keep, seed=seed).rgb[0]
    order = list(MEMORIES)
    for t, action in enumerate(actions, start=1):
        motion = discrete_to_continuous(int(action))[None]
        order.reverse()  # alternate which memory steps first
        for name in order:
            begin = time.perf_counter()
            frame = worlds[name].step(motion)
            out[name]["times"].append(time.perf_counter() - begin)
            covered = 1.0 - float(frame.novelty[0])
            out[name]["coverage"].append(covered)
            if t == LOOP:
                out[name]["loop_psnr"] = psnr(frame.rgb[0], first[name])
            if t % FIDELITY_EVERY == 0:
                truth = scene.render(frame.pose[0], size, size)
                out[name]["fidelity"].append(psnr(frame.rgb[0], truth.rgb))
    for name, world in worlds.items():
        out[name]["stats"] = world.memory_stats(0)
    return out


def windows(steps: int) -> tuple[range, range]:
    """Early and late measurement windows (0-based step indices): steps 10-30 and the last 20."""
    return range(9, min(30, steps)), range(max(steps - 20, 0), steps)


def summarise(row: dict, early: range, late: range) -> dict:
    times = row["times"]
    return {
        "early_ms": 1e3 * statistics.median(times[i] for i in early),
        "late_ms": 1e3 * statistics.median(times[i] for i in late),
        "bytes": int(row["stats"]["bytes"]),
        "points": int(row["stats"]["points"]),
        "loop_psnr": row.get("loop_psnr"),
        "fidelity_psnr": float(np.mean(row["fidelity"])) if row["fidelity"] else None,
        "fidelity_frames": len(row["fidelity"]),
        "coverage_mean": float(np.mean(row["coverage"])),
        "step_ms": [round(1e3 * x, 2) for x in times],
    }


def fmt_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def fmt(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="30 steps at 64 pixels only (a test runs it)")
    parser.add_argument("--steps", type=int, default=None, help="walk length (default 300, 30 with --quick)")
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="frame sizes (default 64 128 256)")
    parser.add_argument("--scene-seed", type=int, default=2, help="procedural scene seed (2: an outdoor courtyard)")
    parser.add_argument("--model", default="tiny", help="'tiny' or a local model directory")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1; 0 for torch's default)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)
    steps = args.steps or (30 if args.quick else 300)
    sizes = args.sizes or ([64] if args.quick else [64, 128, 256])
    if steps < LOOP + 1:
        parser.error(f"--steps must be at least {LOOP + 1} (the walk opens with a {LOOP}-step turn)")
    if args.threads < 0:
        parser.error("--threads must be at least 0")
    if any(s < 64 for s in sizes):
        parser.error(f"frame sizes must be at least 64, got {sizes}")

    # no autograd and the benchmark's threads for the run only: a caller (a test) keeps its own settings
    with torch.no_grad(), torch_threads(args.threads or None):
        return _measure(args, steps, sizes)


def _measure(args, steps: int, sizes: list[int]) -> int:
    from mirage_gym.models import load_backend

    backend = load_backend(args.model)
    scene = make_scene(args.scene_seed)
    poses, actions = walk(scene, steps + 1)
    early, late = windows(steps)
    print(f"scene {scene!r}")
    print(f"walk: {steps} steps (a {LOOP}-step turn first), revisit share {revisit_share(poses):.2f}; "
          f"windows: steps {early.start + 1}-{early.stop} and {late.start + 1}-{late.stop}; "
          f"torch threads {torch.get_num_threads()}; load average at start {os.getloadavg()[0]:.2f}\n")
    results = {
        "config": {
            "steps": steps, "sizes": sizes, "scene_seed": args.scene_seed, "model": str(args.model),
            "early_window": [early.start + 1, early.stop], "late_window": [late.start + 1, late.stop],
            "revisit_share": revisit_share(poses), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "machine": platform.machine(),
            "world": {k: v for k, v in WorldConfig().to_dict().items() if k not in ("rig",)},
        },
        "sizes": {},
    }
    header = (f"{'size':>5} {'memory':<7} {'ms @20':>8} {f'ms @{steps}':>8} {f'bytes @{steps}':>12} "
              f"{'loop PSNR':>10} {'fidelity':>9} {'covered':>8}")
    lines = [header, "-" * len(header)]
    for size in sizes:
        rows = {name: summarise(row, early, late) for name, row in run(backend, scene, actions, size).items()}
        results["sizes"][str(size)] = rows
        for name, row in rows.items():
            lines.append(f"{size:>5} {name:<7} {row['early_ms']:>8.1f} {row['late_ms']:>8.1f} "
                         f"{fmt_bytes(row['bytes']):>12} {fmt(row['loop_psnr']):>7} dB {fmt(row['fidelity_psnr']):>6} dB {row['coverage_mean']:>8.2f}")
        print("\n".join(lines[-2:]), flush=True)
    load = os.getloadavg()
    lines.append(f"load average at end (1/5/15 min): {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} on {os.cpu_count()} cores")
    results["load_average_end"] = list(load)
    print("\n" + "\n".join(lines))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
