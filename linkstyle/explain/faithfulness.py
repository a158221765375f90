"""How faithfully a tuning run moved the unit it set (docs/method.md section 9).

Tuning sets unit i of r to the values v_t (t = 0 .. T-1) and renders; the classifier's
re-encoding r~ of each render says how far unit i really moved in the image. For tuned
unit i, base seed s, set change delta_i = v_T-1 - v_0 (the same for every seed):

- transfer(i, s) = (r~_i(s, T-1) - r~_i(s, 0)) / delta_i: the fraction of the set change
  that survives the round trip r -> w -> image -> r~; 1 = all of it.
- off_target(i, s) = || r~_-i(s, T-1) - r~_-i(s, 0) ||_2 / |delta_i|: the Euclidean norm of
  the change of all OTHER units of r~ (unit i left out) between the first and the last
  step, in units of the set change. 0 = nothing else moved.
- corr(i): the Pearson correlation of r~_i with the set value v_t over all seeds and steps,
  after subtracting each seed's mean of both (within-seed): does r~_i follow the setting,
  whatever level the seed starts from.

Units whose set change is ~0 (constant over the tuning seeds) have no defined ratio: NaN
in the table, left out of the summaries. The arrays come from `tuning.h5`: `values`,
`r_tilde_unit` (r~_i) and `r_tilde_off` (the off-target norm of every step against
step 0, computed from float32 r~ when the file was written).

A unit the sweep could not move is *unreachable* (`reachability`): dead (set change ~0),
no gradient at any seed (closed loop: ||d r~_i / d w|| = 0 at the seed), or a median
transfer below the floor `tune_units.min_transfer`. Its renders do not show the unit, so
its label is no finding; tune_units stores the verdict per unit (`reachable`,
`unreachable_reason`) and analyze_units leaves those units out of the label statistics.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pandas as pd

from linkstyle.core import h5
from linkstyle.core.config import check

LIVE_EPS = 1e-6  # set changes at or below this are "dead" units: no ratio
TABLE_COLUMNS = ("unit", "tuning_mode", "set_change", "transfer", "transfer_mean", "off_target", "tuning_corr",
                 "moved_up_fraction")


@dataclass(frozen=True)
class CompareConfig:
    """Options of stage `compare_tuning` (the two modes side by side)."""

    n_strip_units: int = 4  # units in the strips, spread over the closed loop's transfer ranks
    n_strip_seeds: int = 4  # the first seeds of the tuning set, one class each by pick_seeds

    def __post_init__(self):
        check(self.n_strip_units >= 0, "n_strip_units", "must be >= 0")
        check(self.n_strip_seeds >= 1, "n_strip_seeds", "must be >= 1")


def off_target_norms(r_tilde: np.ndarray, unit_pos: np.ndarray) -> np.ndarray:
    """[n, S, T] norms of r~_-i(t) - r~_-i(0) from r~ [n, S, T, R], unit i = unit_pos[k] for row k."""
    r = np.asarray(r_tilde, dtype=np.float32)
    d = r - r[:, :, :1]
    d[np.arange(len(r)), :, :, np.asarray(unit_pos)] = 0.0  # unit i itself is the transfer, not off target
    return np.sqrt((d.astype(np.float64) ** 2).sum(-1)).astype(np.float32)


def within_seed_corr(unit_t: np.ndarray, values: np.ndarray) -> np.ndarray:
    """[U] correlation of r~_i [U, S, T] with the set values [U, T] over (seed, step), seed means removed."""
    a = np.asarray(unit_t, dtype=np.float64)
    a = a - a.mean(2, keepdims=True)
    b = np.asarray(values, dtype=np.float64)
    b = np.broadcast_to((b - b.mean(1, keepdims=True))[:, None, :], a.shape)
    num, den = (a * b).sum((1, 2)), np.sqrt((a * a).sum((1, 2)) * (b * b).sum((1, 2)))
    # Division guarded: a render that did not move at all has no correlation, not a NaN warning.
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def faithfulness_arrays(unit_t: np.ndarray, off: np.ndarray, values: np.ndarray) -> dict[str, np.ndarray]:
    """transfer and off_target [U, S] (NaN for dead units), corr [U], set_change [U], live [U]."""
    values = np.asarray(values, dtype=np.float32)
    unit_t = np.asarray(unit_t, dtype=np.float32)
    reached = values[:, -1] - values[:, 0]
    live = reached > LIVE_EPS
    safe = np.where(live, reached, 1.0)[:, None]
    # float32 maths, as tune_units computes unit_transfer_median
    moved = unit_t[:, :, -1] - unit_t[:, :, 0]
    transfer = np.where(live[:, None], moved / safe, np.nan)
    off_target = np.where(live[:, None], np.asarray(off, dtype=np.float32)[:, :, -1] / np.abs(safe), np.nan)
    corr = np.where(live, within_seed_corr(unit_t, values), np.nan)
    return {"transfer": transfer, "off_target": off_target, "corr": corr, "set_change": reached, "live": live,
            "moved": moved}


def faithfulness_summary(arrays: dict[str, np.ndarray]) -> dict:
    """Medians over (unit, seed) of the live units; the keys `reports/tuning.json` carries."""
    live = arrays["live"]
    if not live.any():
        return {"unit_transfer_median": None, "unit_moved_up_fraction": None, "off_target_median": None,
                "unit_corr_median": None, "transfer_above_half_fraction": None}
    tr = arrays["transfer"][live]
    off = arrays["off_target"][live]
    corr = arrays["corr"][live]
    corr = corr[np.isfinite(corr)]
    return {
        # How much of the set change of unit i shows up in r~ of the render: 1 = all of it.
        "unit_transfer_median": float(np.median(tr)),
        "unit_transfer_q25": float(np.quantile(tr, 0.25)),
        "unit_transfer_q75": float(np.quantile(tr, 0.75)),
        "transfer_above_half_fraction": float((tr >= 0.5).mean()),
        "unit_moved_up_fraction": float((arrays["moved"][live] > 0).mean()),
        # How much the other units moved, per unit of set change (L2 norm over the other units).
        "off_target_median": float(np.median(off)),
        "unit_corr_median": float(np.median(corr)) if len(corr) else None,
    }


UNREACHABLE_REASONS = ("dead", "no gradient", "transfer below floor")  # first that applies, in this order


def reachability(arrays: dict[str, np.ndarray], seed_gradient: np.ndarray | None = None,
                 min_transfer: float = 0.1) -> dict[str, np.ndarray]:
    """Which tuned units the sweep moved: `reachable` [U] bool and `unreachable_reason` [U]
    (str, "" where reachable), from `faithfulness_arrays`.

    The reason is the first of UNREACHABLE_REASONS that applies: "dead", the set change is
    ~0 (the unit is constant over the tuning seeds); "no gradient", `seed_gradient` [U, S]
    (||d r~_i / d w|| at each seed, which the closed loop supplies) is 0 at every seed, so no
    local step can move the unit; "transfer below floor", the median transfer over the seeds
    is below `min_transfer`. Without `seed_gradient` (open loop) only the first and the last apply.
    """
    live = np.asarray(arrays["live"], dtype=bool)
    reason = np.full(len(live), "", dtype=object)
    transfer = _nan_median(np.asarray(arrays["transfer"], dtype=np.float64))  # NaN for dead units
    # Later rules overwrite earlier ones, so the first reason in UNREACHABLE_REASONS wins.
    reason[~(transfer >= min_transfer)] = "transfer below floor"  # NaN (no seed measured) counts as below
    if seed_gradient is not None:
        g = np.asarray(seed_gradient, dtype=np.float64)
        if g.shape[0] != len(live) or g.ndim != 2:
            raise ValueError(f"seed_gradient must be [{len(live)}, seeds], got {g.shape}")
        reason[(g == 0).all(1)] = "no gradient"
    reason[~live] = "dead"
    return {"reachable": reason == "", "unreachable_reason": reason}


def reachability_counts(reach: dict[str, np.ndarray]) -> dict:
    """The metrics tune_units reports: how many units are unreachable, per reason."""
    reason = np.asarray(reach["unreachable_reason"], dtype=object)
    return {"unreachable_units": int((~np.asarray(reach["reachable"], dtype=bool)).sum()),
            "unreachable_by_reason": {r: int((reason == r).sum()) for r in UNREACHABLE_REASONS}}


def read_reachability(tuning) -> pd.DataFrame:
    """unit, reachable, unreachable_reason: one row per unit of a tuning file (open h5py
    file, or a mapping of arrays). Files written before tune_units stored the verdict count
    every unit as reachable."""
    units = np.asarray(tuning["units"][:]).astype(np.int64)
    if "reachable" in tuning and "unreachable_reason" in tuning:
        reachable = np.asarray(tuning["reachable"][:], dtype=bool)
        # h5py gives variable-length strings back as bytes
        reason = [r.decode("utf-8") if isinstance(r, bytes) else str(r) for r in tuning["unreachable_reason"][:]]
    else:
        reachable, reason = np.ones(len(units), dtype=bool), [""] * len(units)
    return pd.DataFrame({"unit": units, "reachable": reachable, "unreachable_reason": pd.Series(reason, dtype=object)})


FAITHFULNESS_DATASETS = ("units", "values", "r_tilde_unit", "r_tilde_off")


def faithfulness_table(tuning) -> pd.DataFrame:
    """One row per tuned unit: median transfer and off-target over the seeds, corr; see the module doc.

    `tuning` is a tuning HDF5 path, or the file already opened (with `h5.open_checked` on
    FAITHFULNESS_DATASETS, as analyze_units does).
    """
    if isinstance(tuning, (str, os.PathLike)):
        with h5.open_checked(tuning, {"": FAITHFULNESS_DATASETS}, producer="tune_units") as f:
            return faithfulness_table(f)
    f = tuning
    units, values = f["units"][:], f["values"][:]
    arrays = faithfulness_arrays(f["r_tilde_unit"][:], f["r_tilde_off"][:], values)
    mode = str(h5.get_attr(f, "mode", "open_loop"))
    live = arrays["live"]
    with np.errstate(all="ignore"):  # dead units: all-NaN rows give NaN, as documented
        rows = {
            "unit": units.astype(np.int64),
            "tuning_mode": np.full(len(units), mode, dtype=object),
            "set_change": arrays["set_change"].astype(np.float64),
            "transfer": _nan_median(arrays["transfer"]),
            "transfer_mean": _nan_mean(arrays["transfer"]),
            "off_target": _nan_median(arrays["off_target"]),
            "tuning_corr": arrays["corr"].astype(np.float64),
            "moved_up_fraction": np.where(live, (arrays["moved"] > 0).mean(1), np.nan),
        }
    return pd.DataFrame(rows, columns=list(TABLE_COLUMNS))


def compare_modes(open_h5: str | os.PathLike, closed_h5: str | os.PathLike) -> pd.DataFrame:
    """Both modes side by side, one row per unit of the closed-loop file: `<measure>_<mode>`
    for transfer, off_target, tuning_corr and reachable (`read_reachability`).

    The pipeline tunes the same units in both modes; the closed loop may also tune a
    subset of the open loop's units (`closed_loop.units_every`). On the units they share,
    the two files must use the same seeds and set values, or the comparison would be of
    different things: a one-line error otherwise.
    """
    from linkstyle.core.errors import UserError

    keys = ("units", "seeds", "values")
    got, reach = [], []
    for path in (open_h5, closed_h5):
        with h5.open_checked(path, {"": keys}, producer="tune_units") as f:
            got.append({k: f[k][:] for k in keys})
            reach.append(read_reachability(f))
    pos = {int(u): i for i, u in enumerate(got[0]["units"])}
    missing = [int(u) for u in got[1]["units"] if int(u) not in pos]
    if missing:
        raise UserError(f"{closed_h5}: tunes units {missing[:5]} that {open_h5} does not; run both modes with the "
                        f"same tune_units units or unit_range")
    rows = np.asarray([pos[int(u)] for u in got[1]["units"]], dtype=np.int64)
    for k, a, b in (("seeds", got[0]["seeds"], got[1]["seeds"]), ("values", got[0]["values"][rows], got[1]["values"])):
        if a.shape != b.shape or not np.allclose(a, b, rtol=0, atol=1e-6):
            raise UserError(f"{closed_h5}: tunes other {k} than {open_h5}; run both modes with the same "
                            f"tune_units n_seeds, n_steps and range_source")
    tables = [faithfulness_table(p).assign(reachable=r["reachable"].to_numpy()) for p, r in zip((open_h5, closed_h5), reach)]
    tables[0] = tables[0].iloc[rows].reset_index(drop=True)
    modes = [str(t["tuning_mode"].iloc[0]) if len(t) else "unknown" for t in tables]
    if modes[0] == modes[1]:  # two runs of one mode (say two settings): tell them apart by position
        modes = [f"{modes[0]}_1", f"{modes[1]}_2"]
    out = tables[1][["unit", "set_change"]].copy()
    for t, mode in zip(tables, modes):
        for c in ("transfer", "off_target", "tuning_corr", "reachable"):
            out[f"{c}_{mode}"] = t[c].to_numpy()
    return out


def summarize_modes(table: pd.DataFrame) -> dict:
    """Per mode, medians over units of the per-unit values; how often the second mode wins."""
    modes = [c[len("transfer_"):] for c in table.columns if c.startswith("transfer_")]
    out: dict = {"n_units": int(len(table)), "modes": modes}
    for m in modes:
        out[m] = {k: _median_or_none(table[f"{k}_{m}"]) for k in ("transfer", "off_target", "tuning_corr")}
        if f"reachable_{m}" in table:
            out[m]["unreachable_units"] = int((~table[f"reachable_{m}"].astype(bool)).sum())
    if len(modes) == 2:
        both = table.dropna(subset=[f"transfer_{m}" for m in modes] + [f"off_target_{m}" for m in modes])
        a, b = modes
        n = max(1, len(both))
        out[f"transfer_higher_{b}_fraction"] = float((both[f"transfer_{b}"] > both[f"transfer_{a}"]).sum() / n)
        out[f"off_target_lower_{b}_fraction"] = float((both[f"off_target_{b}"] < both[f"off_target_{a}"]).sum() / n)
    return out


def _median_or_none(x: pd.Series):
    x = x.to_numpy(dtype=np.float64)
    x = x[np.isfinite(x)]
    return float(np.median(x)) if len(x) else None


def pick_strip_units(table: pd.DataFrame, n: int = 4) -> list[int]:
    """`n` units for the strips: evenly spaced over the ranks of the last mode's transfer
    (worst to best), among units measured in every mode, so the figure shows the spread."""
    cols = [c for c in table.columns if c.startswith("transfer_")]
    ok = table.dropna(subset=cols)
    if not len(ok) or n < 1:
        return []
    ranked = ok.sort_values([cols[-1], "unit"], kind="mergesort")["unit"].to_numpy()
    picks = np.unique(np.round(np.linspace(0, len(ranked) - 1, min(n, len(ranked)))).astype(int))
    return [int(u) for u in ranked[picks]]


def _nan_median(x: np.ndarray) -> np.ndarray:
    ok = np.isfinite(x).any(1)
    out = np.full(len(x), np.nan)
    if ok.any():
        out[ok] = np.nanmedian(x[ok], axis=1)
    return out


def _nan_mean(x: np.ndarray) -> np.ndarray:
    ok = np.isfinite(x).any(1)
    out = np.full(len(x), np.nan)
    if ok.any():
        out[ok] = np.nanmean(x[ok], axis=1)
    return out
