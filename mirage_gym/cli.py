"""The ``mirage-gym`` command. Imports are lazy so ``--help`` stays fast.

Bad arguments end in a one-line message and exit status 2 (argparse's convention); an
error while running (an unreadable model, an unwritable output) in a one-line message and
exit status 1, with nothing half-written left behind. ``MIRAGE_GYM_TRACEBACK=1`` shows the
traceback instead.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
from pathlib import Path


class CommandError(Exception):
    """An error the command reports in one line (exit status 1)."""


def _int_at_least(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def _env_id(text: str) -> str:
    import gymnasium as gym

    import mirage_gym  # noqa: F401  (registers the ids)

    if text not in gym.registry or not text.startswith("Mirage"):
        ids = sorted(k for k in gym.registry if k.startswith("Mirage"))
        raise argparse.ArgumentTypeError(f"unknown env id {text!r}; choose from {ids}")
    return text


def _model(text: str) -> str:
    if text != "tiny" and not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"expected 'tiny' or a local model directory, got {text!r} (no such folder)")
    return text


SEED = _int_at_least(0)
COUNT = _int_at_least(1)


@contextlib.contextmanager
def _new_output(path: str | Path, folder: bool):
    """Yield ``path`` for the command to write; if the command fails, remove what it made
    there (a folder it created, or the file), so no half-written output is left."""
    path = Path(path)
    parent = path if folder else path.parent
    existed = path.exists()
    if folder and existed and not path.is_dir():
        raise CommandError(f"--out {path} exists and is not a folder")
    if not folder and path.is_dir():
        raise CommandError(f"--out {path} is a folder; give a file name")
    nearest = next((p for p in [parent, *parent.parents] if p.exists()), None)  # the folder it would be made in
    if nearest is not None and not (nearest.is_dir() and os.access(nearest, os.W_OK)):
        raise CommandError(f"--out {path} is not writable ({nearest} is not a writable folder)")
    try:
        yield path
    except BaseException:
        if not existed:
            if folder:
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        raise


def _render(args) -> None:
    import imageio.v3 as iio
    import numpy as np

    from mirage_gym.geometry import pose_from_state
    from mirage_gym.scenes import make_scene

    seed = args.seed
    if args.reset_seed is not None:
        from mirage_gym.env import reset_scene_seed

        seed = reset_scene_seed(args.reset_seed)
    scene = make_scene(seed, kind=args.kind, dynamic_objects=args.dynamic)
    yaws = np.radians(np.arange(args.views) * 360 / args.views)
    frames = [scene.render(pose_from_state(np.array([0, 0, 0, y, 0, 0])), args.size, args.size).rgb for y in yaws]
    with _new_output(args.out, folder=False) as out:
        iio.imwrite(out, np.concatenate(frames, axis=1))
    via = f" (the scene reset(seed={args.reset_seed}) starts from)" if args.reset_seed is not None else ""
    print(f"wrote {args.out}: {scene.kind} scene {seed}{via}, {args.views} views around the start")


def _play(args) -> None:
    import importlib.util

    if importlib.util.find_spec("pygame") is None:
        raise CommandError("play opens a pygame window; pygame is not installed: pip install 'mirage-gym[play]'")
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
                                                 or os.environ.get("SDL_VIDEODRIVER")):
        raise CommandError("play needs a display (no DISPLAY or WAYLAND_DISPLAY is set); "
                           "for a headless run use `mirage-gym demo`, which writes a video")
    import gymnasium as gym
    from gymnasium.utils.play import play

    import mirage_gym  # noqa: F401  (registers the ids)
    from mirage_gym.geometry import Action

    env = gym.make(args.env, render_mode="rgb_array", render_map=args.map, model=args.model)
    print("keys: w/s forward/back, a/d strafe, q/e turn, r/f look up/down, esc quits")
    play(env, keys_to_action=env.unwrapped.get_keys_to_action(), noop=int(Action.NOOP), fps=8, zoom=args.zoom, seed=args.seed)


def _demo(args) -> None:
    from mirage_gym.demo import run_demo

    with _new_output(args.out, folder=True) as out:
        summary = run_demo(out, seed=args.seed, model=args.model, env_id=args.env)
    print(
        f"toured {summary['steps']} steps at {summary['steps_per_second']:.1f} steps/s, "
        f"reward {summary['reward']:.2f}, {summary['collisions']} blocked moves, "
        f"memory {summary['memory_points']} points / {summary['memory_bytes'] / 1024:.0f} KiB"
    )
    print(f"video: {summary['video']}\nframe strip: {summary['strip']}")


def _export_clips(args) -> None:
    from mirage_gym.training.data import export_clips

    with _new_output(args.out, folder=True) as out:
        paths = export_clips(out, args.clips, args.frames, args.width, args.height, seed=args.seed)
    print(f"wrote {len(paths)} clips of {args.frames} frames ({args.width}x{args.height}) to {args.out}")


def _train_wan(args) -> None:
    from dataclasses import fields

    from mirage_gym.training.wan import WanTrainConfig, train_wan

    if not args.base or not args.data:
        raise CommandError("train wan needs --base (a Wan2.2-TI2V directory) and --data (a folder of clips)")
    args.out = args.out or "runs/wan-addon"
    cfg = WanTrainConfig(**{f.name: getattr(args, f.name) for f in fields(WanTrainConfig)
                            if getattr(args, f.name, None) is not None})
    print(f"add-on: {train_wan(cfg)}")


def _train(args) -> None:
    if args.backend == "wan":
        return _train_wan(args)
    from dataclasses import fields

    from mirage_gym.models import shipped_model_path
    from mirage_gym.training import TinyTrainConfig, train_tiny

    overrides = {f.name: getattr(args, f.name) for f in fields(TinyTrainConfig) if getattr(args, f.name, None) is not None}
    with _new_output(args.out or "runs/tiny", folder=True) as out:
        model_dir = train_tiny(out, TinyTrainConfig(**overrides))
    print(f"model: {model_dir}")
    if args.ship:
        target = shipped_model_path()
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(model_dir, target)
        print(f"shipped as the default model: {target}")


def _program(name: str):
    """The ``main`` of a subcommand the agents' programs provide (``eval``, ``score``), found
    through the ``mirage_gym.commands`` entry points: the library does not import them."""
    from importlib.metadata import entry_points

    found = entry_points(group="mirage_gym.commands", name=name)
    if not found:
        raise CommandError(f"no program for '{name}' is installed (entry point group mirage_gym.commands); "
                           "reinstall mirage-gym")
    return next(iter(found)).load()


def _evaluate(argv: list[str]) -> None:
    _program("eval")(argv)


def _score(argv: list[str]) -> int:
    return _program("score")(argv)


def _env_setting(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` for an env argument; VALUE is read as JSON where it parses (numbers,
    true/false, null, lists), as a plain string otherwise."""
    import json

    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (an env argument), got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _serve(args) -> None:
    import importlib.util

    missing = [name for name in ("starlette", "uvicorn") if importlib.util.find_spec(name) is None]
    if missing:
        raise CommandError(f"serve needs {' and '.join(missing)}: pip install 'mirage-gym[serve]'")
    from mirage_gym.serve import ServeConfig, check_config, serve

    config = ServeConfig(env_id=args.env_id, env_kwargs={"model": args.model, **dict(args.set or [])},
                         max_sessions=args.max_sessions, idle_timeout=args.idle_timeout, workers=args.workers,
                         start_seed=args.seed)
    check_config(config)  # builds one env now, so bad arguments fail here and the model is loaded once
    where = f"http://{args.host if ':' not in args.host else f'[{args.host}]'}:{args.port}/"
    print(f"serving {args.env_id} at {where} (up to {args.max_sessions} worlds; ctrl-c stops)", flush=True)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {args.host}: anyone who can reach this port can use the server "
              "(there is no login); prefer the default 127.0.0.1 and an SSH tunnel", file=sys.stderr, flush=True)
    serve(config, host=args.host, port=args.port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mirage-gym", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="scripted tour of a generated world on the default model (mp4 + PNG strip)")
    demo.add_argument("--out", default="outputs/demo")
    demo.add_argument("--seed", type=SEED, default=0)
    demo.add_argument("--model", type=_model, default="tiny", help="'tiny' (shipped) or a local model directory")
    demo.add_argument("--env", type=_env_id, default="MirageWorld-v0")
    demo.set_defaults(func=_demo)

    render = sub.add_parser("render", help="render views around the start of a procedural scene to a PNG strip")
    render.add_argument("--seed", type=SEED, default=0,
                        help="the scene seed: the scene of reset(options={'scene_seed': SEED})")
    render.add_argument("--reset-seed", type=SEED, default=None,
                        help="show instead the scene reset(seed=N) starts from (it draws its scene seed from its RNG)")
    render.add_argument("--kind", choices=["indoor", "outdoor"], default=None)
    render.add_argument("--dynamic", type=SEED, default=0, help="number of labelled dynamic objects")
    render.add_argument("--size", type=_int_at_least(8), default=128)
    render.add_argument("--views", type=COUNT, default=8)
    render.add_argument("--out", default="scene.png")
    render.set_defaults(func=_render)

    export = sub.add_parser("export-clips", help="write procedural-scene clips with poses and depth (training data)")
    export.add_argument("--out", required=True)
    export.add_argument("--clips", type=COUNT, default=64)
    export.add_argument("--frames", type=_int_at_least(2), default=17, help="1 + 4n frames fill whole Wan latent frames")
    export.add_argument("--width", type=_int_at_least(8), default=64)
    export.add_argument("--height", type=_int_at_least(8), default=64)
    export.add_argument("--seed", type=SEED, default=0)
    export.set_defaults(func=_export_clips)

    train = sub.add_parser("train", help="train the embedded model from scratch, or a Mirage add-on on a Wan2.2 base")
    train.add_argument("backend", choices=["tiny", "wan"])
    train.add_argument("--out", default=None, help="tiny: checkpoints, logs, data cache and the model directory "
                       "(default runs/tiny); wan: the add-on directory (default runs/wan-addon)")
    train.add_argument("--base", help="wan: a local Wan2.2-TI2V diffusers directory")
    train.add_argument("--data", help="wan: a folder of clips (see mirage_gym.clips)")
    train.add_argument("--stage", choices=["vace", "lora", "both"], default=None, help="wan: default both")
    train.add_argument("--max-steps", dest="max_steps", type=COUNT, default=None, help="wan: optimizer steps per stage")
    train.add_argument("--lr", type=_positive_float, default=None)
    train.add_argument("--batch-size", dest="batch_size", type=COUNT, default=None)
    train.add_argument("--checkpoint-every", dest="checkpoint_every", type=COUNT, default=None)
    train.add_argument("--mixed-precision", dest="mixed_precision", choices=["no", "bf16"], default=None)
    train.add_argument("--gradient-checkpointing", dest="gradient_checkpointing", action="store_true", default=None)
    train.add_argument("--detour-prob", dest="detour_prob", type=float, default=None,
                       help="wan: share of samples whose context ends before the target, so only memory shows it")
    train.add_argument("--max-detour", dest="max_detour", type=COUNT, default=None,
                       help="wan: latent frames between a detour sample's context and its target, at most")
    train.add_argument("--resume", action="store_true", default=None, help="wan: continue from the latest checkpoint")
    train.add_argument("--ship", action="store_true", help="copy the trained model into the package as 'tiny'")
    for name, kind in (("sequences", COUNT), ("codec_steps", COUNT), ("generator_steps", COUNT), ("generator_head_dim", COUNT),
                       ("seed", SEED), ("threads", COUNT)):
        train.add_argument(f"--{name.replace('_', '-')}", dest=name, type=kind, default=None)
    train.set_defaults(func=_train)

    # ``eval`` hands its arguments to agents/evaluate.py (see main); listed here for --help
    sub.add_parser("eval", help="scripted exploration evaluation: report folder with JSON, table, plots, videos", add_help=False)

    # ``score`` hands its arguments to agents/score.py (see main); listed here for --help
    sub.add_parser("score", help="world-consistency scores (camera control, flow, reprojection, loops) with and without memory", add_help=False)

    play = sub.add_parser("play", help="walk through a world with the keyboard (needs a display)")
    play.add_argument("--env", type=_env_id, default="MirageWorld-v0")
    play.add_argument("--model", type=_model, default="tiny", help="'tiny' (shipped) or a local model directory")
    play.add_argument("--seed", type=SEED, default=0)
    play.add_argument("--zoom", type=_positive_float, default=8.0)
    play.add_argument("--map", action="store_true", help="show the bird's-eye memory map beside the frame")
    play.set_defaults(func=_play)

    serve = sub.add_parser("serve", help="walk generated worlds in a browser: one world per connected page")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=_int_at_least(0), default=8000)
    serve.add_argument("--env-id", dest="env_id", type=_env_id, default="MirageWorld-v0")
    serve.add_argument("--model", type=_model, default="tiny", help="'tiny' (shipped) or a local model directory")
    serve.add_argument("--set", action="append", type=_env_setting, metavar="KEY=VALUE",
                       help="another env argument, e.g. --set width=128 --set memory=color (repeatable)")
    serve.add_argument("--seed", type=SEED, default=0, help="the reset seed of the world a new page starts in")
    serve.add_argument("--max-sessions", dest="max_sessions", type=COUNT, default=4, help="worlds at once")
    serve.add_argument("--idle-timeout", dest="idle_timeout", type=_positive_float, default=600.0,
                       help="seconds without a message before a world is closed")
    serve.add_argument("--workers", type=COUNT, default=None, help="threads stepping worlds (default: one per core, at least 2)")
    serve.set_defaults(func=_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["eval"]:
        args = argparse.Namespace(command="eval", func=lambda _: _evaluate(argv[1:]))
    elif argv[:1] == ["score"]:
        args = argparse.Namespace(command="score", func=lambda _: _score(argv[1:]))
    else:
        args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
    except KeyboardInterrupt:
        print(f"mirage-gym {args.command}: interrupted", file=sys.stderr)
        return 130
    except (CommandError, ValueError, OSError) as exc:  # ModelLoadError and SnapshotError are ValueErrors
        if os.environ.get("MIRAGE_GYM_TRACEBACK"):
            raise
        print(f"mirage-gym {args.command}: error: {exc}", file=sys.stderr)
        return 1
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
