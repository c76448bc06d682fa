"""Scripted policies for any ``MirageWorld*`` id.

Every agent is a small class::

    agent = FrontierAgent(env.action_space)
    agent.reset(seed=0)
    obs, info = env.reset(seed=0)
    action = agent.act(obs, info)          # then feed it the next (obs, info), and so on

Agents think in the named discrete actions of :class:`mirage_gym.geometry.Action`; on a
continuous id (``Box(-1, 1, (6,))``) the chosen action is sent as its unit 6-vector
(:func:`mirage_gym.geometry.discrete_to_continuous`). They read only ``info``: the
``collision`` flag (was my last move blocked?), ``novelty`` (share of the view memory had
not covered), ``new_voxels`` (voxels seen for the first time by the last step) and, for
the frontier agent's headings, ``pose``.
"""

from __future__ import annotations

import math

import numpy as np
from gymnasium import spaces

from mirage_gym.geometry import Action, discrete_to_continuous

TRANSLATIONS = (Action.MOVE_FORWARD, Action.MOVE_BACKWARD, Action.STRAFE_LEFT, Action.STRAFE_RIGHT)
TURNS = (Action.TURN_LEFT, Action.TURN_RIGHT)
NAVIGATION = TRANSLATIONS + TURNS


class Agent:
    """Base class: seeding, and sending a named action in the env's action format."""

    def __init__(self, action_space: spaces.Space | None = None):
        self.continuous = isinstance(action_space, spaces.Box)
        if self.continuous and action_space.shape != (6,):
            raise ValueError(f"continuous MirageWorld actions have shape (6,), got {action_space.shape}")
        self.rng = np.random.default_rng()
        self.last: Action | None = None

    def reset(self, seed: int | None = None) -> None:
        """Start a new episode; ``seed`` makes the agent's own choices reproducible."""
        self.rng = np.random.default_rng(seed)
        self.last = None

    def act(self, obs, info: dict):
        """The action for the observation and info the env just returned."""
        self.last = Action(self.choose(obs, info))
        return self.to_env(self.last)

    def choose(self, obs, info: dict) -> Action:
        raise NotImplementedError

    def to_env(self, action: Action):
        if self.continuous:
            return discrete_to_continuous(int(action)).astype(np.float32)
        return int(action)


class RandomAgent(Agent):
    """Baseline: uniform over the whole action space (all 9 ids, or the 6-D box)."""

    def act(self, obs, info: dict):
        if self.continuous:
            return self.rng.uniform(-1.0, 1.0, 6).astype(np.float32)
        return int(self.rng.integers(len(Action)))


class OrbitAgent(Agent):
    """Turns in place, always the same way (24 steps of 15 degrees make a full turn)."""

    def __init__(self, action_space: spaces.Space | None = None, direction: Action = Action.TURN_RIGHT):
        super().__init__(action_space)
        if direction not in TURNS:
            raise ValueError(f"direction must be one of {[a.name for a in TURNS]}, got {direction!r}")
        self.direction = direction

    def choose(self, obs, info: dict) -> Action:
        return self.direction


