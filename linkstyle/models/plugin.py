"""Any generator or classifier through `factory: package.module:function` in params.yaml.

The factory is called with the spec's `options` as keyword arguments, plus `path=`
when the spec names a file and `class_indices=` / `class_names=` when a preset or those
keys choose classes, and must return an instance of `linkstyle.Generator` or
`linkstyle.Classifier` (docs/own-models.md: the interface and a minimal example). `code`
names a folder to import the module from when it is not installed.

A plugin's identity (`fingerprint`, recorded in every artifact made with it) hashes the
factory's name, its options, its module's source file and the weights file: change any
of them and artifacts made with the old one are told apart. DVC cannot see a plugin's
source on its own: list the module file as a dependency of the stages that load models
(docs/own-models.md shows how).
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import os
import re
import sys
from pathlib import Path

import torch

from linkstyle.core.checkpoint import fingerprint
from linkstyle.core.errors import UserError

FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
REQUIRED = {
    "Generator": ("w_dim", "z_dim", "num_ws", "n_classes", "resolution", "class_names"),
    "Classifier": ("n_units", "n_classes", "class_names", "input_resolution"),
}


def add_import_path(folder: str | os.PathLike, missing: str) -> None:
    """Put a user's code folder first on sys.path (once); `missing` ends the error if it is not a folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: {missing}")
    p = str(folder.resolve())
    if p not in sys.path:
        sys.path.insert(0, p)


def resolve_factory(factory: str, code: str | None, param: str):
    """The callable `package.module:function` names, importing from `code` first if given."""
    if not isinstance(factory, str) or not FACTORY.match(factory):
        raise UserError(f"{param}.factory: {factory!r} is not of the form package.module:function")
    if code:
        add_import_path(code, f"plugin code folder not found; fix {param}.code in params.yaml")
    module_name, fn_name = factory.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        raise UserError(f"{param}.factory: cannot import {module_name!r} ({e}); install it or set {param}.code "
                        "to the folder that holds it") from None
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise UserError(f"{param}.factory: {module_name} has no function {fn_name!r}")
    return fn, module


def load_plugin(spec, base: type, param: str, device: str | torch.device, class_indices, class_names):
    """(model, fingerprint) from a plugin spec; the model is checked against `base`'s interface."""
    fn, module = resolve_factory(spec.factory, spec.code, param)
    kwargs = dict(spec.options or {})
    if spec.path:
        if not Path(spec.path).is_file():
            raise UserError(f"{spec.path}: model file not found; fix {param}.path in params.yaml")
        kwargs["path"] = spec.path
    if class_indices is not None:
        kwargs.update(class_indices=list(class_indices), class_names=list(class_names))
    try:
        inspect.signature(fn).bind(**kwargs)
    except TypeError as e:
        raise UserError(f"{param}.factory: {spec.factory} does not take these arguments ({e}); "
                        f"fix {param}.options") from None
    model = fn(**kwargs)
    if not isinstance(model, base):
        raise UserError(f"{param}.factory: {spec.factory} returned a {type(model).__name__}, not a "
                        f"linkstyle {base.__name__} (docs/own-models.md: the interface)")
    missing = [a for a in REQUIRED[base.__name__] if not hasattr(model, a)]
    if missing:
        raise UserError(f"{param}.factory: the {base.__name__} {spec.factory} returned lacks {', '.join(missing)} "
                        "(docs/own-models.md: the interface)")
    h = hashlib.sha256(json.dumps([spec.factory, kwargs], sort_keys=True, default=str).encode())
    src = inspect.getsourcefile(module)
    if src:
        h.update(Path(src).read_bytes())
    if spec.path:
        h.update(fingerprint(spec.path).encode())
    return model.to(device).eval(), h.hexdigest()[:16]
