"""Numbers that several layers must agree on, in one place.

The world config (:class:`~mirage_gym.world.WorldConfig`), the codec, the memories, the
filters and the env take their defaults from here, so changing one value changes it
everywhere it must agree.
"""

FAR = 50.0  # metres: depth at or beyond this is sky (the world's filter, the memories, the codec's code range)
VOXEL_SIZE = 0.05  # metres: the memory's voxel edge (one entry per voxel)
MEMORY_CAPACITY = 262_144  # entries a world's memory keeps before least-recently-seen eviction
COVERAGE_VOXEL = 0.25  # metres: the explored-space voxel the explore reward pays for
MOVE_STEP = 0.2  # metres per move action (the tiny model's camera tokens are scaled to it)
TURN_STEP_DEG = 15.0  # degrees per turn / look action
SCENE_SEEDS = 10_000  # reset(seed=...) draws its procedural scene from [0, SCENE_SEEDS); held-out scenes start here
HELD_OUT_SEED = SCENE_SEEDS  # first held-out evaluation scene: above every scene a reset draws
TRAIN_SEED_BASE = 100_000  # training scenes; every evaluation uses seeds below this
