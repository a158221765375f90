"""Attribution-ready copies of classifiers: the model seam for Captum's hook-based methods.

Captum's guided backprop, deconvnet and LRP act through hooks on modules, which holds
only for models written in a certain way (Captum's documented limits):

- every ReLU must be a module: a functional `F.relu` is invisible to the hooks, so guided
  backprop would silently fall back to the plain gradient there (the default SmallResNet
  calls F.relu inside its blocks);
- no ReLU may work in place: the hooks on its output would see a tensor that the next
  operation overwrote (torchvision's ResNet uses `nn.ReLU(inplace=True)`);
- no module may be called twice: Captum keeps one state per module, so a reused module
  mixes its two calls (torchvision's Bottleneck calls `self.relu` three times) and LRP
  refuses it;
- a sum of branches must be a module (Captum's `Addition_Module`) for LRP to split the
  relevance between the summands in proportion; the global average pool likewise.

`attribution_ready(clf)` returns a copy that meets all of these, by tracing
`clf.features` with torch.fx and rewriting the graph: functional and reused ReLUs become
fresh `nn.ReLU()` modules, sums become `Addition_Module`s, the spatial mean becomes
`nn.AdaptiveAvgPool2d`, a reused parametrised module becomes one copy per call, and each
BatchNorm that follows a convolution is folded into it (exact in eval mode; the usual
canonical form for LRP). The classifier is not touched, and the copy's outputs equal the
classifier's (checked on construction). A head that is affine in r (every
`logits_from_r` here) becomes one `nn.Linear`, probed from the head itself.

The copy takes images in [0, 1], [N, 3, H, W], at the generator's resolution, so maps
come out in the pixels of the rendered image; the classifier's resize/crop and
normalisation are its first modules (`ResizeCrop`, `Normalize`).

`cascade_layers` and `randomised` serve the model-randomisation test of Adebayo et al.
(2018): the classifier's layers from the top, and a copy with the top k re-initialised.
"""

from __future__ import annotations

import copy
import operator
import zlib

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from linkstyle.core.errors import UserError
from linkstyle.models.classifier import Classifier

OUTPUTS = ("units", "logits")

# Shape-only operations that pass values (and relevance) through unchanged.
_PASS_FUNCTIONS = {operator.getitem, torch.flatten, torch.reshape, getattr}
_PASS_METHODS = {"flatten", "view", "reshape", "size", "contiguous", "squeeze", "unsqueeze"}
_RELU_FUNCTIONS = {F.relu, torch.relu, torch.relu_}
_ADD_FUNCTIONS = {operator.add, operator.iadd, torch.add}
_MODULE_TYPES = (nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d,
                 nn.Dropout, nn.Identity)


class ResizeCrop(nn.Module):
    """The classifier's resize + centre crop (`Classifier.resize`) as a module: linear, no bias."""

    def __init__(self, resize_to: int, input_resolution: int) -> None:
        super().__init__()
        self.resize_to, self.input_resolution = int(resize_to), int(input_resolution)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return Classifier.resize(self, x)  # reads only resize_to and input_resolution


class Normalize(nn.Module):
    """(x - mean) / std per channel: the classifier's `normalise` as a module."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean.detach().clone().view(1, -1, 1, 1))
        self.register_buffer("std", std.detach().clone().view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class AttributionNet(nn.Module):
    """Image in [0, 1] -> the classifier's units r [N, n_units] or logits [N, n_classes]."""

    def __init__(self, prep: nn.Sequential, body: fx.GraphModule, head: nn.Linear, output: str,
                 n_units: int, class_names: tuple[str, ...], image_resolution: int) -> None:
        super().__init__()
        self.prep, self.body, self.head = prep, body, head
        self.output = output
        self.n_units, self.class_names = int(n_units), tuple(class_names)
        self.image_resolution = int(image_resolution)

    @property
    def n_outputs(self) -> int:
        return self.n_units if self.output == "units" else len(self.class_names)

    @property
    def what(self) -> str:
        """How one output is called in messages: 'unit' or 'class logit'."""
        return "unit" if self.output == "units" else "class logit"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.body(self.prep(x))
        return r if self.output == "units" else self.head(r)


# ---------------------------------------------------------------------------- rewriting

class _Features(nn.Module):
    def __init__(self, clf: Classifier) -> None:
        super().__init__()
        self.clf = clf

    def forward(self, x):
        return self.clf.features(x)


def _op_name(node: fx.Node) -> str:
    t = node.target
    return t if isinstance(t, str) else getattr(t, "__name__", str(t))


def _replace_with_module(gm: fx.GraphModule, node: fx.Node, name: str, module: nn.Module, args: tuple) -> fx.Node:
    gm.add_submodule(name, module)
    with gm.graph.inserting_before(node):
        new = gm.graph.call_module(name, args)
    node.replace_all_uses_with(new)
    gm.graph.erase_node(node)
    return new


