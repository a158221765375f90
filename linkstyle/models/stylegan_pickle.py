"""StyleGAN-family network pickles (StyleGAN-XL, StyleGAN2-ADA, StyleGAN3) as a `Generator`.

Those pickles hold `{"G_ema": module, ...}` whose classes are defined by their authors'
code (`torch_utils.persistence` stores the source, but it imports `torch_utils`,
`dnnlib` and the ops from the checkout). The user names the pickle and a checkout of
that code; this module puts the checkout on `sys.path` and unpickles. **Unpickling runs
code from the file**: only files the user named in params.yaml are opened.

What the pipeline needs from G_ema, and how it is taken:
- mapping(z, c) with z from one `RandomState(seed)` per sample and c one-hot over
  `c_dim` (the `class_indices` the pipeline's classes stand for); w is the first of the
  identical num_ws copies (truncation is applied by `Generator.sample_w`, toward the
  class's mean w: the checkpoint's per-class `mapping.w_avg` [c_dim, w_dim] where it has
  one (StyleGAN-XL), otherwise the means stage `class_means` estimated and cached);
- synthesis(ws, noise_mode="const"): deterministic, no per-call noise; images in [-1, 1];
- feature maps for the few-shot segmenter: forward hooks on the synthesis layers
  (StyleGAN2's `b4`, `b8`, ... blocks or StyleGAN3's `L0_...` layers), in order, each
  cut to the image's frame. StyleGAN3/XL layers render a margin around the image: a layer
  states its output size (`out_size`, or `size` for the Fourier input; [width, height] or
  one int) and its sampling rate (`out_sampling_rate` / `sampling_rate`: samples across
  the image), so the image is the central rate / size of the map on each axis.
"""

from __future__ import annotations

import inspect
import math
import os
import pickle
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from linkstyle.core.errors import UserError
from linkstyle.models.generator import Generator
from linkstyle.models.plugin import add_import_path

CODE_HINT = "e.g. a clone of github.com/autonomousvision/stylegan-xl, NVlabs/stylegan3 or NVlabs/stylegan2-ada-pytorch"


def read_network_pickle(path: str | os.PathLike, code: str | os.PathLike) -> nn.Module:
    """G_ema of the pickle at `path`, unpickled with the checkout `code` importable."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: generator pickle not found; fix models.generator.path in params.yaml")
    add_import_path(code, "code checkout not found; set models.generator.code to the folder of the code that wrote "
                    f"the pickle ({CODE_HINT})")
    try:
        with open(path, "rb") as f:
            data = pickle.load(f)
    except ModuleNotFoundError as e:
        raise UserError(f"{path}: unpickling needs module {e.name!r}, which {code} does not provide; set "
                        f"models.generator.code to the code that wrote this pickle ({CODE_HINT})") from None
    except Exception as e:  # truncated files, foreign formats
        msg = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise UserError(f"{path}: not a readable network pickle ({type(e).__name__}: {msg})") from None
    if not isinstance(data, dict) or "G_ema" not in data:
        keys = sorted(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise UserError(f"{path}: no 'G_ema' in this pickle (found {keys}); give a StyleGAN network pickle "
                        "(network-snapshot-*.pkl) as models.generator.path")
    G = data["G_ema"]
    missing = [a for a in ("mapping", "synthesis", "z_dim", "c_dim", "w_dim", "num_ws", "img_resolution") if not hasattr(G, a)]
    if missing or not isinstance(G, nn.Module):
        raise UserError(f"{path}: G_ema lacks {', '.join(missing) or 'nn.Module'}; not a StyleGAN-family generator")
    return G


def _accepts(fn, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def frame_fraction(layer: nn.Module) -> tuple[float, float] | None:
    """(rows, cols): the share of the layer's output map that the image covers, or None.

    None where the layer states no size and sampling rate (StyleGAN2 blocks: the map is
    the image) or where they give no margin.
    """
    size = getattr(layer, "out_size", getattr(layer, "size", None))
    rate = getattr(layer, "out_sampling_rate", getattr(layer, "sampling_rate", None))
    try:
        width, height = (float(v) for v in np.broadcast_to(np.asarray(size, dtype=np.float64).reshape(-1), [2]))
        rate = float(rate)
    except (TypeError, ValueError):
        return None
    if not (math.isfinite(rate) and 0.0 < rate < max(width, height)):
        return None
    return min(rate / height, 1.0), min(rate / width, 1.0)


def crop_to_frame(x: torch.Tensor, frame: tuple[float, float] | None) -> torch.Tensor:
    """The image's frame of the map x [N, C, h, w]: the central `frame` share of each axis."""
    if frame is None:
        return x
    h, w = x.shape[-2:]
    top, left = round(h * (1.0 - frame[0]) / 2), round(w * (1.0 - frame[1]) / 2)
    return x[..., top:h - top, left:w - left]


