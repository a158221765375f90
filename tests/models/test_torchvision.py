"""torchvision classifiers by name: random weights saved to a file, loaded exactly as a user's."""

from __future__ import annotations

import pytest
import torch
import torchvision

from linkstyle.core.errors import UserError
from linkstyle.models.presets import PRESETS
from linkstyle.models.registry import ClassifierSpec, load_classifier
from linkstyle.models.small_resnet import SmallResNet
from linkstyle.world.procedural import CLASS_NAMES

# arch -> (R's width, the module whose output is R in torchvision's own forward)
CASES = {
    "resnet18": (512, lambda m: m.avgpool),
    "resnet50": (2048, lambda m: m.avgpool),
    "densenet201": (1920, None),  # R is the classifier's input (functional ReLU + pooling before it)
    "vgg16": (4096, lambda m: m.classifier[4]),  # fc7's ReLU
    "alexnet": (4096, lambda m: m.classifier[5]),
}


def _reference_r(net: torch.nn.Module, arch: str, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(R, logits) from torchvision's own forward pass, read by a hook."""
    got = {}
    where = CASES[arch][1]
    if where is None:
        h = net.classifier.register_forward_pre_hook(lambda m, inp: got.__setitem__("r", inp[0]))
    else:
        h = where(net).register_forward_hook(lambda m, inp, out: got.__setitem__("r", torch.flatten(out, 1)))
    with torch.no_grad():
        logits = net(x)
    h.remove()
    return got["r"], logits


@pytest.mark.parametrize("arch", list(CASES))
def test_architecture_loads_from_a_state_dict_file_with_its_penultimate_layer(arch, tmp_path):
    torch.manual_seed(0)
    net = torchvision.models.get_model(arch, weights=None).eval()
    path = tmp_path / f"{arch}.pth"
    torch.save(net.state_dict(), path)
    dogs = PRESETS["dogs"]
    clf = load_classifier(ClassifierSpec(kind="torchvision", arch=arch, path=str(path), preset="dogs"))
    assert clf.n_units == CASES[arch][0] and clf.class_names == dogs.class_names
    # R against torchvision's own forward pass; 64 px inputs keep it cheap (the pooling adapts),
    # the 224 px preprocessing is tested below.
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        r = clf.features(x)
        logits = clf.logits_from_r(r)
    ref_r, ref_logits = _reference_r(net, arch, x)
    torch.testing.assert_close(r, ref_r, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(logits, ref_logits[:, list(dogs.class_indices)], rtol=1e-4, atol=1e-4)
    assert (r >= 0).all()


def test_preprocessing_is_imagenet_and_wrappers_are_unwrapped(tmp_path):
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=10).eval()
    # As a training script would save it: DataParallel prefix, wrapped in a dict.
    path = tmp_path / "r18.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, path)
    clf = load_classifier(ClassifierSpec(kind="torchvision", arch="resnet18", path=str(path),
                                         class_indices=(3, 7), class_names=("a", "b")))
    assert clf.n_outputs == 10 and clf.class_indices == (3, 7)
    u8 = torch.randint(0, 256, (1, 300, 400, 3), dtype=torch.uint8)
    from torchvision.transforms import v2 as t

    ref = t.Compose([t.Resize(256, antialias=True), t.CenterCrop(224), t.ToDtype(torch.float32, scale=True),
                     t.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])(u8[0].permute(2, 0, 1).float() / 255)
    x = clf.preprocess(u8.numpy())
    assert x.shape == (1, 3, 224, 224)
    torch.testing.assert_close(x[0], ref, rtol=0, atol=1e-4)  # torchvision's own transform, on tensors
    r, logits = clf.represent(u8.numpy())
    with torch.no_grad():
        torch.testing.assert_close(logits, net(x)[:, [3, 7]], rtol=1e-4, atol=1e-4)


def test_one_line_errors(tmp_path):
    with pytest.raises(UserError, match="missing.pth: classifier weights not found"):
        load_classifier(ClassifierSpec(kind="torchvision", arch="resnet50", path=str(tmp_path / "missing.pth")))
    small = tmp_path / "small.pt"
    torch.save(SmallResNet(CLASS_NAMES).state_dict(), small)
    with pytest.raises(UserError, match="small.pt: missing key"):
        load_classifier(ClassifierSpec(kind="torchvision", arch="resnet18", path=str(small)))
    whole = tmp_path / "whole.pt"
    torch.save(torchvision.models.resnet18(num_classes=3), whole)
    with pytest.raises(UserError, match="whole.pt: corrupt or unreadable weights"):
        load_classifier(ClassifierSpec(kind="torchvision", arch="resnet18", path=str(whole)))
    r18 = tmp_path / "r18.pt"
    torch.save(torchvision.models.resnet18(num_classes=5).state_dict(), r18)
    with pytest.raises(UserError, match=r"class_indices: must be distinct integers in \[0, 5\)"):
        load_classifier(ClassifierSpec(kind="torchvision", arch="resnet18", path=str(r18), class_indices=(1, 5)))
    with pytest.raises(UserError, match="unknown torchvision architecture 'resnet51'"):
        load_classifier(ClassifierSpec(kind="torchvision", arch="resnet51", path=str(r18)))
    with pytest.raises(UserError, match="unknown preset 'cats'"):
        load_classifier(ClassifierSpec(kind="torchvision", arch="resnet18", path=str(r18), preset="cats"))
    with pytest.raises(UserError, match="renamed: use kind: torchvision with arch: resnet50"):
        ClassifierSpec(kind="torchvision_resnet50", path=str(r18))
    with pytest.raises(UserError, match="arch must name"):
        ClassifierSpec(kind="torchvision", path=str(r18))
