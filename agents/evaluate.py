"""Evaluate the scripted agents on a MirageWorld id and write a report folder.

    python -m agents.evaluate --seeds 5 --steps 200 --out outputs/eval
    python -m agents.evaluate --quick --image photo.jpg --image street.png
    python -m agents.evaluate --no-memory --out outputs/eval-no-memory     # the ablation

Every agent of :data:`agents.policies.AGENTS` plays one episode per source (the procedural
scenes of reset seeds ``seed .. seed + seeds - 1``, then every ``--image``). Loop closure:
the orbit agent turns a full 360 degrees (24 steps of 15 degrees) and the frame on return
is compared with the first frame, with memory and without (``use_memory=False``).

The report folder holds ``report.json`` (every figure), ``report.md`` (tables), PNG plots
(coverage over steps, loop-closure PSNR, bird's-eye memory maps with trajectories) and mp4
videos of selected episodes. Public API only: ``gym.make``, ``info`` and renders.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import gymnasium as gym
import imageio.v3 as iio
import numpy as np
from tqdm import tqdm

import mirage_gym  # noqa: F401  (registers the ids)
from mirage_gym import metrics

from . import parse_args, plots
from .policies import AGENTS, OrbitAgent
from .score import SCORES as CONSISTENCY
from .score import summary, table

LOOP_TURN_DEG = 15.0
LOOP_STEPS = 24  # 24 x 15 degrees = one full turn
VIDEO_SCALE = 4


@dataclass
class Args:
    """Evaluate the scripted agents (coverage, reward, collisions, speed) and loop closure."""

    env: str = "MirageWorld-v0"
    """the gymnasium id to evaluate on (any MirageWorld* id, discrete or continuous)"""
    model: str = "tiny"
    """the world model: 'tiny' (shipped weights) or a local model directory"""
    agents: list[str] = field(default_factory=list)
    """names of the scripted agents to run; empty means all of agents.policies.AGENTS"""
    seeds: int = 5
    """number of procedural scenes (reset seeds seed, seed + 1, ...) per agent"""
    seed: int = 0
    """the first reset seed"""
    steps: int = 200
    """steps per episode"""
    image: list[str] = field(default_factory=list)
    """images (any format imageio reads) to start extra episodes from, one per path"""
    no_memory: bool = False
    """ablation: run the agent suite with use_memory=False (loop closure always measures both)"""
    videos: int = 1
    """episodes per agent recorded to mp4 (the first sources)"""
    out: str = "outputs/eval"
    """the report folder"""
    quick: bool = False
    """tiny sizes for tests and smoke runs: at most 2 seeds and 16 steps"""


@dataclass
class Source:
    """Where an episode starts: a procedural scene (its seed) or a user's image."""

    label: str
    seed: int
    options: dict | None = None


def make_env(env_id: str, env_kwargs: dict, max_steps: int):
    """A thunk making one env whose renders show the frame beside the bird's-eye memory map."""

    def thunk():
        return gym.make(env_id, render_mode="rgb_array", render_map=True, max_episode_steps=max_steps, **env_kwargs)

    return thunk


def load_image(path: str | Path) -> np.ndarray:
    """An HxWx3 uint8 image from ``path`` (grey is repeated to RGB, alpha is dropped)."""
    image = np.asarray(iio.imread(path))
    if image.dtype != np.uint8:
        raise ValueError(f"{path}: expected an 8-bit image, got dtype {image.dtype}")
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"{path}: expected an RGB(A) or grey image, got shape {image.shape}")
    return np.ascontiguousarray(image[..., :3])


def episode_sources(args: Args) -> list[Source]:
    sources = [Source(f"seed {s}", s) for s in range(args.seed, args.seed + args.seeds)]
    for i, path in enumerate(args.image):
        sources.append(Source(f"image {Path(path).name}", args.seed + i, {"image": load_image(path)}))
    return sources


