"""PyTorch twins of capjax zoo classifiers, for `python -m capjax.bench compare`.

`torch_twin(model, variables)` builds the PyTorch module that computes the same function as
the Flax `model` with `variables` in eval mode (BatchNorm on running statistics): same
input normalisation, same padding, same layers, with the parameters and batch statistics
copied across (Flax NHWC/HWIO -> PyTorch NCHW/OIHW, Dense (in, out) -> Linear (out, in)).
The twin takes (N, C, H, W) float32 images in [0, 1].

Supported: `TinyCNN` (the "tiny" model), `ResNet` with `BasicBlock` (resnet18, resnet34) and
the benchmarks' `MaxPoolCNN` ("maxpool_cnn", `capjax.bench.user_models`), float32 only. PyTorch
is imported lazily: capjax itself never needs it, and this module is only imported by the
compare benchmark (install with `pip install -e .[bench]`).
"""

from __future__ import annotations

import functools
import types
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from capjax.bench.user_models import MaxPoolCNN
from capjax.core.errors import ConfigError
from capjax.models.resnet import BasicBlock, ResNet
from capjax.models.tiny import TinyCNN


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """XLA's "SAME" padding (before, after) of one spatial axis: the extra pixel goes after,
    so a 3x3 stride-2 convolution of an even size pads (0, 1), not PyTorch's (1, 1)."""
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def supported(model: Any) -> bool:
    """Whether `torch_twin` can mirror this Flax classifier."""
    if isinstance(model, (TinyCNN, MaxPoolCNN)):
        return True
    return isinstance(model, ResNet) and model.block is BasicBlock


def torch_twin(model: Any, variables: Mapping[str, Any]):
    """The PyTorch module (eval mode, float32) computing `model.apply(variables, x)` on NCHW x.

    Args:
      model: a capjax `TinyCNN`, or a `ResNet` with `BasicBlock` (resnet18/34), float32.
      variables: its Flax variables {"params": ..., "batch_stats": ...}.

    Raises:
      ValueError: the model is of another kind or not float32.
    """
    if not supported(model):
        raise ConfigError(
            f"no PyTorch twin for {type(model).__name__}; supported: TinyCNN ('tiny'), "
            "ResNet with BasicBlock ('resnet18', 'resnet34') and MaxPoolCNN ('maxpool_cnn')."
        )
    if jnp.dtype(model.dtype) != jnp.float32:
        raise ConfigError(f"PyTorch twins are float32 only, got dtype={model.dtype}.")
    modules = _define_modules()
    params = variables["params"]
    stats = variables.get("batch_stats", {})
    if isinstance(model, TinyCNN):
        twin = modules.TinyCNN(model, params, stats)
    elif isinstance(model, MaxPoolCNN):
        twin = modules.MaxPoolCNN(model, params)
    else:
        twin = modules.ResNet(model, params, stats)
    return twin.eval()


# Largest |logits_flax - logits_torch| accepted, relative to max(1, max |logits|).
TWIN_TOLERANCE = 1e-4


def checked_twin(torch, model: Any, variables: Mapping[str, Any], x, device: str):
    """(twin on `device`, device, a line saying how closely it matches) for a float32 copy of
    `model`, checked on up to 32 random images against the Flax model.

    Raises:
      SystemExit: the logits differ by more than TWIN_TOLERANCE x max(1, max |logit|):
        timing a different function would be meaningless.
    """
    model = model.clone(dtype=jnp.float32)
    twin = torch_twin(model, variables).to(device)
    check = np.random.default_rng(1).uniform(0, 1, (min(x.shape[0], 32), 32, 32, 3))
    check = check.astype(np.float32)
    # Both in full float32: on a GPU, JAX and torch run float32 convolutions in TF32 by
    # default, whose rounding (about 1e-3) would hide a wrong twin. The timed runs keep the
    # defaults, TF32 on both sides.
    with jax.default_matmul_precision("highest"):
        flax_logits = np.asarray(model.apply(variables, jnp.asarray(check), train=False))
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.no_grad():
            check_nchw = torch.from_numpy(check.transpose(0, 3, 1, 2).copy()).to(device)
            torch_logits = twin(check_nchw).cpu().numpy()
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    diff = float(np.max(np.abs(flax_logits - torch_logits)))
    scale = float(np.max(np.abs(flax_logits)))
    line = (
        f"torch twin: max |logits_flax - logits_torch| = {diff:.2e} on {check.shape[0]} random "
        f"images (max |logit| {scale:.2f}; tolerance {TWIN_TOLERANCE:g} x max(1, that))"
    )
    if not diff <= TWIN_TOLERANCE * max(1.0, scale):
        raise SystemExit(line + ": the PyTorch twin does not match; nothing timed.")
    return twin, device, line


def _tensor(value) -> Any:
    import torch

    return torch.from_numpy(np.array(value, dtype=np.float32))


