"""Checkpoints: a state dict plus the config that rebuilds the module.

Saved with `torch.save` and read back with `torch.load(weights_only=True)`, so loading
never runs pickled code. Any failure to read is a one-line `UserError` naming the file.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from linkstyle.core.errors import UserError
from linkstyle.core.io import atomic_path


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
    # Serialised in memory first: torch's own writer reports a full disk as a bare
    # RuntimeError, a plain write raises the OSError (ENOSPC) that atomic_path turns into
    # one line naming the file.
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(buffer.getbuffer())


def load_checkpoint(path: str | os.PathLike, kind: str, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint written by `save_checkpoint` and check its kind."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: checkpoint not found; run the stage that writes it (dvc repro) or fix the path")
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


def load_state_strict(model: nn.Module, state: dict, path: str | os.PathLike, expected: str, assign: bool = False) -> None:
    """Load `state` into `model`, every key and shape checked; mismatches are one-line UserErrors.
    `assign`: take the tensors themselves (for a model built on the meta device)."""
    want = model.state_dict()
    missing = [k for k in want if k not in state]
    unexpected = [k for k in state if k not in want]
    if missing or unexpected:
        what = f"missing key '{missing[0]}'" if missing else f"unexpected key '{unexpected[0]}'"
        raise UserError(f"{path}: {what} ({len(missing)} missing, {len(unexpected)} unexpected); expected {expected}")
    for k, v in want.items():
        if not isinstance(state[k], torch.Tensor) or state[k].shape != v.shape:
            got = tuple(state[k].shape) if isinstance(state[k], torch.Tensor) else type(state[k]).__name__
            raise UserError(f"{path}: key '{k}' has shape {got}, expected {tuple(v.shape)}; expected {expected}")
    model.load_state_dict(state, strict=True, assign=assign)


def save_module(path: str | os.PathLike, kind: str, module: nn.Module, **extra: Any) -> None:
    """The one persistence idiom of every saved model: state dict + `module.config()` (which
    names its `arch`) + extras such as fingerprints, rebuilt by `load_module`."""
    config = module.config()
    if "arch" not in config:
        raise ValueError(f"{type(module).__name__}.config() must name its 'arch'")
    save_checkpoint(path, kind, config, module.state_dict(), **extra)


def load_module(path: str | os.PathLike, kind: str, architectures: dict[str, type], producer: str,
                device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild a module saved by `save_module` through the `architectures` registry, in eval mode.

    Returns (module, payload) so callers can check the extras (fingerprints). Only tensors
    and plain types are read (weights_only=True): loading never runs pickled code.
    """
    payload = load_checkpoint(path, kind)
    config = payload["config"]
    arch = config.get("arch")
    if arch not in architectures:
        raise UserError(f"{path}: {kind} architecture '{arch}' is unknown; known: {', '.join(sorted(architectures))}; "
                        f"rerun dvc repro {producer}")
    try:
        module = architectures[arch].from_config(config)
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{path}: {kind} config does not rebuild a '{arch}' ({type(e).__name__}: {e}); "
                        f"rerun dvc repro {producer}") from None
    load_state_strict(module, payload["state_dict"], path, f"a '{arch}' {kind} written by dvc repro {producer}")
    return module.to(device).eval(), payload