def rgb_of(obs) -> np.ndarray:
    return obs["rgb"] if isinstance(obs, dict) else obs


def depth_of(obs) -> np.ndarray | None:
    return obs["depth"][..., 0] if isinstance(obs, dict) and "depth" in obs else None


def run_explore_episode(env, agent, source: Source, steps: int, record: bool = False) -> dict:
    """Play ``steps`` steps (fewer if the episode ends) from ``source``; the agent and the
    env are both seeded with ``source.seed``. Time covers ``act`` + ``step``, not renders
    or the world-consistency scores of the episode (:func:`mirage_gym.metrics.score_rollout`)."""
    agent.reset(seed=source.seed)
    obs, info = env.reset(seed=source.seed, options=source.options)
    first_rgb = rgb_of(obs).copy()
    rollout = {"frames": [first_rgb], "depths": [depth_of(obs)], "poses": [info["pose"]]}
    coverage = [info["coverage_voxels"]]
    frames = [env.render()] if record else []
    reward, collisions, taken = 0.0, 0, 0
    start = time.perf_counter()
    for _ in range(steps):
        obs, r, terminated, truncated, info = env.step(agent.act(obs, info))
        taken += 1
        reward += r
        collisions += int(info["collision"])
        coverage.append(info["coverage_voxels"])
        rollout["frames"].append(rgb_of(obs).copy())
        rollout["depths"].append(depth_of(obs))
        rollout["poses"].append(info["pose"])
        if record:
            pause = time.perf_counter()
            frames.append(env.render())
            start += time.perf_counter() - pause
        if terminated or truncated:
            break
    seconds = time.perf_counter() - start
    depths = None if rollout["depths"][0] is None else np.stack(rollout["depths"])
    scores = metrics.score_rollout(np.stack(rollout["frames"]), np.stack(rollout["poses"]), info["intrinsics"], depths)
    return {
        "source": source.label,
        "seed": source.seed,
        "steps": taken,
        "coverage_voxels": int(info["coverage_voxels"]),
        "reward": float(reward),
        "collisions": collisions,
        "steps_per_second": taken / max(seconds, 1e-9),
        "memory_points": int(info["memory_points"]),
        "memory_bytes": int(info["memory_bytes"]),
        "coverage_curve": coverage,
        "consistency": {key: scores[key] if np.isfinite(scores[key]) else None for key in CONSISTENCY},
        # not in the JSON:
        "first_rgb": first_rgb,
        "last_rgb": rgb_of(obs).copy(),
        "final_render": env.render(),
        "frames": frames,
    }


def stats(values) -> dict:
    values = np.asarray(values, dtype=np.float64)
    return {"mean": float(values.mean()), "std": float(values.std()), "per_episode": values.tolist()}


def write_video(path: Path, frames: list[np.ndarray]) -> None:
    big = [np.repeat(np.repeat(f, VIDEO_SCALE, 0), VIDEO_SCALE, 1) for f in frames]
    iio.imwrite(path, np.stack(big), fps=8, codec="libx264", macro_block_size=1)


def model_name(model) -> str:
    """A model for the report: its name or path, or the class of a model object."""
    return str(model) if isinstance(model, (str, Path)) else type(model).__name__


def slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text).strip("_")


