"""Latent spatial memory vs the color point-cloud baseline: per-step time and cache bytes.

One deterministic camera walk (forward runs, turns, look-arounds, glances up and down; it
stays in free space via ``scene.is_free`` and revisits the rooms it crosses) through a
procedural scene. Frames are rendered up front, outside every timed region. Each memory
then replays the whole walk in its own pass (so one memory's working set never pollutes
another's caches); per step it does what a world model with that memory would do. Every
row writes the same filtered frames (``static_keep_mask`` with the world's far: no sky in
the points; the latent memory keeps mostly-sky cells in its sky dome, as the world does).

* ``latent``: exactly the memory traffic of ``World`` (``mirage_gym/world.py``) per step,
  on the memory a default ``World`` builds (taken from ``World.memories``, so it has the
  ``WorldConfig`` voxel size, capacity and far and the memory's default float16 storage).
  Step 0 is ``World.reset``: the seed frame is written with known depth (confidence 1).
  Every later step is ``World.step``: a move's clearance check against memory
  (``distance_to``, as ``World._blocked`` does when the camera moves), the read at the new
  pose on the /8 latent grid (``_advance``), then the write of the frame (``_remember``)
  with ``skip_cells`` = the readout mask (cells the generator copied from memory are not
  re-lifted, so memory grows only with novel cells), ``reject_closer_than_memory`` =
  ``residual_tolerance`` and the generated-frame confidence. Latents are random 16-channel
  grids (only cost is measured); depth comes from the render. The world's coverage
  bookkeeping (reward, not memory) is not timed.
* ``color (append)``: ``ColorPointCloudMemory`` render at full pixel resolution + the codec
  re-encode of that render (a diffusers autoencoder with random weights) + write of the new
  frame's pixels, appended (Voyager / Spatia).
* ``color (voxel dedup)``: the same with one point per voxel (a fairer second row).

The decode of the generated frame is common to both designs and is not timed. Reported per
row: median per-step time over an early window (steps 10-30) and a late window (the last 20
steps), cache bytes at the last step, and the ratios latent vs color. Every row runs on one
torch thread by default (``--threads``): with other jobs on the machine, intra-op threads
wait on each other and per-step times swing by up to 100x.

    python benchmarks/memory.py            # 300 steps at 256x256 and 512x512
    python benchmarks/memory.py --quick    # 60 steps at 256x256 (CI-sized)
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
from types import SimpleNamespace

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mirage_gym.geometry import Action, RigConfig, apply_motion, discrete_to_continuous, pose_from_state  # noqa: E402
from mirage_gym.memory import ColorPointCloudMemory, LatentSpatialMemory, static_keep_mask  # noqa: E402
from mirage_gym.scenes import make_scene  # noqa: E402
from mirage_gym.world import World, WorldConfig  # noqa: E402

LATENT_CHANNELS = 16
DOWNSAMPLE = 8
DEDUP_VOXEL = 0.02  # about one pixel's footprint at 2-3 m at 256 px, 90 degrees FOV
CLEARANCE = 0.4  # metres from any solid (scene.is_free)
MIN_VIEW = 0.9  # median depth (metres) the camera keeps ahead of it
WORLD = WorldConfig()  # the product's defaults: memory config and write policy of the latent row

# The codec that re-encodes the color render: diffusers AutoencoderTiny (TAESD architecture)
# with /8 downsampling to 16 latent channels, width 32 like the project's tiny codec
# (DESIGN.md section 6) plus one stage. Random weights: only its cost matters here. Far
# smaller than the video VAEs Voyager / Spatia actually use, so this favours the baseline.
CODEC_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=LATENT_CHANNELS,
    encoder_block_out_channels=(32, 32, 32, 32),
    decoder_block_out_channels=(32, 32, 32, 32),
    num_encoder_blocks=(1, 2, 2, 2),
    num_decoder_blocks=(2, 2, 2, 1),
)


# --------------------------------------------------------------------------- trajectory


def walk(scene, steps: int, seed: int = 0) -> list[np.ndarray]:
    """A deterministic, collision-free camera walk of ``steps`` poses (the first is the reset pose).

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
        state = nxt
        poses.append(pose_from_state(state))
    return poses


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


def moved(poses: list[np.ndarray]) -> list[bool]:
    """Which steps translate the camera (the world checks clearance against memory on those);
    the others only turn or look up and down."""
    return [False] + [not np.allclose(a[:3, 3], b[:3, 3]) for a, b in zip(poses, poses[1:])]


