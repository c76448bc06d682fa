"""Plain plots as uint8 RGB arrays (matplotlib is not a dependency).

Drawn with Pillow's ``ImageDraw`` (Pillow comes with imageio) and saved with imageio:
a line plot, a bar chart with error bars and a labelled grid of images, each with a
title, axes, ticks and a legend where it needs one. Readable, not pretty.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont

COLORS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75), (227, 119, 194)]
INK = (40, 40, 40)
GRID = (225, 225, 225)


def font(size: int = 13):
    return ImageFont.load_default(size=size)


def nice_ticks(lo: float, hi: float, count: int = 5) -> np.ndarray:
    """About ``count`` round tick values covering ``[lo, hi]`` (steps of 1, 2 or 5 x 10^k)."""
    span = max(hi - lo, 1e-9)
    raw = span / count
    power = 10 ** math.floor(math.log10(raw))
    step = min((m * power for m in (1, 2, 5, 10) if m * power >= raw), default=10 * power)
    return np.arange(math.ceil(lo / step) * step, hi + 0.5 * step, step)


def tick_label(value: float) -> str:
    return f"{value:.0f}" if abs(value) >= 10 or value == int(value) else f"{value:.2g}"


class Axes:
    """A canvas with a plot area mapped to data coordinates ``[x0, x1] x [y0, y1]``."""

    def __init__(self, size, xlim, ylim, title: str, xlabel: str, ylabel: str, right: int = 20):
        self.image = Image.new("RGB", size, "white")
        self.draw = ImageDraw.Draw(self.image)
        self.left, self.top, self.right, self.bottom = 70, 36, size[0] - right, size[1] - 48
        self.xlim, self.ylim = xlim, ylim
        self.draw.text((size[0] // 2, 8), title, fill=INK, font=font(15), anchor="ma")
        self.draw.text(((self.left + self.right) // 2, size[1] - 8), xlabel, fill=INK, font=font(), anchor="md")
        label = Image.new("RGB", (self.bottom - self.top, 18), "white")
        ImageDraw.Draw(label).text((label.width // 2, 9), ylabel, fill=INK, font=font(), anchor="mm")
        self.image.paste(label.rotate(90, expand=True), (4, self.top))

    def to_pixel(self, x, y):
        (x0, x1), (y0, y1) = self.xlim, self.ylim
        px = self.left + (np.asarray(x, float) - x0) / max(x1 - x0, 1e-9) * (self.right - self.left)
        py = self.bottom - (np.asarray(y, float) - y0) / max(y1 - y0, 1e-9) * (self.bottom - self.top)
        return px, py

    def y_ticks(self) -> None:
        for value in nice_ticks(*self.ylim):
            _, py = self.to_pixel(0, value)
            self.draw.line([(self.left, py), (self.right, py)], fill=GRID)
            self.draw.text((self.left - 6, py), tick_label(value), fill=INK, font=font(11), anchor="rm")

    def x_ticks(self) -> None:
        for value in nice_ticks(*self.xlim):
            px, _ = self.to_pixel(value, 0)
            self.draw.line([(px, self.bottom), (px, self.bottom + 4)], fill=INK)
            self.draw.text((px, self.bottom + 6), tick_label(value), fill=INK, font=font(11), anchor="ma")

    def frame(self) -> None:
        self.draw.line([(self.left, self.top), (self.left, self.bottom), (self.right, self.bottom)], fill=INK, width=1)

    def to_array(self) -> np.ndarray:
        return np.asarray(self.image, dtype=np.uint8).copy()


def line_plot(series: dict[str, np.ndarray], title: str, xlabel: str, ylabel: str, size=(760, 420)) -> np.ndarray:
    """One line per named series of y values (x = 0, 1, 2, ...), legend on the right."""
    longest = max(len(y) for y in series.values())
    top = max(float(np.max(y)) for y in series.values())
    ax = Axes(size, (0, max(longest - 1, 1)), (0, top * 1.05 if top > 0 else 1.0), title, xlabel, ylabel, right=170)
    ax.y_ticks()
    ax.x_ticks()
    for i, (name, y) in enumerate(series.items()):
        color = COLORS[i % len(COLORS)]
        px, py = ax.to_pixel(np.arange(len(y)), y)
        ax.draw.line(list(zip(px, py)), fill=color, width=2)
        ly = ax.top + 10 + 20 * i
        ax.draw.line([(ax.right + 12, ly), (ax.right + 36, ly)], fill=color, width=3)
        ax.draw.text((ax.right + 42, ly), name, fill=INK, font=font(12), anchor="lm")
    ax.frame()
    return ax.to_array()


def bar_plot(values: dict[str, float], title: str, ylabel: str, errors: dict[str, float] | None = None, size=(480, 360)) -> np.ndarray:
    """One bar per name, with the value on top and an optional +-error bar."""
    errors = errors or {}
    top = max(values[k] + errors.get(k, 0.0) for k in values)
    ax = Axes(size, (0, len(values)), (0, top * 1.15 if top > 0 else 1.0), title, "", ylabel)
    ax.y_ticks()
    for i, (name, value) in enumerate(values.items()):
        x0, y0 = ax.to_pixel(i + 0.2, 0)
        x1, y1 = ax.to_pixel(i + 0.8, value)
        ax.draw.rectangle([x0, y1, x1, y0], fill=COLORS[i % len(COLORS)])
        if errors.get(name):
            cx, lo = ax.to_pixel(i + 0.5, value - errors[name])
            _, hi = ax.to_pixel(i + 0.5, value + errors[name])
            ax.draw.line([(cx, lo), (cx, hi)], fill=INK, width=2)
            ax.draw.line([(cx - 6, hi), (cx + 6, hi)], fill=INK, width=2)
        _, label_y = ax.to_pixel(0, value + errors.get(name, 0.0))
        ax.draw.text(((x0 + x1) / 2, label_y - 4), f"{value:.1f}", fill=INK, font=font(12), anchor="md")
        ax.draw.text(((x0 + x1) / 2, ax.bottom + 6), name, fill=INK, font=font(12), anchor="ma")
    ax.frame()
    return ax.to_array()


def image_grid(images: dict[str, np.ndarray], title: str, scale: int = 3, columns: int = 3) -> np.ndarray:
    """Images (all the same shape) in a grid, each enlarged ``scale`` times and captioned."""
    tiles = [np.repeat(np.repeat(im, scale, 0), scale, 1) for im in images.values()]
    h, w = tiles[0].shape[:2]
    columns = min(columns, len(tiles))
    rows = math.ceil(len(tiles) / columns)
    pad, caption, header = 8, 20, 30
    canvas = Image.new("RGB", (columns * (w + pad) + pad, header + rows * (h + caption + pad)), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((canvas.width // 2, 8), title, fill=INK, font=font(15), anchor="ma")
    for i, (name, tile) in enumerate(zip(images, tiles)):
        x = pad + (i % columns) * (w + pad)
        y = header + (i // columns) * (h + caption + pad)
        draw.text((x + w // 2, y + caption // 2), name, fill=INK, font=font(12), anchor="mm")
        canvas.paste(Image.fromarray(tile), (x, y + caption))
    return np.asarray(canvas, dtype=np.uint8).copy()
