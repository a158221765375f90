"""The built-in world's stages when the models are a user's own: they cost nothing and say so.

`world`, `train_generator` and `train_classifier` exist to make the default models. When
params.yaml `models` names a user's generator or classifier (any `kind` but `builtin`),
the stage that would train it has nothing to do: it writes a small note at each of its
output paths (DVC needs every declared output) and exits in a second. No later stage
reads those notes; the report shows the user's models instead (docs/own-models.md).
"""

from __future__ import annotations

import json
from pathlib import Path

from linkstyle.core.io import atomic_path, read_params

__all__ = ["external_kind", "write_notes"]


def external_kind(params: Path, role: str) -> str | None:
    """models.<role>.kind ("generator" or "classifier") where it is not builtin, else None."""
    kind = read_params(params, f"models.{role}").get("kind", "builtin")
    return None if kind == "builtin" else str(kind)


def write_notes(paths: list[Path], why: str) -> None:
    """At each path a note that the stage was skipped and why: JSON for .json, text otherwise."""
    for p in paths:
        text = json.dumps({"skipped": why}, indent=2) + "\n" if p.suffix == ".json" else f"skipped: {why}\n"
        with atomic_path(p) as tmp:
            tmp.write_text(text)
