"""The ``mirage-gym`` command. Imports are lazy so ``--help`` stays fast."""

from __future__ import annotations

import argparse
import sys


def _render(args) -> None:
    import imageio.v3 as iio
    import numpy as np

    from mirage_gym.geometry import pose_from_state
    from mirage_gym.scenes import make_scene

    scene = make_scene(args.seed, kind=args.kind, dynamic_objects=args.dynamic)
    yaws = np.radians(np.arange(0, 360, 360 / args.views))
    frames = [scene.render(pose_from_state(np.array([0, 0, 0, y, 0, 0])), args.size, args.size).rgb for y in yaws]
    iio.imwrite(args.out, np.concatenate(frames, axis=1))
    print(f"wrote {args.out}: {scene.kind} scene {args.seed}, {args.views} views around the start")


def _play(args) -> None:
    import gymnasium as gym
    from gymnasium.utils.play import play

    import mirage_gym  # noqa: F401  (registers the ids)
    from mirage_gym.geometry import Action

    env = gym.make(args.env, render_mode="rgb_array", render_map=args.map, model=args.model)
    print("keys: w/s forward/back, a/d strafe, q/e turn, r/f look up/down, esc quits")
    play(env, keys_to_action=env.unwrapped.get_keys_to_action(), noop=int(Action.NOOP), fps=8, zoom=args.zoom, seed=args.seed)


def _demo(args) -> None:
    from mirage_gym.demo import run_demo

    summary = run_demo(args.out, seed=args.seed, model=args.model, env_id=args.env)
    print(
        f"toured {summary['steps']} steps at {summary['steps_per_second']:.1f} steps/s, "
        f"reward {summary['reward']:.2f}, {summary['collisions']} blocked moves, "
        f"memory {summary['memory_points']} points / {summary['memory_bytes'] / 1024:.0f} KiB"
    )
    print(f"video: {summary['video']}\nframe strip: {summary['strip']}")


def _export_clips(args) -> None:
    from mirage_gym.training.data import export_clips

    paths = export_clips(args.out, args.clips, args.frames, args.width, args.height, seed=args.seed)
    print(f"wrote {len(paths)} clips of {args.frames} frames ({args.width}x{args.height}) to {args.out}")


def _train_wan(args) -> None:
    from dataclasses import fields

    from mirage_gym.training.wan import WanTrainConfig, train_wan

    if not args.base or not args.data:
        raise SystemExit("mirage-gym train wan: --base and --data are required")
    args.out = args.out or "runs/wan-addon"
    cfg = WanTrainConfig(**{f.name: getattr(args, f.name) for f in fields(WanTrainConfig)
                            if getattr(args, f.name, None) is not None})
    print(f"add-on: {train_wan(cfg)}")


def _train(args) -> None:
    if args.backend == "wan":
        return _train_wan(args)
    import shutil
    from dataclasses import fields

    from mirage_gym.models import shipped_model_path
    from mirage_gym.training import TinyTrainConfig, train_tiny

    overrides = {f.name: getattr(args, f.name) for f in fields(TinyTrainConfig) if getattr(args, f.name, None) is not None}
    model_dir = train_tiny(args.out or "runs/tiny", TinyTrainConfig(**overrides))
    print(f"model: {model_dir}")
    if args.ship:
        target = shipped_model_path()
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(model_dir, target)
        print(f"shipped as the default model: {target}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mirage-gym", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="scripted tour of a generated world on the default model (mp4 + PNG strip)")
    demo.add_argument("--out", default="outputs/demo")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--model", default="tiny", help="'tiny' (shipped) or a local model directory")
    demo.add_argument("--env", default="MirageWorld-v0")
    demo.set_defaults(func=_demo)

    render = sub.add_parser("render", help="render views around the start of a procedural scene to a PNG strip")
    render.add_argument("--seed", type=int, default=0)
    render.add_argument("--kind", choices=["indoor", "outdoor"], default=None)
    render.add_argument("--dynamic", type=int, default=0, help="number of labelled dynamic objects")
    render.add_argument("--size", type=int, default=128)
    render.add_argument("--views", type=int, default=8)
    render.add_argument("--out", default="scene.png")
    render.set_defaults(func=_render)

    export = sub.add_parser("export-clips", help="write procedural-scene clips with poses and depth (training data)")
    export.add_argument("--out", required=True)
    export.add_argument("--clips", type=int, default=64)
    export.add_argument("--frames", type=int, default=17, help="1 + 4n frames fill whole Wan latent frames")
    export.add_argument("--width", type=int, default=64)
    export.add_argument("--height", type=int, default=64)
    export.add_argument("--seed", type=int, default=0)
    export.set_defaults(func=_export_clips)

    train = sub.add_parser("train", help="train the embedded model from scratch, or a Mirage add-on on a Wan2.2 base")
    train.add_argument("backend", choices=["tiny", "wan"])
    train.add_argument("--out", default=None, help="tiny: checkpoints, logs, data cache and the model directory "
                       "(default runs/tiny); wan: the add-on directory (default runs/wan-addon)")
    train.add_argument("--base", help="wan: a local Wan2.2-TI2V diffusers directory")
    train.add_argument("--data", help="wan: a folder of clips (see mirage_gym.clips)")
    train.add_argument("--stage", choices=["vace", "lora", "both"], default=None, help="wan: default both")
    train.add_argument("--max-steps", dest="max_steps", type=int, default=None, help="wan: optimizer steps per stage")
    train.add_argument("--lr", type=float, default=None)
    train.add_argument("--batch-size", dest="batch_size", type=int, default=None)
    train.add_argument("--checkpoint-every", dest="checkpoint_every", type=int, default=None)
    train.add_argument("--mixed-precision", dest="mixed_precision", choices=["no", "bf16"], default=None)
    train.add_argument("--gradient-checkpointing", dest="gradient_checkpointing", action="store_true", default=None)
    train.add_argument("--resume", action="store_true", default=None, help="wan: continue from the latest checkpoint")
    train.add_argument("--ship", action="store_true", help="copy the trained model into the package as 'tiny'")
    for name, kind in (("sequences", int), ("codec_steps", int), ("generator_steps", int), ("generator_head_dim", int), ("seed", int), ("threads", int)):
        train.add_argument(f"--{name.replace('_', '-')}", dest=name, type=kind, default=None)
    train.set_defaults(func=_train)

    # ``eval`` hands its arguments to agents/evaluate.py (see main); listed here for --help
    sub.add_parser("eval", help="scripted exploration evaluation: report folder with JSON, table, plots, videos", add_help=False)

    # ``score`` hands its arguments to agents/score.py (see main); listed here for --help
    sub.add_parser("score", help="world-consistency scores (camera control, flow, reprojection, loops) with and without memory", add_help=False)

    play = sub.add_parser("play", help="walk through a world with the keyboard (needs a display)")
    play.add_argument("--env", default="MirageWorld-v0")
    play.add_argument("--model", default="tiny", help="'tiny' (shipped) or a local model directory")
    play.add_argument("--seed", type=int, default=0)
    play.add_argument("--zoom", type=float, default=8.0)
    play.add_argument("--map", action="store_true", help="show the bird's-eye memory map beside the frame")
    play.set_defaults(func=_play)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["eval"]:
        from mirage_gym.agents.evaluate import main as evaluate

        evaluate(argv[1:])
        return 0
    if argv[:1] == ["score"]:
        from mirage_gym.agents.score import main as score

        return score(argv[1:])
    args = build_parser().parse_args(argv)
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
