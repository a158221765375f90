"""Per-image cost of the paper's models, StyleGAN-XL 256 px + ResNet-50, and the paper-scale projection.

Usage: python benchmarks/paper_models.py --stylegan-xl-code PATH [--device auto] [--batch 32]
       [--n 256] [--amp both|on|off] [--workdir DIR]

No weights can be downloaded here, so the generator is StyleGAN-XL's own architecture with
random weights, built by its code (a clone of github.com/autonomousvision/stylegan-xl): the
ImageNet stem (16 px, `--syn_layers 10`, so num_ws is 32 at 256 px as in the paper, cbase 32768, cmax 512, w_dim 512, z_dim 64, 1000
classes) grown by four 2x super-resolution stages of 7 head layers to 256 px, pickled as a
network snapshot (`G_ema`) and loaded back through linkstyle's `kind: stylegan` loader, as
a user's checkpoint would be. ResNet-50 is torchvision's, random weights saved to a file
and loaded through `kind: torchvision`. Random weights cost what trained ones cost.

Timed, after warm-up, per image at `--batch`: synthesis (w -> 256 px image), the
classifier (resize 256 / crop 224 / normalise on the device, ResNet-50 to r), and both
together as tune_units does per render (link, render, re-encode). Projection: the unit
sweep at paper scale, 2,048 units x 100 seeds x 3 steps = 614,400 renders, on this device.
Prints figures only.
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
import tempfile
import time
from pathlib import Path

import torch

PAPER_RENDERS = 2048 * 100 * 3


def snapshot(path: Path, G: torch.nn.Module) -> None:
    """A network snapshot as StyleGAN's training loop writes one (legacy.py reads these keys)."""
    with open(path, "wb") as f:
        pickle.dump({"G": G, "D": torch.nn.Identity(), "G_ema": G, "augment_pipe": None, "training_set_kwargs": None}, f)


def build_xl256(code: Path, out: Path) -> Path:
    """StyleGAN-XL ImageNet architecture at 256 px with random weights, pickled as G_ema."""
    cwd = os.getcwd()
    sys.path.insert(0, str(code))
    os.chdir(code)  # the mapping network reads in_embeddings/ relative to the checkout
    try:
        import dnnlib  # noqa: F401 - from the checkout
        from training.networks_stylegan3_resetting import Generator, SuperresGenerator

        torch.manual_seed(0)
        G = Generator(z_dim=64, c_dim=1000, w_dim=512, img_resolution=16, img_channels=3, channel_base=32768,
                      channel_max=512, num_layers=10, magnitude_ema_beta=0.999, conv_kernel=3, use_radial_filters=False,
                      mapping_kwargs={"num_layers": 2, "rand_embedding": False})
        stem = out / "stem16.pkl"
        snapshot(stem, G)
        for res in (32, 64, 128, 256):
            G = SuperresGenerator(img_resolution=res, path_stem=str(stem), head_layers=7, up_factor=2)
            stem = out / f"xl{res}.pkl"
            snapshot(stem, G.eval())
    finally:
        os.chdir(cwd)
    return stem


def timed(fn, device: torch.device, repeats: int = 3) -> float:
    fn()  # warm-up (cuDNN autotuning, custom op compilation)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t) / repeats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stylegan-xl-code", type=Path, default=None,
                    help="a clone of github.com/autonomousvision/stylegan-xl (nothing is downloaded)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--n", type=int, default=256, help="images per timed pass")
    ap.add_argument("--amp", choices=("both", "on", "off"), default="both")
    ap.add_argument("--workdir", type=Path, default=None)
    a = ap.parse_args()
    if a.stylegan_xl_code is None:  # `make bench` runs every benchmark; this one needs the user's checkout
        print("paper_models: skipped; pass --stylegan-xl-code PATH (a StyleGAN-XL checkout) to measure")
        return

    from linkstyle.core.runtime import resolve_device
    from linkstyle.models.registry import ClassifierSpec, GeneratorSpec, load_classifier, load_generator

    dev = resolve_device(a.device)
    work = a.workdir or Path(tempfile.mkdtemp(prefix="paper_models_"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    pkl = build_xl256(a.stylegan_xl_code.resolve(), work)
    import torchvision

    r50 = work / "resnet50.pth"
    torch.save(torchvision.models.resnet50().state_dict(), r50)
    print(f"built StyleGAN-XL 256 (random weights) and ResNet-50 in {time.perf_counter() - t0:.0f} s; device {dev}"
          + (f" ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else ""))
    for amp in {"both": (False, True), "on": (True,), "off": (False,)}[a.amp]:
        gen = load_generator(GeneratorSpec(kind="stylegan", path=str(pkl), code=str(a.stylegan_xl_code.resolve()),
                                           preset="dogs", amp=amp), dev)
        clf = load_classifier(ClassifierSpec(kind="torchvision", arch="resnet50", path=str(r50), preset="dogs", amp=amp), dev)
        n = a.n
        seeds = list(range(n))
        w = gen.sample_w(seeds, [s % gen.n_classes for s in seeds], psi=0.7)
        if amp is False:
            print(f"G: num_ws {gen.num_ws}, w_dim {gen.w_dim}, {gen.resolution} px, "
                  f"{sum(p.numel() for p in gen.parameters()) / 1e6:.1f} M parameters; "
                  f"R: {clf.n_units} units; batch {a.batch}")
        imgs = gen.synthesize(w, batch_size=a.batch)
        t_syn = timed(lambda: gen.synthesize(w, batch_size=a.batch), dev) / n
        t_clf = timed(lambda: clf.represent(imgs, batch_size=a.batch), dev) / n
        t_both = timed(lambda: clf.represent(gen.synthesize(w, batch_size=a.batch), batch_size=a.batch), dev) / n
        hours = t_both * PAPER_RENDERS / 3600
        print(f"amp {'on ' if amp else 'off'}: synthesis {t_syn * 1e3:.2f} ms/img, ResNet-50 {t_clf * 1e3:.2f} ms/img, "
              f"render + re-encode {t_both * 1e3:.2f} ms/img ({1 / t_both:.0f} img/s) -> paper-scale sweep "
              f"({PAPER_RENDERS:,} renders) {hours:.2f} h on this device")
        if dev.type == "cuda":
            print(f"  peak GPU memory {torch.cuda.max_memory_allocated(dev) / 2**30:.1f} GiB")
            torch.cuda.reset_peak_memory_stats(dev)


if __name__ == "__main__":
    main()
