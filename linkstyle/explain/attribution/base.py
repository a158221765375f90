"""The base class every attribution method follows (Captum's shape: a class built on a model,
`attribute(inputs, targets)` returning one map per input), and the registry of methods.

A method is built on an attribution-ready copy of the classifier
(`linkstyle.models.attribution_ready`), whose input is the image in [0, 1] at the
generator's resolution and whose outputs are the units of R or the class logits. Calling
it on N inputs and N targets (a unit or class index each) returns `Maps` for the N
pairs; `grid` does every target on every input (methods that can share work between
targets, occlusion, override it). Inputs go through in batches of `batch_size` pairs;
no result depends on the batch size, and a method that draws random numbers (activation
maximisation's jitter) draws them from each pair's own seed.

Every map is reduced to one heat value per pixel by the method's `heat_rule`:
- "signed": the channel sum, sign kept (occlusion, LRP: positive = evidence for the output);
- "magnitude": the channel sum of |attribution| (deconvnet, guided backprop: the sign of a
  gradient is not evidence; activation maximisation and the link: the size of the change).
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from linkstyle.core.config import from_params
from linkstyle.core.errors import UserError
from linkstyle.models.attribution_ready import AttributionNet

HEAT_RULES = ("signed", "magnitude")


@dataclass
class Maps:
    """Results for N (input, target) pairs, on the CPU.

    attribution: [N, 3, H, W] in image space; heat: [N, H, W] (`heat_rule`). Input
    reconstruction methods also give `start` and `result`, the images in [0, 1] before and
    after optimising, and the latent method `parts_start` / `parts_result` (uint8 [N, H, W],
    the generator's part maps of both renders) and `w` (the optimised latents).
    """

    attribution: torch.Tensor
    heat: torch.Tensor
    start: Optional[torch.Tensor] = None
    result: Optional[torch.Tensor] = None
    parts_start: Optional[torch.Tensor] = None
    parts_result: Optional[torch.Tensor] = None
    w: Optional[torch.Tensor] = None

    def __len__(self) -> int:
        return len(self.heat)

    @staticmethod
    def cat(parts: Sequence["Maps"]) -> "Maps":
        fields = [f.name for f in dataclasses.fields(Maps)]
        return Maps(**{k: (torch.cat([getattr(p, k) for p in parts]) if getattr(parts[0], k) is not None else None)
                       for k in fields})

    def reshape(self, *lead: int) -> "Maps":
        """The leading pair axis as `lead` (e.g. units x seeds)."""
        return Maps(**{f.name: (v.reshape(*lead, *v.shape[1:]) if (v := getattr(self, f.name)) is not None else None)
                       for f in dataclasses.fields(Maps)})


def heat(attribution: torch.Tensor, rule: str) -> torch.Tensor:
    """[N, 3, H, W] -> [N, H, W] by a heat rule (see the module docstring)."""
    if rule == "signed":
        return attribution.sum(1)
    if rule == "magnitude":
        return attribution.abs().sum(1)
    raise ValueError(f"unknown heat rule {rule!r}")


class Attribution:
    """Base class. Subclasses set `name`, `family`, `heat_rule`, `Options` (a frozen
    dataclass of their params) and implement `_batch(inputs, targets, seeds) -> Maps`."""

    name = "base"
    family = ""  # FeatureVis's taxonomy: input modification, deconvolutional, input reconstruction
    heat_rule = "magnitude"
    input_kind = "image"  # what `attribute` takes: image [N, 3, H, W] in [0, 1] (or "w", latents)

    @dataclass(frozen=True)
    class Options:
        pass

    def __init__(self, net: AttributionNet, options: Any = None, batch_size: int = 64, progress: bool = False,
                 **context: Any) -> None:
        if batch_size < 1:
            raise UserError(f"{self.name}: batch_size must be >= 1, got {batch_size}")
        self.net = net
        self.opts = options if options is not None else self.Options()
        self.batch_size, self.progress = int(batch_size), bool(progress)
        self.device = next(iter(net.parameters())).device

    # -- checks ------------------------------------------------------------------------
    def check_targets(self, targets: Any) -> torch.Tensor:
        if isinstance(targets, torch.Tensor):
            t = targets.detach().to("cpu", torch.int64).reshape(-1)
        else:
            t = torch.as_tensor(np.array(targets, dtype=np.int64)).reshape(-1)  # a copy: pandas arrays are read-only
        n = self.net.n_outputs
        bad = t[(t < 0) | (t >= n)]
        if len(bad):
            plural = "units" if self.net.output == "units" else "classes"
            raise UserError(f"{self.name}: {self.net.what} {int(bad[0])} out of range; the classifier has {n} {plural} "
                            f"(0..{n - 1})")
        return t

    def check_inputs(self, inputs: torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(inputs, dtype=torch.float32)
        r = self.net.image_resolution
        if x.ndim != 4 or tuple(x.shape[1:]) != (3, r, r):
            raise UserError(f"{self.name}: images must be float [N, 3, {r}, {r}] in [0, 1], got shape {list(x.shape)}")
        return x

    # -- public ------------------------------------------------------------------------
    def attribute(self, inputs: torch.Tensor, targets: Any, seeds: Optional[Sequence[int]] = None) -> Maps:
        """Maps of N pairs: input i explained for target i (a unit or class index)."""
        x = self.check_inputs(inputs)
        t = self.check_targets(targets)
        if len(t) == 1 and len(x) > 1:
            t = t.repeat(len(x))
        if len(t) != len(x):
            raise UserError(f"{self.name}: got {len(x)} inputs but {len(t)} targets; give one target per input, or one for all")
        s = np.arange(len(x), dtype=np.int64) if seeds is None else np.asarray(seeds, dtype=np.int64).reshape(-1)
        if len(s) != len(x):
            raise UserError(f"{self.name}: got {len(x)} inputs but {len(s)} seeds; give one seed per input")
        out = []
        bar = tqdm(total=len(x), desc=self.name, unit="map", disable=not self.progress, leave=False)
        with warnings.catch_warnings():
            # Captum's notices on every call (hooks set on ReLUs, inputs made to require gradients).
            warnings.filterwarnings("ignore", category=UserWarning, module=r"captum\..*")
            for i in range(0, len(x), self.batch_size):
                out.append(self._batch(x[i:i + self.batch_size].to(self.device), t[i:i + self.batch_size].to(self.device),
                                       s[i:i + self.batch_size]))
                bar.update(len(out[-1]))
        bar.close()
        if not out:
            return self._batch(x.to(self.device), t.to(self.device), s)
        return Maps.cat(out)

    def grid(self, inputs: torch.Tensor, targets: Any, seeds: Sequence[int]) -> Maps:
        """Every target on every input: Maps with leading axes [n_targets, n_inputs]; pair
        (u, s) draws from seed `pair_seed(seeds[s], targets[u])`."""
        x = self.check_inputs(inputs)
        t = self.check_targets(targets)
        U, S = len(t), len(x)
        pair_seeds = [pair_seed(int(s), int(u)) for u in t.tolist() for s in np.asarray(seeds).tolist()]
        return self.attribute(x.repeat(U, *[1] * (x.ndim - 1)), t.repeat_interleave(S), pair_seeds).reshape(U, S)

    def _batch(self, inputs: torch.Tensor, targets: torch.Tensor, seeds: np.ndarray) -> Maps:
        raise NotImplementedError

    def _maps(self, attribution: torch.Tensor, **extra: Any) -> Maps:
        a = attribution.detach().float()
        return Maps(a.cpu(), heat(a, self.heat_rule).cpu(), **{k: v.detach().cpu() for k, v in extra.items()})


def pair_seed(seed: int, target: int) -> int:
    """The RNG seed of one (input seed, target) pair: a function of the two only."""
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(target) & 0xFFFFFFFF]).generate_state(1)[0])


# ---------------------------------------------------------------------------- registry

METHODS: dict[str, type[Attribution]] = {}


def register(cls: type[Attribution]) -> type[Attribution]:
    METHODS[cls.name] = cls
    return cls


def method_class(name: str, where: str = "method") -> type[Attribution]:
    if name not in METHODS:
        raise UserError(f"{where}: unknown attribution method {name!r}; known methods are {', '.join(METHODS)}")
    return METHODS[name]


def make_method(name: str, net: AttributionNet, options: Any = None, batch_size: int = 64, progress: bool = False,
                **context: Any) -> Attribution:
    """Build method `name` on `net`. `options`: its Options, a params mapping, or None (defaults).
    `context`: what a method needs besides the classifier (am_latent: `generator`)."""
    cls = method_class(name)
    if isinstance(options, dict) or options is None:
        options = from_params(cls.Options, options or {}, name, source="attribution")
    return cls(net, options, batch_size=batch_size, progress=progress, **context)
