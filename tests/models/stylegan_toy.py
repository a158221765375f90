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
''')


def write_toy_pickle(folder: Path, per_class_avg: bool = True, seed: int = 0, **kwargs) -> tuple[Path, Path]:
    """(pickle path, code folder): `folder/code/training/networks_toy.py` and `folder/network-snapshot.pkl`."""
    code = folder / "code"
    (code / "training").mkdir(parents=True, exist_ok=True)
    (code / "training" / "__init__.py").write_text("")
    (code / "training" / "networks_toy.py").write_text(NETWORK_SOURCE)
    sys.path.insert(0, str(code))
    try:
        module = importlib.import_module("training.networks_toy")
        torch.manual_seed(seed)
        G = module.Generator(per_class_avg=per_class_avg, **kwargs).eval()
        path = folder / "network-snapshot.pkl"
        with open(path, "wb") as f:
            pickle.dump({"G": G, "D": None, "G_ema": G, "training_set_kwargs": {}}, f)
    finally:
        sys.path.remove(str(code))
        for name in [m for m in sys.modules if m == "training" or m.startswith("training.")]:
            del sys.modules[name]  # the loader must find the code through the path the user gives
    return path, code