# --------------------------------------------------------------------------- runs


def build_codec():
    from diffusers import AutoencoderTiny

    torch.manual_seed(0)
    codec = AutoencoderTiny(**CODEC_CONFIG).eval()
    params = sum(p.numel() for p in codec.encoder.parameters())
    return codec, params


def replay(make_memory, frames, prepare, step) -> dict:
    """Time ``step(memory, t, frame, *prepare(t, frame))`` over the walk on a fresh memory.

    ``prepare`` (untimed) turns a frame into the row's inputs; ``step`` returns the readout
    (or None). A few untimed steps on a throw-away memory go first: first calls of torch ops
    are slow.
    """
    warm = make_memory()
    for t, f in enumerate(frames[:3]):
        step(warm, t, f, *prepare(t, f))
    memory = make_memory()
    times, coverage = [], []
    for t, f in enumerate(frames):
        args = prepare(t, f)
        start = time.perf_counter()
        out = step(memory, t, f, *args)
        times.append(time.perf_counter() - start)
        coverage.append(0.0 if out is None else out.coverage)
    return {"times": times, "coverage": coverage, "stats": memory.stats()}


def best_of(runs: list[dict]) -> dict:
    """Per-step minimum over repeated passes (filters other processes' interference)."""
    return {
        "times": [min(ts) for ts in zip(*(r["times"] for r in runs))],
        "coverage": runs[0]["coverage"],
        "stats": runs[0]["stats"],
        "passes": len(runs),
    }


def keep_mask(f) -> torch.Tensor:
    """The filter every row applies before writing: no sky, nothing beyond the world's far."""
    return static_keep_mask(f.depth, f.labels, far=WORLD.far)


def world_memory(size: int) -> LatentSpatialMemory:
    """A fresh memory exactly as a default ``World`` of this frame size builds it."""
    no_model = SimpleNamespace(latent_channels=LATENT_CHANNELS, downsample=DOWNSAMPLE)  # the world needs only these
    return World(no_model, replace(WORLD, width=size, height=size)).memories[0]


