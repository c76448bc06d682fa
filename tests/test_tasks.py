"""Goal tasks (imagenav, pointnav, homing): termination, success, SPL, reachable goals, the
grid planner, the vector env and snapshots. On the transparent stand-in model."""

import math

import gymnasium as gym
import numpy as np
import pytest

import mirage_gym  # noqa: F401  (registers the ids)
from mirage_gym import navigation as nav
from mirage_gym.scenes import make_scene
from mirage_gym.tasks import GoalAction, spl
from stand_in import PoolingBackend

GOAL_IDS = ["MirageImageNav-v0", "MiragePointNav-v0", "MirageHoming-v0"]


def make(env_id, **kwargs):
    kwargs.setdefault("model", PoolingBackend())
    return gym.make(env_id, **kwargs)


def oracle_episode(env, seed, before=()):
    """Play ``before`` then the task's shortest-path follower; returns (steps, last info, terminated)."""
    obs, info = env.reset(seed=seed)
    task = env.unwrapped.adapter.task
    steps = 0
    for action in before:
        obs, reward, terminated, truncated, info = env.step(int(action))
        steps += 1
    while True:
        obs, reward, terminated, truncated, info = env.step(int(task.oracle_action(0)))
        steps += 1
        if terminated or truncated:
            return steps, info, terminated


@pytest.mark.parametrize("env_id", GOAL_IDS)
def test_oracle_succeeds_and_terminates_on_stop(env_id):
    env = make(env_id, max_episode_steps=150)
    for seed in (0, 1):
        steps, info, terminated = oracle_episode(env, seed)
        assert terminated and info["success"], (seed, info)
        assert info["distance_to_goal"] <= 0.3
        assert 0.95 <= info["spl"] <= 1.0
        assert info["path_length"] > 0.9  # goals lie at least 1 m (geodesic) from the start, less the radius


def test_spl_is_one_for_the_oracle_path_and_lower_for_a_detour():
    env = make("MiragePointNav-v0", max_episode_steps=150)
    _, direct, _ = oracle_episode(env, seed=1)  # a goal the oracle reaches within the radius, short of it
    assert direct["success"] and direct["spl"] == 1.0
    assert direct["path_length"] <= direct["shortest_path_length"] + 1e-9
    detour = [GoalAction.TURN_LEFT] * 12 + [GoalAction.MOVE_FORWARD] * 3  # about-turn and walk away first
    _, info, _ = oracle_episode(env, seed=1, before=detour)
    assert info["success"] and info["shortest_path_length"] == direct["shortest_path_length"]
    assert info["spl"] < 0.9 * direct["spl"]
    assert info["spl"] == pytest.approx(info["shortest_path_length"] / info["path_length"])
    assert spl(True, 4.0, 5.0) == 0.8 and spl(True, 4.0, 3.0) == 1.0 and spl(False, 4.0, 4.0) == 0.0


@pytest.mark.parametrize("env_id", GOAL_IDS)
def test_stop_far_from_the_goal_ends_the_episode_without_success(env_id):
    env = make(env_id)
    obs, info = env.reset(seed=3)
    assert info["success"] is False and info["spl"] == 0.0 and info["distance_to_goal"] > 0.6
    obs, reward, terminated, truncated, info = env.step(int(GoalAction.STOP))
    assert terminated and not truncated and info["success"] is False and info["spl"] == 0.0
    assert reward == pytest.approx(-0.01)  # only the slack: STOP does not move


def test_auto_stop_ends_on_arrival():
    env = make("MiragePointNav-v0", task_options={"auto_stop": True}, max_episode_steps=150)
    env.reset(seed=0)
    task = env.unwrapped.adapter.task
    while True:
        action = task.oracle_action(0)
        assert action != GoalAction.STOP  # it ends before the follower would stop
        *_, terminated, truncated, info = env.step(int(action))
        if terminated or truncated:
            break
    assert terminated and info["success"] and info["distance_to_goal"] <= 0.3


def test_shaped_reward_is_the_decrease_in_distance():
    env = make("MiragePointNav-v0")
    _, info = env.reset(seed=0)
    task = env.unwrapped.adapter.task
    before = info["distance_to_goal"]
    _, reward, _, _, info = env.step(int(task.oracle_action(0)))
    assert reward == pytest.approx(before - info["distance_to_goal"] - 0.01)


def test_pointgoal_is_distance_and_bearing_in_the_agent_frame():
    env = make("MiragePointNav-v0")
    obs, info = env.reset(seed=2)
    goal = env.unwrapped.adapter.task.episodes[0].goal_xyz
    rho, phi = obs["pointgoal"]
    assert rho == pytest.approx(math.hypot(goal[0], goal[2]), rel=1e-5)
    assert phi == pytest.approx(math.atan2(goal[0], goal[2]), abs=1e-5)  # at the start the camera looks along +z
    obs, *_ = env.step(int(GoalAction.TURN_RIGHT))
    assert obs["pointgoal"][1] == pytest.approx(nav.wrap_angle(phi - math.radians(15)), abs=1e-5)


