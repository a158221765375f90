"""Tiny models built offline, shared by the tests: same architectures as the pipeline's."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

from linkstyle.models.small_resnet import SmallResNet
from linkstyle.models.stylegen import StyleGen, StyleGenConfig
from linkstyle.world.procedural import CLASS_NAMES, PART_NAMES


@pytest.fixture()
def tmpfs(tmp_path) -> Callable[..., Path]:
    """mount(size, read_only=False) -> a fresh tmpfs folder, unmounted after the test: a full or
    read-only disk on demand. Skips the test where mounting is not allowed (not root, no
    CAP_SYS_ADMIN)."""
    mounted: list[Path] = []

    def mount(size: str, read_only: bool = False) -> Path:
        if os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root")
        mnt = tmp_path / f"tmpfs{len(mounted)}"
        mnt.mkdir()
        options = f"{'ro,' if read_only else ''}size={size}"
        if subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mnt)], capture_output=True).returncode:
            pytest.skip("cannot mount a tmpfs here (no CAP_SYS_ADMIN)")
        mounted.append(mnt)
        return mnt

    yield mount
    for mnt in mounted:
        subprocess.run(["umount", str(mnt)])


@pytest.fixture(scope="session")
def tiny_gen() -> StyleGen:
    """An untrained default-architecture generator whose class priors are well apart."""
    torch.manual_seed(0)
    g = StyleGen(StyleGenConfig(w_dim=16, channels=(16, 16, 8, 8), encoder_channels=(8, 8, 8)), CLASS_NAMES, PART_NAMES)
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(len(CLASS_NAMES)), 100)
    g.fit_prior(rng.normal(size=(len(labels), 16)) + 3.0 * labels[:, None], labels)
    return g.eval()


@pytest.fixture(scope="session")
def tiny_clf() -> SmallResNet:
    """An untrained small ResNet with the world's classes (r has 16 units)."""
    torch.manual_seed(0)
    return SmallResNet(CLASS_NAMES, widths=(8, 16)).eval()


@pytest.fixture()
def biased_clf() -> SmallResNet:
    """A classifier that calls everything the first class: the others are never kept."""
    torch.manual_seed(0)
    m = SmallResNet(CLASS_NAMES, widths=(8, 16)).eval()
    with torch.no_grad():
        m.fc.weight.zero_()
        m.fc.bias.copy_(torch.tensor([10.0] + [0.0] * (len(CLASS_NAMES) - 1)))
    return m
