"""Pluggable feature extractors for the distribution metrics.

``inception``      FID's InceptionV3 (torchmetrics / torch-fidelity weights), 2048-d pool features
``inception-768``  the same network's 768-d mixed_6e features (Ng & Hargreaves, for small samples)
``xrv``            torchxrayvision DenseNet-121 trained on CXRs, 1024-d penultimate features
``cxr``            the CXR feature space shipped with cxraug (``cxraug.metrics.cxrfeat``; model card
                   docs/cxr-features.md): fixed, offline, the same for everyone at one ``--size``
``encoder:PATH``   an encoder cxraug trained on your real images (offline; ``cxraug encoder train``)
``trained``        an encoder trained on the fly on a patient-level half of the real images, the other
                   half being the reference (scores comparable only within one reference set)
``auto``           inception when its weights are on disk, otherwise ``cxr``

Pretrained weights are fetched by their libraries when online; offline these fail with one
sentence saying where to put the file.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from cxraug.data.preprocess import u8_to_tensor
from cxraug.errors import CheckpointError, CXRAugError, OfflineWeightsError, show_path

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"


@dataclass
class Extractor:
    name: str  # reported with every number
    fn: Callable[[torch.Tensor], torch.Tensor]  # [B,1,S,S] in [-1,1] -> [B,D]
    ident: str  # for the feature cache key (includes weight digests)
    net: torch.nn.Module | None = None  # the weights behind ``fn``, moved by ``to``
    #: the features the copy searches use (nearest real image, Meehan et al.'s test), when they differ from
    #: ``fn``'s: a space in which a blurred or shifted copy stays next to its original
    copy_fn: Callable[[torch.Tensor], torch.Tensor] | None = None
    #: column boundaries of feature groups on different scales (``cxr``: content ; detail): precision/recall/
    #: density/coverage take each group's own k-NN balls and require all of them (``cxraug.metrics.fid.prdc``)
    parts: tuple[int, ...] | None = None

    @property
    def device(self) -> torch.device:
        p = next(self.net.parameters(), None) if self.net is not None else None
        return p.device if p is not None else torch.device("cpu")

    def to(self, device: str | torch.device) -> Extractor:
        """Run on ``device`` ("auto": CUDA, then MPS, then CPU); features are the same up to float rounding."""
        if self.net is not None:
            from cxraug.models.common import pick_device

            self.net.to(pick_device(str(device)))
        return self


def _torch_hub_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def inception_weights_present() -> bool:
    return (_torch_hub_dir() / INCEPTION_FILE).is_file()


def inception_extractor(dims: int = 2048) -> Extractor:
    try:
        from torchmetrics.image.fid import NoTrainInceptionV3

        net = NoTrainInceptionV3(name="inception-v3-compat", features_list=[str(dims)])
    except Exception as e:
        raise OfflineWeightsError(
            f"InceptionV3 FID weights are not available offline ({type(e).__name__}); put {INCEPTION_FILE} "
            f"(from github.com/toshas/torch-fidelity releases v0.2.0) into {_torch_hub_dir()}, "
            "or use --features encoder:PATH / auto"
        ) from e
    net.eval()

    def fn(x: torch.Tensor) -> torch.Tensor:
        u8 = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).expand(-1, 3, -1, -1)
        return net(u8).reshape(x.size(0), -1)

    return Extractor(f"inception-{dims}" if dims != 2048 else "inception", fn, f"inception-{dims}", net)


def xrv_extractor(weights: str = "densenet121-res224-all", weights_path: str | None = None) -> Extractor:
    import torchxrayvision as xrv

    if weights_path:
        model = xrv.models.DenseNet(weights=None)
        _load_xrv_state(model, Path(weights_path))
        ident = f"xrv-file-{hashlib.sha256(Path(weights_path).read_bytes()).hexdigest()[:12]}"
    else:
        try:
            model = xrv.models.DenseNet(weights=weights)
        except Exception as e:
            raise OfflineWeightsError(
                f"torchxrayvision weights {weights!r} are not available offline ({type(e).__name__}); download "
                "them as torchxrayvision's message above says into ~/.torchxrayvision/models_data/, "
                "or use --features encoder:PATH / auto"
            ) from e
        ident = f"xrv-{weights}"
    model.eval()

    def fn(x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False) * 1024.0  # xrv range
        return F.adaptive_avg_pool2d(F.relu(model.features(x)), 1).flatten(1)  # [B, 1024]

    return Extractor("xrv-densenet121", fn, ident, model)


def _load_xrv_state(model: torch.nn.Module, path: Path) -> None:
    """Load a DenseNet-121 state dict strictly: a wrong file must not silently leave random features."""
    if not path.is_file():
        raise CheckpointError(f"torchxrayvision weights not found: {show_path(path)}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{show_path(path)} is not a loadable weights file ({type(e).__name__})") from e
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{show_path(path)} is not a state dict of tensors (torchxrayvision DenseNet-121)")
    want = model.state_dict()
    missing = [k for k in want if k not in state]
    extra = [k for k in state if k not in want]
    wrong = [k for k in want if k in state and state[k].shape != want[k].shape]
    if missing or extra or wrong:
        parts = [f"{len(x)} {what} (e.g. {x[0]})" for x, what in
                 ((missing, "missing keys"), (extra, "unexpected keys"), (wrong, "shape mismatches")) if x]  # fmt: skip
        raise CheckpointError(
            f"{show_path(path)} does not hold torchxrayvision DenseNet-121 weights: {'; '.join(parts)}"
        )
    model.load_state_dict(state, strict=True)


def cxr_extractor(path: str | os.PathLike | None = None) -> Extractor:
    """The shipped CXR feature space (or a file of its format): FID features ``fn``, copy features ``copy_fn``."""
    from cxraug.metrics.cxrfeat import CONTENT_PCS, NAME, VERSION, WEIGHTS, load_features, weights_digest

    p = Path(path) if path else WEIGHTS
    model = load_features(p)
    digest = weights_digest(p)[:12]
    name = f"{NAME}-v{VERSION}" if path is None else f"{NAME}-v{VERSION}:{p.name}"
    return Extractor(name, model, f"cxr-{digest}", model, copy_fn=model.content, parts=(CONTENT_PCS,))


def encoder_extractor(path: str | os.PathLike) -> Extractor:
    from cxraug.metrics.encoder import file_digest, load_encoder

    enc = load_encoder(path)
    return Extractor(f"encoder:{Path(path).name}", enc, f"encoder-{file_digest(path)}", enc)


def get_extractor(
    spec: str, *, real_images: np.ndarray | None = None, progress: bool = True, device: str = "cpu"
) -> Extractor:
    return _get_extractor(spec, real_images, progress).to(device)


def _get_extractor(spec: str, real_images: np.ndarray | None, progress: bool) -> Extractor:
    if spec == "inception":
        return inception_extractor(2048)
    if spec == "inception-768":
        return inception_extractor(768)
    if spec == "xrv":
        return xrv_extractor()
    if spec.startswith("xrv:"):
        return xrv_extractor(weights_path=spec.split(":", 1)[1])
    if spec.startswith("encoder:"):
        return encoder_extractor(spec.split(":", 1)[1])
    if spec == "cxr":
        return cxr_extractor()
    if spec.startswith("cxr:"):
        return cxr_extractor(spec.split(":", 1)[1])
    if spec == "auto":
        return inception_extractor(2048) if inception_weights_present() else cxr_extractor()
    if spec == "trained":
        if real_images is None:
            raise CXRAugError("features=trained needs the real images to train an encoder on")
        return encoder_extractor(auto_encoder_path(real_images, progress))
    raise CXRAugError(f"unknown feature extractor {spec!r}: {FEATURE_SPECS}")


FEATURE_SPECS = "auto | cxr | inception | inception-768 | xrv | xrv:PATH | encoder:PATH | trained"


def auto_encoder_path(real_images: np.ndarray, progress: bool = True) -> Path:
    """An encoder trained on ``real_images``, cached by their content hash."""
    from cxraug.data.cache import default_cache_root
    from cxraug.metrics.encoder import AUTO_RECIPE, save_encoder, train_encoder

    key = hashlib.sha256(np.ascontiguousarray(real_images).tobytes()).hexdigest()[:16]
    path = default_cache_root() / "encoders" / f"auto-{AUTO_RECIPE}-{key}.safetensors"  # a new recipe, a new file
    if not path.is_file():
        save_encoder(train_encoder(np.asarray(real_images), progress=progress), path)
    return path


@torch.no_grad()
def extract(
    ext: Extractor, images_u8: np.ndarray, *, batch: int = 128, progress: bool = True, copy: bool = False
) -> np.ndarray:
    """uint8 [N,S,S] -> float64 features [N,D]; batched, no-grad, channels_last. ``copy``: the copy-search
    features (``ext.copy_fn``, where the extractor has them)."""
    fn = ext.copy_fn if copy and ext.copy_fn is not None else ext.fn
    out = []
    n = len(images_u8)
    for i in tqdm(range(0, n, batch), desc=f"features ({ext.name})", disable=not progress, leave=False):
        x = u8_to_tensor(images_u8[i : i + batch]).to(ext.device, non_blocking=True)
        out.append(fn(x.contiguous(memory_format=torch.channels_last)).double().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0))


def cached_features(ext: Extractor, images_u8: np.ndarray, *, progress: bool = True, copy: bool = False) -> np.ndarray:
    """Features of a (real) image set, cached on disk by content hash + extractor identity."""
    from cxraug.data.cache import default_cache_root

    if copy and ext.copy_fn is None:
        copy = False
    h = hashlib.sha256((ext.ident + ("-copy" if copy else "")).encode())
    h.update(np.ascontiguousarray(images_u8).tobytes())
    path = default_cache_root() / "features" / f"{h.hexdigest()[:24]}.npy"
    if path.is_file():
        return np.load(path)
    f = extract(ext, images_u8, progress=progress, copy=copy)
    path.parent.mkdir(parents=True, exist_ok=True)
    from cxraug.io import atomic_path

    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, f)
    return f
