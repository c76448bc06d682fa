"""World-consistency scores of a world model on scripted trajectories (``mirage-gym score``).

    python -m agents.score --seeds 5 --out outputs/score
    mirage-gym score --quick

Each trajectory (a 360-degree turn loop, 8 steps out and 8 back, a seeded random walk)
runs on held-out procedural scenes (reset option ``scene_seed`` from 10000 up, which
training never used) with memory and with memory hidden from the generator
(``use_memory=False``), observations ``obs_mode="rgbd"`` so the world's own depth is
scored. :func:`mirage_gym.metrics.score_rollout` scores every rollout. Reference rows,
along the memory-on rollout's poses: ``truth`` (the scene's exact renders and depth, the
ceiling), ``frozen`` (the first true frame and depth repeated) and ``blurred`` (the true
renders blurred, Gaussian sigma 1.5 px): what a good score must beat and what it must
catch. Sky and far depth are clipped to the env's ``max_depth`` in every row alike.

Writes ``scores.json`` (every figure, per-step curves), ``scores.md`` (tables) and one
PNG per trajectory with the per-step scores along it.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import cv2
import gymnasium as gym
import imageio.v3 as iio
import numpy as np
import torch
from tqdm import tqdm

import mirage_gym  # noqa: F401  (registers the ids)
from mirage_gym.evaluation import HELD_OUT_SEED
from mirage_gym.metrics import score_rollout
from mirage_gym.scenes import make_scene

from . import parse_args, plots
from .policies import OrbitAgent, OutAndBackAgent, RandomWalkAgent

# trajectory name -> (agent class, steps)
TRAJECTORIES = {
    "turn_loop": (OrbitAgent, 24),
    "out_and_back": (OutAndBackAgent, 16),
    "random_walk": (RandomWalkAgent, 24),
}
ROWS = ("memory on", "memory off", "truth", "frozen", "blurred")
SCORES = {  # key in score_rollout -> (column, format, higher is better)
    "camera_rotation_error_deg": ("rotation err (deg)", ".2f", False),
    "camera_translation_error_deg": ("translation dir err (deg)", ".1f", False),
    "photometric_cycle_error": ("flow cycle (px)", ".2f", False),
    "photometric_residual": ("flow residual (0-255)", ".1f", False),
    "reprojection_psnr": ("reprojection (dB)", ".2f", True),
    "loop_psnr": ("loop (dB)", ".2f", True),
    "sharpness": ("sharpness", ".4f", True),
}
CURVES = {"rotation_error_deg": "rotation error (deg)", "cycle_error": "flow cycle (px)", "reprojection_psnr": "reprojection PSNR (dB)"}
BLUR_SIGMA = 1.5


@dataclass
class Args:
    """Score a world model's consistency on scripted trajectories, with and without memory."""

    env: str = "MirageWorld-v0"
    """the gymnasium id to score (its obs_mode is set to 'rgbd' to get the world's depth)"""
    model: str = "tiny"
    """the world model: 'tiny' (shipped weights) or a local model directory"""
    trajectories: list[str] = field(default_factory=list)
    """trajectories to run (turn_loop, out_and_back, random_walk); empty means all"""
    seeds: int = 5
    """held-out scenes per trajectory (scene seeds first_scene, first_scene + 1, ...)"""
    first_scene: int = HELD_OUT_SEED
    """the first scene seed (training scenes lie below 10000)"""
    out: str = "outputs/score"
    """the report folder"""
    threads: int = 1
    """torch and OpenCV threads, 0 for their defaults (with other jobs on the host, intra-op threads wait on each other and a step can take 100x longer)"""
    quick: bool = False
    """CI-sized: 2 scenes per trajectory"""


def rollout(env, agent, scene_seed: int, steps: int) -> dict:
    """Frames, depths, poses and intrinsics of one scripted episode, plus its step time."""
    agent.reset(seed=scene_seed)
    obs, info = env.reset(seed=scene_seed, options={"scene_seed": scene_seed})
    frames, depths, poses = [obs["rgb"]], [obs["depth"][..., 0]], [info["pose"]]
    start = time.perf_counter()
    for _ in range(steps):
        obs, _, terminated, truncated, info = env.step(agent.act(obs, info))
        frames.append(obs["rgb"])
        depths.append(obs["depth"][..., 0])
        poses.append(info["pose"])
        if terminated or truncated:
            break
    seconds = (time.perf_counter() - start) / max(1, len(frames) - 1)
    return {"frames": np.stack(frames), "depths": np.stack(depths), "poses": np.stack(poses), "intrinsics": info["intrinsics"], "step_s": seconds}