def evaluate(args: Args, env_kwargs: dict | None = None) -> dict:
    """Run the suite and write the report folder; returns the report (as in ``report.json``).

    ``env_kwargs`` go to every ``gym.make`` (e.g. ``{"model": backend_object}``); they
    override ``args.model``.
    """
    if args.quick:
        args = replace(args, seeds=min(args.seeds, 2), steps=min(args.steps, 16))
    names = args.agents or list(AGENTS)
    unknown = [n for n in names if n not in AGENTS]
    if unknown:
        raise ValueError(f"unknown agents {unknown}; choose from {list(AGENTS)}")
    if args.seeds + len(args.image) < 1:
        raise ValueError("nothing to evaluate: give --seeds >= 1 or at least one --image")
    out = Path(args.out)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    env_kwargs = {"model": args.model, **(env_kwargs or {})}
    suite_kwargs = {**env_kwargs, "use_memory": not args.no_memory}
    if gym.spec(args.env).kwargs.get("obs_mode", "rgb") == "rgb":
        suite_kwargs["obs_mode"] = "rgbd"  # the world's depth, for the reprojection score; agents read info only
    sources = episode_sources(args)
    bar = tqdm(total=len(names) * len(sources) + 2 * len(sources), desc="evaluate", unit="episode")

    # 1. the agent suite: every agent on every source
    results: dict[str, list[dict]] = {}
    videos: list[str] = []
    for name in names:
        env = make_env(args.env, suite_kwargs, args.steps)()
        agent = AGENTS[name](env.action_space)
        results[name] = []
        for i, source in enumerate(sources):
            bar.set_postfix(agent=name, source=source.label)
            episode = run_explore_episode(env, agent, source, args.steps, record=i < args.videos)
            if episode["frames"]:
                video = Path("videos") / f"{name}_{slug(source.label)}.mp4"
                write_video(out / video, episode["frames"])
                episode["video"] = str(video)
                videos.append(str(video))
            results[name].append(episode)
            bar.update()
        env.close()

    # 2. loop closure: a full turn in place, the frame on return against the first frame
    loop: dict[str, list[dict]] = {}
    for key, use_memory in (("with_memory", True), ("without_memory", False)):
        kwargs = {**env_kwargs, "use_memory": use_memory, "turn_step_deg": LOOP_TURN_DEG}
        env = make_env(args.env, kwargs, LOOP_STEPS)()
        orbit = OrbitAgent(env.action_space)
        loop[key] = []
        for i, source in enumerate(sources):
            bar.set_postfix(loop_closure=key, source=source.label)
            loop[key].append(run_explore_episode(env, orbit, source, LOOP_STEPS, record=i == 0))
            bar.update()
        env.close()
    bar.close()
    side_by_side = [np.concatenate(pair, axis=1) for pair in zip(loop["with_memory"][0]["frames"], loop["without_memory"][0]["frames"])]
    write_video(out / "videos" / "loop_closure.mp4", side_by_side)
    videos.append(str(Path("videos") / "loop_closure.mp4"))

    # 3. the figures
    report = {
        "config": {
            **asdict(args),
            "model": model_name(env_kwargs["model"]),
            "agents": names,
            "sources": [s.label for s in sources],
            "use_memory": not args.no_memory,
        },
        "agents": {},
        "loop_closure": {"steps": LOOP_STEPS, "turn_step_deg": LOOP_TURN_DEG, "psnr_cap_db": metrics.PSNR_CAP_DB},
        "files": {},
    }
    for name, episodes in results.items():
        curves = np.array([e["coverage_curve"] + [e["coverage_curve"][-1]] * (args.steps + 1 - len(e["coverage_curve"])) for e in episodes])
        report["agents"][name] = {
            **{key: stats([e[key] for e in episodes]) for key in ("coverage_voxels", "reward", "collisions", "steps_per_second", "memory_points")},
            "coverage_curve": {"mean": curves.mean(0).tolist(), "std": curves.std(0).tolist()},
            "consistency": {key: summary([e["consistency"][key] for e in episodes]) for key in CONSISTENCY},
            "episodes": [{k: v for k, v in e.items() if k not in ("first_rgb", "last_rgb", "final_render", "frames")} for e in episodes],
        }
    for key, episodes in loop.items():
        report["loop_closure"][key] = {
            "psnr": stats([metrics.capped_psnr(e["last_rgb"], e["first_rgb"]) for e in episodes]),
            "ssim": stats([metrics.ssim(e["last_rgb"], e["first_rgb"]) for e in episodes]),
        }
    lc = report["loop_closure"]
    lc["psnr_gain_db"] = lc["with_memory"]["psnr"]["mean"] - lc["without_memory"]["psnr"]["mean"]

    # 4. the plots
    coverage_png = plots.line_plot(
        {name: np.asarray(a["coverage_curve"]["mean"]) for name, a in report["agents"].items()},
        title=f"Memory coverage over an episode ({args.env}, mean of {len(sources)})",
        xlabel="step",
        ylabel="covered voxels",
    )
    loop_png = plots.bar_plot(
        {"with memory": lc["with_memory"]["psnr"]["mean"], "without memory": lc["without_memory"]["psnr"]["mean"]},
        errors={"with memory": lc["with_memory"]["psnr"]["std"], "without memory": lc["without_memory"]["psnr"]["std"]},
        title="Loop closure after a 360-degree turn",
        ylabel="PSNR (dB), frame on return vs first",
    )
    maps_png = plots.image_grid(
        {name: episodes[0]["final_render"] for name, episodes in results.items()},
        title=f"Frame and bird's-eye memory map at the end ({sources[0].label})",
    )
    for filename, image in (("coverage.png", coverage_png), ("loop_closure.png", loop_png), ("maps.png", maps_png)):
        iio.imwrite(out / filename, image)
    report["files"] = {
        "report_md": "report.md",
        "plots": {"coverage": "coverage.png", "loop_closure": "loop_closure.png", "maps": "maps.png"},
        "videos": videos,
    }
    (out / "report.json").write_text(json.dumps(report, indent=2, allow_nan=False))
    (out / "report.md").write_text(markdown(report))
    return report


