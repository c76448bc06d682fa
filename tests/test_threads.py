"""Torch threads: envs default to one thread while they work and put the caller's setting
back; subprocess vector env workers run at one thread; one env used from two threads at
once raises instead of corrupting its state."""

import threading

import gymnasium as gym
import numpy as np
import pytest
import torch

import mirage_gym  # noqa: F401
from stand_in import PoolingBackend


class ThreadRecordingBackend(PoolingBackend):
    """Records torch's thread setting while the world model runs; can be held mid-step."""

    def __init__(self):
        self.seen = []
        self.inside = threading.Event()
        self.release = threading.Event()
        self.release.set()

    def __getstate__(self):  # what comes back from a subprocess worker
        return {"seen": self.seen}

    def generate(self, *args):
        self.seen.append(torch.get_num_threads())
        self.inside.set()
        self.release.wait(timeout=30)
        return super().generate(*args)


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("num_threads, expected", [(None, 2), (1, 1), (3, 3)])
def test_env_work_runs_at_num_threads_and_restores_the_callers(two_threads, num_threads, expected):
    backend = ThreadRecordingBackend()
    env = gym.make("MirageWorld-v0", model=backend, **({} if num_threads == 1 else {"num_threads": num_threads}))
    env.reset(seed=0)
    env.step(5)
    assert backend.seen == [expected]
    assert torch.get_num_threads() == 2


def test_the_vector_env_takes_num_threads_too(two_threads):
    backend = ThreadRecordingBackend()
    vec = gym.make_vec("MirageWorld-v0", num_envs=2, vectorization_mode="vector_entry_point", model=backend)
    vec.reset(seed=0)
    vec.step(np.array([5, 5]))
    assert backend.seen == [1] and torch.get_num_threads() == 2


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_bad_num_threads_is_refused_by_name(bad):
    with pytest.raises(ValueError, match="num_threads"):
        gym.make("MirageWorld-v0", model=PoolingBackend(), num_threads=bad)


def test_async_vector_env_workers_run_at_one_thread(two_threads):
    vec = gym.vector.AsyncVectorEnv(
        [lambda: gym.make("MirageWorld-v0", model=ThreadRecordingBackend(), max_episode_steps=5)] * 2, context="fork"
    )
    try:
        vec.reset(seed=0)
        vec.step(np.array([5, 4]))
        adapters = vec.get_attr("adapter")
        assert [adapter.world.backend.seen for adapter in adapters] == [[1], [1]]
    finally:
        vec.close()


def test_one_env_from_two_threads_raises_and_keeps_its_state():
    backend = ThreadRecordingBackend()
    env = gym.make("MirageWorld-v0", model=backend).unwrapped
    env.reset(seed=0)
    backend.release.clear()
    backend.inside.clear()
    first = threading.Thread(target=env.step, args=(5,))
    first.start()
    assert backend.inside.wait(timeout=30)
    try:
        for call in (lambda: env.step(0), lambda: env.reset(seed=1), env.render):
            with pytest.raises(RuntimeError, match="another thread is inside this env"):
                call()
    finally:
        backend.release.set()
        first.join(timeout=30)
    assert env._elapsed == 1 and len(backend.seen) == 1  # only the first thread's step happened
    env.step(0)  # and the env goes on
    assert env._elapsed == 2