def references(run: dict, scene_seed: int, max_depth: float) -> dict[str, dict]:
    """The truth, frozen and blurred rows along the poses of ``run``."""
    h, w = run["frames"].shape[1:3]
    scene = make_scene(scene_seed)
    renders = [scene.render(pose, w, h, intrinsics=run["intrinsics"]) for pose in run["poses"]]
    rgb = np.stack([r.rgb for r in renders])
    depth = np.stack([np.nan_to_num(r.depth, posinf=max_depth).clip(0, max_depth) for r in renders])
    frozen_rgb = np.repeat(rgb[:1], len(rgb), 0)
    frozen_depth = np.repeat(depth[:1], len(depth), 0)
    blurred = np.stack([cv2.GaussianBlur(f, (0, 0), BLUR_SIGMA) for f in rgb])
    common = {"poses": run["poses"], "intrinsics": run["intrinsics"]}
    return {
        "truth": {"frames": rgb, "depths": depth, **common},
        "frozen": {"frames": frozen_rgb, "depths": frozen_depth, **common},
        "blurred": {"frames": blurred, "depths": depth, **common},
    }


def score(run: dict) -> tuple[dict, float]:
    start = time.perf_counter()
    s = score_rollout(run["frames"], run["poses"], run["intrinsics"], run["depths"])
    return s, time.perf_counter() - start


def summary(values) -> dict:
    """Mean and std over the finite values (NaN marks a score that does not apply)."""
    v = np.array([np.nan if x is None else x for x in values], dtype=np.float64)
    v = v[np.isfinite(v)]
    return {"mean": float(v.mean()) if v.size else None, "std": float(v.std()) if v.size else None, "n": int(v.size)}


def mean_curve(arrays) -> list:
    stacked = np.stack(arrays)
    finite = np.isfinite(stacked)
    curve = np.where(finite, stacked, 0.0).sum(0) / np.maximum(finite.sum(0), 1)
    curve[finite.sum(0) == 0] = np.nan  # e.g. translation direction while turning in place
    return [None if not math.isfinite(x) else float(x) for x in curve]


def run_scores(args: Args, env_kwargs: dict | None = None) -> dict:
    """Run every trajectory and row, write the report folder; returns the report."""
    if args.quick:
        args = replace(args, seeds=min(args.seeds, 2))
    names = args.trajectories or list(TRAJECTORIES)
    unknown = [n for n in names if n not in TRAJECTORIES]
    if unknown:
        raise ValueError(f"unknown trajectories {unknown}; choose from {list(TRAJECTORIES)}")
    if args.seeds < 1:
        raise ValueError(f"seeds must be at least 1, got {args.seeds}")
    if args.threads < 0:
        raise ValueError(f"threads must be at least 0, got {args.threads}")
    if args.threads:
        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env_kwargs = {"model": args.model, **(env_kwargs or {}), "obs_mode": "rgbd"}
    scenes = list(range(args.first_scene, args.first_scene + args.seeds))
    raw: dict = {name: {row: [] for row in ROWS} for name in names}
    timing = {"score_s_per_100_frames": [], "step_s": {"memory on": [], "memory off": []}}
    bar = tqdm(total=len(names) * len(scenes) * 2, desc="score", unit="rollout")
    for name in names:
        agent_cls, steps = TRAJECTORIES[name]
        for row, use_memory in (("memory on", True), ("memory off", False)):
            env = gym.make(args.env, max_episode_steps=steps, use_memory=use_memory, **env_kwargs)
            max_depth = env.unwrapped.observation_space["depth"].high.max()
            agent = agent_cls(env.action_space)
            for scene_seed in scenes:
                bar.set_postfix(trajectory=name, row=row, scene=scene_seed)
                run = rollout(env, agent, scene_seed, steps)
                timing["step_s"][row].append(run["step_s"])
                rows = {row: run}
                if use_memory:
                    rows.update(references(run, scene_seed, float(max_depth)))
                for key, r in rows.items():
                    s, seconds = score(r)
                    timing["score_s_per_100_frames"].append(seconds * 100 / len(r["frames"]))
                    raw[name][key].append(s)
                bar.update()
            env.close()
    bar.close()
    report = {
        "config": {**asdict(args), "trajectories": names, "scenes": scenes, "steps": {n: TRAJECTORIES[n][1] for n in names}},
        "trajectories": {},
        "overall": {},
        "timing": {
            "score_seconds_per_100_frames": summary(timing["score_s_per_100_frames"]),
            "env_step_seconds": {row: summary(v) for row, v in timing["step_s"].items()},
        },
        "files": {"report_md": "scores.md", "plots": {}},
    }
    for name in names:
        report["trajectories"][name] = {
            row: {
                **{key: summary([s[key] for s in runs]) for key in SCORES},
                "curves": {key: mean_curve([s["per_pair"][key] for s in runs]) for key in CURVES},
            }
            for row, runs in raw[name].items()
        }
    for row in ROWS:  # every rollout of every trajectory counted once
        report["overall"][row] = {key: summary([s[key] for name in names for s in raw[name][row]]) for key in SCORES}
    for name in names:
        image = curves_plot(report["trajectories"][name], name)
        iio.imwrite(out / f"{name}.png", image)
        report["files"]["plots"][name] = f"{name}.png"
    (out / "scores.json").write_text(json.dumps(report, indent=2, allow_nan=False))
    (out / "scores.md").write_text(markdown(report))
    return report