def _rewrite(gm: fx.GraphModule, where: str) -> fx.GraphModule:
    """Module ReLUs and sums, module GAP, one module per call, BatchNorm folded into its conv."""
    modules = dict(gm.named_modules())
    seen: set[str] = set()
    count = 0
    for node in list(gm.graph.nodes):
        count += 1
        if node.op == "call_module":
            mod = modules[node.target]
            if not isinstance(mod, _MODULE_TYPES):
                raise UserError(f"{where}: layer {node.target} ({type(mod).__name__}) has no attribution rule; "
                                "the attribution methods support Conv2d, Linear, BatchNorm2d, ReLU and pooling layers")
            if isinstance(mod, nn.ReLU):  # in place or reused: a fresh one per call
                _replace_with_module(gm, node, f"attr_relu_{count}", nn.ReLU(), node.args[:1])
            elif node.target in seen:
                _replace_with_module(gm, node, f"attr_copy_{count}", copy.deepcopy(mod), node.args)
            seen.add(node.target)
        elif node.op in ("call_function", "call_method"):
            t = node.target
            tensors = [a for a in node.args if isinstance(a, fx.Node)]
            if t in _RELU_FUNCTIONS or t in ("relu", "relu_"):
                _replace_with_module(gm, node, f"attr_relu_{count}", nn.ReLU(), node.args[:1])
            elif (t in _ADD_FUNCTIONS or t in ("add", "add_", "__add__", "__iadd__")) and len(tensors) == 2 \
                    and len(node.args) == 2 and not node.kwargs:
                from captum.attr._utils.custom_modules import Addition_Module

                _replace_with_module(gm, node, f"attr_add_{count}", Addition_Module(), tuple(node.args))
            elif t == "mean" or t is torch.mean:
                dims = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
                keep = node.kwargs.get("keepdim", node.args[2] if len(node.args) > 2 else False)
                if dims is None or sorted(int(d) % 4 for d in dims) != [2, 3]:
                    raise UserError(f"{where}: a mean over dims {dims} has no attribution rule; only the global "
                                    "average pool over (2, 3) is supported")
                pooled = _replace_with_module(gm, node, f"attr_gap_{count}", nn.AdaptiveAvgPool2d(1), node.args[:1])
                if not keep:
                    with gm.graph.inserting_after(pooled):
                        flat = gm.graph.call_function(torch.flatten, (pooled, 1))
                    pooled.replace_all_uses_with(flat)
                    flat.args = (pooled, 1)
            elif t not in _PASS_FUNCTIONS and t not in _PASS_METHODS:
                raise UserError(f"{where}: operation {_op_name(node)!r} in the classifier's features has no attribution "
                                "rule; write it as a module layer (Conv2d, Linear, BatchNorm2d, ReLU, pooling) or a sum")
    _fold_batchnorm(gm)
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm


def _fold_batchnorm(gm: fx.GraphModule) -> None:
    modules = dict(gm.named_modules())
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not isinstance(modules.get(node.target), nn.BatchNorm2d):
            continue
        src = node.args[0]
        if not (isinstance(src, fx.Node) and src.op == "call_module" and isinstance(modules.get(src.target), nn.Conv2d)
                and len(src.users) == 1):
            continue
        fused = fuse_conv_bn_eval(modules[src.target].eval(), modules[node.target].eval())
        parent, _, leaf = src.target.rpartition(".")
        setattr(gm.get_submodule(parent) if parent else gm, leaf, fused)
        modules[src.target] = fused
        node.replace_all_uses_with(src)
        gm.graph.erase_node(node)


def _affine_head(clf: Classifier) -> nn.Linear:
    """`logits_from_r` as one nn.Linear, probed: bias = f(0), column i = f(e_i) - f(0)."""
    device = next(iter(clf.parameters())).device
    with torch.no_grad():
        eye = torch.cat([torch.zeros(1, clf.n_units, device=device), torch.eye(clf.n_units, device=device)])
        out = clf.logits_from_r(eye).double()
        bias, weight = out[0], (out[1:] - out[0]).T
        r = torch.rand(4, clf.n_units, generator=torch.Generator().manual_seed(0)).to(device)
        if not torch.allclose(clf.logits_from_r(r).double(), r.double() @ weight.T + bias, rtol=1e-4, atol=1e-4):
            raise UserError(f"classifier {clf.arch}: logits_from_r is not affine in r; the attribution methods need "
                            "a linear classification head")
    head = nn.Linear(clf.n_units, clf.n_classes).to(device)
    head.weight.data.copy_(weight.float())
    head.bias.data.copy_(bias.float())
    return head


