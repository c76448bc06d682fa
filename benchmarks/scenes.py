"""Procedural scene renderer speed: median milliseconds per frame by resolution.

Renders a few dozen random free poses (``scene.sample_free_pose``) in several indoor and
outdoor scenes at 64x64, 128x128 and 256x256 with the default anti-aliasing (3x3 subsamples
up to 64 px, 2x2 plus an exact pixel-centre pass up to 256 px), plus 64x64 without
supersampling for reference, and the time to build a scene. Poses are drawn before timing;
each timed call is one complete ``scene.render`` (RGB + depth + labels). Targets on 2 CPU
cores: 5 ms at 64x64, 50 ms at 256x256.

    python benchmarks/scenes.py             # 4 indoor + 4 outdoor scenes x 8 poses
    python benchmarks/scenes.py --quick     # 2 + 2 scenes x 4 poses, 64 and 256 only
    python benchmarks/scenes.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mirage_gym.scenes import default_supersample, make_scene  # noqa: E402


def _time_renders(scenes, poses, size: int, supersample: int | None) -> dict:
    """Median / p90 ms per render overall and per scene kind (one warm-up render per scene)."""
    by_kind: dict[str, list[float]] = {"indoor": [], "outdoor": []}
    for scene, scene_poses in zip(scenes, poses):
        scene.render(scene_poses[0], size, size, supersample=supersample)
        for pose in scene_poses:
            start = time.perf_counter()
            scene.render(pose, size, size, supersample=supersample)
            by_kind[scene.kind].append(1000.0 * (time.perf_counter() - start))
    every = by_kind["indoor"] + by_kind["outdoor"]
    return {
        "size": size,
        "supersample": supersample if supersample is not None else default_supersample(size, size),
        "frames": len(every),
        "median_ms": statistics.median(every),
        "p90_ms": float(np.percentile(every, 90)),
        "indoor_median_ms": statistics.median(by_kind["indoor"]),
        "outdoor_median_ms": statistics.median(by_kind["outdoor"]),
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer scenes and poses, 64 and 256 px only")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)

    per_kind, per_scene = (2, 4) if args.quick else (4, 8)
    build_ms, scenes = [], []
    for kind in ("indoor", "outdoor"):
        for seed in range(per_kind):
            start = time.perf_counter()
            scenes.append(make_scene(seed, kind, dynamic_objects=seed % 3))
            build_ms.append(1000.0 * (time.perf_counter() - start))
    poses = []
    for i, scene in enumerate(scenes):
        rng = np.random.default_rng(1000 + i)
        poses.append([np.eye(4)] + [scene.sample_free_pose(rng) for _ in range(per_scene - 1)])

    configs = [(64, None), (64, 1), (256, None)] if args.quick else [(64, None), (64, 1), (128, None), (256, None)]
    rows = [_time_renders(scenes, poses, size, ss) for size, ss in configs]

    print(f"scene renderer, {len(scenes)} scenes x {per_scene} poses, numpy {np.__version__}, {os.cpu_count()} CPUs")
    print(f"{'size':>9} {'ss':>3} {'frames':>6} {'median ms':>10} {'p90 ms':>8} {'indoor':>8} {'outdoor':>8}")
    for r in rows:
        print(f"{r['size']:>4}x{r['size']:<4} {r['supersample']:>3} {r['frames']:>6} {r['median_ms']:>10.2f} "
              f"{r['p90_ms']:>8.2f} {r['indoor_median_ms']:>8.2f} {r['outdoor_median_ms']:>8.2f}")
    print(f"make_scene: median {statistics.median(build_ms):.1f} ms")

    result = {
        "benchmark": "scenes",
        "quick": args.quick,
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "numpy": np.__version__, "cpus": os.cpu_count()},
        "renders": rows,
        "make_scene_median_ms": statistics.median(build_ms),
        "targets_ms": {"64": 5.0, "256": 50.0},
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
