"""Links on disk: tensors plus the config that rebuilds them, never a pickled estimator.

A link records the fingerprints of the pairs file (and through it, of the generator and
classifier) it was fitted on; `load_link` refuses a link fitted on other pairs, so a
stale link can never produce numbers silently.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from linkstyle.core.checkpoint import load_module, save_module
from linkstyle.core.errors import UserError
from linkstyle.core.io import plain
from linkstyle.link.linear import LinearLink
from linkstyle.link.mlp import MLPLink

ARCHITECTURES: dict[str, type] = {LinearLink.arch: LinearLink, MLPLink.arch: MLPLink}


def save_link(path: str | os.PathLike, module: nn.Module, info: dict | None = None, **fingerprints: str) -> None:
    """Write a link (its config names arch and kind) with its fitting info and fingerprints."""
    save_module(path, "link", module, info=plain(info or {}), **fingerprints)


def load_link(path: str | os.PathLike, r_dim: int | None = None, w_dim: int | None = None,
              device: str | torch.device = "cpu", expect: dict | None = None) -> nn.Module:
    """Rebuild a saved link in eval mode on `device`, checking dims and fingerprints.

    `expect` maps fingerprint names (e.g. 'pairs_fingerprint') to the values they must have.
    `.info` holds the fitting info.
    """
    module, payload = load_module(path, "link", ARCHITECTURES, producer="fit_link", device="cpu")
    for key, value in (expect or {}).items():
        if payload.get(key) != value:
            raise UserError(f"{path}: link was fitted with {key}={payload.get(key)} but the current one is {value}; "
                            "refit it (dvc repro fit_link)")
    if r_dim is not None and int(r_dim) != module.r_dim:
        raise UserError(f"{path}: link maps r of {module.r_dim} units to w of {module.w_dim} dims, but the "
                        f"classifier has {r_dim} units; refit the link (dvc repro fit_link)")
    if w_dim is not None and int(w_dim) != module.w_dim:
        raise UserError(f"{path}: link maps r of {module.r_dim} units to w of {module.w_dim} dims, but the "
                        f"generator's w has {w_dim} dims; refit the link (dvc repro fit_link)")
    module.info = payload.get("info", {})
    return module.float().to(device).eval()