def attribution_ready(clf: Classifier, output: str = "units", image_resolution: int | None = None) -> AttributionNet:
    """A hook-safe copy of `clf` from images in [0, 1] at `image_resolution` (default: the
    classifier's own input size) to its units r or its class logits, in eval mode, without
    parameter gradients. One-line UserError for a classifier the rewrite cannot serve."""
    if output not in OUTPUTS:
        raise UserError(f"attribution output must be one of {', '.join(OUTPUTS)}, got {output!r}")
    where = f"classifier {getattr(clf, 'arch', type(clf).__name__)}"
    src = copy.deepcopy(clf).eval()
    try:
        gm = fx.symbolic_trace(_Features(src))
    except Exception as e:  # fx raises TraceError, TypeError, ... on data-dependent control flow
        raise UserError(f"{where}: features() cannot be traced by torch.fx ({type(e).__name__}: "
                        f"{str(e).splitlines()[0][:120]}); the attribution methods need a traceable classifier") from None
    body = _rewrite(gm, where)
    res = int(image_resolution or clf.input_resolution)
    prep = []
    probe_in = torch.zeros(1, 3, res, res)
    if tuple(Classifier.resize(src, probe_in).shape[-2:]) != (res, res) or clf.resize_to != clf.input_resolution:
        prep.append(ResizeCrop(clf.resize_to, clf.input_resolution))
    prep.append(Normalize(clf.mean, clf.std))
    net = AttributionNet(nn.Sequential(*prep), body, _affine_head(src), output, clf.n_units, clf.class_names, res)
    net = net.to(next(iter(clf.parameters())).device).eval()
    net.requires_grad_(False)  # only input gradients are needed
    _check_equal(clf, net, where)
    return net


def _check_equal(clf: Classifier, net: AttributionNet, where: str) -> None:
    device = next(iter(net.parameters())).device
    x = torch.rand(2, 3, net.image_resolution, net.image_resolution, generator=torch.Generator().manual_seed(0)).to(device)
    with torch.no_grad():
        want = clf.features(clf.normalise(clf.resize(x)))
        got = net.body(net.prep(x))
        scale = want.abs().max().clamp(min=1.0)
        if (got - want).abs().max() > 1e-4 * scale:
            raise RuntimeError(f"{where}: the attribution-ready copy differs from the classifier "
                               f"(max |diff| {(got - want).abs().max():.3g}); a rewrite rule is wrong")


# ---------------------------------------------------------------------------- randomisation

def cascade_layers(clf: Classifier, output: str = "units") -> list[str]:
    """The classifier's layers in forward order, each a module name: top-level children with
    parameters, containers of blocks split into their blocks (SmallResNet: stem, blocks.0,
    ..., fc). For units only the layers r depends on; for logits also the head."""
    if output not in OUTPUTS:
        raise UserError(f"attribution output must be one of {', '.join(OUTPUTS)}, got {output!r}")
    groups: dict[str, str] = {}
    for name, child in clf.named_children():
        if isinstance(child, (nn.Sequential, nn.ModuleList)) and any(len(list(c.children())) for c in child.children()):
            for sub, block in child.named_children():
                for leaf, _ in block.named_modules():
                    groups[f"{name}.{sub}" + (f".{leaf}" if leaf else "")] = f"{name}.{sub}"
        else:
            for leaf, _ in child.named_modules():
                groups[name + (f".{leaf}" if leaf else "")] = name
    order: list[str] = []
    hooks = []
    for name, m in clf.named_modules():
        if name in groups and any(True for _ in m.parameters(recurse=False)):
            hooks.append(m.register_forward_pre_hook(lambda mod, inp, n=groups[name]: order.append(n)))
    device = next(iter(clf.parameters())).device
    try:
        with torch.no_grad():
            clf.features(torch.zeros(1, 3, clf.input_resolution, clf.input_resolution, device=device))
    finally:
        for h in hooks:
            h.remove()
    layers = list(dict.fromkeys(order))
    if output == "logits":  # the head, which logits_from_r may use without calling it (F.linear)
        layers += [g for g in dict.fromkeys(groups.values()) if g not in layers
                   and any(True for _ in clf.get_submodule(g).parameters())]
    return layers


def randomised(clf: Classifier, layers: list[str], seed: int) -> Classifier:
    """A copy of `clf` with `layers` re-initialised (each module's own `reset_parameters`,
    BatchNorm statistics included), layer by layer from `seed` and the layer's name."""
    device = next(iter(clf.parameters())).device
    rand = copy.deepcopy(clf).cpu().eval()  # drawn on the CPU: the same weights on every device
    with torch.random.fork_rng(devices=[]):
        for name in layers:
            # Each layer from its own seed: a layer's random weights do not depend on which
            # other layers are randomised with it (the cascade's steps share them).
            torch.manual_seed((int(seed) * 1_000_003 + zlib.crc32(name.encode())) % (1 << 63))
            for m in rand.get_submodule(name).modules():
                if hasattr(m, "reset_parameters"):
                    m.reset_parameters()
    return rand.to(device)