def curves_plot(rows: dict, name: str) -> np.ndarray:
    """Per-step rotation error, flow cycle error and reprojection PSNR along one trajectory."""
    panels = []
    for key, label in CURVES.items():
        series = {row: np.nan_to_num(np.array(r["curves"][key], dtype=np.float64)) for row, r in rows.items() if row != "blurred"}
        panels.append(plots.line_plot(series, title=f"{name}: {label} per step", xlabel="step", ylabel=label, size=(640, 300)))
    return np.concatenate(panels, axis=0)


def cell(s: dict, fmt: str) -> str:
    if s["mean"] is None:
        return "n/a"
    return f"{s['mean']:{fmt}} ± {s['std']:{fmt}}"


def table(rows: dict, label: str = "rollout") -> list[str]:
    """Markdown rows of the scores' mean ± std, one line per entry of ``rows``."""
    header = f"| {label} | " + " | ".join(col for col, _, _ in SCORES.values()) + " |"
    lines = [header, "|---|" + "---|" * len(SCORES)]
    for row, s in rows.items():
        lines.append(f"| {row} | " + " | ".join(cell(s[key], fmt) for key, (_, fmt, _) in SCORES.items()) + " |")
    return lines


def markdown(report: dict) -> str:
    c = report["config"]
    t = report["timing"]
    lines = [
        f"# World-consistency scores on {c['env']} (model `{c['model']}`)",
        "",
        f"Held-out scenes {c['scenes'][0]}-{c['scenes'][-1]}, mean ± std over rollouts. Lower is better for errors,"
        " higher for PSNR and sharpness. `truth` is the scene's exact render along the memory-on poses (the ceiling);"
        " `frozen` repeats its first frame; `blurred` blurs it (sigma 1.5 px). Loop PSNR applies where the"
        " trajectory returns to an earlier pose; translation direction where the camera moves.",
        "",
        "## All trajectories",
        "",
        *table(report["overall"]),
    ]
    for name, rows in report["trajectories"].items():
        lines += ["", f"## {name} ({c['steps'][name]} steps)", "", *table(rows), "", f"![{name}]({report['files']['plots'][name]})"]
    score_s = t["score_seconds_per_100_frames"]["mean"]
    steps = t["env_step_seconds"]
    lines += [
        "",
        f"Scoring: {score_s:.2f} s per 100 frames. Env step: {steps['memory on']['mean'] * 1000:.1f} ms with memory,"
        f" {steps['memory off']['mean'] * 1000:.1f} ms without.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(Args, argv)
    start = time.perf_counter()
    report = run_scores(args)
    print("\n".join(markdown(report).split("\n## ")[:2]))
    print(f"report written to {args.out}/ in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
