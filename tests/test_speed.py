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
