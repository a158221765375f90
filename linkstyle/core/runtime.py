"""Where and how computation runs: device choice, CPU threads, memory reuse, progress bars.

Every stage resolves its `device` param through `resolve_device` once, which also caps
the CPU threads and keeps freed memory mapped; library code asks a module where it
lives with `module_device` instead of guessing.
"""

from __future__ import annotations

import ctypes
import os
import re
import warnings
from typing import Callable, TypeVar

import torch
from torch import nn

from linkstyle.core.errors import UserError

T = TypeVar("T")
DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed large blocks for reuse instead of handing them back to the OS.

    Batched CPU inference allocates and frees the same tens-of-MB activations every batch.
    By default glibc serves blocks that large with mmap and unmaps them on free, so each
    batch page-faults its activations in afresh: at batch 256 a third of sample_pairs' time
    was spent in the kernel. Keeping them mapped made it about 2x faster (100,000 pairs:
    402 s before, 195 s after; benchmarks/pairs_speed.py --glibc-default shows the old
    way). Returns False, changing nothing, where libc is not glibc.
    """
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
    return bool(mallopt(m_mmap_threshold, 1 << 30)) and bool(mallopt(m_trim_threshold, 1 << 30))


def cpu_threads() -> int:
    """LINKSTYLE_THREADS if set, else the cores this process may use (never more)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    raw = os.environ.get("LINKSTYLE_THREADS", "")
    if raw and not raw.isdigit():
        raise UserError(f"LINKSTYLE_THREADS={raw!r}: must be a whole number of threads, e.g. LINKSTYLE_THREADS=2")
    return max(1, min(cores, int(raw) if raw else cores))


def resolve_device(name: str = "auto", where: str = "device") -> torch.device:
    """'auto' -> CUDA when present, else CPU; also caps CPU threads and keeps freed memory.

    `where` names the param (e.g. 'params.yaml: sample_pairs.device') in the one-line error.
    """
    if not isinstance(name, str) or not DEVICE_PATTERN.match(name):
        raise UserError(f"{where}: unknown device {name!r}; use auto, cpu, cuda or cuda:N")
    keep_freed_memory()
    torch.set_num_threads(cpu_threads())
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"{where}: device '{name}' requested but CUDA is not available here; set it to auto or cpu")
    if name.startswith("cuda:") and int(name[5:]) >= torch.cuda.device_count():
        raise UserError(f"{where}: device '{name}' but only {torch.cuda.device_count()} CUDA devices exist; use cuda:0")
    if name == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"{where}: device 'mps' requested but MPS is not available here; set it to auto or cpu")
    return torch.device(name)


def module_device(module: nn.Module) -> torch.device:
    """Where a module lives: its first parameter or buffer (links hold only buffers); CPU if none."""
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return torch.device("cpu")


def progress_enabled() -> bool:
    """Progress bars on unless LINKSTYLE_PROGRESS=0 (the tests turn them off)."""
    return os.environ.get("LINKSTYLE_PROGRESS", "1") != "0"


def batched(fn: Callable[[int, int], T], n: int, batch_size: int, device: torch.device | str = "cpu") -> list[T]:
    """[fn(a, b) for consecutive ranges of at most batch_size] over range(n).

    On CUDA, an out-of-memory batch is retried at half the size (and later batches stay
    at that size), so a batch_size too large for the card's free memory adapts instead
    of failing. Callers' results never depend on the batch size, so neither do outputs.
    """
    out: list[T] = []
    a, bs = 0, max(1, int(batch_size))
    while a < n:
        b = min(n, a + bs)
        try:
            out.append(fn(a, b))
        except torch.cuda.OutOfMemoryError:
            if bs == 1:
                raise UserError(f"{torch.device(device)}: out of memory even at batch size 1; use a larger GPU "
                                "or device: cpu") from None
            bs = max(1, bs // 2)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            warnings.warn(f"out of GPU memory at batch size {b - a}: continuing at {bs}", RuntimeWarning, stacklevel=2)
            continue
        a = b
    return out
