"""Everything a stage downstream of the link needs, loaded and cross-checked in one call.

The pairs must come from these very models and the link from these very pairs: each
artifact records the fingerprints of what it was made from, and any mismatch is a
one-line error that says which stage to rerun, never a silently wrong number.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from linkstyle.core.checkpoint import fingerprint
from linkstyle.link.pairs import load_pairs
from linkstyle.link.store import load_link
from linkstyle.models.classifier import Classifier
from linkstyle.models.generator import Generator
from linkstyle.models.registry import (
    ClassifierSpec,
    GeneratorSpec,
    load_classifier,
    load_generator,
)


@dataclass
class Linked:
    gen: Generator
    clf: Classifier
    link: nn.Module
    pairs: dict[str, np.ndarray]
    fingerprints: dict[str, str]  # generator, classifier, pairs and link


def load_linked(gen_spec: GeneratorSpec, clf_spec: ClassifierSpec, link_path: str | os.PathLike,
                pairs_path: str | os.PathLike, split: str, keys: tuple[str, ...], device: torch.device) -> Linked:
    gen, clf = load_generator(gen_spec, device), load_classifier(clf_spec, device)
    fps = {"generator_fingerprint": gen.fingerprint, "classifier_fingerprint": clf.fingerprint}
    data = load_pairs(pairs_path, split, keys, expect=fps, r_dim=clf.n_units)
    fps["pairs_fingerprint"] = fingerprint(pairs_path)
    link = load_link(link_path, r_dim=clf.n_units, w_dim=gen.w_dim, device=device,
                     expect={"pairs_fingerprint": fps["pairs_fingerprint"]})
    fps["link_fingerprint"] = fingerprint(link_path)
    return Linked(gen, clf, link, data, fps)
