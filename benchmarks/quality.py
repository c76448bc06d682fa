"""World-model quality on held-out procedural scenes, with memory and with memory disabled.

    python benchmarks/quality.py [--quick] [--json PATH] [--model tiny] [--out DIR]

Loops (frames compared at the same pose): (a) turn_360, a full turn in 24 steps;
(b) out_and_back, 8 steps forward then 8 back; (c) revisit_generated, turn 90 degrees
into views the seed never showed, come back, turn again: the two visits of *generated*
content (PSNR capped at 100 dB: a loop that closes exactly gives identical frames).
Also: fidelity to the true render over frames at least 80% covered by memory (and split
by what memory holds there: surfaces the seed showed, or surfaces generated earlier), depth
AbsRel, sharpness (gradient energy relative to the true render), and the median time of
one world step at 64x64. The frame scores are also given for a perfect generator in the
same pipeline (``truth_fill``: the true latent wherever memory is empty), the ceiling
that memory, the latent-resolution copy and the codec leave. Writes PNG strips and mp4s
of one loop of each kind.
Bars: loops (a), (b) >= 25 dB and (c) >= 22 dB with memory, memory off >= 6 dB lower;
fidelity >= 22 dB; AbsRel <= 0.15; sharpness >= 0.85; step <= 40 ms.

Structure of what the generator invents (measures fog and noise cannot win; issue 21): views
the seed frame never showed (under 5% of their pixels covisible with it) and, separately,
partly covered views (5-80%), scored on their invented pixels against the true render:
sharpness (Sobel gradient energy relative to the truth's, median), edge-orientation
histogram distance (KL, with white noise's for the same views) and colour-histogram
distance (Bhattacharyya) and the off-palette share (pixels in colours the true view hardly
holds: foreign flecks, no bar). Bars: invented views' sharpness >= 0.7 and orientation distance
under half of white noise's. Per-frame measures cannot see a generator that paints the same
strip at every step of a turn (the invented world then repeats with the step and looks
still), so the turn loop's camera control is scored too: the rotation error per step that
``mirage_gym.metrics.score_rollout`` estimates from the frames (no bar: compare models; a
turn that looks still scores near the 15-degree step). ``--compare-to MODEL`` times one world
step of both models side by side (steps alternated) and prints the ratio.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from mirage_gym.evaluation import HELD_OUT_SEED, LOOPS, run_episode, seed_covisible
from mirage_gym.geometry import Action, discrete_to_continuous
from mirage_gym.metrics import capped_psnr, depth_abs_rel, psnr, sharpness_ratio, ssim, structure_scores

INVENTED_BELOW = 0.05  # seed-covisible share under which a view counts as invented
PARTLY_BELOW = 0.8  # ... and under which (at least INVENTED_BELOW) as partly covered
from mirage_gym.world import World, WorldConfig


def loop_scores(episode, pairs) -> dict:
    scores = {"psnr": [], "ssim": [], "psnr_vs_truth": []}
    for a, b in pairs:
        for i in range(episode.rgb.shape[1]):
            if not np.allclose(episode.poses[a, i], episode.poses[b, i], atol=1e-6):
                continue  # a blocked move: the camera did not come back
            scores["psnr"].append(capped_psnr(episode.rgb[b, i], episode.rgb[a, i]))
            scores["ssim"].append(ssim(episode.rgb[b, i], episode.rgb[a, i]))
            scores["psnr_vs_truth"].append(psnr(episode.rgb[b, i], episode.true_rgb[b, i]))
    out = {k: float(np.mean(v)) if v else float("nan") for k, v in scores.items()}
    out["loops_closed"] = len(scores["psnr"])
    return out


def frame_scores(episodes, fov_deg: float = 90.0) -> dict:
    """Fidelity over well-covered generated frames, depth AbsRel and sharpness. The covered
    frames are also split by what memory holds there: surfaces the seed showed (one true
    answer, memory's to keep) or surfaces the generator invented earlier in the episode
    (their PSNR against the true render scores the invention, where the conditional mean wins)."""
    fidelity, abs_rel, sharp, ceiling = [], [], [], []
    by_source = {"seen": [], "invented": []}
    for ep in episodes:
        seen = seed_covisible(ep, fov_deg)
        ceiling += [psnr(ep.rgb[0, i], ep.true_rgb[0, i]) for i in range(ep.rgb.shape[1])]
        for t in range(1, ep.rgb.shape[0]):
            for i in range(ep.rgb.shape[1]):
                if ep.coverage[t, i] >= 0.8:
                    fidelity.append(psnr(ep.rgb[t, i], ep.true_rgb[t, i]))
                    by_source["seen" if seen[t, i].mean() >= PARTLY_BELOW else "invented"].append(fidelity[-1])
                abs_rel.append(depth_abs_rel(ep.depth[t, i], ep.true_depth[t, i]))
                sharp.append(sharpness_ratio(ep.rgb[t, i], ep.true_rgb[t, i]))
    return {
        "fidelity_psnr_covered": _mean(fidelity),
        "covered_frames": len(fidelity),
        **{f"fidelity_psnr_covered_{k}": _mean(v) for k, v in by_source.items()},
        **{f"covered_{k}_frames": len(v) for k, v in by_source.items()},
        "depth_abs_rel": float(np.nanmean(abs_rel)),
        "sharpness": float(np.nanmedian(sharp)),
        "codec_ceiling_psnr": float(np.mean(ceiling)),  # decoded seed frame vs its true render
    }


def _mean(values: list) -> float:
    return float(np.mean(values)) if values else float("nan")


def structure_report(episodes, fov_deg: float = 90.0) -> dict:
    """The structure measures over the invented pixels of invented and of partly covered views."""
    groups = {"invented": [], "partly_covered": []}
    for ep in episodes:
        seen = seed_covisible(ep, fov_deg)
        for t in range(1, ep.rgb.shape[0]):
            for i in range(ep.rgb.shape[1]):
                share = float(seen[t, i].mean())
                if share >= PARTLY_BELOW:
                    continue
                group = "invented" if share < INVENTED_BELOW else "partly_covered"
                groups[group].append(structure_scores(ep.rgb[t, i], ep.true_rgb[t, i], ~seen[t, i]))
    out = {}
    for name, scores in groups.items():
        if not scores:
            out[name] = {"views": 0}
            continue
        out[name] = {
            "views": len(scores),
            "sharpness": float(np.nanmedian([s["sharpness"] for s in scores])),
            "orientation_distance": float(np.nanmean([s["orientation_distance"] for s in scores])),
            "noise_orientation_distance": float(np.nanmean([s["noise_orientation_distance"] for s in scores])),
            "color_distance": float(np.nanmean([s["color_distance"] for s in scores])),
            "off_palette": float(np.nanmean([s["off_palette"] for s in scores])),
            "pass_rate": float(np.mean([s["passes"] for s in scores])),
        }
    return out


def camera_control(episode, fov_deg: float = 90.0) -> float:
    """Mean over worlds of the rotation error per step that classical geometry estimates from
    the frames and their depth against the poses the camera was given."""
    from mirage_gym.geometry import intrinsics_from_fov
    from mirage_gym.metrics import score_rollout

    h, w = episode.rgb.shape[2:4]
    k = intrinsics_from_fov(w, h, fov_deg)
    return float(np.mean([score_rollout(episode.rgb[:, i], episode.poses[:, i], k, episode.depth[:, i])
                          ["camera_rotation_error_deg"] for i in range(episode.rgb.shape[1])]))


def step_time_ratio(backend, other, config: WorldConfig, steps: int = 60) -> dict:
    """Median single-world step time of ``backend`` and ``other``, measured side by side:
    two worlds on the same scene and actions, stepped alternately (which goes first swaps
    every step), so the host's state weighs on both alike."""
    from mirage_gym.scenes import make_scene

    r = make_scene(HELD_OUT_SEED).render(np.eye(4), config.width, config.height)
    worlds = [World(b, config) for b in (backend, other)]
    for w in worlds:
        w.reset(0, r.rgb, r.depth)
    rng = np.random.default_rng(0)
    times = [[], []]
    for k, a in enumerate(rng.choice([Action.TURN_LEFT, Action.TURN_RIGHT, Action.MOVE_FORWARD], steps)):
        for j in ((0, 1) if k % 2 == 0 else (1, 0)):
            start = time.perf_counter()
            worlds[j].step(discrete_to_continuous(a)[None])
            times[j].append(time.perf_counter() - start)
    ms = [1000 * float(np.median(t[4:])) for t in times]
    return {"model_ms": ms[0], "other_ms": ms[1], "ratio": ms[0] / ms[1]}


def step_time_ms(backend, config: WorldConfig, steps: int = 30) -> float:
    """Median wall time of one single-world step (read, generate, decode, filter, write)."""
    from mirage_gym.scenes import make_scene

    world = World(backend, config)
    r = make_scene(HELD_OUT_SEED).render(np.eye(4), config.width, config.height)
    world.reset(0, r.rgb, r.depth)
    rng = np.random.default_rng(0)
    times = []
    for a in rng.choice([Action.TURN_LEFT, Action.TURN_RIGHT, Action.MOVE_FORWARD], steps):
        start = time.perf_counter()
        world.step(discrete_to_continuous(a)[None])
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times[3:]))


