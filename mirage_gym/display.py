"""Pictures for people (not the scene renderer, :mod:`mirage_gym.scenes.render`): a bird's-eye map of memory beside the frame, and a pygame window."""

from __future__ import annotations

import numpy as np


def birdseye_map(xyz: np.ndarray, path: np.ndarray, pose: np.ndarray, size: int, extent: float | None = None) -> np.ndarray:
    """Top-down (x right, z up the image) map: remembered points shaded by height, the
    camera path in orange and the camera's heading in red. Returns (size, size, 3) uint8."""
    image = np.full((size, size, 3), 24, np.uint8)
    centre = pose[[0, 2], 3]
    if extent is None:
        spread = np.abs(np.concatenate([xyz[:, [0, 2]], path[:, [0, 2]]]) - centre).max() if len(xyz) else 2.0
        extent = float(np.clip(spread * 1.1, 2.0, 30.0))
    scale = (size - 1) / (2 * extent)

    def to_pixels(points_xz):
        col = np.round((points_xz[:, 0] - centre[0]) * scale + (size - 1) / 2).astype(int)
        row = np.round((size - 1) / 2 - (points_xz[:, 1] - centre[1]) * scale).astype(int)
        ok = (col >= 0) & (col < size) & (row >= 0) & (row < size)
        return row[ok], col[ok], ok

    if len(xyz):
        row, col, ok = to_pixels(xyz[:, [0, 2]])
        height = -xyz[ok, 1]  # y is down: higher points are brighter
        shade = np.clip(90 + 50 * (height - height.min()) / max(np.ptp(height), 1e-6), 90, 230).astype(np.uint8)
        image[row, col] = shade[:, None]
    row, col, _ = to_pixels(path[:, [0, 2]])
    image[row, col] = (255, 150, 40)
    heading = pose[[0, 2], 2]
    ticks = centre + np.linspace(0, 0.12 * extent, 8)[:, None] * heading / max(np.linalg.norm(heading), 1e-9)
    row, col, _ = to_pixels(ticks)
    image[row, col] = (230, 40, 40)
    return image


def with_map(frame: np.ndarray, xyz: np.ndarray, path: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """The frame with the bird's-eye map of remembered points ``xyz`` (N, 3) beside it."""
    return np.concatenate([frame, birdseye_map(xyz, path, pose, frame.shape[0])], axis=1)


def show(window, image: np.ndarray, fps: int):
    """Draw ``image`` in a pygame window (created on first use); returns the window state."""
    import pygame

    scale = max(1, 512 // image.shape[0])
    if window is None:
        pygame.init()
        screen = pygame.display.set_mode((image.shape[1] * scale, image.shape[0] * scale))
        pygame.display.set_caption("MirageWorld")
        window = {"screen": screen, "clock": pygame.time.Clock()}
    surface = pygame.surfarray.make_surface(np.repeat(np.repeat(image, scale, 0), scale, 1).swapaxes(0, 1))
    window["screen"].blit(surface, (0, 0))
    pygame.event.pump()
    pygame.display.flip()
    window["clock"].tick(fps)
    return window


def close_window(window) -> None:
    import pygame

    pygame.display.quit()
    pygame.quit()
