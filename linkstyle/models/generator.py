"""The generator interface every stage uses, for the default generator and real ones.

A generator maps (z, class) to a latent w, and w to an image in [-1, 1]. Stages only
touch it through `Generator`:

- `sample_w(seeds, classes, psi)`: one RNG per seed (StyleGAN's convention:
  `np.random.RandomState(seed).randn(z_dim)`), so a sample depends on its seed only,
  never on the batch it was drawn in; truncation pulls w toward its class's mean w.
- `synthesize(w)`: batched images in [-1, 1], [N, 3, H, W].
- `synthesis_features(w)`: the intermediate synthesis feature maps (few-shot segmenter).
- `part_maps(w)`: per-pixel part labels where the generator has them (the default does).
- `render(w)`: images and part maps together, from one synthesis pass where possible.
- metadata: `w_dim`, `num_ws`, `z_dim`, `n_classes`, `resolution`, `class_names`.

w is passed around as [N, w_dim] (one copy); synthesis repeats it `num_ws` times, as in
StyleGAN's W space. Subclasses implement `_map`, `_synthesis` and, optionally, `_parts`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from linkstyle.core.errors import UserError
from linkstyle.core.runtime import batched, module_device


class Generator(nn.Module):
    """Base class: metadata, seeded sampling, truncation and batching."""

    w_dim: int
    z_dim: int
    num_ws: int
    n_classes: int
    resolution: int
    class_names: tuple[str, ...]
    part_names: tuple[str, ...] | None = None
    _class_means: torch.Tensor | None = None  # set_class_means: the cached means of stage class_means
    amp: bool = False  # mixed precision on CUDA (models.generator.amp)

    # -- to implement ------------------------------------------------------------------
    def _map(self, z: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """z [N, z_dim], classes [N] -> w [N, w_dim] (untruncated)."""
        raise NotImplementedError

    def class_mean_w(self) -> torch.Tensor:
        """[n_classes, w_dim]: the per-class mean w that truncation pulls toward."""
        raise NotImplementedError

    def _synthesis(self, w: torch.Tensor, features: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """w [N, w_dim] -> (image [N, 3, H, W] in [-1, 1], feature maps if asked)."""
        raise NotImplementedError

    def _parts(self, w: torch.Tensor) -> torch.Tensor | None:
        """w [N, w_dim] -> part labels uint8 [N, H, W], or None if the generator has none."""
        return None

    def _render(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(image, part labels or None); override when one synthesis pass yields both."""
        return self._synthesis(w, False)[0], self._parts(w)

    # -- shared ----------------------------------------------------------------------------
    def set_class_means(self, means: torch.Tensor | np.ndarray) -> None:
        """Truncate toward these per-class means [n_classes, w_dim] (stage class_means' output)."""
        means = torch.as_tensor(np.asarray(means), dtype=torch.float32)
        if tuple(means.shape) != (self.n_classes, self.w_dim):
            raise UserError(f"class means have shape {list(means.shape)}, but this generator has {self.n_classes} "
                            f"classes and w_dim {self.w_dim}; rerun dvc repro class_means")
        self._class_means = means.to(self.device)

    @property
    def device(self) -> torch.device:
        return module_device(self)

    def sample_z(self, seeds: Sequence[int]) -> np.ndarray:
        """[N, z_dim] float64; each row from its own RandomState(seed)."""
        seeds = np.asarray(seeds, dtype=np.int64)
        if seeds.ndim != 1 or (seeds < 0).any() or (seeds >= 2**32).any():
            raise UserError("seeds must be a 1-D list of integers in [0, 2**32)")
        return np.stack([np.random.RandomState(int(s)).randn(self.z_dim) for s in seeds]) if len(seeds) else np.zeros((0, self.z_dim))

    def check_classes(self, classes: Sequence[int]) -> np.ndarray:
        classes = np.asarray(classes, dtype=np.int64)
        if classes.size and (classes.min() < 0 or classes.max() >= self.n_classes):
            raise UserError(f"class ids must be in [0, {self.n_classes}); got {sorted(set(classes.tolist()))[:5]}")
        return classes

    @torch.inference_mode()
    def sample_w(self, seeds: Sequence[int], classes: Sequence[int], psi: float = 1.0) -> torch.Tensor:
        """w [N, w_dim] float32 on the generator's device, truncated toward the class mean."""
        classes = self.check_classes(classes)
        if len(classes) != len(seeds):
            raise UserError(f"got {len(seeds)} seeds but {len(classes)} classes")
        z = torch.as_tensor(self.sample_z(seeds), dtype=torch.float32, device=self.device)
        c = torch.as_tensor(classes, device=self.device)
        w = self._map(z, c)
        if psi != 1.0:
            mean = (self._class_means if self._class_means is not None else self.class_mean_w())[c]
            w = mean + psi * (w - mean)
        return w

    def _check_w(self, w: torch.Tensor) -> torch.Tensor:
        w = torch.as_tensor(w, dtype=torch.float32)
        if w.ndim == 3:  # [N, num_ws, w_dim] with identical copies: take the first
            w = w[:, 0]
        if w.ndim != 2 or w.shape[1] != self.w_dim:
            raise UserError(f"w must have shape [N, {self.w_dim}] for this generator, got {list(w.shape)}")
        return w.to(self.device)

    @torch.inference_mode()
    def synthesize(self, w: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Images in [-1, 1], [N, 3, H, W], on the generator's device."""
        w = self._check_w(w)
        out = batched(lambda a, b: self._synthesis(w[a:b], False)[0], len(w), batch_size, self.device)
        return torch.cat(out) if out else torch.zeros(0, 3, self.resolution, self.resolution, device=self.device)

    @torch.inference_mode()
    def synthesis_features(self, w: torch.Tensor) -> list[torch.Tensor]:
        """Intermediate synthesis feature maps, coarse to fine, each [N, C_i, h_i, w_i]."""
        return self._synthesis(self._check_w(w), True)[1]

    @torch.inference_mode()
    def part_maps(self, w: torch.Tensor, batch_size: int = 256) -> torch.Tensor | None:
        w = self._check_w(w)
        if self.part_names is None:
            return None
        return torch.cat(batched(lambda a, b: self._parts(w[a:b]), len(w), batch_size, self.device))

    @torch.inference_mode()
    def render(self, w: torch.Tensor, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(images in [-1, 1] [N, 3, H, W], part labels uint8 [N, H, W] or None), batched."""
        w = self._check_w(w)
        out = batched(lambda a, b: self._render(w[a:b]), len(w), batch_size, self.device)
        if not out:
            return self.synthesize(w), self.part_maps(w)
        images = torch.cat([o[0] for o in out])
        return images, (torch.cat([o[1] for o in out]) if out[0][1] is not None else None)
