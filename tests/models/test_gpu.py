"""The same inputs give the same results on CPU and GPU, within a stated tolerance (docs/own-models.md: Install and devices).

Skipped without CUDA (CI has none); run on a GPU machine with `pytest tests/models/test_gpu.py -s`.
cuDNN may use TF32 for convolutions on Ampere and later, so results agree to about 1e-3
relative, not bit for bit; everything else about a run (seeds, w, batching) is identical.
"""

from __future__ import annotations

import pytest
import torch

from linkstyle.models.registry import GeneratorSpec, load_generator

from .stylegan_toy import write_toy_pickle

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
TOLERANCE = 1e-2  # max abs difference relative to the CPU result's spread


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float().cpu() - b.float().cpu()).abs().max() / (b.float().std() + 1e-12))


def test_builtin_models_agree_on_cpu_and_gpu(tiny_gen, tiny_clf):
    seeds, classes = list(range(16)), [s % tiny_gen.n_classes for s in range(16)]
    out = {}
    for dev in ("cpu", "cuda"):
        g, c = tiny_gen.to(dev), tiny_clf.to(dev)
        w = g.sample_w(seeds, classes, psi=0.7)
        img, parts = g.render(w)
        r, logits = c.represent(img)
        out[dev] = (w, img, r, logits, parts)
    g.to("cpu"), c.to("cpu")
    errs = [_rel(a, b) for a, b in zip(out["cuda"][:4], out["cpu"][:4])]
    print(f"builtin CPU vs CUDA, relative max error of w, image, r, logits: {['%.1e' % e for e in errs]}")
    assert max(errs) < TOLERANCE
    assert (out["cuda"][4].cpu() != out["cpu"][4]).float().mean() < 0.01  # part labels: a few boundary pixels at most


def test_stylegan_pickle_agrees_on_cpu_and_gpu(tmp_path):
    pkl, code = write_toy_pickle(tmp_path)
    out = {}
    for dev in ("cpu", "cuda"):
        for amp in (False, True):
            gen = load_generator(GeneratorSpec(kind="stylegan", path=str(pkl), code=str(code), class_indices=(3, 7),
                                               amp=amp), dev)
            w = gen.sample_w([1, 2, 3, 4], [0, 1, 0, 1], psi=0.7)
            out[dev, amp] = gen.synthesize(w)
    err, err_amp = _rel(out["cuda", False], out["cpu", False]), _rel(out["cuda", True], out["cpu", False])
    print(f"stylegan pickle CPU vs CUDA relative max error: fp32 {err:.1e}, amp {err_amp:.1e}")
    assert err < TOLERANCE and err_amp < 5 * TOLERANCE
