"""A StyleGAN-style network pickle built offline, the way those checkpoints are made.

`write_toy_pickle` writes a small network module into a temporary code folder (as a
user's StyleGAN checkout would provide `training/networks_*.py`), imports it from there,
pickles `{"G_ema": G, ...}` and forgets the module again, so loading must go through the
code path the user names, exactly as for a real StyleGAN-XL / StyleGAN3 pickle.
"""

from __future__ import annotations

import importlib
import pickle
import sys
import textwrap
from pathlib import Path

import torch

NETWORK_SOURCE = textwrap.dedent('''
    import numpy as np
    import torch
    from torch import nn
    import torch.nn.functional as F


    class MappingNetwork(nn.Module):
        def __init__(self, z_dim, c_dim, w_dim, num_ws, per_class_avg):
            super().__init__()
            self.z_dim, self.c_dim, self.w_dim, self.num_ws = z_dim, c_dim, w_dim, num_ws
            self.embed = nn.Linear(c_dim, w_dim)
            self.fc = nn.Linear(z_dim + w_dim, w_dim)
            # StyleGAN-XL keeps one running mean per class, StyleGAN2/3 one over all classes
            self.register_buffer("w_avg", torch.randn([c_dim, w_dim] if per_class_avg else [w_dim]))

        def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, update_emas=False):
            x = F.leaky_relu(self.fc(torch.cat([z, 3.0 * self.embed(c)], 1)), 0.2)
            x = x.unsqueeze(1).repeat([1, self.num_ws, 1])
            if truncation_psi != 1:
                raise AssertionError("linkstyle truncates itself: psi must reach the network as 1")
            return x


    class SynthesisBlock(nn.Module):
        def __init__(self, c_in, c_out, w_dim, res):
            super().__init__()
            self.res = res
            self.affine = nn.Linear(w_dim, c_in)
            self.conv = nn.Conv2d(c_in, c_out, 3, padding=1)
            self.torgb = nn.Conv2d(c_out, 3, 1)

        def forward(self, x, img, w, noise_mode="random", force_fp32=False):
            x = F.interpolate(x, scale_factor=2) if x.shape[-1] < self.res else x
            x = x * (1 + self.affine(w))[:, :, None, None]
            x = F.leaky_relu(self.conv(x), 0.2)
            if noise_mode == "random":  # StyleGAN's per-pixel noise: only "const" is deterministic
                x = x + 0.1 * torch.randn_like(x)
            y = self.torgb(x)
            img = y if img is None else F.interpolate(img, scale_factor=2) + y
            return x, img


    class SynthesisNetwork(nn.Module):
        def __init__(self, w_dim, img_resolution, channels=8):
            super().__init__()
            self.w_dim, self.img_resolution, self.num_ws = w_dim, img_resolution, 3
            self.const = nn.Parameter(torch.randn(channels, 4, 4))
            self.b4 = SynthesisBlock(channels, channels, w_dim, 4)
            self.b8 = SynthesisBlock(channels, channels, w_dim, 8)
            self.b16 = SynthesisBlock(channels, channels, w_dim, img_resolution)

        def forward(self, ws, noise_mode="random", force_fp32=False):
            assert ws.shape[1:] == (self.num_ws, self.w_dim), ws.shape
            x = self.const.unsqueeze(0).repeat(len(ws), 1, 1, 1)
            img = None
            for i, block in enumerate((self.b4, self.b8, self.b16)):
                x, img = block(x, img, ws[:, i], noise_mode=noise_mode, force_fp32=force_fp32)
            return torch.tanh(img)


    class Generator(nn.Module):
        def __init__(self, z_dim=12, c_dim=10, w_dim=16, img_resolution=16, per_class_avg=True):
            super().__init__()
            self.z_dim, self.c_dim, self.w_dim, self.img_resolution, self.img_channels = z_dim, c_dim, w_dim, img_resolution, 3
            self.synthesis = SynthesisNetwork(w_dim, img_resolution)
            self.num_ws = self.synthesis.num_ws
            self.mapping = MappingNetwork(z_dim, c_dim, w_dim, self.num_ws, per_class_avg)

        def forward(self, z, c, truncation_psi=1, noise_mode="const"):
            return self.synthesis(self.mapping(z, c, truncation_psi), noise_mode=noise_mode)


    # StyleGAN3-like: every map samples the image plane at its own rate and covers a margin
    # of `margin` samples around the image; channel 0 of every map is 1 inside the image's
    # frame and 0 in the margin, carried from layer to layer by resampling.

    def _centres(size, rate):
        # sample centres in image units (the image spans [-0.5, 0.5]) of a map `size` wide
        return (torch.arange(int(size)) + 0.5 - int(size) / 2) / float(rate)


    class FourierInput(nn.Module):
        def __init__(self, w_dim, channels, size, sampling_rate):
            super().__init__()
            self.size = np.broadcast_to(np.asarray(size), [2])  # [width, height]
            self.sampling_rate, self.channels = float(sampling_rate), channels
            self.affine = nn.Linear(w_dim, 2)
            self.register_buffer("freqs", torch.randn(channels, 2) * 2.0)

        def forward(self, w):
            t = self.affine(w)
            shift = torch.eye(3, device=w.device).unsqueeze(0).repeat(len(w), 1, 1)
            shift[:, 0, 2] = 0.1 * t[:, 0]  # built by item assignment, written in place
            shift[:, 1, 2] = 0.1 * t[:, 1]
            xs = _centres(self.size[0], self.sampling_rate).to(w.device)
            ys = _centres(self.size[1], self.sampling_rate).to(w.device)
            gy, gx = torch.meshgrid(ys, xs, indexing="ij")
            pts = torch.stack([gx, gy, torch.ones_like(gx)], -1).reshape(1, -1, 3) @ shift.transpose(1, 2)
            x = torch.sin(2 * np.pi * pts[..., :2] @ self.freqs.t())  # [N, h*w, C]
            x = x.transpose(1, 2).reshape(len(w), self.channels, len(ys), len(xs)).contiguous()
            inside = ((gx.abs() < 0.5) & (gy.abs() < 0.5)).to(x.dtype)
            x[:, 0] = inside
            return x


    class MarginLayer(nn.Module):
        def __init__(self, w_dim, in_channels, out_channels, in_size, out_size, in_sampling_rate,
                     out_sampling_rate, is_torgb=False):
            super().__init__()
            self.in_size = np.broadcast_to(np.asarray(in_size), [2])
            self.out_size = np.broadcast_to(np.asarray(out_size), [2])
            self.in_sampling_rate, self.out_sampling_rate = float(in_sampling_rate), float(out_sampling_rate)
            self.is_torgb = is_torgb
            self.affine = nn.Linear(w_dim, in_channels)
            self.mix = nn.Conv2d(in_channels, out_channels, 1)

        def forward(self, x, w, noise_mode="random", force_fp32=False):
            assert x.shape[-1] == int(self.in_size[0]) and x.shape[-2] == int(self.in_size[1]), x.shape
            # the output's sample centres, in the input's grid_sample coordinates
            xs = _centres(self.out_size[0], self.out_sampling_rate) * self.in_sampling_rate * 2 / int(self.in_size[0])
            ys = _centres(self.out_size[1], self.out_sampling_rate) * self.in_sampling_rate * 2 / int(self.in_size[1])
            gy, gx = torch.meshgrid(ys, xs, indexing="ij")
            grid = torch.stack([gx, gy], -1).to(x.device).unsqueeze(0).expand(len(x), -1, -1, -1)
            x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            frame = x[:, :1].clone()
            x = self.mix(x * (1 + 0.1 * self.affine(w))[:, :, None, None])
            if self.is_torgb:
                return x
            x = F.leaky_relu(x, 0.2)
            x[:, :1] = frame  # the frame marker passes through, written in place
            return x


    class SynthesisNetwork3(nn.Module):
        def __init__(self, w_dim, img_resolution, channels=8, margin_size=3):
            super().__init__()
            self.w_dim, self.img_resolution, self.margin_size = w_dim, img_resolution, margin_size
            rates = [img_resolution // 4, img_resolution // 4, img_resolution // 2, img_resolution, img_resolution,
                     img_resolution]
            sizes = [r + 2 * margin_size for r in rates]
            sizes[-2:] = [img_resolution, img_resolution]  # the last layers: the image itself
            self.num_ws = len(rates) + 1
            self.input = FourierInput(w_dim, channels, sizes[0], rates[0])
            self.layer_names = []
            for i in range(1, len(rates)):
                last = i == len(rates) - 1
                name = f"L{i - 1}_{sizes[i]}_{3 if last else channels}"
                setattr(self, name, MarginLayer(w_dim, channels, 3 if last else channels, sizes[i - 1], sizes[i],
                                                rates[i - 1], rates[i], is_torgb=last))
                self.layer_names.append(name)

        def forward(self, ws, noise_mode="random", force_fp32=False):
            assert ws.shape[1:] == (self.num_ws, self.w_dim), ws.shape
            x = self.input(ws[:, 0])
            for name, w in zip(self.layer_names, ws[:, 1:].unbind(1)):
                x = getattr(self, name)(x, w, noise_mode=noise_mode, force_fp32=force_fp32)
            return torch.tanh(x)


    class Generator3(nn.Module):
        def __init__(self, z_dim=12, c_dim=10, w_dim=16, img_resolution=16, per_class_avg=True):
            super().__init__()
            self.z_dim, self.c_dim, self.w_dim, self.img_resolution, self.img_channels = z_dim, c_dim, w_dim, img_resolution, 3
            self.synthesis = SynthesisNetwork3(w_dim, img_resolution)
            self.num_ws = self.synthesis.num_ws
            self.mapping = MappingNetwork(z_dim, c_dim, w_dim, self.num_ws, per_class_avg)

        def forward(self, z, c, truncation_psi=1, noise_mode="const"):
            return self.synthesis(self.mapping(z, c, truncation_psi), noise_mode=noise_mode)
''')


