"""Video clips with camera geometry: the data format the Mirage add-on trains on.

One directory per clip::

    clip_000/
        frames/00000.png ...        the frames, RGB (or one ``frames.mp4`` instead)
        geometry.npz                poses_c2w (T, 4, 4) camera-to-world, OpenCV axes (x right,
                                    y down, z forward), metres;
                                    intrinsics (T, 3, 3) or (3, 3), pixels of the frames;
                                    depths (T, H, W) z-depth in metres, inf for sky (optional);
                                    masks (T, H, W) bool, True on pixels not to remember:
                                    sky and moving objects (optional)
        clip.json                   {"fps": 8, "caption": "..."}

This is the format to convert RealEstate10K, SpatialVID or a robot's logs into. Readers
check every shape and value and refuse a bad clip with its path in the error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

GEOMETRY = "geometry.npz"
META = "clip.json"
FRAMES_DIR = "frames"
FRAMES_MP4 = "frames.mp4"


class ClipError(ValueError):
    """A clip directory that is missing, incomplete or inconsistent."""


@dataclass
class Clip:
    frames: np.ndarray  # (T, H, W, 3) uint8
    poses_c2w: np.ndarray  # (T, 4, 4) float64
    intrinsics: np.ndarray  # (T, 3, 3) float64
    depths: np.ndarray | None = None  # (T, H, W) float32, inf for sky
    masks: np.ndarray | None = None  # (T, H, W) bool, True = do not remember
    fps: float = 8.0
    caption: str = ""

    def __len__(self) -> int:
        return len(self.frames)


def write_clip(path: str | Path, clip: Clip) -> Path:
    """Write ``clip`` as PNG frames + geometry.npz + clip.json."""
    import imageio.v3 as iio

    path = Path(path)
    check_clip(clip, path)
    (path / FRAMES_DIR).mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(clip.frames):
        iio.imwrite(path / FRAMES_DIR / f"{i:05d}.png", frame)
    arrays = {"poses_c2w": clip.poses_c2w, "intrinsics": clip.intrinsics}
    if clip.depths is not None:
        arrays["depths"] = clip.depths.astype(np.float32)
    if clip.masks is not None:
        arrays["masks"] = clip.masks.astype(bool)
    np.savez_compressed(path / GEOMETRY, **arrays)
    (path / META).write_text(json.dumps({"fps": float(clip.fps), "caption": clip.caption}))
    return path


def read_clip(path: str | Path) -> Clip:
    """Read and check one clip directory; :class:`ClipError` names the clip and the problem."""
    import imageio.v3 as iio

    path = Path(path)
    if not (path / GEOMETRY).is_file():
        raise ClipError(f"clip {path}: {GEOMETRY} is missing")
    try:
        with np.load(path / GEOMETRY, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError) as exc:
        raise ClipError(f"clip {path}: {GEOMETRY} is unreadable: {exc}") from exc
    meta = {}
    if (path / META).is_file():
        try:
            meta = json.loads((path / META).read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ClipError(f"clip {path}: {META} is not valid JSON: {exc}") from exc
        if not isinstance(meta, dict):
            raise ClipError(f"clip {path}: {META} must hold an object with 'fps' and 'caption'")
    try:
        if (path / FRAMES_DIR).is_dir():
            files = sorted((path / FRAMES_DIR).glob("*.png"))
            if not files:
                raise ClipError(f"clip {path}: {FRAMES_DIR}/ holds no PNG frames")
            frames = np.stack([iio.imread(f)[..., :3] for f in files])
        elif (path / FRAMES_MP4).is_file():
            frames = np.asarray(iio.imread(path / FRAMES_MP4, index=None))
        else:
            raise ClipError(f"clip {path}: neither {FRAMES_DIR}/ nor {FRAMES_MP4} found")
    except ClipError:
        raise
    except Exception as exc:  # image readers raise many types for broken files
        raise ClipError(f"clip {path}: frames are unreadable: {type(exc).__name__}: {exc}") from exc
    if "poses_c2w" not in arrays or "intrinsics" not in arrays:
        raise ClipError(f"clip {path}: {GEOMETRY} must hold 'poses_c2w' and 'intrinsics', has {sorted(arrays)}")
    k = np.asarray(arrays["intrinsics"], dtype=np.float64)
    clip = Clip(
        frames=frames,
        poses_c2w=np.asarray(arrays["poses_c2w"], dtype=np.float64),
        intrinsics=np.broadcast_to(k, (len(frames), 3, 3)).copy() if k.shape == (3, 3) else k,
        depths=None if "depths" not in arrays else np.asarray(arrays["depths"], dtype=np.float32),
        masks=None if "masks" not in arrays else arrays["masks"],
        fps=meta.get("fps", 8.0),
        caption=meta.get("caption", ""),
    )
    check_clip(clip, path)
    return clip


def check_clip(clip: Clip, path: Path) -> None:
    frames = clip.frames
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ClipError(f"clip {path}: frames must be (T, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    t, h, w = frames.shape[:3]
    if clip.poses_c2w.shape != (t, 4, 4) or not np.isfinite(clip.poses_c2w).all():
        raise ClipError(f"clip {path}: poses_c2w must be finite ({t}, 4, 4) for {t} frames, got {clip.poses_c2w.shape}")
    if not np.allclose(clip.poses_c2w[:, 3], [0, 0, 0, 1]):
        raise ClipError(f"clip {path}: poses_c2w must be rigid 4x4 matrices (last row 0 0 0 1)")
    if clip.intrinsics.shape != (t, 3, 3) or not np.isfinite(clip.intrinsics).all() \
            or (clip.intrinsics[:, [0, 1], [0, 1]] <= 0).any():
        raise ClipError(f"clip {path}: intrinsics must be (3, 3) or ({t}, 3, 3) with positive focal lengths, "
                        f"got {clip.intrinsics.shape}")
    if clip.depths is not None:
        d = clip.depths
        if d.shape != (t, h, w) or np.isnan(d).any() or (d <= 0).any():
            raise ClipError(f"clip {path}: depths must be ({t}, {h}, {w}) positive metres (inf for sky), "
                            f"got {d.shape} with {int(np.isnan(d).sum())} NaN and {int((d <= 0).sum())} <= 0")
    if clip.masks is not None:
        if clip.masks.shape != (t, h, w) or clip.masks.dtype != bool:
            raise ClipError(f"clip {path}: masks must be ({t}, {h}, {w}) bool, got {clip.masks.shape} "
                            f"{clip.masks.dtype}")
    if not isinstance(clip.fps, (int, float)) or not clip.fps > 0 or not isinstance(clip.caption, str):
        raise ClipError(f"clip {path}: clip.json needs a positive 'fps' and a string 'caption'")


def clip_dirs(root: str | Path) -> list[Path]:
    """Every clip directory under ``root`` (those holding geometry.npz), sorted."""
    root = Path(root)
    if not root.is_dir():
        raise ClipError(f"no clip folder at {root}")
    found = sorted(p.parent for p in root.rglob(GEOMETRY))
    if not found:
        raise ClipError(f"no clips under {root}: no {GEOMETRY} found")
    return found