def markdown(report: dict) -> str:
    """The report's tables in Markdown, with the plots inline."""
    c = report["config"]
    memory = "on" if c["use_memory"] else "off (ablation)"
    lines = [
        f"# Agent evaluation on {c['env']}",
        "",
        f"Model `{c['model']}`, memory {memory}, {c['steps']} steps per episode, "
        f"{len(c['sources'])} episodes per agent ({', '.join(c['sources'])}). Mean ± std over episodes.",
        "",
        "| agent | coverage (voxels) | reward | collisions | steps/s |",
        "|---|---|---|---|---|",
    ]
    for name, a in report["agents"].items():
        cells = [f"{a[k]['mean']:.{d}f} ± {a[k]['std']:.{d}f}" for k, d in (("coverage_voxels", 0), ("reward", 2), ("collisions", 1), ("steps_per_second", 1))]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## World-consistency scores (`mirage_gym.metrics.score_rollout`, see `mirage-gym score`)",
        "",
        *table({name: a["consistency"] for name, a in report["agents"].items()}, label="agent"),
    ]
    lc = report["loop_closure"]
    lines += [
        "",
        f"## Loop closure ({lc['steps']} turns of {lc['turn_step_deg']:.0f} degrees, frame on return vs first frame)",
        "",
        "| memory | PSNR (dB) | SSIM |",
        "|---|---|---|",
    ]
    for key, label in (("with_memory", "with"), ("without_memory", "without")):
        p, s = lc[key]["psnr"], lc[key]["ssim"]
        lines.append(f"| {label} | {p['mean']:.2f} ± {p['std']:.2f} | {s['mean']:.3f} ± {s['std']:.3f} |")
    lines += [
        "",
        f"Memory gains {lc['psnr_gain_db']:.2f} dB (PSNR capped at {lc['psnr_cap_db']:.0f} dB for identical frames).",
        "",
        "![coverage over steps](coverage.png)",
        "",
        "![loop closure](loop_closure.png)",
        "",
        "![bird's-eye maps](maps.png)",
        "",
        "Videos: " + ", ".join(f"[{Path(v).stem}]({v})" for v in report["files"]["videos"]),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(Args, argv)
    start = time.perf_counter()
    report = evaluate(args)
    print(markdown(report).split("\n![")[0])
    print(f"report written to {args.out}/ in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
