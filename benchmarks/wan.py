"""The Wan2.2 world at real size: seconds per step and per video frame, peak GPU memory,
memory-cache bytes, flat per-step cost, with and without memory.

    python benchmarks/wan.py [--quick] [--json PATH] [--device cuda] [--width 1280 --height 704]

Builds the public Wan2.2-TI2V-5B architecture (30 layers, dim 3072, the 48-channel 16x VAE)
with the Mirage add-on and a Depth Anything V2 Large depth model from their configs, with
random weights: nothing is downloaded, and random weights cost the same time and memory as
trained ones. ``--quick`` runs the tiny random build of the same classes on the CPU (the
tests run it). Worlds start from a procedural scene and walk at random; the late world and
a fresh one step alternately, so the flat-cost ratio compares step N with step ~early at
the same moment (a host that speeds up or slows down does not enter it).
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import numpy as np
import torch

from mirage_gym.geometry import discrete_to_continuous
from mirage_gym.memory import static_keep_mask
from mirage_gym.models.depth import DEPTH_ANYTHING_V2_LARGE, TINY_DEPTH_ANYTHING, DepthEstimator, random_depth_anything
from mirage_gym.models.generator import CONTROL_EXTRA
from mirage_gym.models.vace import addon_from_base, attach_lora, cast_like_pretrained
from mirage_gym.models.wan import TI2V_5B_TRANSFORMER, TI2V_5B_VAE, TINY_TRANSFORMER, TINY_VAE, SCHEDULER, \
    WanWorldModel, resolve_dtype
from mirage_gym.scenes import make_scene
from mirage_gym.world import World, WorldConfig


def random_backend(real: bool, device: str, dtype: torch.dtype, sampler_steps: int) -> WanWorldModel:
    """The Wan world model of the real classes with random weights, built on ``device``."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel

    torch.manual_seed(0)
    spec = DEPTH_ANYTHING_V2_LARGE if real else TINY_DEPTH_ANYTHING
    with torch.device(device):
        base = WanTransformer3DModel(**(TI2V_5B_TRANSFORMER if real else TINY_TRANSFORMER))
        vae = AutoencoderKLWan(**(TI2V_5B_VAE if real else TINY_VAE))
        depth = random_depth_anything(spec)
    cast_like_pretrained(base, dtype)
    transformer = addon_from_base(base, vae.config.z_dim + CONTROL_EXTRA)
    attach_lora(transformer)
    return WanWorldModel(transformer, vae, SCHEDULER, DepthEstimator(depth, size=spec["backbone"]["image_size"]),
                         sampler_steps=sampler_steps)


def seeded_world(backend, width: int, height: int, device: str, use_memory: bool, seed: int) -> World:
    world = World(backend, WorldConfig(width=width, height=height, use_memory=use_memory), device=device)
    scene = make_scene(seed)
    r = scene.render(np.eye(4), width, height)
    world.reset(0, r.rgb, r.depth, static_keep_mask(r.depth, r.labels, far=world.config.far).numpy(), seed=seed)
    return world


def timed_step(world: World, action: int, device: str) -> float:
    start = time.perf_counter()
    world.step(discrete_to_continuous(int(action))[None])
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def run(args) -> dict:
    device, dtype = args.device, resolve_dtype(args.dtype)
    backend = random_backend(not args.quick, device, dtype, args.sampler_steps)
    rng = np.random.default_rng(0)
    walk = rng.choice(9, size=10 * (args.late + args.window), p=[0.3, 0.05, 0.075, 0.075, 0.2, 0.2, 0.05, 0.05, 0.0])
    worlds = {
        "late": seeded_world(backend, args.width, args.height, device, True, 1),
        "early": seeded_world(backend, args.width, args.height, device, True, 2),
        "no_memory": seeded_world(backend, args.width, args.height, device, False, 2),
    }
    lead = {"late": args.late - args.window // 2, "early": args.early - args.window // 2,
            "no_memory": args.early - args.window // 2}
    position = dict.fromkeys(worlds, 0)
    for name, world in worlds.items():  # bring each world to the start of its window
        for _ in range(lead[name]):
            timed_step(world, walk[position[name]], device)
            position[name] += 1
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    times = {name: [] for name in worlds}
    for _ in range(args.window):  # alternate: the same moment for every side
        for name, world in worlds.items():
            times[name].append(timed_step(world, walk[position[name]], device))
            position[name] += 1
    median = {name: float(np.median(t)) for name, t in times.items()}
    frames = backend.frames_per_latent
    return {
        "build": "tiny random (CPU)" if args.quick else "Wan2.2-TI2V-5B architecture, random weights",
        "device": device, "dtype": str(dtype).removeprefix("torch."), "size": f"{args.width}x{args.height}",
        "sampler_steps": args.sampler_steps,
        "seconds_per_step": median["early"],
        "seconds_per_video_frame": median["early"] / frames,
        "seconds_per_step_no_memory": median["no_memory"],
        "late_step": args.late, "early_step": args.early,
        "seconds_per_step_late": median["late"],
        "late_over_early": median["late"] / median["early"],
        "memory_cache_bytes_late": int(worlds["late"].memory_stats(0)["bytes"]),
        "memory_points_late": int(worlds["late"].memory_stats(0)["points"]),
        "peak_gpu_memory_gb": torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None,
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny random build on the CPU, 64x64 (the tests run it)")
    parser.add_argument("--device", default=None, help="default: cuda, or cpu with --quick")
    parser.add_argument("--dtype", default=None, help="default: bfloat16, or float32 with --quick")
    parser.add_argument("--width", type=int, default=None, help="default 1280 (64 with --quick)")
    parser.add_argument("--height", type=int, default=None, help="default 704 (64 with --quick)")
    parser.add_argument("--sampler-steps", type=int, default=20)
    parser.add_argument("--early", type=int, default=20, help="the fresh world's step compared with --late")
    parser.add_argument("--late", type=int, default=300)
    parser.add_argument("--window", type=int, default=10, help="steps timed on each side")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default 1 with --quick: a busy CPU makes more threads far slower)")
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args(argv)
    quick = args.quick
    args.device = args.device or ("cpu" if quick else "cuda")
    args.dtype = args.dtype or ("float32" if quick else "bfloat16")
    args.width, args.height = args.width or (64 if quick else 1280), args.height or (64 if quick else 704)
    if quick:
        args.early, args.late = min(args.early, 10), min(args.late, 50)
    if args.late - args.window // 2 < args.early + args.window:
        parser.error("--late must exceed --early by more than --window")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("no CUDA device here: run with --quick on a CPU")
    threads = args.threads or (1 if quick else None)
    if threads is not None:
        if threads < 1:
            parser.error(f"--threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="no Mirage add-on")
        result = run(args)
    rows = [
        ("build", result["build"]), ("device / dtype", f"{result['device']} / {result['dtype']}"),
        ("frame size", result["size"]), ("sampler steps", result["sampler_steps"]),
        ("seconds per env step (4 video frames)", f"{result['seconds_per_step']:.3f}"),
        ("seconds per video frame", f"{result['seconds_per_video_frame']:.3f}"),
        ("seconds per step, memory off", f"{result['seconds_per_step_no_memory']:.3f}"),
        (f"step {result['late_step']} / step {result['early_step']}", f"{result['late_over_early']:.2f}"),
        (f"memory cache at step {result['late_step']}", f"{result['memory_cache_bytes_late'] / 2**20:.2f} MB"),
        ("peak GPU memory", "n/a" if result["peak_gpu_memory_gb"] is None else f"{result['peak_gpu_memory_gb']:.1f} GB"),
    ]
    print("| measure | value |\n|---|---:|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
