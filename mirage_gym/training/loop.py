"""A small resumable training loop: AdamW, warm-up + cosine schedule, tqdm, a CSV log of
losses and periodic checkpoints. Every step draws its randomness from ``(seed, step)``, so
a run resumed from a checkpoint continues exactly as an uninterrupted run would."""

from __future__ import annotations

import csv
import math
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm


class TrainLoop:
    """Iterate it for one ``np.random.Generator`` per step; call :meth:`update` each step.

    Args:
        name: stage name; files are ``{name}.ckpt`` and ``{name}_log.csv`` in ``out``.
        model: the module trained (its parameters with ``requires_grad``).
        steps: total optimizer steps of the stage.
        lr: peak learning rate; ``warmup`` steps of linear warm-up, then cosine to 10%.
        checkpoint_every: steps between checkpoints (and log flushes).
    """

    def __init__(self, name: str, model: torch.nn.Module, out: Path, steps: int, lr: float, seed: int = 0,
                 warmup: int = 100, checkpoint_every: int = 200, grad_clip: float = 1.0, progress: bool = True):
        self.name, self.model, self.out = name, model, Path(out)
        self.steps, self.lr, self.seed, self.warmup = int(steps), float(lr), int(seed), int(warmup)
        self.checkpoint_every, self.grad_clip, self.progress = int(checkpoint_every), grad_clip, progress
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=self.lr, weight_decay=0.01)
        self.step = 0
        self._elapsed = 0.0  # training seconds before this invocation (a resumed run counts on)
        self.ckpt_path = self.out / f"{name}.ckpt"
        self.log_path = self.out / f"{name}_log.csv"
        self._rows: list[dict] = []
        self._bar = None
        if self.ckpt_path.exists():
            state = torch.load(self.ckpt_path, map_location="cpu", weights_only=True)
            model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.step = int(state["step"])
            self._elapsed = float(state.get("seconds", 0.0))

    @property
    def done(self) -> bool:
        return self.step >= self.steps

    def learning_rate(self, step: int) -> float:
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        progress = (step - self.warmup) / max(1, self.steps - self.warmup)
        return self.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))

    def __iter__(self):
        self.model.train()
        self._bar = tqdm(total=self.steps, initial=self.step, desc=self.name, disable=not self.progress)
        self._start = time.perf_counter() - self._elapsed
        while self.step < self.steps:
            torch.manual_seed(self.seed * 1_000_003 + self.step)
            yield np.random.default_rng([self.seed, self.step])
        self._bar.close()
        self.model.eval()

    def update(self, losses: dict[str, torch.Tensor]) -> None:
        """Backward ``losses["total"]``, clip, step the optimizer, log, checkpoint."""
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate(self.step)
        self.optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self.optimizer.step()
        self.step += 1
        row = {"step": self.step, "seconds": round(time.perf_counter() - self._start, 1)}
        row.update({k: round(float(v.detach()), 5) for k, v in losses.items()})
        self._rows.append(row)
        self._bar.update(1)
        if self.step % 20 == 0:
            self._bar.set_postfix({k: v for k, v in row.items() if k not in ("step", "seconds")})
        if self.step % self.checkpoint_every == 0 or self.step == self.steps:
            self.checkpoint()

    def checkpoint(self) -> None:
        """Write the checkpoint atomically and append the pending log rows."""
        self._elapsed = time.perf_counter() - self._start
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), "step": self.step,
                 "seconds": self._elapsed}
        save_checkpoint(self.ckpt_path, state, self.log_path, self._rows)
        self._rows = []


def save_checkpoint(path: Path, state: dict, log_path: Path, rows: list[dict]) -> None:
    """Write ``state`` to ``path`` atomically (a killed run leaves the previous checkpoint),
    then append ``rows`` to the CSV log (its header written with the first rows; a resume that
    logs a new loss rewrites the log with the new column, blank in the earlier rows)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)
    if not rows:
        return
    logged = _logged_fields(log_path)
    if logged and not set(rows[0]) <= set(logged):  # a resume logs a new loss: rewrite with its column
        with log_path.open(newline="") as f:
            rows = list(csv.DictReader(f)) + rows
        _write_rows(log_path.with_suffix(".tmp"), logged + [k for k in rows[-1] if k not in logged], rows, "w")
        log_path.with_suffix(".tmp").replace(log_path)
    else:
        _write_rows(log_path, logged or list(rows[0]), rows, "a")


def _logged_fields(log_path: Path) -> list[str]:
    if not log_path.exists():
        return []
    with log_path.open(newline="") as f:
        return list(csv.DictReader(f).fieldnames or [])


def _write_rows(path: Path, fields: list[str], rows: list[dict], mode: str) -> None:
    header = mode == "w" or not path.exists()
    with path.open(mode, newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, restval="")
        if header:
            writer.writeheader()
        writer.writerows(rows)


def last_logged_row(log: Path) -> dict[str, str]:
    """The last row of a CSV loss log, by column name (a stage's step and seconds survive resumes)."""
    lines = log.read_text().strip().splitlines()
    return dict(zip(lines[0].split(","), lines[-1].split(",")))
