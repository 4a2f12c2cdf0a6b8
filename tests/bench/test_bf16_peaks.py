"""Benchmark helpers that judge a measurement: the accelerators' bfloat16 peaks."""

import argparse

import jax

from capjax.bench import measure
from capjax.bench.attack_speed import GradientBaseline, peak_fraction


def _fake_devices(kind: str, count: int):
    return lambda: [argparse.Namespace(device_kind=kind)] * count


def test_bf16_peak_of_known_devices(monkeypatch):
    monkeypatch.setattr(jax, "devices", _fake_devices("NVIDIA H100 80GB HBM3", 2))
    assert measure.bf16_peak_flops() == 2 * 989e12
    monkeypatch.setattr(jax, "devices", _fake_devices("NVIDIA H100 PCIe", 1))
    assert measure.bf16_peak_flops() == 756e12  # not the SXM figure
    monkeypatch.setattr(jax, "devices", _fake_devices("cpu", 2))
    assert measure.bf16_peak_flops() is None


def test_peak_fraction_only_for_bfloat16_on_a_known_device(monkeypatch):
    baseline = GradientBaseline(batch=8, seconds=1.0, forward_flops=1e12, gradient_flops=2e12)
    monkeypatch.setattr(jax, "devices", _fake_devices("NVIDIA H200", 1))
    # 20 gradients of 2 TFLOP in 0.5 s: 80 TFLOP/s of 989.
    assert peak_fraction(baseline, 0.5, 20, "bfloat16") == {"% bf16 peak": "8.1"}
    assert peak_fraction(baseline, 0.5, 20, "float32") == {}
    monkeypatch.setattr(jax, "devices", _fake_devices("cpu", 1))
    assert peak_fraction(baseline, 0.5, 20, "bfloat16") == {}
