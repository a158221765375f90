"""User-drawn part masks for the few-shot segmenter of a generator without part maps.

One folder (the repository's `masks/`, see its README):
  labels.txt   one label name per line; line index = label id; line 0 = background
  samples.csv  header `file,seed,class`: each mask file and the generator seed and class
               id whose image it labels (the pipeline regenerates w and the features)
  <file>       index-mask PNGs, single channel (8- or 16-bit grey, or palette), pixel
               value = label id, size = generator resolution x resolution
Every problem is a one-line UserError naming the file (and the line of samples.csv).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image

from linkstyle.core.errors import UserError

# ---------------------------------------------------------------------------- user masks

def read_label_names(path: str | os.PathLike) -> list[str]:
    """labels.txt: one name per line, line index = label id, line 0 = background."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: label names file not found; write one label name per line, background first")
    lines = path.read_text(encoding="utf-8").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()  # a trailing newline or blank lines at the end are not labels
    names = [ln.strip() for ln in lines]
    if len(names) < 2:
        raise UserError(f"{path}: needs at least 2 label names (background, then parts), found {len(names)}")
    if len(names) > 256:
        raise UserError(f"{path}: at most 256 labels fit 8-bit masks, found {len(names)}")
    if "" in names:
        raise UserError(f"{path}: line {names.index('') + 1} is blank; every line up to the last must name a label")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise UserError(f"{path}: label names {dup} appear more than once; give each label a unique name")
    return names


def _read_mask(path: Path, resolution: int, n_labels: int) -> np.ndarray:
    if not path.is_file():
        raise UserError(f"{path}: mask listed in samples.csv not found; add the file or remove its row")
    try:
        with Image.open(path) as im:
            mode, a = im.mode, np.array(im)
    except Exception as e:  # PIL raises many types for foreign or truncated files
        raise UserError(f"{path}: unreadable mask image ({type(e).__name__}); save it as a single-channel PNG") from None
    if a.ndim != 2 or mode not in ("1", "L", "P", "I", "I;16", "I;16B", "I;16L"):
        raise UserError(f"{path}: mask must be a single-channel index image (8/16-bit grey or palette), got mode {mode}; "
                        f"store label ids as pixel values, not colours")
    if a.shape != (resolution, resolution):
        raise UserError(f"{path}: mask is {a.shape[1]}x{a.shape[0]} but the generator resolution is "
                        f"{resolution}x{resolution}; resize it (nearest) to {resolution}x{resolution}")
    ids = np.unique(a.astype(np.int64))
    bad = ids[(ids < 0) | (ids >= n_labels)]
    if bad.size:
        raise UserError(f"{path}: mask holds label ids {bad.tolist()[:10]} but labels.txt names {n_labels} labels "
                        f"(ids 0..{n_labels - 1}); fix the mask or add the labels")
    return a.astype(np.uint8)


def load_mask_folder(folder: str | os.PathLike, resolution: int, labels_file: Optional[str | os.PathLike] = None,
                     n_classes: Optional[int] = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Read a mask folder (layout in the module docstring).

    Returns seeds int64 [K], classes int64 [K], masks uint8 [K, R, R], label_names.
    labels_file defaults to <folder>/labels.txt; n_classes, when given, bounds class ids.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: mask folder not found; create it (labels.txt, samples.csv, masks) "
                        f"or fix the path in params.yaml")
    names = read_label_names(labels_file if labels_file is not None else folder / "labels.txt")
    table = folder / "samples.csv"
    if not table.is_file():
        raise UserError(f"{table}: not found; list the masks with a header line 'file,seed,class'")
    with open(table, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in reader.fieldnames or []]
        rows = list(reader)
    if not {"file", "seed", "class"} <= set(header):
        raise UserError(f"{table}: header must have columns file,seed,class, got {','.join(header) or 'nothing'}")
    if not rows:
        raise UserError(f"{table}: lists no masks; add one row per mask (file,seed,class)")
    seeds, classes, masks = [], [], []
    for line, row in enumerate(rows, start=2):
        row = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}  # None: extra cells
        try:
            seed, cls = int(row["seed"]), int(row["class"])
        except ValueError:
            raise UserError(f"{table}: line {line}: seed and class must be integers, "
                            f"got '{row['seed']}', '{row['class']}'") from None
        if not 0 <= seed < 2**32:
            raise UserError(f"{table}: line {line}: seed {seed} must be in [0, 2**32)")
        if cls < 0 or (n_classes is not None and cls >= n_classes):
            bound = f"0..{n_classes - 1}" if n_classes is not None else ">= 0"
            raise UserError(f"{table}: line {line}: class {cls} is not a generator class id ({bound})")
        if not row["file"]:
            raise UserError(f"{table}: line {line}: empty file name")
        seeds.append(seed)
        classes.append(cls)
        masks.append(_read_mask(folder / row["file"], resolution, len(names)))
    return np.array(seeds, dtype=np.int64), np.array(classes, dtype=np.int64), np.stack(masks), names