def write_toy_pickle(folder: Path, per_class_avg: bool = True, seed: int = 0, generator: str = "Generator",
                     **kwargs) -> tuple[Path, Path]:
    """(pickle path, code folder): `folder/code/training/networks_toy.py` and `folder/network-snapshot.pkl`.

    `generator`: "Generator" (StyleGAN2-like blocks) or "Generator3" (StyleGAN3-like layers
    with margins around the image that write in place).
    """
    code = folder / "code"
    (code / "training").mkdir(parents=True, exist_ok=True)
    (code / "training" / "__init__.py").write_text("")
    (code / "training" / "networks_toy.py").write_text(NETWORK_SOURCE)
    sys.path.insert(0, str(code))
    try:
        module = importlib.import_module("training.networks_toy")
        torch.manual_seed(seed)
        G = getattr(module, generator)(per_class_avg=per_class_avg, **kwargs).eval()
        path = folder / "network-snapshot.pkl"
        with open(path, "wb") as f:
            pickle.dump({"G": G, "D": None, "G_ema": G, "training_set_kwargs": {}}, f)
    finally:
        sys.path.remove(str(code))
        for name in [m for m in sys.modules if m == "training" or m.startswith("training.")]:
            del sys.modules[name]  # the loader must find the code through the path the user gives
    return path, code
