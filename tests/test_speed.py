"""Speed switches (issue 17): the fp32 route forced by $CXRAUG_AMP, the per-device instance-norm kernel."""

from __future__ import annotations

import pytest
import torch

from conftest import gan_cfg
from cxraug.errors import CXRAugError
from cxraug.train.engine import Trainer, default_amp


def _bf16_cpu(monkeypatch) -> None:
    """Pretend this CPU has native bf16 (AVX-512-BF16), as the machines the bf16 default was made for."""
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)


def test_cxraug_amp_no_forces_the_fp32_route_on_a_bf16_machine(monkeypatch, phantom_ds, tmp_path):
    cpu = torch.device("cpu")
    monkeypatch.delenv("CXRAUG_AMP", raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert default_amp(cpu) == "no"  # AVX2-only CPU: fp32
    _bf16_cpu(monkeypatch)
    assert default_amp(cpu) == "bf16"  # the detection this switch overrides
    for word in ("no", "fp32", " NO "):
        monkeypatch.setenv("CXRAUG_AMP", word)
        assert default_amp(cpu) == "no"
    tr = Trainer(gan_cfg("dcgan-64", steps=1, width=8), phantom_ds, tmp_path / "a", progress=False)
    assert tr.amp == "no" and not tr.channels_last  # the whole fp32 route: no autocast, no channels_last
    tr = Trainer(gan_cfg("dcgan-64", steps=1, width=8, amp="bf16"), phantom_ds, tmp_path / "b", progress=False)
    assert tr.amp == "bf16"  # an explicit setting still wins over the variable
    monkeypatch.setenv("CXRAUG_AMP", "bf16")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    assert default_amp(cpu) == "bf16"  # and it can force bf16 where detection says no
    monkeypatch.setenv("CXRAUG_AMP", "auto")
    assert default_amp(cpu) == "no"
    monkeypatch.setenv("CXRAUG_AMP", "half")
    with pytest.raises(CXRAugError, match="CXRAUG_AMP") as ei:
        default_amp(cpu)
    assert "\n" not in str(ei.value)


@pytest.mark.parametrize("kernel", ["instance_norm_plain", "instance_norm_native"])
def test_both_instance_norm_kernels_match_torch_incl_double_backward(kernel):
    """Each kernel the per-device choice can pick, against torch's nn.InstanceNorm2d: values (contiguous and
    channels_last), first-order gradients, the gradient penalty's double backward, and bf16 autocast."""
    import cxraug.models.common as common
    from cxraug.families.losses import gradient_penalty

    fn = getattr(common, kernel)
    w, b = torch.randn(8), torch.randn(8)
    ref = torch.nn.InstanceNorm2d(8, affine=True)
    ref.load_state_dict({"weight": w, "bias": b})
    wk, bk = w.clone().requires_grad_(True), b.clone().requires_grad_(True)

    def ours(t):
        return fn(t, wk, bk, 1e-5)

    x = torch.randn(4, 8, 6, 6) * 3 + 1
    assert torch.allclose(ours(x), ref(x), atol=1e-5)
    assert torch.allclose(ours(x.contiguous(memory_format=torch.channels_last)), ref(x), atol=1e-5)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    up = torch.randn_like(x)
    (ours(xa) * up).sum().backward()
    (ref(xb) * up).sum().backward()
    assert torch.allclose(xa.grad, xb.grad, atol=1e-4) and torch.allclose(wk.grad, ref.weight.grad, atol=1e-4)
    assert torch.allclose(bk.grad, ref.bias.grad, atol=1e-4)
    wk.grad = None
    ref.zero_grad()

    def critic(norm):
        return lambda t: norm(t).pow(2).sum((1, 2, 3))

    real, fake, eps = torch.randn(4, 8, 6, 6), torch.randn(4, 8, 6, 6), torch.rand(4, 1, 1, 1)
    gp_ours, gp_ref = (
        gradient_penalty(critic(ours), real, fake, eps=eps),
        gradient_penalty(critic(ref), real, fake, eps=eps),
    )
    (g_ours,) = torch.autograd.grad(gp_ours, wk)  # d penalty / d weight: through the double backward
    (g_ref,) = torch.autograd.grad(gp_ref, ref.weight)
    assert torch.allclose(gp_ours, gp_ref, rtol=1e-4) and torch.allclose(g_ours, g_ref, rtol=1e-3, atol=1e-4)
    with torch.autocast("cpu", torch.bfloat16):
        y = ours(x.bfloat16())
    assert y.dtype == torch.bfloat16 and torch.allclose(y.float(), ref(x), atol=0.05 * ref(x).abs().max().item())


def test_instance_norm_module_takes_the_kernel_of_its_device(monkeypatch):
    import cxraug.models.common as common

    calls = []
    monkeypatch.setitem(common.INSTANCE_NORM_KERNEL, "cpu", lambda x, w, b, e: calls.append(e) or x)
    m = common.InstanceNorm2d(4)
    x = torch.randn(2, 4, 3, 3)
    assert m(x) is x and calls == [1e-5]
    assert set(m.state_dict()) == set(torch.nn.InstanceNorm2d(4, affine=True).state_dict()) == {"weight", "bias"}
    monkeypatch.delitem(common.INSTANCE_NORM_KERNEL, "cpu")
    assert torch.allclose(m(x), common.instance_norm_plain(x, m.weight, m.bias, 1e-5))  # unlisted: plain ops


def test_throughput_table_puts_each_precision_beside_compute_only_and_the_same_naive_loop():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_throughput.py"
    spec = importlib.util.spec_from_file_location("bench_throughput", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    results = {  # images/s as a run stores them; one preset with a float32 pair beside the default bf16 pair
        "train:p-64:engine": {"amp": "bf16", "images_per_s": 90.0},
        "train:p-64:compute": {"amp": "bf16", "images_per_s": 100.0},
        "train:p-64:naive": {"amp": "no", "images_per_s": 40.0},
        "train:p-64:engine+fp32": {"amp": "no", "images_per_s": 50.0},
        "train:p-64:compute+fp32": {"amp": "no", "images_per_s": 48.0},
        "train:q-64:engine": {"amp": "no", "images_per_s": 10.0},  # no compute-only, no naive case run
    }
    rows = [r for r in bench.side_by_side(results) if r.startswith("| p-64") or r.startswith("| q-64")]
    # 90/100 = 90 %, 90/40 = 2.25x; 50/48 = 104 %, 50/40 = 1.25x; missing cases as dashes, not as errors
    assert rows == [
        "| p-64 | bf16 | 90.0 | 100.0 | 40.0 | 90 % | 2.25x |",
        "| p-64 | no | 50.0 | 48.0 | 40.0 | 104 % | 1.25x |",
        "| q-64 | no | 10.0 | – | – | – | – |",
    ]
