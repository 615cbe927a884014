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
    """Wrap a torchvision model: repeat the gray channel to RGB, resize for Inception."""

    def __init__(self, net: nn.Module, size: int | None = None):
        super().__init__()
        self.net, self.size = net, size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.size and x.shape[-1] != self.size:
            x = nn.functional.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        out = self.net(x.expand(-1, 3, -1, -1))
        return out.logits if hasattr(out, "logits") else out


def build_classifier(name: str, n_out: int, pretrained: bool = True) -> tuple[nn.Module, str]:
    """(model, weights description). ImageNet weights when they can be had, else from scratch."""
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
    return _Gray(net, 299 if name == "inception_v3" else None), desc