def test_imagenav_goal_is_a_remembered_view_the_agent_comes_back_to():
    env = make("MirageImageNav-v0", max_episode_steps=150)
    obs, _ = env.reset(seed=0)
    start_gap = np.abs(obs["rgb"].astype(int) - obs["goal"]).mean()
    task = env.unwrapped.adapter.task
    assert env.unwrapped.world.memory_stats(0)["points"] > 0
    np.testing.assert_array_equal(env.unwrapped.world.poses[0], np.eye(4))  # back at the start
    while (action := task.oracle_action(0)) != GoalAction.STOP:
        obs, *_ = env.step(int(action))
    end_gap = np.abs(obs["rgb"].astype(int) - obs["goal"]).mean()
    assert end_gap < 0.5 * start_gap


def test_homing_starts_away_and_its_goal_is_the_first_view():
    env = make("MirageHoming-v0")
    obs, info = env.reset(seed=1)
    assert np.linalg.norm(info["pose"][:3, 3]) > 0.6
    np.testing.assert_array_equal(env.unwrapped.adapter.task.episodes[0].goal_pose, np.eye(4))


# ---------------------------------------------------------------- reachable goals, the planner


def test_issued_goals_are_free_and_reachable_on_the_layout():
    env = make("MiragePointNav-v0")
    for seed in range(8):
        _, info = env.reset(seed=seed)
        ep = env.unwrapped.adapter.task.episodes[0]
        scene = env.unwrapped.adapter.scene
        assert scene.is_free(ep.goal_xyz, 0.25)[0]
        assert 1.0 - 0.3 <= info["distance_to_goal"] <= 4.0 + 0.3
        path = nav.shortest_path(ep.layout, nav.distance_field(ep.layout, ep.goal_xz), np.zeros(2), ep.goal_xz)
        assert path and all(ep.layout.line_of_sight(a, b) for a, b in zip(path[1:-1], path[2:-1]))
        points = np.concatenate([np.linspace(a, b, 20) for a, b in zip(path[:-1], path[1:])])
        eye = np.stack([points[:, 0], np.zeros(len(points)), points[:, 1]], -1)
        assert scene.is_free(eye, 0.2).all()  # the whole shortest path runs through free space


def test_sampler_never_draws_a_cut_off_cell():
    grid = nav.OccupancyGrid(-3.0, -3.0, 0.1, np.ones((60, 60), dtype=bool))
    grid.free[:, 40] = False  # a wall: columns 41.. are cut off from the start
    rng = np.random.default_rng(0)
    for _ in range(200):
        goal = nav.sample_goal(grid, (0.0, 0.0), rng, 0.5, 10.0)
        assert goal[0] < 1.0
    assert nav.sample_goal(grid, (0.0, 0.0), rng, 20.0, 30.0) is None
    pocket = nav.distance_field(grid, (2.0, 0.0))
    assert math.isinf(nav.geodesic(grid, pocket, (0.0, 0.0)))


def test_impossible_goal_distances_are_refused_after_resampling():
    env = make("MiragePointNav-v0", task_options={"goal_min_distance": 60.0, "goal_max_distance": 70.0, "max_attempts": 2})
    with pytest.raises(RuntimeError, match="no reachable goal"):
        env.reset(seed=0)


def test_geodesic_and_shortest_path_in_open_space_and_around_a_wall():
    grid = nav.OccupancyGrid(-1.0, -1.0, 0.1, np.ones((70, 70), dtype=bool))
    field = nav.distance_field(grid, (4.0, 3.0))
    assert nav.geodesic(grid, field, (0.0, 0.0)) == pytest.approx(5.0, rel=0.03)
    assert nav.path_length(nav.shortest_path(grid, field, (0.0, 0.0), (4.0, 3.0))) == pytest.approx(5.0, rel=0.01)
    grid.free[20:, 30] = False  # a wall at x = 2.05 from z = 1 on: around its end at z = 1
    field = nav.distance_field(grid, (4.0, 3.0))
    length = nav.path_length(nav.shortest_path(grid, field, (0.0, 3.0), (4.0, 3.0)))
    around = 2 * math.hypot(2.0, 2.0)
    assert around <= length <= around * 1.05


def test_the_grid_blocks_remembered_geometry_at_eye_height_only():
    grid = nav.OccupancyGrid(-1.0, -1.0, 0.1, np.ones((20, 20), dtype=bool))
    blocked = nav.block_points(grid, np.array([[0.0, 0.0, 0.0], [0.5, 1.4, 0.5]]), clearance=0.3)
    assert not blocked.is_free((0.0, 0.0)) and not blocked.is_free((0.25, 0.0))
    assert blocked.is_free((0.45, 0.0)) and blocked.is_free((0.5, 0.5))  # the floor point does not block


# ---------------------------------------------------------------- vector env, snapshots, arguments