def save_media(out: Path, name: str, with_memory, without_memory) -> None:
    """Strip (rows: true render, with memory, memory off) of world 0, and an mp4 of it."""
    import imageio.v3 as iio

    rows = [with_memory.true_rgb[:, 0], with_memory.rgb[:, 0], without_memory.rgb[:, 0]]
    strip = np.concatenate([np.concatenate(list(r), axis=1) for r in rows], axis=0)
    iio.imwrite(out / f"{name}.png", strip)
    video = np.concatenate(rows, axis=2)
    video = np.repeat(np.repeat(video, 3, 1), 3, 2)
    iio.imwrite(out / f"{name}.mp4", video, fps=6, codec="libx264", macro_block_size=1)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="4 scenes instead of 20")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--out", default="outputs/quality", help="folder for PNG strips and mp4s")
    parser.add_argument("--scenes", type=int, default=None)
    parser.add_argument("--sampler-steps", type=int, default=None, help="override the model's sampler steps")
    parser.add_argument("--compare-to", default=None, help="time one step of this model beside --model's")
    args = parser.parse_args(argv)

    from mirage_gym.models import load_backend

    backend = load_backend(args.model)
    if args.sampler_steps is not None:  # the same weights with another number of sampler steps
        from mirage_gym.models.sampler import FlowMatchEulerSampler

        backend = copy.copy(backend)
        backend.sampler = FlowMatchEulerSampler(args.sampler_steps, backend.sampler.shift)
    n = args.scenes or (4 if args.quick else 20)
    seeds = list(range(HELD_OUT_SEED, HELD_OUT_SEED + n))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = WorldConfig()
    results: dict = {"scenes": n, "seeds": [seeds[0], seeds[-1]], "loops": {}}
    episodes = {True: [], False: []}
    for name, (actions, pairs) in LOOPS.items():
        runs = {}
        for use_memory in (True, False):
            ep = run_episode(backend, seeds, actions, replace(base, use_memory=use_memory))
            runs[use_memory] = ep
            episodes[use_memory].append(ep)
            results["loops"].setdefault(name, {})["memory" if use_memory else "no_memory"] = loop_scores(ep, pairs)
            if name == "turn_360":
                results.setdefault("turn_rotation_error_deg", {})["memory" if use_memory else "no_memory"] = \
                    camera_control(ep, base.fov_deg)
        save_media(out, name, runs[True], runs[False])
    ceiling = [run_episode(backend, seeds, actions, base, truth_fill=True) for actions, _ in LOOPS.values()]
    rollouts = {"memory": episodes[True], "no_memory": episodes[False], "truth_fill": ceiling}
    results["frames"] = {key: frame_scores(eps, base.fov_deg) for key, eps in rollouts.items()}
    results["structure"] = {key: structure_report(eps, base.fov_deg) for key, eps in rollouts.items()}
    results["step_ms"] = step_time_ms(backend, base)
    if args.compare_to:
        results["step_vs_other"] = {"other": args.compare_to,
                                    **step_time_ratio(backend, load_backend(args.compare_to), base)}

    print(f"{'loop':20s} {'PSNR mem':>9s} {'PSNR off':>9s} {'gap':>6s} {'SSIM mem':>9s} {'SSIM off':>9s} {'vs truth':>9s} {'closed':>7s}")
    for name, r in results["loops"].items():
        m, o = r["memory"], r["no_memory"]
        print(
            f"{name:20s} {m['psnr']:9.2f} {o['psnr']:9.2f} {m['psnr'] - o['psnr']:6.2f} {m['ssim']:9.3f} "
            f"{o['ssim']:9.3f} {m['psnr_vs_truth']:9.2f} {m['loops_closed']:7d}"
        )
    r = results["turn_rotation_error_deg"]
    print(f"camera control over the turn: rotation error {r['memory']:.2f} deg per step with memory, "
          f"{r['no_memory']:.2f} without")
    for key in ("memory", "no_memory", "truth_fill"):
        f = results["frames"][key]
        print(
            f"{key:10s} fidelity (covered) {f['fidelity_psnr_covered']:.2f} dB over {f['covered_frames']} frames "
            f"(memory of seen surfaces {f['fidelity_psnr_covered_seen']:.2f} dB, {f['covered_seen_frames']}; "
            f"of invented ones {f['fidelity_psnr_covered_invented']:.2f} dB, {f['covered_invented_frames']}), "
            f"depth AbsRel {f['depth_abs_rel']:.3f}, sharpness {f['sharpness']:.2f}, "
            f"codec ceiling {f['codec_ceiling_psnr']:.2f} dB"
        )
    print(f"{'structure':22s} {'views':>6s} {'sharpness':>9s} {'orient KL':>9s} {'noise KL':>9s} {'colour':>7s} "
          f"{'off-pal':>7s} {'pass':>5s}")
    for key in ("memory", "no_memory", "truth_fill"):
        for group, g in results["structure"][key].items():
            if g["views"]:
                print(f"{key + ' ' + group:22s} {g['views']:6d} {g['sharpness']:9.2f} {g['orientation_distance']:9.3f} "
                      f"{g['noise_orientation_distance']:9.3f} {g['color_distance']:7.3f} {g['off_palette']:7.3f} "
                      f"{g['pass_rate']:5.2f}")
    print(f"one world step at 64x64: {results['step_ms']:.1f} ms (median)")
    if args.compare_to:
        r = results["step_vs_other"]
        print(f"side by side, alternated: {r['model_ms']:.1f} ms vs {r['other_ms']:.1f} ms for {r['other']} "
              f"(ratio {r['ratio']:.3f})")
    print(f"strips and videos in {out}/")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