def run_latent(frames, size: int, seed: int = 0) -> dict:
    """The world's memory traffic per step (see the module docstring)."""
    grid = (size // DOWNSAMPLE, size // DOWNSAMPLE)
    moves = moved([f.pose for f in frames])
    gen = torch.Generator().manual_seed(seed)

    def prepare(t, f):
        return torch.randn(LATENT_CHANNELS, *grid, generator=gen), torch.from_numpy(f.depth), keep_mask(f)

    def step(memory, t, f, latents, depth, keep):
        if t == 0:  # World.reset: the seed frame, depth known
            memory.write(latents, depth, f.pose, f.intrinsics, keep_mask=keep, confidence=1.0)
            return None
        if moves[t]:
            memory.distance_to(f.pose[:3, 3])  # World._blocked: clearance check of a move
        out = memory.read(f.pose, f.intrinsics, grid, image_size=(size, size))  # World._advance
        memory.write(  # World._remember
            latents,
            depth,
            f.pose,
            f.intrinsics,
            keep_mask=keep,
            confidence=WORLD.generated_confidence,
            reject_closer_than_memory=WORLD.residual_tolerance,
            skip_cells=out.mask[0] > 0,
        )
        return out

    return replay(lambda: world_memory(size), frames, prepare, step)


def run_color(frames, size: int, codec, dedup: float | None) -> dict:
    def prepare(t, f):
        return torch.from_numpy(f.rgb).permute(2, 0, 1).float() / 255.0, torch.from_numpy(f.depth), keep_mask(f)

    def step(memory, t, f, rgb, depth, keep):
        out = None
        if t:
            out = memory.read(f.pose, f.intrinsics, (size, size))
            codec.encode(out.features[None] * 2.0 - 1.0)  # the render, re-encoded every step
        memory.write(rgb, depth, f.pose, f.intrinsics, keep_mask=keep)
        return out

    return replay(lambda: ColorPointCloudMemory(dedup_voxel_size=dedup, far=WORLD.far), frames, prepare, step)


def windows(steps: int) -> tuple[range, range]:
    """Early and late measurement windows: steps 10-30 and 280-300 for a 300-step walk."""
    w = max(steps // 15, 5)
    return range(max(w // 2, 5), max(w // 2, 5) + w), range(steps - w, steps)


def summarise(run: dict, early: range, late: range, moves: list[bool]) -> dict:
    """Window medians and totals. ``late_over_early_moves`` / ``_turns`` compare like with
    like: the walk opens with a look-around, so the early window is mostly turns and the
    late one mostly moves, and a latent move also runs the clearance check."""

    def med(steps: range, kind: bool | None = None) -> float | None:
        times = [run["times"][i] for i in steps if kind in (None, moves[i])]
        return statistics.median(times) if times else None

    def late_over_early(kind: bool | None = None) -> float | None:
        a, b = med(late, kind), med(early, kind)
        return None if a is None or b is None else a / b

    return {
        "early_ms": 1e3 * med(early),
        "late_ms": 1e3 * med(late),
        "late_over_early": late_over_early(),
        "late_over_early_moves": late_over_early(True),
        "late_over_early_turns": late_over_early(False),
        "passes": run["passes"],
        "points": int(run["stats"]["points"]),
        "bytes": int(run["stats"]["bytes"]),
        "voxels": int(run["stats"]["voxels"]),
        "coverage_early": float(np.mean([run["coverage"][i] for i in early])),
        "coverage_late": float(np.mean([run["coverage"][i] for i in late])),
        "step_ms": [round(1e3 * x, 3) for x in run["times"]],
    }


def fmt_ratio(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def fmt_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="60 steps at 256x256 only (CI-sized)")
    parser.add_argument("--steps", type=int, default=None, help="walk length (default 300, 60 with --quick)")
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="frame sizes (default 256 512)")
    parser.add_argument("--scene-seed", type=int, default=2, help="procedural scene seed (2: an outdoor courtyard)")
    parser.add_argument("--latent-repeats", type=int, default=5,
                        help="passes of the latent row, per-step minimum taken (a pass costs about a second)")
    parser.add_argument("--repeats", type=int, default=1, help="passes of each color row, per-step minimum taken")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for every row, 0 for torch's default (default 1: with other jobs "
                        "running, intra-op threads wait on each other and steps swing by up to 100x)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)
    steps = args.steps or (60 if args.quick else 300)
    sizes = args.sizes or ([256] if args.quick else [256, 512])
    if args.latent_repeats < 1 or args.repeats < 1:
        parser.error("repeats must be at least 1")
    if args.threads < 0:
        parser.error("--threads must be at least 0")
    if steps < 20:
        parser.error("--steps must be at least 20")
    for s in sizes:
        if s % DOWNSAMPLE or s <= 0:
            parser.error(f"frame sizes must be positive multiples of {DOWNSAMPLE}, got {s}")

    torch.set_grad_enabled(False)
    if args.threads:
        torch.set_num_threads(args.threads)
    scene = make_scene(args.scene_seed)
    poses = walk(scene, steps)
    moves = moved(poses)
    early, late = windows(steps)
    codec, codec_params = build_codec()
    codec_desc = (
        f"diffusers AutoencoderTiny, random weights, /8 to {LATENT_CHANNELS} ch, widths 32, "
        f"encoder blocks {CODEC_CONFIG['num_encoder_blocks']}, {codec_params / 1e6:.2f}M encoder params"
    )
    print(f"scene {scene!r}")
    n_moves = [sum(moves[i] for i in w) for w in (early, late)]
    print(f"walk: {steps} steps, revisit share {revisit_share(poses):.2f}; windows: steps "
          f"{early.start}-{early.stop} ({n_moves[0]} moves) and {late.start}-{late.stop} ({n_moves[1]} moves); "
          f"torch threads {torch.get_num_threads()}")
    print(f"codec (color rows): {codec_desc}")
    latent_config = world_memory(sizes[0]).config()
    latent_config.update(downsample=DOWNSAMPLE, residual_tolerance=WORLD.residual_tolerance,
                         generated_confidence=WORLD.generated_confidence, skip_cells="readout mask")
    print(f"color (voxel dedup) voxel: {DEDUP_VOXEL} m; far {WORLD.far} m for every row")
    print(f"latent (the World's memory and write policy): {latent_config}")
    print(f"passes: latent {args.latent_repeats}, color {args.repeats} (per-step minimum over passes); "
          f"load average at start {os.getloadavg()[0]:.2f}\n")

    results = {
        "config": {
            "steps": steps,
            "sizes": sizes,
            "scene_seed": args.scene_seed,
            "scene_kind": scene.kind,
            "early_window": [early.start, early.stop],
            "late_window": [late.start, late.stop],
            "revisit_share": revisit_share(poses),
            "latent": latent_config,
            "color_dedup_voxel": DEDUP_VOXEL,
            "codec": codec_desc,
            "codec_config": {k: list(v) if isinstance(v, tuple) else v for k, v in CODEC_CONFIG.items()},
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "machine": platform.machine(),
        },
        "sizes": {},
    }
    header = f"{'size':>7} {'memory':<20} {'early ms':>9} {'late ms':>9} {'late/early':>10} {'points':>11} {'bytes':>10} {'cover':>11}"
    lines = [header, "-" * len(header)]
    for size in sizes:
        t0 = time.perf_counter()
        frames = [scene.render(p, size, size) for p in poses]
        render_s = time.perf_counter() - t0
        rows = {
            "latent": summarise(best_of([run_latent(frames, size) for _ in range(args.latent_repeats)]), early, late, moves),
            "color_append": summarise(best_of([run_color(frames, size, codec, None) for _ in range(args.repeats)]), early, late, moves),
            "color_dedup": summarise(
                best_of([run_color(frames, size, codec, DEDUP_VOXEL) for _ in range(args.repeats)]), early, late, moves
            ),
        }
        lat, app, ded = rows["latent"], rows["color_append"], rows["color_dedup"]
        ratios = {
            "speed_vs_append_early": app["early_ms"] / lat["early_ms"],
            "speed_vs_append_late": app["late_ms"] / lat["late_ms"],
            "speed_vs_dedup_early": ded["early_ms"] / lat["early_ms"],
            "speed_vs_dedup_late": ded["late_ms"] / lat["late_ms"],
            "bytes_vs_append": app["bytes"] / max(lat["bytes"], 1),
            "bytes_vs_dedup": ded["bytes"] / max(lat["bytes"], 1),
            "latent_late_over_early": lat["late_over_early"],
            "latent_late_over_early_moves": lat["late_over_early_moves"],
            "latent_late_over_early_turns": lat["late_over_early_turns"],
        }
        checks = {
            "latent_10x_faster_than_color": min(ratios["speed_vs_append_early"], ratios["speed_vs_append_late"]) >= 10.0,
            "latent_50x_fewer_bytes_than_append": ratios["bytes_vs_append"] >= 50.0,
            "latent_flat_within_1.15x": ratios["latent_late_over_early"] <= 1.15,
        }
        results["sizes"][str(size)] = {"render_s": render_s, "rows": rows, "ratios": ratios, "checks": checks}
        names = {"latent": "latent", "color_append": "color (append)", "color_dedup": "color (voxel dedup)"}
        for key, row in rows.items():
            lines.append(
                f"{size:>7} {names[key]:<20} {row['early_ms']:>9.2f} {row['late_ms']:>9.2f} {row['late_over_early']:>10.2f} "
                f"{row['points']:>11,} {fmt_bytes(row['bytes']):>10} {row['coverage_early']:>5.2f}/{row['coverage_late']:.2f}"
            )
        lines.append(
            f"{size:>7} latent vs append: {ratios['speed_vs_append_early']:.0f}x / {ratios['speed_vs_append_late']:.0f}x faster "
            f"(early/late), {ratios['bytes_vs_append']:.0f}x fewer bytes; vs dedup: "
            f"{ratios['speed_vs_dedup_early']:.0f}x / {ratios['speed_vs_dedup_late']:.0f}x faster, "
            f"{ratios['bytes_vs_dedup']:.1f}x fewer bytes; latent late/early {ratios['latent_late_over_early']:.2f} "
            f"(like for like: moves {fmt_ratio(ratios['latent_late_over_early_moves'])}, "
            f"turns {fmt_ratio(ratios['latent_late_over_early_turns'])})"
        )
        lines.append(f"{size:>7} checks: " + ", ".join(f"{k} {'PASS' if v else 'FAIL'}" for k, v in checks.items()))
        lines.append("")
        print("\n".join(lines[-6:]), flush=True)
        del frames
    load = os.getloadavg()
    lines.append(f"load average at end (1/5/15 min): {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} on {os.cpu_count()} cores")
    if load[1] > 0.5 * (os.cpu_count() or 1) + 1.0:
        lines.append("WARNING: other processes were busy; timings (especially the color rows, single pass) are inflated")
    if args.quick:
        lines.append("(--quick: the targets are defined for the full 300-step run; checks above are indicative)")
    results["load_average_end"] = list(load)
    print("\n".join(lines))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
