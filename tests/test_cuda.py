"""The CUDA path: what a GPU user runs (bf16 autocast, channels_last, fused Adam, images resident on the
device). Skipped without a CUDA device, so CI (CPU only) skips it; run it on a GPU machine with
``pytest tests/test_cuda.py``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import FAMILY_CASES, gan_cfg
from cxraug.data.preprocess import u8_to_tensor
from cxraug.families import load_generator
from cxraug.train.config import TrainConfig
from cxraug.train.engine import Trainer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

FAMILIES = {**FAMILY_CASES, "wgan-gp-128": {}}


def _cfg(name: str, **kw) -> TrainConfig:
    return gan_cfg(name, **{"steps": 12, "ckpt_every": 6, "device": "cuda", **kw})


@pytest.fixture(scope="module")
def ds128(tmp_path_factory):
    from cxraug.data.cache import build_cache
    from cxraug.data.phantom import phantom_collection
    from cxraug.data.preprocess import Preprocess

    coll = phantom_collection({"normal": 32, "covid": 32}, size=128, seed=3)
    return build_cache(coll, Preprocess(128), cache_root=tmp_path_factory.mktemp("c128"), progress=False)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_every_family_trains_on_cuda_with_the_gpu_defaults(name, phantom_ds, ds128, tmp_path):
    ds = ds128 if name.endswith("128") else phantom_ds
    tr = Trainer(_cfg(name, **FAMILIES[name]), ds, tmp_path, progress=False)
    assert tr.device.type == "cuda" and tr.amp == "bf16" and tr.channels_last
    assert (tr._graph is not None) == (not name.startswith("cyclegan"))  # CUDA graphs by default where exact
    assert tr._on_device_a is not None and tr._on_device_a[0].dtype == torch.uint8  # resident, not float
    assert all(g.get("fused") for g in tr.opt_d.param_groups if "fused" in g) or tr.cfg.optimizer == "rmsprop"
    g0 = {k: v.clone() for k, v in tr.acc.unwrap_model(tr.main_generator).state_dict().items()}
    tr.fit()
    assert len(tr.history["g_loss"]) >= 2 and all(np.isfinite(v) for _, v in tr.history["g_loss"])
    g1 = tr.acc.unwrap_model(tr.main_generator).state_dict()
    assert any(not torch.equal(g0[k], g1[k]) for k in g0)
    s = tr.sample(8)
    assert s.device.type == "cpu" and torch.isfinite(s).all() and s.abs().max() <= 1
    # the checkpoint loads on the CPU (no CUDA tensors needed) and gives the same images
    g_cpu = load_generator(tmp_path / "checkpoints" / "last.pt", "cpu").net
    g_gpu = load_generator(tmp_path / "checkpoints" / "last.pt", "cuda").net
    if name.startswith("cyclegan"):
        x = tr.fixed_a[:4]
        a, b = g_cpu(x), g_gpu(x.cuda()).cpu()
    else:
        z, y = tr.fixed_noise[:4], tr.fixed_labels[:4]
        a, b = g_cpu(z, y), g_gpu(z.cuda(), y.cuda()).cpu()
    assert (a - b).abs().max() < 2e-2  # cudnn may use TF32


def test_resume_on_cuda_matches_a_straight_run(phantom_ds, tmp_path):
    torch.backends.cudnn.deterministic = True  # the engine then leaves cudnn.benchmark off
    try:
        straight = Trainer(_cfg("wgan-gp-64", amp="no"), phantom_ds, tmp_path / "a", progress=False)
        assert not torch.backends.cudnn.benchmark
        straight.fit()
        half = Trainer(_cfg("wgan-gp-64", amp="no", steps=6), phantom_ds, tmp_path / "b", progress=False)
        half.fit()
        resumed = Trainer(_cfg("wgan-gp-64", amp="no"), phantom_ds, tmp_path / "b", progress=False)
        resumed.resume(tmp_path / "b" / "checkpoints" / "last.pt")
        resumed.fit()
    finally:
        torch.backends.cudnn.deterministic = False
    a = straight.acc.unwrap_model(straight.main_generator).state_dict()
    b = resumed.acc.unwrap_model(resumed.main_generator).state_dict()
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-4) for k in a)


def test_resident_batches_are_the_cached_images(phantom_ds, tmp_path):
    tr = Trainer(_cfg("cgan-64"), phantom_ds, tmp_path, progress=False)
    state = tr.sampler.get_state()
    x, y = tr._batch()
    gen = torch.Generator()
    gen.set_state(state)
    idx = torch.randint(len(tr.data_a), (tr.cfg.batch_size,), generator=gen).numpy()
    assert torch.allclose(x.cpu(), u8_to_tensor(tr.data_a.images[idx]), atol=1e-6)  # CUDA divides by 1/127.5
    assert torch.equal(y.cpu(), torch.from_numpy(np.nan_to_num(tr.data_a.labels[idx])))


def test_feature_extraction_and_synthesis_on_cuda(phantom_ds, tmp_path):
    from cxraug.metrics.encoder import ConvEncoder, save_encoder
    from cxraug.metrics.features import extract, get_extractor
    from cxraug.synth.generate import generate

    path = save_encoder(ConvEncoder(64, 16), tmp_path / "enc.safetensors")
    imgs = np.asarray(phantom_ds.images[:40])
    f_cpu = extract(get_extractor(f"encoder:{path}"), imgs, progress=False)
    ext = get_extractor(f"encoder:{path}", device="cuda")
    assert ext.device.type == "cuda"
    f_gpu = extract(ext, imgs, progress=False)
    assert np.abs(f_cpu - f_gpu).max() < 1e-2 * np.abs(f_cpu).max()

    tr = Trainer(_cfg("dcgan-64", steps=2, ckpt_every=2), phantom_ds, tmp_path / "run", progress=False)
    ckpt = tr.fit()
    a, la, _ = generate(ckpt, 20, seed=5)
    b, lb, _ = generate(ckpt, 20, seed=5, device="cuda")
    assert np.array_equal(la, lb) and np.abs(a.astype(int) - b.astype(int)).max() <= 3


def test_classifier_trains_on_cuda(phantom_ds):
    from cxraug.classify.models import build_classifier
    from cxraug.classify.train import fit_classifier, predict_proba

    x, y = np.asarray(phantom_ds.images), phantom_ds.label_index
    net, _ = build_classifier("lightweight", 2)
    model, curves = fit_classifier(net, x, y, x[:16], y[:16], epochs=2, device="cuda")
    assert next(model.parameters()).device.type == "cuda" and len(curves["val_loss"]) == 2
    p = predict_proba(model, x[:8])
    assert p.shape == (8, 2) and np.allclose(p.sum(1), 1, atol=1e-5)


# ---------------------------------------------------------------- CUDA graphs (train/graphs.py)
GRAPHABLE = {k: v for k, v in FAMILY_CASES.items() if not k.startswith("cyclegan")}


def _weights(tr: Trainer) -> dict[str, torch.Tensor]:
    fam, unwrap = tr.family, tr.acc.unwrap_model
    nets = {**fam.generators, **fam.critics}
    out = {f"{n}.{k}": v.float().cpu() for n, m in nets.items() for k, v in unwrap(m).state_dict().items()}
    if tr.ema is not None:
        out.update({f"ema.{k}": v.float().cpu() for k, v in tr.ema.module.state_dict().items()})
    return out


def _assert_same_run(a: Trainer, b: Trainer, rtol: float, atol: float) -> None:
    assert a.history.keys() == b.history.keys()
    for k in a.history:
        if k == "images_per_s":
            continue
        x, y = np.array(a.history[k]), np.array(b.history[k])
        assert x.shape == y.shape and np.array_equal(x[:, 0], y[:, 0]), k
        assert np.allclose(x[:, 1], y[:, 1], rtol=rtol, atol=atol), (k, x[:, 1], y[:, 1])
    wa, wb = _weights(a), _weights(b)
    for k in wa:
        assert torch.allclose(wa[k], wb[k], rtol=rtol, atol=atol), (k, (wa[k] - wb[k]).abs().max())


@pytest.fixture
def deterministic_cudnn():
    torch.backends.cudnn.deterministic = True  # the engine then leaves cudnn.benchmark off: the same kernels twice
    yield
    torch.backends.cudnn.deterministic = False


@pytest.mark.parametrize("amp", ["no", "bf16"])
@pytest.mark.parametrize("name", list(GRAPHABLE))
def test_graphed_steps_give_the_eager_losses_and_weights(name, amp, phantom_ds, tmp_path, deterministic_cudnn):
    runs = {}
    for graphs in (False, True):
        cfg = _cfg(name, amp=amp, cuda_graphs=graphs, log_every=1, **GRAPHABLE[name])
        tr = Trainer(cfg, phantom_ds, tmp_path / f"graphs-{graphs}", progress=False)
        assert (tr._graph is not None) == graphs
        tr.fit()
        runs[graphs] = tr
    assert runs[True]._graph.graph is not None  # the later steps were replays
    assert runs[True].rng.get_state().equal(runs[False].rng.get_state())  # the same draws, the same count
    assert runs[True].sampler.get_state().equal(runs[False].sampler.get_state())
    _assert_same_run(runs[False], runs[True], rtol=1e-4 if amp == "no" else 1e-2, atol=1e-5 if amp == "no" else 1e-3)


def test_graphed_run_resumed_equals_a_straight_eager_run(phantom_ds, tmp_path, deterministic_cudnn):
    straight = Trainer(_cfg("wgan-gp-64", amp="no", log_every=1), phantom_ds, tmp_path / "a", progress=False)
    straight.fit()
    half = Trainer(_cfg("wgan-gp-64", amp="no", log_every=1, steps=6, cuda_graphs=True), phantom_ds, tmp_path / "b",
                   progress=False)  # fmt: skip
    half.fit()
    resumed = Trainer(_cfg("wgan-gp-64", amp="no", log_every=1, cuda_graphs=True), phantom_ds, tmp_path / "b",
                      progress=False)  # fmt: skip
    resumed.resume(tmp_path / "b" / "checkpoints" / "last.pt")
    resumed.fit()
    _assert_same_run(straight, resumed, rtol=1e-4, atol=1e-5)


def test_cyclegan_asks_for_graphs_and_trains_eagerly(phantom_ds, tmp_path):
    tr = Trainer(_cfg("cyclegan-64", cuda_graphs=True, **FAMILY_CASES["cyclegan-64"]), phantom_ds, tmp_path,
                 progress=False)  # fmt: skip
    assert tr._graph is None
    tr.fit()
    assert np.isfinite(tr.history["g_loss"][-1][1])
