"""Shared plumbing of the stage scripts: one-line errors, devices, threads, params.

The library raises `UserError` for bad input; `run` prints it as a single
`error: ...` line and exits with status 2 instead of showing a traceback.
"""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path
from typing import Callable, TypeVar

import typer

from .config import from_params
from .errors import UserError
from .io import read_params

T = TypeVar("T")


def run(fn: Callable) -> None:
    """`typer.run(fn)`, with UserError shown as one line (exit status 2)."""
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(fn)
    try:
        app(standalone_mode=False)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except (typer.Exit, SystemExit) as e:
        code = getattr(e, "exit_code", getattr(e, "code", 0))
        sys.exit(code)
    except Exception as e:  # click usage errors arrive here in non-standalone mode
        import click

        if isinstance(e, click.ClickException):
            e.show()
            sys.exit(e.exit_code)
        raise


def section(params: Path, name: str, cls: type[T]) -> T:
    """The params.yaml section `name` as the frozen dataclass `cls`."""
    return from_params(cls, read_params(params, name), name, source=str(params))


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed large blocks for reuse instead of handing them back to the OS.

    Batched CPU inference allocates and frees the same tens-of-MB activations every batch.
    By default glibc serves blocks that large with mmap and unmaps them on free, so each
    batch page-faults its activations in afresh: at batch 256 a third of sample_pairs' time
    was spent in the kernel. Keeping them mapped made it about 2x faster (100,000 pairs:
    402 s before, 195 s after; benchmarks/pairs_speed.py --glibc-default shows the old way). Returns False, changing nothing, where libc is not glibc.
    """
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
    return bool(mallopt(m_mmap_threshold, 1 << 30)) and bool(mallopt(m_trim_threshold, 1 << 30))


def device(name: str = "auto"):
    """Resolve 'auto' to CUDA when present, cap CPU threads at the cores we have, and keep
    freed CPU memory for reuse (`keep_freed_memory`)."""
    import torch

    keep_freed_memory()
    torch.set_num_threads(max(1, min(os.cpu_count() or 1, int(os.environ.get("LINKSTYLE_THREADS", os.cpu_count() or 1)))))
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device '{name}' requested but CUDA is not available; set device: auto or cpu in params.yaml")
    return torch.device(name)


def load_linked(generator: Path, classifier: Path, link: Path, pairs: Path, split: str, keys: tuple[str, ...],
                device) -> tuple:
    """(generator, classifier, link, pairs split, fingerprints) for the stages that use the link.

    The pairs must come from these very checkpoints (their fingerprints are checked) and
    the link must fit their dimensions; either mismatch is a one-line UserError.
    """
    from .checkpoint import fingerprint
    from .classifier import load_classifier
    from .link import load_link
    from .pairs import load_pairs
    from .stylegen import load_stylegen

    gen, clf = load_stylegen(generator, device), load_classifier(classifier, device)
    fps = {"generator_fingerprint": fingerprint(generator), "classifier_fingerprint": fingerprint(classifier)}
    data = load_pairs(pairs, split, keys, expect=fps)
    lnk = load_link(link, r_dim=clf.n_units, w_dim=gen.w_dim, device=device)
    return gen, clf, lnk, data, fps


def progress_enabled() -> bool:
    return os.environ.get("LINKSTYLE_PROGRESS", "1") != "0"
