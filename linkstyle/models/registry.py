"""The model seam: every stage loads its generator and classifier through here.

A model is described by a spec from params.yaml (`models.generator`, `models.classifier`),
whose `kind` picks the backend (docs/own-models.md has every key and the plugin interface):

- generator `builtin`: a checkpoint written by train_generator (`path`);
- generator `stylegan`: a StyleGAN-XL / StyleGAN2-ADA / StyleGAN3 network pickle (`path`,
  key `G_ema`) plus `code`, the checkout of the code that wrote it (`stylegan_pickle`);
- classifier `builtin`: a checkpoint written by train_classifier;
- classifier `torchvision`: `arch` (resnet50, vgg16, ...) with a state-dict file
  (`torchvision_classifier`);
- either `plugin`: `factory: package.module:function`, called with `options` (and `path`
  when given), returning a `Generator` / `Classifier` (`plugin`).

Classes of ImageNet-scale models are chosen by `preset` (dogs, fungi, birds, cars:
`presets`) or by `class_indices` + `class_names`. Saved built-in models use the one
persistence idiom of `linkstyle.core.checkpoint` (state dict + config naming its `arch`,
rebuilt through `GENERATORS` / `CLASSIFIERS`, read with weights_only=True).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from linkstyle.core.checkpoint import fingerprint, load_module
from linkstyle.core.config import check
from linkstyle.core.errors import UserError
from linkstyle.models.class_means import read_class_means
from linkstyle.models.classifier import Classifier
from linkstyle.models.generator import Generator
from linkstyle.models.plugin import load_plugin
from linkstyle.models.presets import resolve_classes
from linkstyle.models.small_resnet import SmallResNet
from linkstyle.models.stylegen import StyleGen

GENERATORS: dict[str, type] = {"stylegen": StyleGen}
CLASSIFIERS: dict[str, type] = {SmallResNet.arch: SmallResNet}
GENERATOR_KINDS = ("builtin", "stylegan", "plugin")
CLASSIFIER_KINDS = ("builtin", "torchvision", "plugin")
_RENAMED = {"torchvision_resnet50": "kind: torchvision with arch: resnet50"}


@dataclass(frozen=True)
class GeneratorSpec:
    """params.yaml `models.generator`."""

    kind: str = "builtin"
    path: Optional[str] = "data/generator.pt"
    code: Optional[str] = None             # stylegan: checkout of the pickle's code; plugin: folder put on sys.path
    factory: Optional[str] = None          # plugin: package.module:function
    options: Optional[dict] = None         # plugin: keyword arguments of the factory
    preset: Optional[str] = None           # stylegan/plugin: dogs, fungi, birds, cars
    class_indices: Optional[tuple[int, ...]] = None  # stylegan: which of c_dim conditions are the classes
    class_names: Optional[tuple[str, ...]] = None
    feature_layers: Optional[tuple[str, ...]] = None  # stylegan: synthesis layers hooked for the segmenter
    amp: bool = False                      # mixed precision (float16 autocast) on CUDA

    def __post_init__(self):
        check(self.kind in GENERATOR_KINDS, "kind", f"must be one of {', '.join(GENERATOR_KINDS)}, got {self.kind!r}")
        check(self.kind == "plugin" or bool(self.path), "path", "must name the generator's checkpoint file")
        check(self.kind != "stylegan" or bool(self.code), "code", "must name the checkout of the code that wrote "
              "the pickle (e.g. a clone of github.com/autonomousvision/stylegan-xl)")
        check(self.kind != "plugin" or bool(self.factory), "factory", "must name the plugin as package.module:function")
        check(self.kind != "builtin" or (self.preset is None and self.class_indices is None and self.class_names is None),
              "preset", "and class_indices/class_names do not apply to a builtin generator; it stores its classes")


@dataclass(frozen=True)
class ClassifierSpec:
    """params.yaml `models.classifier`."""

    kind: str = "builtin"
    path: Optional[str] = "data/classifier.pt"
    arch: Optional[str] = None             # torchvision: resnet50, resnet18, vgg16, alexnet, densenet201, ...
    code: Optional[str] = None             # plugin: folder put on sys.path
    factory: Optional[str] = None
    options: Optional[dict] = None
    preset: Optional[str] = None           # torchvision/plugin: dogs, fungi, birds, cars
    class_indices: Optional[tuple[int, ...]] = None  # which outputs are the classes, in the generator's order
    class_names: Optional[tuple[str, ...]] = None
    amp: bool = False

    def __post_init__(self):
        if self.kind in _RENAMED:
            raise UserError(f"kind {self.kind!r} was renamed: use {_RENAMED[self.kind]}")
        check(self.kind in CLASSIFIER_KINDS, "kind", f"must be one of {', '.join(CLASSIFIER_KINDS)}, got {self.kind!r}")
        check(self.kind == "plugin" or bool(self.path), "path", "must name the classifier's weights file")
        check(self.kind != "torchvision" or bool(self.arch), "arch", "must name the torchvision architecture, e.g. resnet50")
        check(self.kind != "plugin" or bool(self.factory), "factory", "must name the plugin as package.module:function")
        check(self.kind != "builtin" or (self.preset is None and self.class_indices is None and self.class_names is None),
              "preset", "and class_indices/class_names apply to torchvision and plugin classifiers; a builtin one "
              "stores its classes")


def _exists(path: str, param: str, producer: str) -> None:
    if not Path(path).is_file():
        raise UserError(f"{path}: model file not found; fix {param} in params.yaml, or for the built-in model "
                        f"run dvc repro {producer}")


@contextlib.contextmanager
def _preset_named(preset_name: str | None, param: str):
    """Errors about class ids name the preset when the ids came from one (the user set no class_indices)."""
    try:
        yield
    except UserError as e:
        head = f"{param}.class_indices: "
        if preset_name is None or not str(e).startswith(head):
            raise
        raise UserError(f"{param}.preset: preset {preset_name!r} does not fit this model: its class ids "
                        f"{str(e)[len(head):]}; use a preset made for this model's outputs, or remove the preset "
                        "and set class_indices and class_names") from None


def load_generator(spec: GeneratorSpec, device: str | torch.device = "cpu",
                   class_means: str | Path | None = None) -> Generator:
    """The generator a spec names, in eval mode on `device`; `.fingerprint` identifies it.

    `class_means`: the file stage class_means wrote; truncation then pulls toward those
    means (stages that truncate pass it, so every backend truncates the same way).
    """
    if spec.kind == "stylegan":
        from linkstyle.models.stylegan_pickle import StyleGANPickle, read_network_pickle

        indices, names = resolve_classes(spec.preset, spec.class_indices, spec.class_names, "models.generator")
        G = read_network_pickle(spec.path, spec.code)
        with _preset_named(spec.preset, "models.generator"):
            gen = StyleGANPickle(G, indices, names, spec.feature_layers, spec.amp)
        gen = gen.to(device).eval()
        gen.fingerprint = fingerprint(spec.path)
    elif spec.kind == "plugin":
        indices, names = resolve_classes(spec.preset, spec.class_indices, spec.class_names, "models.generator")
        with _preset_named(spec.preset, "models.generator"):
            gen, gen.fingerprint = load_plugin(spec, Generator, "models.generator", device, indices, names)
    else:
        _exists(spec.path, "models.generator.path", "train_generator")
        gen, _ = load_module(spec.path, "generator", GENERATORS, producer="train_generator", device=device)
        gen.fingerprint = fingerprint(spec.path)
    gen.amp = spec.amp
    if class_means is not None:
        gen.set_class_means(class_means_for(class_means, gen))
    return gen


def load_classifier(spec: ClassifierSpec, device: str | torch.device = "cpu") -> Classifier:
    """The classifier a spec names, in eval mode on `device`; `.fingerprint` identifies it."""
    if spec.kind == "torchvision":
        from linkstyle.models.torchvision_classifier import load_torchvision

        indices, names = resolve_classes(spec.preset, spec.class_indices, spec.class_names, "models.classifier")
        with _preset_named(spec.preset, "models.classifier"):
            clf = load_torchvision(spec.arch, spec.path, indices, names, device)
        clf.fingerprint = fingerprint(spec.path)
    elif spec.kind == "plugin":
        indices, names = resolve_classes(spec.preset, spec.class_indices, spec.class_names, "models.classifier")
        with _preset_named(spec.preset, "models.classifier"):
            clf, clf.fingerprint = load_plugin(spec, Classifier, "models.classifier", device, indices, names)
    else:
        _exists(spec.path, "models.classifier.path", "train_classifier")
        clf, _ = load_module(spec.path, "classifier", CLASSIFIERS, producer="train_classifier", device=device)
        clf.fingerprint = fingerprint(spec.path)
    clf.amp = spec.amp
    return clf


def class_means_for(path: str | Path, gen: Generator) -> np.ndarray:
    """The per-class mean w that stage class_means wrote for this generator."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: class means not found; run dvc repro class_means")
    means, doc = read_class_means(path)
    if doc.get("generator") != gen.fingerprint:
        raise UserError(f"{path}: written for another generator (fingerprint {str(doc.get('generator'))[:16]}); "
                        "run dvc repro class_means")
    # Same fingerprint but another shape: edited by hand, or a generator whose class
    # selection changed (models.generator.class_indices) after the means were written.
    if means.shape != (gen.n_classes, gen.w_dim):
        raise UserError(f"{path}: class_mean_w has shape {list(means.shape)} but the generator has "
                        f"{gen.n_classes} classes x w_dim {gen.w_dim}; run dvc repro class_means")
    return means


def check_pairing(gen: Generator, clf: Classifier) -> None:
    """The generator's classes must be the classifier's, in the same order."""
    if tuple(gen.class_names) != tuple(clf.class_names):
        raise UserError(f"params.yaml: models: generator classes {list(gen.class_names)} differ from classifier classes "
                        f"{list(clf.class_names)}; set models.classifier.class_indices/class_names to match the generator")