class OutAndBackAgent(Agent):
    """``k`` steps forward then ``k`` steps back, repeating: walks away and returns."""

    def __init__(self, action_space: spaces.Space | None = None, k: int = 8):
        super().__init__(action_space)
        if k < 1:
            raise ValueError(f"k must be positive, got {k}")
        self.k = k
        self.t = 0

    def reset(self, seed: int | None = None) -> None:
        super().reset(seed)
        self.t = 0

    def choose(self, obs, info: dict) -> Action:
        outward = (self.t // self.k) % 2 == 0
        self.t += 1
        return Action.MOVE_FORWARD if outward else Action.MOVE_BACKWARD


class RandomWalkAgent(Agent):
    """Random navigation moves and turns that never retry a move that was just blocked.

    With probability ``repeat_prob`` the last action is repeated (a walk, not jitter).
    A blocked move is remembered until the camera turns, since blocking depends on heading.
    """

    def __init__(self, action_space: spaces.Space | None = None, repeat_prob: float = 0.5):
        super().__init__(action_space)
        self.repeat_prob = repeat_prob
        self.blocked: set[Action] = set()

    def reset(self, seed: int | None = None) -> None:
        super().reset(seed)
        self.blocked = set()

    def choose(self, obs, info: dict) -> Action:
        if self.last in TURNS:
            self.blocked.clear()
        if info["collision"] and self.last in TRANSLATIONS:
            self.blocked.add(self.last)
        allowed = [a for a in NAVIGATION if a not in self.blocked]
        if self.last in allowed and self.rng.random() < self.repeat_prob:
            return self.last
        return allowed[self.rng.integers(len(allowed))]


class FrontierAgent(Agent):
    """Heads for what memory has not covered yet.

    Two modes. *Advance*: move forward while the steps keep revealing new voxels (allowing
    ``patience`` steps in a row without any). *Scan*: turn in place until the view is
    mostly new (``novelty >= novelty_threshold``) and not a heading that was blocked
    nearby, then advance; if a full turn finds no such view, turn on to the most novel
    unblocked heading seen and advance from there. A blocked move turns away by 45 to 90
    degrees in a random direction, then scans. Headings come from ``info["pose"]``;
    blocked ones are forgotten once the agent is ``forget_distance`` metres away.
    """

    def __init__(
        self,
        action_space: spaces.Space | None = None,
        novelty_threshold: float = 0.25,
        min_new_voxels: int = 1,
        patience: int = 2,
        full_turn: int = 24,
        blocked_cone_deg: float = 40.0,
        forget_distance: float = 0.5,
    ):
        super().__init__(action_space)
        self.novelty_threshold = novelty_threshold
        self.min_new_voxels = min_new_voxels
        self.patience = patience
        self.full_turn = full_turn  # turns in 360 degrees (24 at the default 15 degrees)
        self.blocked_cone = math.radians(blocked_cone_deg)
        self.forget_distance = forget_distance
        self.reset()

    def reset(self, seed: int | None = None) -> None:
        super().reset(seed)
        self.turn = Action.TURN_RIGHT
        self.queue: list[Action] = []  # turns already decided on
        self.blocked: list[tuple[np.ndarray, float]] = []  # (position, heading) of blocked forward moves
        self.start_scan(turned=0)

    def start_scan(self, turned: int) -> None:
        self.mode = "scan"
        self.scanned = turned  # turns since the scan began
        self.best = (-1.0, int(self.rng.integers(self.full_turn)))  # (novelty, turns from the scan start)

    def start_advance(self) -> None:
        self.mode = "advance"
        self.idle = 0  # forward steps in a row without new voxels

    def choose(self, obs, info: dict) -> Action:
        position, heading = info["pose"][:3, 3], yaw_of(info["pose"])
        self.blocked = [(p, h) for p, h in self.blocked if np.linalg.norm(p - position) < self.forget_distance]
        if info["collision"] and self.last in TRANSLATIONS:
            if self.last == Action.MOVE_FORWARD:
                self.blocked.append((position, heading))
            self.turn = TURNS[self.rng.integers(2)]
            self.queue = [self.turn] * int(self.rng.integers(3, 7))
            self.start_scan(turned=len(self.queue))
        if self.queue:
            return self.queue.pop()

        if self.mode == "advance":
            self.idle = 0 if info["new_voxels"] >= self.min_new_voxels else self.idle + 1
            if self.idle <= self.patience:
                return Action.MOVE_FORWARD
            self.start_scan(turned=0)

        # scanning: info shows the view after `self.scanned` turns
        open_ahead = all(abs(angle_between(heading, h)) > self.blocked_cone for _, h in self.blocked)
        if self.scanned > 0 and open_ahead:
            if info["novelty"] >= self.novelty_threshold and info["new_voxels"] >= self.min_new_voxels:
                self.start_advance()
                return Action.MOVE_FORWARD
            self.best = max(self.best, (info["new_voxels"], self.scanned), key=lambda b: b[0])
        if self.scanned >= self.full_turn:
            self.start_advance()
            self.queue = [self.turn] * (self.best[1] % self.full_turn)
            return self.queue.pop() if self.queue else Action.MOVE_FORWARD
        self.scanned += 1
        return self.turn


def yaw_of(pose: np.ndarray) -> float:
    """Heading of a camera-to-world pose: the angle of its optical axis in the x-z plane."""
    forward = pose[:3, 2]
    return math.atan2(forward[0], forward[2])


def angle_between(a: float, b: float) -> float:
    """``a - b`` wrapped to [-pi, pi)."""
    return (a - b + math.pi) % (2 * math.pi) - math.pi


AGENTS: dict[str, type[Agent]] = {
    "random": RandomAgent,
    "orbit": OrbitAgent,
    "out_and_back": OutAndBackAgent,
    "random_walk": RandomWalkAgent,
    "frontier": FrontierAgent,
}
"""Every agent by name (the evaluation suite runs them in this order)."""