class StyleGANPickle(Generator):
    """A network pickle's G_ema behind the `Generator` interface."""

    arch = "stylegan_pickle"

    def __init__(self, G: nn.Module, class_indices: Sequence[int] | None, class_names: Sequence[str] | None,
                 feature_layers: Sequence[str] | None = None, amp: bool = False) -> None:
        super().__init__()
        self.G = G.eval().requires_grad_(False)
        self.z_dim, self.w_dim, self.num_ws = int(G.z_dim), int(G.w_dim), int(G.num_ws)
        self.c_dim, self.resolution = int(G.c_dim), int(G.img_resolution)
        n_cond = max(self.c_dim, 1)
        idx = list(range(n_cond)) if class_indices is None else [int(i) for i in class_indices]
        if not idx or any(not 0 <= i < n_cond for i in idx) or len(set(idx)) != len(idx):
            raise UserError(f"models.generator.class_indices: must be distinct class ids in [0, {n_cond}) for this "
                            f"pickle (c_dim {self.c_dim}), got {idx[:8]}")
        names = [f"class_{i}" for i in idx] if class_names is None else [str(n) for n in class_names]
        if len(names) != len(idx):
            raise UserError(f"models.generator.class_names: {len(names)} names for {len(idx)} class_indices")
        self.class_indices, self.class_names, self.n_classes = tuple(idx), tuple(names), len(idx)
        self.register_buffer("_idx", torch.tensor(idx, dtype=torch.long), persistent=False)
        self.amp = bool(amp)
        self._layers = self._feature_layers(feature_layers)
        self._frames = [frame_fraction(getattr(G.synthesis, n)) for n in self._layers]
        self._synth_kwargs = {}
        if _accepts(G.synthesis.forward, "noise_mode"):
            self._synth_kwargs["noise_mode"] = "const"
        if _accepts(G.synthesis.forward, "force_fp32"):
            # StyleGAN runs its fp16 layers only on CUDA; without AMP keep everything fp32
            self._synth_kwargs["force_fp32"] = not self.amp

    def _feature_layers(self, names: Sequence[str] | None) -> list[str]:
        children = [n for n, _ in self.G.synthesis.named_children()]
        if names is None:
            layer_names = getattr(self.G.synthesis, "layer_names", None)  # StyleGAN3
            if layer_names:
                return [n for n in layer_names if n in children]
            return [n for n in children if n.startswith("b") and n[1:].isdigit()]  # StyleGAN2 blocks b4, b8, ...
        unknown = [n for n in names if n not in children]
        if unknown:
            raise UserError(f"models.generator.feature_layers: {unknown} are not layers of G.synthesis "
                            f"(it has {children})")
        return list(names)

    # -- Generator -----------------------------------------------------------------------
    def _c(self, classes: torch.Tensor) -> torch.Tensor:
        if self.c_dim == 0:
            return torch.zeros(len(classes), 0, device=classes.device)
        return F.one_hot(self._idx[classes], self.c_dim).float()

    def _map(self, z: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        ws = self.G.mapping(z, self._c(classes), truncation_psi=1)
        return ws[:, 0].float()

    def checkpoint_class_means(self) -> torch.Tensor | None:
        """Per-class mean w stored in the checkpoint ([c_dim, w_dim] `mapping.w_avg`), or None."""
        w_avg = getattr(self.G.mapping, "w_avg", None)
        if isinstance(w_avg, torch.Tensor) and w_avg.ndim == 2 and w_avg.shape == (self.c_dim, self.w_dim):
            return w_avg[self._idx.to(w_avg.device)].float()
        return None

    def class_mean_w(self) -> torch.Tensor:
        if self._class_means is not None:
            return self._class_means
        means = self.checkpoint_class_means()
        if means is None:
            raise UserError("this generator's checkpoint has no per-class mean w: run `dvc repro class_means` "
                            "(it estimates and caches them) and pass its output to the stage")
        return means

    def _synthesis(self, w: torch.Tensor, features: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        ws = w.unsqueeze(1).repeat(1, self.num_ws, 1)
        maps: list[torch.Tensor] = []
        hooks = []
        if features:
            def keeper(frame):
                def keep(_m, _inp, out):
                    x = out[0] if isinstance(out, (tuple, list)) else out  # StyleGAN2 blocks return (x, img)
                    if isinstance(x, torch.Tensor) and x.ndim == 4:
                        # a copy: the next layer may write into its input in place
                        maps.append(crop_to_frame(x, frame).to(torch.float32, copy=True))
                return keep
            hooks = [getattr(self.G.synthesis, n).register_forward_hook(keeper(f))
                     for n, f in zip(self._layers, self._frames)]
        try:
            with torch.autocast(w.device.type, dtype=torch.float16, enabled=self.amp and w.device.type == "cuda"):
                img = self.G.synthesis(ws, **self._synth_kwargs)
        finally:
            for h in hooks:
                h.remove()
        return img.float().clamp(-1.0, 1.0), maps
