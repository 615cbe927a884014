"""Classifiers for the benchmark: a lightweight CNN (CPU-friendly at 64 px) and torchvision's
DenseNet-121/161, ResNet-50, VGG-16 and InceptionV3 adapted to one input channel."""

from __future__ import annotations

import logging

import torch
from torch import nn

log = logging.getLogger("cxraug.classify")


class LightweightCNN(nn.Module):
    """Four conv blocks (Conv-BN-ReLU-MaxPool), global average pooling, dropout, linear head."""

    def __init__(self, n_out: int, width: int = 32):
        super().__init__()
        chans = [1, width, 2 * width, 4 * width, 8 * width]
        blocks = []
        for a, b in zip(chans[:-1], chans[1:]):
            blocks += [nn.Conv2d(a, b, 3, padding=1, bias=False), nn.BatchNorm2d(b), nn.ReLU(True), nn.MaxPool2d(2)]
        self.features = nn.Sequential(*blocks)  # [B, 8w, S/16, S/16]
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(8 * width, n_out))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).mean((2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))


class _Gray(nn.Module):
    """Wrap a torchvision model: repeat the gray channel to RGB, resize to the weights' input size and
    normalize with the weights' mean/std (inputs arrive in [-1, 1], as for the lightweight CNN)."""

    def __init__(self, net: nn.Module, size: int | None = None, mean: list[float] | None = None,
                 std: list[float] | None = None):  # fmt: skip
        super().__init__()
        self.net, self.size = net, size
        self.register_buffer("mean", torch.tensor(mean or [0.5] * 3).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std or [0.5] * 3).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B,1,S,S] in [-1,1]
        if self.size and x.shape[-1] != self.size:
            x = nn.functional.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        x = ((x + 1) / 2).expand(-1, 3, -1, -1)  # [B,3,size,size] in [0,1]
        out = self.net((x - self.mean) / self.std)
        return out.logits if hasattr(out, "logits") else out


def input_spec(name: str) -> dict:
    """Input size and normalization a torchvision classifier's DEFAULT weights were trained with, from
    the weights' own metadata (``weights.transforms()``: crop size 224, 299 for Inception; ImageNet mean/std)."""
    import torchvision.models as tvm

    t = tvm.get_model_weights(name).DEFAULT.transforms()
    return {"size": int(t.crop_size[0]), "mean": [float(v) for v in t.mean], "std": [float(v) for v in t.std]}


#: The classifiers a study can train (``model:``).
CLASSIFIERS = ("lightweight", "densenet121", "densenet161", "resnet50", "vgg16", "inception_v3")


def build_classifier(name: str, n_out: int, pretrained: bool = True) -> tuple[nn.Module, str]:
    """(model, weights description). ImageNet weights when they can be had, else from scratch; either way
    the input is resized and normalized as the ImageNet weights expect (so a reloaded model matches)."""
    if name not in CLASSIFIERS:
        from cxraug.errors import ConfigError

        raise ConfigError(f"unknown classifier {name!r} (model:); choose from {', '.join(CLASSIFIERS)}")
    if name == "lightweight":
        return LightweightCNN(n_out), "from scratch"
    import torchvision.models as tvm

    ctor = {"densenet121": tvm.densenet121, "densenet161": tvm.densenet161, "resnet50": tvm.resnet50,
            "vgg16": tvm.vgg16, "inception_v3": tvm.inception_v3}.get(name)  # fmt: skip
    if ctor is None:
        raise ValueError(f"unknown classifier {name!r}")
    weights, desc = None, "from scratch"
    if pretrained:
        try:
            net = ctor(weights="DEFAULT")
            weights, desc = "DEFAULT", "ImageNet weights"
        except Exception as e:  # offline: torchvision cannot fetch the weights
            log.warning("%s: ImageNet weights unavailable (%s); training from scratch", name, type(e).__name__)
    if weights is None:
        net = ctor(weights=None, **({"aux_logits": False, "init_weights": True} if name == "inception_v3" else {}))
    if name.startswith("densenet"):
        net.classifier = nn.Linear(net.classifier.in_features, n_out)
    elif name == "vgg16":
        net.classifier[-1] = nn.Linear(net.classifier[-1].in_features, n_out)
    else:
        net.fc = nn.Linear(net.fc.in_features, n_out)
    spec = input_spec(name)
    desc += f"; input {spec['size']} px, normalized with mean {spec['mean']} and std {spec['std']}"
    return _Gray(net, spec["size"], spec["mean"], spec["std"]), desc
