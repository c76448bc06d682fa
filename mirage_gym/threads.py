"""How many torch threads an env's own work uses, and one caller at a time per env.

Torch's default (one thread per core) oversubscribes the CPU as soon as anything else runs
beside it: an ``AsyncVectorEnv`` or ``SubprocVecEnv`` with a worker per core, parallel
seeds, a second job. OpenMP threads then wait on each other's time slices, and a step that
takes 30 ms on a quiet host took over a second (20-60x slower). So envs default to one
thread, which cannot oversubscribe while there are no more envs than cores. The setting
applies only while the env works (reset, step, snapshot loads): torch's setting in the
caller's thread is put back afterwards, so a policy trained in the same process keeps its
threads. ``num_threads=None`` runs the env on whatever torch is set to. Measured side by side
on a 2-core host under load (load average 7): one env at one thread 52 ms a step, at two
threads 339 ms.
"""

from __future__ import annotations

import contextlib
import functools
import numbers
import threading

import torch


def check_num_threads(value) -> int | None:
    """``num_threads`` as given: None or a positive int; raises ``ValueError`` naming it."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"num_threads must be a positive int or None (torch's own setting), got {value!r}")
    return int(value)


@contextlib.contextmanager
def torch_threads(num_threads: int | None):
    """Run the block with ``num_threads`` torch intra-op threads, then restore the caller's."""
    before = torch.get_num_threads()
    if num_threads is None or num_threads == before:
        yield
        return
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def env_work(method):
    """Decorate an env method that steps its worlds: it runs with the env's torch threads
    (``self.adapter.num_threads``), and a second thread calling into the same env while one
    is inside raises ``RuntimeError`` instead of corrupting it (an env is not meant to be
    shared between threads: give each thread its own env, or use the batched vector env).
    Needs ``self._busy``, a ``threading.RLock`` (re-entrant: ``reset`` may call ``load_snapshot``)."""

    @functools.wraps(method)
    def run(self, *args, **kwargs):
        if not self._busy.acquire(blocking=False):
            raise RuntimeError(
                f"{type(self).__name__}.{method.__name__}() was called while another thread is inside this env: "
                "an env is used by one thread at a time (give each thread its own env, or use the vector env)"
            )
        try:
            with torch_threads(self.adapter.num_threads):
                return method(self, *args, **kwargs)
        finally:
            self._busy.release()

    return run


class OneCaller:
    """Mixin: the lock :func:`env_work` needs, dropped and recreated when pickled."""

    def _init_one_caller(self) -> None:
        self._busy = threading.RLock()

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_busy", None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._init_one_caller()
