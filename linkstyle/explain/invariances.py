"""What R is invariant to: images the classifier cannot tell apart, drawn through the INN link
(docs/method.md section 10).

For each of `n_seeds` test pairs (round-robin over the classes, `linkstyle.explain.seeds`;
the first of them are the seeds tune_units tunes) with stored r, draw K samples
w_k ~ p(w | r) from the INN, render them and re-encode the renders: r~_k = f_R(G(w_k)).
Sample k of the pair with seed s uses the noise `RandomState([sample_seed, s, k])`, so it
depends on its own key only.

Checks:
- the samples stay close to r in R: cos(r~_k, r) against the baseline cos(r, r_j) over the
  other test pairs j of the same class (and the fraction of samples closer to r than the
  nearest of them); the class the classifier gives the samples;
- while the images vary: per-pixel std over the K samples against the std over the
  class's test images, and 1 - SSIM between consecutive samples against that between
  unrelated images of the class (`linkstyle.link.cycle.derangement`);
- which world factors vary: per part of the generator's own part maps, its area and
  luminance (`linkstyle.measure.parts.measure_parts`, any of its metrics can be asked
  for). For each factor, ratio = sqrt(mean over seeds of the variance over the K samples /
  mean over those seeds of the variance over the test images of the seed's class). About
  1: the factor varies as freely among images with the same r as across the class, so R
  is invariant to it; about 0: r pins it down. Factors of parts whose mean area over the
  class images is under `min_part_area` px are left out (their luminance is noise).

Output (HDF5, streamed seed block by seed block):
  renders uint8 [S, K, H, W, 3]; parts uint8 [S, K, H, W] (where the generator has part maps)
  w float32 [S, K, w_dim]; r_tilde float32 [S, K, R]; cosine float32 [S, K]; predicted int64 [S, K]
  originals uint8 [S, H, W, 3] (render of the pair's stored w); mean_renders uint8 [S, H, W, 3] (v = 0)
  seeds, pair_index, classes [S]; r float32 [S, R]; cosine_baseline float32 [S]
  factors float64 [S, K, P, M]; baseline_factors float64 [N, P, M]; baseline_classes [N]
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from linkstyle.core import h5
from linkstyle.core.config import check, to_dict
from linkstyle.core.images import to_uint8
from linkstyle.explain.seeds import pick_seeds
from linkstyle.link.cycle import derangement, ssim_distance
from linkstyle.link.inn import ConditionalINN, noise_keys, sample_w
from linkstyle.measure.parts import PART_METRICS, measure_parts


@dataclass(frozen=True)
class InvarianceConfig:
    """Options of stage `invariances`."""

    n_seeds: int = 50  # test pairs, round-robin over the classes
    n_samples: int = 16  # K samples of w given each seed's r
    temperature: float = 1.0  # noise scale; 1 samples p(w | r) itself
    sample_seed: int = 0  # sample k of the pair with seed s: noise RandomState([sample_seed, s, k])
    metrics: tuple[str, ...] = ("area", "luminance")  # per-part factors, measured on the generator's part maps
    min_part_area: float = 20.0  # px: parts smaller on average over the class images are left out
    invariant_ratio: float = 0.5  # a factor R is invariant to keeps at least this share of its class std
    n_baseline_per_class: int = 250  # test pairs per class for the baselines (the first ones)
    n_figure_seeds: int = 10
    n_figure_samples: int = 8
    batch_size: int = 256
    device: str = "auto"

    def __post_init__(self):
        check(self.n_seeds >= 1, "n_seeds", f"must be >= 1, got {self.n_seeds}")
        check(self.n_samples >= 2, "n_samples", f"must be >= 2 (a spread needs two samples), got {self.n_samples}")
        check(self.temperature > 0, "temperature", f"must be positive, got {self.temperature}")
        check(0 <= self.sample_seed < 2**32, "sample_seed", f"must be in [0, 2**32), got {self.sample_seed}")
        check(len(self.metrics) > 0 and all(m in PART_METRICS for m in self.metrics), "metrics",
              f"must list some of {', '.join(PART_METRICS)}, got {list(self.metrics)}")
        check(len(set(self.metrics)) == len(self.metrics), "metrics", "lists a metric twice; list each once")
        check(self.min_part_area >= 0, "min_part_area", f"must be >= 0, got {self.min_part_area}")
        check(0 < self.invariant_ratio, "invariant_ratio", f"must be positive, got {self.invariant_ratio}")
        check(self.n_baseline_per_class >= 2, "n_baseline_per_class", f"must be >= 2, got {self.n_baseline_per_class}")
        check(self.n_figure_seeds >= 1, "n_figure_seeds", f"must be >= 1, got {self.n_figure_seeds}")
        check(self.n_figure_samples >= 1, "n_figure_samples", f"must be >= 1, got {self.n_figure_samples}")
        check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of matching rows (0 where a row is zero)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    den = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    return np.where(den > 0, (a * b).sum(-1) / np.where(den > 0, den, 1.0), 0.0)


def _measures(images: np.ndarray, parts: np.ndarray, part_names) -> np.ndarray:
    """[N, P, len(PART_METRICS)] per-part measures of images under their part maps."""
    table = measure_parts(images, parts, part_names)
    return table["value"].to_numpy().reshape(len(images), len(part_names), len(PART_METRICS))


def baseline_indices(labels: np.ndarray, classes: np.ndarray, n_per_class: int) -> np.ndarray:
    """The first n_per_class test pairs of each class in `classes`, in pair order."""
    return np.concatenate([np.flatnonzero(labels == c)[:n_per_class] for c in np.unique(classes)])


def _nanvar(x: np.ndarray, axis: int) -> np.ndarray:
    """Variance (ddof 1) over the finite values along `axis` (an absent part has no luminance);
    NaN where fewer than two."""
    finite = np.isfinite(x)
    n = finite.sum(axis, keepdims=True)
    mean = np.where(finite, x, 0.0).sum(axis, keepdims=True) / np.maximum(n, 1)
    dev = np.where(finite, x - mean, 0.0)
    var = (dev * dev).sum(axis, keepdims=True) / np.maximum(n - 1, 1)
    return np.squeeze(np.where(n >= 2, var, np.nan), axis=axis)


@torch.inference_mode()
def run_invariances(gen, clf, inn: ConditionalINN, test: dict, cfg: InvarianceConfig, path: str | os.PathLike,
                    attrs: dict, progress: bool = True) -> dict:
    """Sample, render, re-encode and measure; stream to `path`. Returns the arrays the summary
    and the figures need (see `summarize_invariances`)."""
    labels, seeds_all = np.asarray(test["label"]), np.asarray(test["seed"])
    pick = pick_seeds(labels, cfg.n_seeds, gen.n_classes, "invariances.n_seeds")
    S, K, res, R = len(pick), cfg.n_samples, gen.resolution, clf.n_units
    classes, pair_seeds, r_base = labels[pick], seeds_all[pick], np.asarray(test["r"], np.float32)[pick]
    part_names = list(gen.part_names) if gen.part_names is not None else None
    metrics = list(cfg.metrics)
    mi = [PART_METRICS.index(m) for m in metrics]

    # Baselines: the class's test images (renders of their stored w) and their r.
    base = baseline_indices(labels, classes, cfg.n_baseline_per_class)
    base_img, base_parts = gen.render(torch.as_tensor(test["w"][base]), cfg.batch_size)
    base_img = to_uint8(base_img).cpu().numpy()
    base_parts = base_parts.cpu().numpy() if base_parts is not None else None
    base_r, base_cls = np.asarray(test["r"], np.float64)[base], labels[base]
    cos_base = np.zeros(S)
    for i, (p, c) in enumerate(zip(pick, classes)):
        others = (base_cls == c) & (base != p)
        cos_base[i] = cosine(base_r[others], r_base[i][None]).mean() if others.any() else np.nan
    nearest_base = np.array([cosine(base_r[(base_cls == c) & (base != p)], r_base[i][None]).max(initial=-1.0)
                             for i, (p, c) in enumerate(zip(pick, classes))])

    keep = min(cfg.n_figure_seeds, S)
    fig = {"renders": [], "originals": [], "mean_renders": []}
    out = {k: [] for k in ("cosine", "predicted", "w", "pixel_std", "ssim_consecutive", "ssim_to_original", "factors")}
    block = max(1, cfg.batch_size // K)
    with h5.create(path) as f:
        h5.set_attrs(f, params=to_dict(cfg), class_names=list(gen.class_names), part_names=part_names or [],
                     metrics=metrics, noise_keys="RandomState([sample_seed, pair seed, k])", **attrs)
        for name, arr in (("seeds", pair_seeds), ("pair_index", pick), ("classes", classes), ("r", r_base),
                          ("cosine_baseline", cos_base.astype(np.float32)), ("baseline_classes", base_cls)):
            f.create_dataset(name, data=arr, track_times=False)
        gz = dict(compression="gzip", shuffle=True, track_times=False)
        ds = {
            "renders": f.create_dataset("renders", (S, K, res, res, 3), np.uint8, chunks=(1, K, res, res, 3), **gz),
            "w": f.create_dataset("w", (S, K, gen.w_dim), np.float32, track_times=False),
            "r_tilde": f.create_dataset("r_tilde", (S, K, R), np.float32, chunks=(1, K, R), **gz),
            "cosine": f.create_dataset("cosine", (S, K), np.float32, track_times=False),
            "predicted": f.create_dataset("predicted", (S, K), np.int64, track_times=False),
            "originals": f.create_dataset("originals", (S, res, res, 3), np.uint8, track_times=False),
            "mean_renders": f.create_dataset("mean_renders", (S, res, res, 3), np.uint8, track_times=False),
        }
        if part_names is not None:
            ds["parts"] = f.create_dataset("parts", (S, K, res, res), np.uint8, chunks=(1, K, res, res), **gz)
        bar = tqdm(total=S * K, desc="invariances", unit="img", disable=not progress)
        for a in range(0, S, block):
            b = min(S, a + block)
            n = b - a
            rb = np.repeat(r_base[a:b], K, 0)
            w = sample_w(inn, rb, noise_keys(pair_seeds[a:b], K, cfg.sample_seed), cfg.temperature)
            img, parts = gen.render(torch.as_tensor(w, dtype=torch.float32), cfg.batch_size)
            r_t, logits = clf.represent(img, batch_size=cfg.batch_size)
            img = to_uint8(img).cpu().numpy()
            w_mean = inn(torch.as_tensor(r_base[a:b]).to(inn.r_mean.device))
            mean_img = to_uint8(gen.synthesize(w_mean, cfg.batch_size)).cpu().numpy()
            orig = to_uint8(gen.synthesize(torch.as_tensor(test["w"][pick[a:b]]), cfg.batch_size)).cpu().numpy()
            cos = cosine(r_t.numpy(), rb).reshape(n, K)
            h5.ensure_block(f, img, r_t.numpy(), parts.cpu().numpy() if parts is not None else np.zeros(0))
            ds["renders"][a:b] = img.reshape(n, K, res, res, 3)
            ds["w"][a:b] = w.reshape(n, K, -1).astype(np.float32)
            ds["r_tilde"][a:b] = r_t.numpy().reshape(n, K, R)
            ds["cosine"][a:b] = cos.astype(np.float32)
            ds["predicted"][a:b] = logits.argmax(1).numpy().reshape(n, K)
            ds["originals"][a:b] = orig
            ds["mean_renders"][a:b] = mean_img
            imgs = img.reshape(n, K, res, res, 3)
            out["cosine"].append(cos)
            out["predicted"].append(logits.argmax(1).numpy().reshape(n, K))
            out["w"].append(w.reshape(n, K, -1))
            out["pixel_std"].append(imgs.astype(np.float64).std(1, ddof=1).mean((1, 2, 3)))
            nxt = np.roll(imgs, -1, axis=1).reshape(-1, res, res, 3)  # sample k against k + 1 (mod K)
            out["ssim_consecutive"].append(ssim_distance(img, nxt).reshape(n, K).mean(1))
            out["ssim_to_original"].append(ssim_distance(img, np.repeat(orig, K, 0)).reshape(n, K).mean(1))
            if part_names is not None:
                p = parts.cpu().numpy()
                ds["parts"][a:b] = p.reshape(n, K, res, res)
                out["factors"].append(_measures(img, p, part_names)[:, :, mi].reshape(n, K, len(part_names), len(mi)))
            for i in range(a, min(b, keep)):
                fig["renders"].append(imgs[i - a, :cfg.n_figure_samples])
                fig["originals"].append(orig[i - a])
                fig["mean_renders"].append(mean_img[i - a])
            bar.update(n * K)
        bar.close()
        result = {k: np.concatenate(v) for k, v in out.items() if v}
        if part_names is not None:
            base_m = _measures(base_img, base_parts, part_names)
            f.create_dataset("factors", data=result["factors"], track_times=False)
            f.create_dataset("baseline_factors", data=base_m[:, :, mi], track_times=False)
            result["baseline_factors"] = base_m[:, :, mi]
            result["baseline_areas"] = base_m[:, :, PART_METRICS.index("area")]
    perm = derangement(base_cls, 0)
    result.update({
        "classes": classes, "pair_seeds": pair_seeds, "cosine_baseline": cos_base, "cosine_nearest": nearest_base,
        "baseline_classes": base_cls, "class_names": list(gen.class_names), "part_names": part_names, "metrics": metrics,
        "baseline_pixel_std": {int(c): float(base_img[base_cls == c].astype(np.float64).std(0, ddof=1).mean())
                               for c in np.unique(base_cls)},
        "baseline_ssim": ssim_distance(base_img, base_img[perm]), "baseline_ssim_classes": base_cls,
        "test_w_var": float(np.asarray(test["w"], np.float64).var(0).sum()),
        "figure": {k: np.stack(v) for k, v in fig.items()},
    })
    return result


def factor_table(res: dict, cfg: InvarianceConfig) -> list[dict]:
    """One row per (part, metric): std over the samples, std over the class, their ratio (pooled
    over the seeds and per class), the part's mean area, and whether it counts as invariant."""
    within = _nanvar(res["factors"], axis=1)  # [S, P, M]
    base, bcls, classes = res["baseline_factors"], res["baseline_classes"], res["classes"]
    between_c = {int(c): _nanvar(base[bcls == c], axis=0) for c in np.unique(bcls)}  # [P, M] each
    between = np.stack([between_c[int(c)] for c in classes])  # [S, P, M], each seed against its class
    rows = []
    for p, part in enumerate(res["part_names"]):
        # Over the images of the seeds' classes, each class weighted as often as it has seeds.
        mean_area = float(np.mean([res["baseline_areas"][bcls == c, p].mean() for c in classes]))
        for m, metric in enumerate(res["metrics"]):
            wv, bv = within[:, p, m], between[:, p, m]
            ok = np.isfinite(wv) & np.isfinite(bv)
            row = {"part": part, "metric": metric, "mean_area": mean_area,
                   "std_samples": float(np.sqrt(np.mean(wv[ok]))) if ok.any() else None,
                   "std_class": float(np.sqrt(np.mean(bv[ok]))) if ok.any() else None}
            row["ratio"] = (float(np.sqrt(np.mean(wv[ok]) / np.mean(bv[ok])))
                            if ok.any() and np.mean(bv[ok]) > 0 else None)
            row["ratio_per_class"] = {}
            for c in np.unique(classes):
                sel = ok & (classes == c)
                if sel.any() and np.mean(bv[sel]) > 0:
                    row["ratio_per_class"][res["class_names"][int(c)]] = float(np.sqrt(np.mean(wv[sel]) / np.mean(bv[sel])))
            row["skipped"] = mean_area < cfg.min_part_area
            row["invariant"] = bool(not row["skipped"] and row["ratio"] is not None and row["ratio"] >= cfg.invariant_ratio)
            rows.append(row)
    return rows


