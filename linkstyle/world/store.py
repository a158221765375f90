"""The world on disk: stage `world` writes train and test splits to one HDF5 file.

Layout: groups `train` and `test`, each with datasets `images` (uint8 [N, H, W, 3]),
`parts` (uint8 [N, H, W] part labels), `labels` (class ids), `seeds`, `factors`
([N, len(FACTOR_NAMES)]); file attributes name the classes, parts and factors and
record the config.
"""

from __future__ import annotations

import os

import numpy as np
from tqdm.auto import tqdm

from linkstyle.core import h5
from linkstyle.core.config import to_dict
from linkstyle.world.procedural import (
    CLASS_NAMES,
    FACTOR_NAMES,
    PART_NAMES,
    WorldConfig,
    make_split,
    split_seeds,
)

SPLITS = ("train", "test")
FIELDS = ("images", "parts", "labels", "seeds", "factors")


def write_world(path: str | os.PathLike, cfg: WorldConfig, progress: bool = True) -> dict:
    """Render both splits chunk by chunk into `path`; return counts per split."""
    counts = {}
    with h5.create(path) as f:
        h5.set_attrs(f, class_names=list(CLASS_NAMES), part_names=list(PART_NAMES),
                     factor_names=list(FACTOR_NAMES), config=to_dict(cfg))
        for split in SPLITS:
            n = len(split_seeds(cfg, split)[0])
            app = h5.Appender(f.create_group(split), chunk_rows=256)
            with tqdm(total=n, desc=f"world/{split}", unit="img", disable=not progress) as bar:
                for seeds, classes, factors, images, parts in make_split(cfg, split):
                    app.append(images=images, parts=parts, labels=classes.astype(np.int64),
                               seeds=seeds.astype(np.int64), factors=factors)
                    bar.update(len(seeds))
            counts[split] = app.n
    return counts


def load_world(path: str | os.PathLike, split: str, fields: tuple[str, ...] = FIELDS) -> dict:
    """Arrays of one split plus the names stored in the file."""
    with h5.open_checked(path, {split: fields}, producer="world") as f:
        out = {k: f[split][k][:] for k in fields}
        out["class_names"] = tuple(h5.get_attr(f, "class_names"))
        out["part_names"] = tuple(h5.get_attr(f, "part_names"))
    return out
