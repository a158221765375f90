"""How every figure is saved: PNG, atomically, with byte-stable metadata.

Figures are built as `matplotlib.figure.Figure` objects (no pyplot, so no process-wide
backend or figure registry), and saved without the Software tag, which carries the
matplotlib version and would change the bytes of an otherwise identical figure.
"""

from __future__ import annotations

import os

from linkstyle.core.io import atomic_path


def save_figure(fig, path: str | os.PathLike, dpi: int = 120) -> None:
    # The temp path ends in .tmp, from which matplotlib cannot infer the format.
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, metadata={"Software": None})
