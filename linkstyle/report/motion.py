"""Vector-field figure of stage quantify_motion (the paper's Fig. 2B left), from the RESIDUAL motion.

Drawing choices follow the reference, with its pixel counts given at 256 px and scaled
to the image: vectors within 3 px of the border are dropped, only every 5th row is
drawn, and of those only the ones longer than the 90th percentile of their lengths.
Hue is the direction, saturation max(length / longest, 0.5), and the arrows lie over
the first render darkened by 75%. Unlike the reference, the field is the residual left
after the global affine alignment, not the raw matches (docs/method.md section 7).
At 32 px residuals are fractions of a pixel, so arrows are magnified (the gain is in
each panel's title). Directions are in image coordinates (y down), as displayed: the
colour wheel is drawn in the same coordinates, so an arrow has the colour of the
wheel where it points.
"""

from __future__ import annotations

import os

import numpy as np

from linkstyle.report.figures import save_figure

BORDER_PX, ROW_STEP_PX, PERCENTILE = 3.0, 5.0, 90.0  # the reference's, at 256 px
DARKEN = 0.75


def _scaled(px: float, size: int, reference_size: int) -> int:
    return max(1, int(round(px * size / reference_size)))


def arrow_selection(flow: np.ndarray, valid: np.ndarray, reference_size: int = 256) -> np.ndarray:
    """bool [H, W]: the vectors the figure draws (border, row step, percentile; see the module)."""
    h, w = valid.shape
    size = max(h, w)
    b = _scaled(BORDER_PX, size, reference_size)
    keep = valid.copy()
    keep[:b], keep[-b:], keep[:, :b], keep[:, -b:] = False, False, False, False
    rows = np.zeros(h, bool)
    rows[::_scaled(ROW_STEP_PX, size, reference_size)] = True
    keep &= rows[:, None]
    length = np.hypot(flow[..., 0], flow[..., 1])
    if keep.any():
        keep &= length > np.percentile(length[keep], PERCENTILE)
    return keep & (length > 0)


def direction_colors(dx: np.ndarray, dy: np.ndarray, longest: float) -> np.ndarray:
    """RGB [M, 3]: hue = direction (image coordinates), saturation = max(length / longest, 0.5)."""
    from matplotlib.colors import hsv_to_rgb

    hue = (np.arctan2(dy, dx) % (2 * np.pi)) / (2 * np.pi)
    sat = np.maximum(np.hypot(dx, dy) / max(longest, 1e-12), 0.5)
    return hsv_to_rgb(np.stack([hue, np.clip(sat, 0, 1), np.ones_like(hue)], -1))


def colour_wheel(size: int = 101) -> np.ndarray:
    """RGBA [size, size, 4]: the legend; row index grows downward, as in the images."""
    c = (size - 1) / 2
    yy, xx = np.mgrid[0:size, 0:size]
    dx, dy = (xx - c) / c, (yy - c) / c
    rgb = direction_colors(dx.ravel(), dy.ravel(), 1.0).reshape(size, size, 3)
    alpha = (np.hypot(dx, dy) <= 1.0).astype(float)
    return np.concatenate([rgb, alpha[..., None]], -1)


def plot_motion_fields(panels: dict, path: str | os.PathLike, dpi: int = 120) -> None:
    """One row per selected pair: first render, last render, residual field over the darkened first."""
    from matplotlib.figure import Figure

    rows, ref = panels["panels"], panels.get("reference_size", 256)
    n = max(1, len(rows))
    fig = Figure(figsize=(10.5, 0.6 + 2.75 * n), layout="constrained")
    axes = fig.subplots(n, 4, squeeze=False, gridspec_kw={"width_ratios": [1, 1, 1.6, 0.9]})
    for ax in axes.ravel():
        ax.set_axis_off()
    for r, p in enumerate(rows):
        h, w = p["first"].shape[:2]
        extent = (-0.5, w - 0.5, h - 0.5, -0.5)
        axes[r, 0].imshow(p["first"], interpolation="nearest", extent=extent)
        axes[r, 0].set_title(f"unit {p['unit']}, seed {p['seed']} ({p['class_name']})\nfirst step", fontsize=8)
        axes[r, 1].imshow(p["last"], interpolation="nearest", extent=extent)
        tx, ty = p["translation"]
        axes[r, 1].set_title(f"last step; affine: shift ({tx:+.2f}, {ty:+.2f}) px,\n"
                             f"scale {p['scale']:.3f}, rotation {p['rotation_deg']:+.1f}°", fontsize=8)
        ax = axes[r, 2]
        ax.imshow((p["first"].astype(np.float64) * (1 - DARKEN)).astype(np.uint8), interpolation="nearest", extent=extent)
        flow = p["flow"]
        keep = arrow_selection(flow, p["valid"], ref)
        ys, xs = np.nonzero(keep)
        dx, dy = flow[ys, xs, 0].astype(np.float64), flow[ys, xs, 1].astype(np.float64)
        longest = float(np.hypot(dx, dy).max()) if len(dx) else 0.0
        gain = (max(h, w) / 8) / longest if longest > 0 else 1.0  # longest arrow: 1/8 of the image
        if len(dx):
            ax.quiver(xs, ys, dx * gain, dy * gain, color=direction_colors(dx, dy, longest), angles="xy",
                      scale_units="xy", scale=1, width=0.012, headwidth=3.5, headlength=4, headaxislength=3.5)
        ax.set(xlim=(-0.5, w - 0.5), ylim=(h - 0.5, -0.5))
        part = "whole image" if p["part"] == "image" else f"{p['part']}"
        ax.set_title(f"residual motion (strongest: {part} {p['metric']}); {len(dx)} arrows,\n"
                     f"longest {longest:.2f} px, drawn x{gain:.1f}", fontsize=8)
    wheel = axes[0, 3]
    wheel.imshow(colour_wheel(), extent=(-1, 1, 1, -1))
    for label, (x, y) in (("→ +x", (1.05, 0)), ("↓ +y", (0, 1.12))):
        wheel.text(x, y, label, fontsize=7, ha="left" if x else "center", va="center" if x else "top")
    wheel.set_title("direction (hue),\nlength (saturation)", fontsize=8)
    if not rows:
        axes[0, 0].text(0.5, 0.5, "no units to show", ha="center", va="center", transform=axes[0, 0].transAxes)
    fig.suptitle("Residual motion after affine alignment, most selective units "
                 f"(arrows above the {PERCENTILE:.0f}th percentile)", fontsize=10)
    save_figure(fig, path, dpi)