def summarize_invariances(res: dict, cfg: InvarianceConfig) -> dict:
    """The JSON metrics: closeness in R, variation of the images, and the factor table."""
    cos, cls = res["cosine"], res["classes"]

    def stats(x):
        x = np.asarray(x, np.float64)
        return {"mean": float(np.mean(x)), "median": float(np.median(x))}

    pix_base = np.array([res["baseline_pixel_std"][int(c)] for c in cls])
    ssim_base = res["baseline_ssim"]
    out = {
        "n_seeds": len(cls), "n_samples": int(cos.shape[1]), "temperature": cfg.temperature,
        "cosine_to_r": stats(cos),
        "cosine_to_r_baseline_same_class": stats(res["cosine_baseline"]),
        "cosine_above_baseline_fraction": float((cos > res["cosine_baseline"][:, None]).mean()),
        "cosine_above_nearest_fraction": float((cos > res["cosine_nearest"][:, None]).mean()),
        "class_agreement": float((res["predicted"] == cls[:, None]).mean()),
        "pixel_std": stats(res["pixel_std"]), "pixel_std_baseline_same_class": stats(pix_base),
        "ssim_distance_between_samples": stats(res["ssim_consecutive"]),
        "ssim_distance_to_original": stats(res["ssim_to_original"]),
        "ssim_distance_baseline_same_class": stats(ssim_base),
        # E_r tr Var(w | r) over tr Var(w): the share of w's variance R leaves open, per the INN.
        "w_sample_var_share": float(np.var(res["w"], axis=1, ddof=1).sum(1).mean() / res["test_w_var"]),
        "per_class": {},
    }
    for c in np.unique(cls):
        sel = cls == c
        out["per_class"][res["class_names"][int(c)]] = {
            "cosine_to_r": float(cos[sel].mean()), "cosine_to_r_baseline": float(np.mean(res["cosine_baseline"][sel])),
            "class_agreement": float((res["predicted"][sel] == c).mean()),
        }
    if res.get("part_names") is not None:
        table = factor_table(res, cfg)
        out["factors"] = table
        ranked = sorted((r for r in table if r["invariant"]), key=lambda r: -r["ratio"])
        out["invariant_factors"] = [f"{r['part']} {r['metric']}" for r in ranked]
        out["encoded_factors"] = [f"{r['part']} {r['metric']}" for r in sorted(
            (r for r in table if not r["invariant"] and not r["skipped"] and r["ratio"] is not None), key=lambda r: r["ratio"])]
        out["skipped_parts"] = sorted({r["part"] for r in table if r["skipped"]})
    return out
