"""Before / after strips of held-out loops: the true render, one model, another model.

    python benchmarks/strips.py --after runs/adversarial/model [--before tiny] [--out outputs/strips]

For each loop of the quality benchmark (`turn_360`, `out_and_back`, `revisit_generated`)
and each held-out scene, one PNG: rows = true render, ``--before``, ``--after``; columns =
steps. A red bar over a column marks a view the seed frame never showed (under 5% of its
pixels covisible with it): everything in it was invented. ``--docs PATH`` also writes one
small strip (the middle of the turn, two scenes) for the documentation.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from mirage_gym.evaluation import HELD_OUT_SEED, LOOPS, run_episode, seed_covisible
from mirage_gym.world import WorldConfig

BAR = 4  # pixels of the marker row


def strip(rows: list[np.ndarray], invented: np.ndarray, columns) -> np.ndarray:
    """(rows x columns) grid of 64x64 frames with a marker row on top; ``rows``: (T, H, W, 3) each."""
    h, w = rows[0].shape[1:3]
    marker = np.full((BAR, len(columns) * w, 3), 255, np.uint8)
    for k, t in enumerate(columns):
        if invented[t]:
            marker[:, k * w + 1 : (k + 1) * w - 1] = (220, 30, 30)
    grid = [np.concatenate([r[t] for t in columns], axis=1) for r in rows]
    return np.concatenate([marker, *grid], axis=0)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", default="tiny")
    parser.add_argument("--after", required=True)
    parser.add_argument("--scenes", type=int, default=4, help="held-out scenes from the quality benchmark's first")
    parser.add_argument("--out", default="outputs/strips")
    parser.add_argument("--docs", default=None, help="also write a small strip here")
    args = parser.parse_args(argv)

    import imageio.v3 as iio

    from mirage_gym.models import load_backend

    models = [load_backend(args.before), load_backend(args.after)]
    seeds = list(range(HELD_OUT_SEED, HELD_OUT_SEED + args.scenes))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    config = WorldConfig()
    docs_rows = []
    for name, (actions, _) in LOOPS.items():
        before, after = (run_episode(m, seeds, actions, config) for m in models)
        invented = seed_covisible(before, config.fov_deg).mean(axis=(2, 3)) < 0.05  # (T+1, B)
        columns = range(0, len(actions) + 1, 2 if len(actions) > 16 else 1)
        for i, seed in enumerate(seeds):
            rows = [before.true_rgb[:, i], before.rgb[:, i], after.rgb[:, i]]
            image = strip(rows, invented[:, i], columns)
            iio.imwrite(out / f"{name}_scene{seed}.png", np.repeat(np.repeat(image, 2, 0), 2, 1))
            if name == "turn_360" and i < 2:
                docs_rows.append(strip(rows, invented[:, i], range(6, 19, 2)))
    if args.docs:
        Path(args.docs).parent.mkdir(parents=True, exist_ok=True)
        iio.imwrite(args.docs, np.concatenate(docs_rows, axis=0))
    print(f"strips in {out}/" + (f", {args.docs}" if args.docs else ""))


if __name__ == "__main__":
    main()
