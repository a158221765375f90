"""The model seam: every stage loads its generator and classifier through here.

A model is described by a spec from params.yaml (`models.generator`, `models.classifier`):

    kind: builtin          # a checkpoint written by this pipeline (train_generator / train_classifier)
    path: data/generator.pt

or, for a classifier, `kind: torchvision_resnet50` with the path of a
`torchvision.models.resnet50().state_dict()` file plus optional `class_indices` and
`class_names` (which ImageNet outputs are the generator's classes). Backends for
StyleGAN pickles, torchvision models by name and plugins register here as further kinds.

Saved built-in models use the one persistence idiom of `linkstyle.core.checkpoint`
(state dict + config naming its `arch`, rebuilt through `GENERATORS` / `CLASSIFIERS`,
read with weights_only=True).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from linkstyle.core.checkpoint import fingerprint, load_module
from linkstyle.core.config import check
from linkstyle.core.errors import UserError
from linkstyle.models.classifier import Classifier
from linkstyle.models.generator import Generator
from linkstyle.models.resnet50 import ResNet50, load_torchvision_resnet50
from linkstyle.models.small_resnet import SmallResNet
from linkstyle.models.stylegen import StyleGen

GENERATORS: dict[str, type] = {"stylegen": StyleGen}
CLASSIFIERS: dict[str, type] = {SmallResNet.arch: SmallResNet, ResNet50.arch: ResNet50}
GENERATOR_KINDS = ("builtin",)
CLASSIFIER_KINDS = ("builtin", "torchvision_resnet50")


@dataclass(frozen=True)
class GeneratorSpec:
    """params.yaml `models.generator`."""

    kind: str = "builtin"
    path: str = "data/generator.pt"

    def __post_init__(self):
        check(self.kind in GENERATOR_KINDS, "kind", f"must be one of {', '.join(GENERATOR_KINDS)}, got {self.kind!r}")
        check(bool(self.path), "path", "must name the generator's checkpoint file")


@dataclass(frozen=True)
class ClassifierSpec:
    """params.yaml `models.classifier`."""

    kind: str = "builtin"
    path: str = "data/classifier.pt"
    class_indices: Optional[tuple[int, ...]] = None  # torchvision_resnet50: which outputs are the classes
    class_names: Optional[tuple[str, ...]] = None

    def __post_init__(self):
        check(self.kind in CLASSIFIER_KINDS, "kind", f"must be one of {', '.join(CLASSIFIER_KINDS)}, got {self.kind!r}")
        check(bool(self.path), "path", "must name the classifier's weights file")
        check(self.kind != "builtin" or (self.class_indices is None and self.class_names is None), "class_indices",
              "and class_names apply to torchvision_resnet50 only; a builtin classifier stores its classes")


def _exists(path: str, param: str, producer: str) -> None:
    if not Path(path).is_file():
        raise UserError(f"{path}: model file not found; fix {param} in params.yaml, or for the built-in model "
                        f"run dvc repro {producer}")


def load_generator(spec: GeneratorSpec, device: str | torch.device = "cpu") -> Generator:
    """The generator a spec names, in eval mode on `device`; `.fingerprint` is its file's hash."""
    _exists(spec.path, "models.generator.path", "train_generator")
    gen, _ = load_module(spec.path, "generator", GENERATORS, producer="train_generator", device=device)
    gen.fingerprint = fingerprint(spec.path)
    return gen


def load_classifier(spec: ClassifierSpec, device: str | torch.device = "cpu") -> Classifier:
    """The classifier a spec names, in eval mode on `device`; `.fingerprint` is its file's hash."""
    _exists(spec.path, "models.classifier.path", "train_classifier")
    if spec.kind == "torchvision_resnet50":
        clf = load_torchvision_resnet50(spec.path, spec.class_indices, spec.class_names, device)
    else:
        clf, _ = load_module(spec.path, "classifier", CLASSIFIERS, producer="train_classifier", device=device)
    clf.fingerprint = fingerprint(spec.path)
    return clf


def check_pairing(gen: Generator, clf: Classifier) -> None:
    """The generator's classes must be the classifier's, in the same order."""
    if tuple(gen.class_names) != tuple(clf.class_names):
        raise UserError(f"params.yaml: models: generator classes {list(gen.class_names)} differ from classifier classes "
                        f"{list(clf.class_names)}; set models.classifier.class_indices/class_names to match the generator")
