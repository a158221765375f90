"""Pair sampling: batched throughput against a reference-style per-image loop, and memory.

Usage: python benchmarks/pairs_speed.py [--generator data/generator.pt --classifier data/classifier.pt]
       [--n 300] [--n-small 1000] [--n-large 20000] [--skip-memory] [--device auto] [--batch 256]
       [--glibc-default]

Throughput: the same work (sample w, render, 8-bit image, preprocess, classify) done
(a) by `linkstyle.link.pairs` in batches and (b) the way the reference code does it, one image
at a time with a PIL round trip, on the same models, side by side in one run.
Memory: peak resident memory of `sample_pairs` in a fresh process at n_small vs n_large
pairs per class; streaming to HDF5 should keep the two within 20%.
Without checkpoints the default architectures are built untrained (same cost per image).
On a GPU machine (`--device auto` picks CUDA) both paths run there: that is where the
per-image loop's launch and transfer overheads show, and where a 10x speed-up of batching
is to be measured.
Prints figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def models(generator: str | None, classifier: str | None, device: str = "cpu"):
    from linkstyle.models.registry import (
        ClassifierSpec,
        GeneratorSpec,
        load_classifier,
        load_generator,
    )
    from linkstyle.models.small_resnet import SmallResNet
    from linkstyle.models.stylegen import StyleGen, StyleGenConfig
    from linkstyle.world.procedural import CLASS_NAMES, PART_NAMES

    if generator and Path(generator).exists():
        gen = load_generator(GeneratorSpec(path=generator), device)
    else:
        torch.manual_seed(0)
        gen = StyleGen(StyleGenConfig(), CLASS_NAMES, PART_NAMES).eval()
        labels = np.repeat(np.arange(5), 200)
        gen.fit_prior(np.random.default_rng(0).normal(size=(1000, gen.w_dim)) + labels[:, None], labels)
        gen = gen.to(device)
    if classifier and Path(classifier).exists():
        clf = load_classifier(ClassifierSpec(path=classifier), device)
    else:
        clf = SmallResNet(CLASS_NAMES).eval().to(device)
    return gen, clf


def per_image_loop(gen, clf, seeds, c, psi):
    """Reference style: one seed, one render, PIL round trip, preprocess, classify."""
    from PIL import Image

    from linkstyle.core.images import to_uint8

    out = []
    with torch.inference_mode():
        for s in seeds:
            w = gen.sample_w([int(s)], [c], psi)
            img = gen.synthesize(w, 1)
            pil = Image.fromarray(to_uint8(img)[0].numpy())
            x = torch.from_numpy(np.array(pil)).permute(2, 0, 1)[None].float().to(w.device) / 255.0
            r = clf.features(clf.normalise(clf.resize(x)))
            out.append((w.cpu().numpy(), r.cpu().numpy(), clf.logits_from_r(r).cpu().numpy()))
    return out


def peak_rss_mb(n_per_class: int, generator, classifier, keep_freed: bool, device: str, batch: int) -> tuple[float, float]:
    """(peak RSS in MB, seconds) of one sample_pairs run in a fresh process."""
    code = f"""
import resource, sys, time
from linkstyle.core.runtime import keep_freed_memory
if {keep_freed}: keep_freed_memory()
sys.path.insert(0, {str(Path(__file__).parent)!r})
from pairs_speed import models
from linkstyle.link.pairs import PairsConfig, sample_pairs
gen, clf = models({generator!r}, {classifier!r}, {device!r})
cfg = PairsConfig(n_train_per_class={n_per_class}, n_test_per_class=10, keep_correct=False, batch_size={batch}, device={device!r})
t = time.perf_counter()
sample_pairs(gen, clf, cfg, sys.argv[1], {{}}, progress=False)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, time.perf_counter() - t)
"""
    with tempfile.TemporaryDirectory() as d:
        out = subprocess.run([sys.executable, "-c", code, os.path.join(d, "p.h5")], capture_output=True, text=True, check=True)
    mb, sec = out.stdout.split()
    return float(mb), float(sec)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--generator", default="data/generator.pt")
    ap.add_argument("--classifier", default="data/classifier.pt")
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--n-small", type=int, default=1000)
    ap.add_argument("--n-large", type=int, default=20000)
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda[:N]; both paths use it")
    ap.add_argument("--batch", type=int, default=256, help="batch size of the batched path")
    ap.add_argument("--glibc-default", action="store_true",
                    help="leave glibc's malloc settings alone (the stages call keep_freed_memory)")
    a = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    if not a.glibc_default:
        from linkstyle.core.runtime import keep_freed_memory

        keep_freed_memory()
    from linkstyle.link.pairs import _draw

    dev = ("cuda" if torch.cuda.is_available() else "cpu") if a.device == "auto" else a.device
    gen, clf = models(a.generator, a.classifier, dev)
    seeds = 10_000_000 + np.arange(a.n)
    # Warm-up of both paths (CUDA kernels and cuDNN choices are made on first use).
    _draw(gen, clf, seeds[: a.batch], 0, 0.7)
    per_image_loop(gen, clf, seeds[:4], 0, 0.7)
    t = time.perf_counter()  # both paths end in .cpu(), which waits for the device
    for i in range(0, a.n, a.batch):
        _draw(gen, clf, seeds[i : i + a.batch], 0, 0.7)
    batched = a.n / (time.perf_counter() - t)
    t = time.perf_counter()
    ref = per_image_loop(gen, clf, seeds, 0, 0.7)
    loop = a.n / (time.perf_counter() - t)
    from linkstyle.core.images import to_uint8

    # The loop classifies the 8-bit image; so does this check, to show both do the same work.
    r8 = clf.represent(to_uint8(gen.synthesize(gen.sample_w(seeds[:4], [0] * 4, 0.7))).cpu().numpy())[0].numpy()
    same = np.allclose(np.concatenate([x[1] for x in ref[:4]]), r8, atol=1e-4)
    print(f"pair sampling, {a.n} pairs, device {dev}, batch {a.batch}, {torch.get_num_threads()} CPU threads:")
    print(f"  batched (linkstyle.link.pairs) {batched:9.1f} pairs/s")
    print(f"  per-image loop + PIL      {loop:9.1f} pairs/s")
    print(f"  speed-up                  {batched / loop:9.1f} x   (same r: {same})")
    if a.skip_memory:
        return
    small = peak_rss_mb(a.n_small, a.generator, a.classifier, not a.glibc_default, dev, a.batch)
    large = peak_rss_mb(a.n_large, a.generator, a.classifier, not a.glibc_default, dev, a.batch)
    print("sample_pairs peak memory (fresh process, 5 classes, keep_correct off):")
    print(f"  {a.n_small:6d} pairs/class  {small[0]:8.1f} MB  ({small[1]:.0f} s)")
    print(f"  {a.n_large:6d} pairs/class  {large[0]:8.1f} MB  ({large[1]:.0f} s)")
    print(f"  ratio                    {large[0] / small[0]:8.3f}")


if __name__ == "__main__":
    main()
