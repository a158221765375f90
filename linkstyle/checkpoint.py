"""Checkpoints: a state dict plus the config that rebuilds the module.

Saved with `torch.save` and read back with `torch.load(weights_only=True)`, so loading
never runs pickled code. Any failure to read is a one-line `UserError` naming the file.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch

from .errors import UserError
from .io import atomic_path


def save_checkpoint(path: str | os.PathLike, kind: str, config: dict, state_dict: dict, **extra: Any) -> None:
    """Write {'kind', 'config', 'state_dict', **extra} atomically. Tensors are moved to CPU."""
    payload = {
        "kind": kind,
        "config": config,
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in state_dict.items()},
        **extra,
    }
    # Through a file object: given a path, torch.save names the zip's inner folder after the
    # (random) temp file, so the same model would give different bytes and fingerprints.
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(payload, f)


def load_checkpoint(path: str | os.PathLike, kind: str, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint written by `save_checkpoint` and check its kind."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: checkpoint not found; run the stage that trains it (dvc repro) or fix the path in params.yaml")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for truncated or foreign files
        msg = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise UserError(f"{path}: corrupt or unreadable checkpoint ({msg}); delete it and rerun dvc repro") from None
    if not isinstance(payload, dict) or "state_dict" not in payload or "config" not in payload:
        raise UserError(f"{path}: not a linkstyle checkpoint (no state_dict/config); point params.yaml at one written by linkstyle")
    if payload.get("kind") != kind:
        raise UserError(f"{path}: checkpoint holds a '{payload.get('kind')}', expected a '{kind}'; check the path in params.yaml")
    return payload


def fingerprint(path: str | os.PathLike) -> str:
    """Content hash (sha256, first 16 hex digits) recorded in downstream artifacts."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]