@functools.cache
def _define_modules() -> types.SimpleNamespace:
    """The twin classes, defined on first use so that importing this module needs no torch."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    def conv(kernel_hwio, stride: int, padding: int, bias=None) -> nn.Conv2d:
        h, w, cin, cout = kernel_hwio.shape
        layer = nn.Conv2d(cin, cout, (h, w), stride, padding, bias=bias is not None)
        with torch.no_grad():
            layer.weight.copy_(_tensor(kernel_hwio).permute(3, 2, 0, 1))
            if bias is not None:
                layer.bias.copy_(_tensor(bias))
        return layer

    def batch_norm(params, stats) -> nn.BatchNorm2d:
        # Flax's BatchNorm (capjax's batch_norm: eps 1e-5) in eval mode computes
        # (x - mean) * rsqrt(var + eps) * scale + bias, as PyTorch's does.
        layer = nn.BatchNorm2d(params["scale"].shape[0], eps=1e-5)
        with torch.no_grad():
            layer.weight.copy_(_tensor(params["scale"]))
            layer.bias.copy_(_tensor(params["bias"]))
            layer.running_mean.copy_(_tensor(stats["mean"]))
            layer.running_var.copy_(_tensor(stats["var"]))
        return layer

    def linear(params) -> nn.Linear:
        cin, cout = params["kernel"].shape
        layer = nn.Linear(cin, cout)
        with torch.no_grad():
            layer.weight.copy_(_tensor(params["kernel"]).T)
            layer.bias.copy_(_tensor(params["bias"]))
        return layer

    class Normalize(nn.Module):
        """capjax.models.layers.normalize: (x - mean) / std per channel, or identity."""

        def __init__(self, mean: Sequence[float] | None, std: Sequence[float] | None):
            super().__init__()
            self.active = mean is not None or std is not None
            mean = _tensor(mean if mean is not None else 0.0).reshape(-1, 1, 1)
            std = _tensor(std if std is not None else 1.0).reshape(-1, 1, 1)
            self.register_buffer("mean", mean)
            self.register_buffer("std", std)

        def forward(self, x):
            return (x - self.mean) / self.std if self.active else x

    class Head(nn.Module):
        """capjax.models.layers.classifier_head: global average pool, then `head`."""

        def __init__(self, params):
            super().__init__()
            self.head = linear(params["head"])

        def forward(self, x):
            return self.head(x.mean(dim=(2, 3)))

    class TinyCNN(nn.Module):
        def __init__(self, model, params, stats):
            super().__init__()
            self.normalize = Normalize(model.mean, model.std)
            self.convs, self.bns, self.strides = nn.ModuleList(), nn.ModuleList(), []
            index = 0
            for stage, _ in enumerate(model.widths):
                for i in range(2):
                    stride = 2 if (stage > 0 and i == 0) else 1
                    p = params[f"Conv_{index}"]
                    self.convs.append(conv(p["kernel"], stride, 0, p.get("bias")))
                    self.strides.append(stride)
                    if model.use_bn:
                        self.bns.append(
                            batch_norm(params[f"BatchNorm_{index}"], stats[f"BatchNorm_{index}"])
                        )
                    index += 1
            self.head = Head(params)

        def forward(self, x):
            x = self.normalize(x)
            for i, layer in enumerate(self.convs):
                k, s = layer.kernel_size[0], self.strides[i]
                top, bottom = same_padding(x.shape[2], k, s)
                left, right = same_padding(x.shape[3], k, s)
                x = layer(F.pad(x, (left, right, top, bottom)))
                if len(self.bns):
                    x = self.bns[i](x)
                x = F.relu(x)
            return self.head(x)

    class BasicBlock(nn.Module):
        def __init__(self, params, stats, stride: int):
            super().__init__()
            self.conv1 = conv(params["conv1"]["kernel"], stride, 1)
            self.bn1 = batch_norm(params["bn1"], stats["bn1"])
            self.conv2 = conv(params["conv2"]["kernel"], 1, 1)
            self.bn2 = batch_norm(params["bn2"], stats["bn2"])
            self.shortcut = nn.Identity()
            if "shortcut_conv" in params:
                self.shortcut = nn.Sequential(
                    conv(params["shortcut_conv"]["kernel"], stride, 0),
                    batch_norm(params["shortcut_bn"], stats["shortcut_bn"]),
                )

        def forward(self, x):
            y = F.relu(self.bn1(self.conv1(x)))
            y = self.bn2(self.conv2(y))
            return F.relu(y + self.shortcut(x))

    class ResNet(nn.Module):
        def __init__(self, model, params, stats):
            super().__init__()
            self.normalize = Normalize(model.mean, model.std)
            self.stem_conv = conv(params["stem_conv"]["kernel"], 1, 1)
            self.stem_bn = batch_norm(params["stem_bn"], stats["stem_bn"])
            blocks = []
            for stage, num_blocks in enumerate(model.stage_sizes):
                for i in range(num_blocks):
                    name = f"stage{stage + 1}_block{i + 1}"
                    stride = 2 if (stage > 0 and i == 0) else 1
                    blocks.append(BasicBlock(params[name], stats[name], stride))
            self.blocks = nn.Sequential(*blocks)
            self.head = Head(params)

        def forward(self, x):
            x = F.relu(self.stem_bn(self.stem_conv(self.normalize(x))))
            return self.head(self.blocks(x))

    class MaxPoolCNN(nn.Module):
        def __init__(self, model, params):
            super().__init__()
            self.normalize = Normalize(model.mean, model.std)
            # A 3x3 stride-1 "SAME" convolution pads one pixel on every side, as padding=1.
            self.convs = nn.ModuleList(
                conv(params[f"conv{i + 1}"]["kernel"], 1, 1, params[f"conv{i + 1}"]["bias"])
                for i in range(len(model.widths))
            )
            self.head = linear(params["head"])

        def forward(self, x):
            x = self.normalize(x)
            for layer in self.convs:
                x = F.max_pool2d(F.relu(layer(x)), 2, 2)
            # Flax flattens NHWC: flatten in that order so the dense kernel's rows line up.
            return self.head(x.permute(0, 2, 3, 1).flatten(1))

    return types.SimpleNamespace(TinyCNN=TinyCNN, ResNet=ResNet, MaxPoolCNN=MaxPoolCNN)