def test_vector_env_terminates_per_world_and_autoresets_next_step():
    vec = gym.make_vec("MiragePointNav-v0", num_envs=2, vectorization_mode="vector_entry_point", model=PoolingBackend())
    obs, infos = vec.reset(seed=0)
    assert set(obs) == {"rgb", "pointgoal"} and obs["pointgoal"].shape == (2, 2)
    single = make("MiragePointNav-v0")
    single_obs, single_info = single.reset(seed=1)
    np.testing.assert_allclose(obs["pointgoal"][1], single_obs["pointgoal"])
    obs, rewards, term, trunc, infos = vec.step(np.array([0, int(GoalAction.STOP)]))
    assert term.tolist() == [False, True] and infos["success"].tolist() == [False, False]
    obs, rewards, term, trunc, infos = vec.step(np.array([0, 0]))
    assert rewards[1] == 0.0 and not term.any()
    np.testing.assert_array_equal(infos["pose"][1], np.eye(4))  # world 1 started over
    assert infos["path_length"][0] == pytest.approx(0.4, abs=1e-6)  # world 0 went on


def test_snapshot_resumes_a_goal_episode_with_its_goal(tmp_path):
    env = make("MirageImageNav-v0")
    env.reset(seed=4)
    task = env.unwrapped.adapter.task
    for _ in range(3):
        env.step(int(task.oracle_action(0)))
    env.unwrapped.save_snapshot(tmp_path / "goal.snap")
    expected = [env.step(a) for a in (0, 5, 0, 9)]
    other = make("MirageImageNav-v0")
    other.reset(seed=99)
    obs, info = other.unwrapped.load_snapshot(tmp_path / "goal.snap")
    np.testing.assert_array_equal(obs["goal"], task.episodes[0].goal_image)
    for (o1, r1, te1, tr1, i1), (o2, r2, te2, tr2, i2) in zip(expected, [other.step(a) for a in (0, 5, 0, 9)]):
        np.testing.assert_array_equal(o1["rgb"], o2["rgb"])
        np.testing.assert_array_equal(o1["goal"], o2["goal"])
        assert r1 == r2 and te1 == te2
        assert i1["distance_to_goal"] == i2["distance_to_goal"] and i1["spl"] == i2["spl"]
    from mirage_gym.snapshot import SnapshotError

    pointnav = make("MiragePointNav-v0")
    pointnav.reset(seed=0)
    with pytest.raises(SnapshotError, match="task"):
        pointnav.unwrapped.load_snapshot(tmp_path / "goal.snap")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"task": "fly"}, "task must be one of"),
        ({"task": "pointnav", "task_options": {"radius": 1}}, "unknown task_options"),
        ({"task": "pointnav", "task_options": {"success_distance": -1}}, "success_distance"),
        ({"task": "pointnav", "task_options": {"goal_min_distance": 5, "goal_max_distance": 2}}, "goal_min_distance"),
        ({"task": "explore", "task_options": {"auto_stop": True}}, "task_options"),
    ],
)
def test_bad_task_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make("MirageWorld-v0", **kwargs)


@pytest.mark.parametrize("action", [10, -1, 1.5, "stop"])
def test_bad_goal_actions_raise(action):
    env = make("MiragePointNav-v0")
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"action must be an integer in \[0, 9\]"):
        env.step(action)


def test_continuous_goal_task_stops_on_the_seventh_component():
    env = make("MiragePointNav-v0", action_mode="continuous")
    assert env.action_space.shape == (7,)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(6, np.float32))
    *_, terminated, _, info = env.step(np.array([0, 0, 1, 0, 0, 0, -1], np.float32))
    assert not terminated and info["path_length"] == pytest.approx(0.2)
    *_, terminated, _, info = env.step(np.array([0, 0, 1, 0, 0, 0, 1], np.float32))
    assert terminated and info["path_length"] == pytest.approx(0.2)  # STOP does not move


@pytest.mark.slow
def test_multi_input_policy_trains_on_a_goal_task():
    from stable_baselines3 import PPO

    from mirage_gym.sb3 import make_sb3_vec_env

    venv = make_sb3_vec_env("MirageImageNav-v0", num_envs=2, seed=0, model=PoolingBackend(), max_episode_steps=16)
    model = PPO("MultiInputPolicy", venv, n_steps=32, batch_size=32, n_epochs=1, seed=0, device="cpu")
    model.learn(total_timesteps=64)
    assert model.num_timesteps >= 64


def test_navigation_report_runs_every_agent(tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from agents.navigate import Args, evaluate

    report = evaluate(Args(tasks=["pointnav", "homing"], episodes=1, steps=60, out=str(tmp_path)),
                      env_kwargs={"model": PoolingBackend()})
    assert report["tasks"]["pointnav"]["oracle"]["success"]["mean"] == 1.0
    assert set(report["tasks"]["homing"]) == {"oracle", "random"}
    assert "| pointnav | oracle | 1.00 |" in (tmp_path / "report.md").read_text()
