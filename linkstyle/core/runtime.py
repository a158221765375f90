"""Where and how computation runs: pinned CPU arithmetic, device choice, threads, memory
reuse, progress bars.

The stage shell (`linkstyle.core.cli`) calls `pin_arithmetic` before numpy or torch load
their maths libraries, so the same params give the same bytes on any x86-64 CPU with AVX2:
the kernels that decide rounding (ATen's vectorised ops, oneDNN's convolutions, MKL's
BLAS, numpy's OpenBLAS) are held to their AVX2 code paths, and every reduction runs on
a fixed number of threads. Every stage resolves its `device` param through
`resolve_device` once, which also sets the threads and keeps freed memory mapped;
library code asks a module where it lives with `module_device` instead of guessing.
This module imports torch only inside the functions that use it, so pinning comes first.
"""

from __future__ import annotations

import ctypes
import os
import re
import warnings
from typing import TYPE_CHECKING, Callable, TypeVar

from linkstyle.core.errors import UserError

if TYPE_CHECKING:
    import torch
    from torch import nn

T = TypeVar("T")
DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")

# Threads of every reduction unless LINKSTYLE_THREADS says otherwise: the split of a sum
# over threads decides its rounding, so a count taken from the machine's cores would make
# bytes depend on the machine. 2 is the smallest machine the project is sized for.
PINNED_THREADS = 2
UNPIN_VARIABLE = "LINKSTYLE_UNPINNED"
# Read by the libraries when they load or first compute: set before numpy and torch import.
# AVX2 is the common floor of x86-64 CPUs of the last ten years; AVX-512 paths round
# differently. MKL's conditional numerical reproducibility also fixes its summation order.
PINNED_ENVIRONMENT = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "MKL_CBWR": "AVX2,STRICT",
    "OPENBLAS_CORETYPE": "Haswell",
    "CUBLAS_WORKSPACE_CONFIG": ":4096:8",  # deterministic cuBLAS where torch is asked to be
}
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
# Speed under load, not arithmetic. OpenMP's threads spin for a while at every barrier, so on
# a busy machine a thread that lost its core holds up the others while they burn theirs:
# scikit-learn's k-means (many small parallel regions) ran 3.9x slower beside one busy core.
# Passive waits (threads sleep at once) bring that to 1.1x but cost about 30% on an idle
# machine (training: 10.4 s against 13.9 s), so a stage chooses as it starts: passive where
# other work holds the cores its threads need, OpenMP's default where they are free
# (`wait_policy`; benchmarks/contention.py). Fewer threads under load would help too, but the
# thread count decides rounding, so it stays pinned. A policy set in the environment wins.
WAIT_POLICY_VARIABLE = "OMP_WAIT_POLICY"


def pinned() -> bool:
    """Whether this process pins its arithmetic (LINKSTYLE_UNPINNED=1 turns it off)."""
    return os.environ.get(UNPIN_VARIABLE, "") in ("", "0")


def pin_arithmetic() -> bool:
    """Hold the CPU maths libraries to AVX2 and a fixed thread count, before they load.

    Overrides what the environment says: a pinned run means the same bytes everywhere.
    Also asks OpenMP for passive waits where the machine is busy (`wait_policy`), pinned or not.
    LINKSTYLE_UNPINNED=1 leaves the environment alone (faster on AVX-512 machines, with
    bytes of this machine only). Returns whether it pinned: where numpy or torch has
    loaded already (a test process, a notebook) it changes nothing, since half a pin (some
    libraries read their variables on every call) would change results mid-process;
    `check_pinned` then names what runs unpinned.
    """
    import sys

    if any(m in sys.modules for m in ("numpy", "torch")):
        return False
    if WAIT_POLICY_VARIABLE not in os.environ and wait_policy(busy_cores(), os.cpu_count() or 1, cpu_threads()):
        os.environ[WAIT_POLICY_VARIABLE] = "PASSIVE"
    if not pinned():
        return False
    os.environ.update(PINNED_ENVIRONMENT)
    threads = str(cpu_threads())
    for name in THREAD_VARIABLES:
        os.environ[name] = threads
    return True


def busy_cores(sample_s: float = 0.1) -> float | None:
    """Cores of this machine kept busy by other work over a short sample (Linux /proc/stat; this
    process sleeps meanwhile); None where that cannot be read."""
    import time

    def read() -> tuple[int, int]:
        with open("/proc/stat") as f:
            ticks = [int(x) for x in f.readline().split()[1:9]]  # user .. steal
        return sum(ticks), ticks[3] + ticks[4]  # all, idle + iowait

    try:
        total0, idle0 = read()
        time.sleep(sample_s)
        total1, idle1 = read()
    except (OSError, ValueError):
        return None
    if total1 <= total0:
        return None
    return (1.0 - (idle1 - idle0) / (total1 - total0)) * (os.cpu_count() or 1)


def wait_policy(busy: float | None, cores: int, threads: int) -> bool:
    """Whether a stage's threads should wait passively: when others' work leaves fewer free cores
    than the stage has threads (a quarter core of slack for sampling noise)."""
    return busy is not None and busy > cores - threads + 0.25


def arithmetic_state() -> dict:
    """What decides this process's CPU arithmetic, as loaded: for reports and checks."""
    import sys

    state = {"pinned": pinned(), "threads": cpu_threads(),
             **{k: os.environ.get(k) for k in PINNED_ENVIRONMENT if k != "CUBLAS_WORKSPACE_CONFIG"}}
    if "torch" in sys.modules:
        import torch

        state["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    if "numpy" in sys.modules:
        try:
            from threadpoolctl import threadpool_info
        except ImportError:  # scikit-learn brings it; without it the BLAS is not reported
            threadpool_info = list
        state["blas"] = sorted({f"{i.get('internal_api')}:{i.get('architecture') or ''}" for i in threadpool_info()
                                if i.get("user_api") == "blas"})
    return state


def check_pinned() -> None:
    """Raise if pinning came too late for a library that already loaded (a stage script
    that imports numpy, pandas or torch before linkstyle.core.cli)."""
    if not pinned():
        return
    state = arithmetic_state()
    late = []
    if state.get("torch_cpu_capability") not in (None, "AVX2"):
        late.append(f"torch runs {state['torch_cpu_capability']} kernels")
    late += [f"BLAS {b}" for b in state.get("blas", []) if b.startswith("openblas") and not b.endswith(":Haswell")]
    if late:
        raise RuntimeError(f"CPU arithmetic not pinned ({'; '.join(late)}): import linkstyle.core.cli before numpy, "
                           f"pandas or torch, or set {UNPIN_VARIABLE}=1")


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
    """LINKSTYLE_THREADS if set; else PINNED_THREADS when pinned, else the cores this process
    may use. Setting LINKSTYLE_THREADS, or unpinning, changes bytes of the training stages."""
    raw = os.environ.get("LINKSTYLE_THREADS", "")
    if raw and (not raw.isdigit() or int(raw) < 1):
        raise UserError(f"LINKSTYLE_THREADS={raw!r}: must be a whole number of threads >= 1, e.g. LINKSTYLE_THREADS=2")
    if raw:
        return int(raw)
    if pinned():
        return PINNED_THREADS
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def resolve_device(name: str = "auto", where: str = "device") -> torch.device:
    """'auto' -> CUDA when present, else CPU; also sets the CPU threads and keeps freed memory.

    `where` names the param (e.g. 'params.yaml: sample_pairs.device') in the one-line error.
    """
    import torch

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
    import torch

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
    import torch

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
