"""Fixed feature extractors for generated 3D volumes.

Three extractors turn volumes ``[N, D, H, W]`` (float, in the model's range
[-1, 1]) into feature vectors ``[N, F]``:

``"shallow"``
    A shallow multi-scale random CNN: four ``Conv3d(k=3, s=2)`` + LeakyReLU(0.2)
    stages with 16/32/64/128 channels. Per stage, the channel-wise spatial mean
    and standard deviation are pooled: ``2 * (16 + 32 + 64 + 128) = 480`` dims.
    Sensitive to low-level texture, blur and seams.
``"resnet10"``
    A randomly initialised 3D ResNet-10 (BasicBlocks ``[1, 1, 1, 1]``, channels
    64/128/256/512, strides 1/2/2/2 after a 7^3 stride-2 stem and a max-pool),
    global average pooled: 512 dims.
``"medicalnet:PATH"``
    A MedicalNet (Med3D) ResNet-50 loaded from a local weights file ``PATH``
    (Bottleneck blocks ``[3, 4, 6, 3]``, stem ``7^3`` stride ``(2, 2, 2)`` with 64
    channels, layer3/layer4 with stride 1 and dilation 2/4 as in Med3D), global
    average pooled: 2048 dims. Each volume is z-scored before the network, as
    Med3D was trained on z-scored intensities. Nothing is downloaded.

The random extractors take every weight from ``numpy.random.default_rng(seed)``
(He-normal convolutions, no normalisation), so they are the same on every
torch version and machine. Features are returned raw; :func:`normalise` divides
real and generated features by ONE scalar, the RMS of the real features (never
per dimension: per-dimension z-scoring makes KID explode on blurred inputs).

Evidence that random features are useful for ranking generators: Lee, Kim & Lee
2022 ("Demystifying randomly initialized networks for evaluating generative
models"); Naeem et al. 2020; Thompson et al., ICLR 2022.
"""
from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "ShallowCNN",
    "ResNet3D",
    "resnet10_random",
    "shallow_random",
    "medicalnet_resnet50",
    "load_medicalnet_state_dict",
    "build_extractor",
    "extract",
    "auto_batch_size",
    "rms_scale",
    "normalise",
]

SHALLOW_CHANNELS = (16, 32, 64, 128)


# --------------------------------------------------------------------------- nets
class ShallowCNN(nn.Module):
    """Four ``Conv3d(k3, s2, p1)`` + LeakyReLU(0.2) stages; pools mean and std.

    Input ``[B, 1, D, H, W]``; output ``[B, 2 * sum(channels)]`` ordered as
    ``[mean_1, std_1, mean_2, std_2, ...]`` per stage.
    """

    def __init__(self, channels: Sequence[int] = SHALLOW_CHANNELS, slope: float = 0.2):
        super().__init__()
        chans = [1, *channels]
        self.convs = nn.ModuleList(
            nn.Conv3d(chans[i], chans[i + 1], kernel_size=3, stride=2, padding=1)
            for i in range(len(channels))
        )
        self.slope = slope
        self.out_dim = 2 * sum(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), self.slope)
            flat = x.flatten(2)
            pooled.append(flat.mean(dim=2))
            pooled.append(flat.std(dim=2, unbiased=False))
        return torch.cat(pooled, dim=1)


def _norm(channels: int, norm: bool) -> nn.Module:
    return nn.BatchNorm3d(channels) if norm else nn.Identity()


class _BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None, norm: bool = True):
        super().__init__()
        self.conv1 = nn.Conv3d(cin, planes, 3, stride=stride, padding=dilation,
                               dilation=dilation, bias=False)
        self.bn1 = _norm(planes, norm)
        self.conv2 = nn.Conv3d(planes, planes, 3, padding=dilation, dilation=dilation,
                               bias=False)
        self.bn2 = _norm(planes, norm)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


class _Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None, norm: bool = True):
        super().__init__()
        self.conv1 = nn.Conv3d(cin, planes, 1, bias=False)
        self.bn1 = _norm(planes, norm)
        self.conv2 = nn.Conv3d(planes, planes, 3, stride=stride, padding=dilation,
                               dilation=dilation, bias=False)
        self.bn2 = _norm(planes, norm)
        self.conv3 = nn.Conv3d(planes, planes * 4, 1, bias=False)
        self.bn3 = _norm(planes * 4, norm)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


class ResNet3D(nn.Module):
    """3D ResNet trunk with global average pooling (no classifier head).

    Parameter names follow the Med3D/MedicalNet layout (``conv1``, ``bn1``,
    ``layerK.I.convJ``, ``layerK.I.bnJ``, ``layerK.0.downsample.{0,1}``), so a
    MedicalNet checkpoint loads by name.

    Args:
        block: ``"basic"`` (expansion 1) or ``"bottleneck"`` (expansion 4).
        layers: blocks per stage, e.g. ``(1, 1, 1, 1)`` for ResNet-10.
        strides: stride of the first block of each of the four stages.
        dilations: dilation of each of the four stages.
        norm: batch norms (MedicalNet); ``False`` puts identities in their place,
            which is what an identity-initialised batch norm computes in eval
            mode, at no cost (the random extractors).

    Input ``[B, 1, D, H, W]``; output ``[B, 512 * expansion]``.
    """

    def __init__(self, block: str, layers: Sequence[int],
                 strides: Sequence[int] = (1, 2, 2, 2),
                 dilations: Sequence[int] = (1, 1, 1, 1), norm: bool = True):
        super().__init__()
        cls = {"basic": _BasicBlock, "bottleneck": _Bottleneck}[block]
        self.conv1 = nn.Conv3d(1, 64, kernel_size=7, stride=(2, 2, 2), padding=(3, 3, 3),
                               bias=False)
        self.bn1 = _norm(64, norm)
        self.maxpool = nn.MaxPool3d(kernel_size=3, stride=2, padding=1)
        cin = 64
        for i, (planes, n, s, d) in enumerate(zip((64, 128, 256, 512), layers, strides,
                                                  dilations)):
            down = None
            if s != 1 or cin != planes * cls.expansion:
                down = nn.Sequential(
                    nn.Conv3d(cin, planes * cls.expansion, 1, stride=s, bias=False),
                    _norm(planes * cls.expansion, norm),
                )
            blocks = [cls(cin, planes, stride=s, dilation=d, downsample=down, norm=norm)]
            cin = planes * cls.expansion
            blocks += [cls(cin, planes, dilation=d, norm=norm) for _ in range(n - 1)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.out_dim = cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return x.mean(dim=(2, 3, 4))


# -------------------------------------------------------------- initialisation
def _init_from_numpy(model: nn.Module, seed: int) -> nn.Module:
    """Set every parameter from ``numpy.random.default_rng(seed)``.

    Convolutions: He-normal (std ``sqrt(2 / fan_in)``), biases uniform in
    ``+-1/sqrt(fan_in)``; batch norms, if any: identity (weight 1, bias 0,
    running mean 0, running variance 1). Modules are visited in ``named_modules`` order, so
    the draw is fixed by the architecture and the seed alone.
    """
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for _, mod in model.named_modules():
            if isinstance(mod, nn.Conv3d):
                fan_in = mod.in_channels // mod.groups * math.prod(mod.kernel_size)
                w = rng.standard_normal(tuple(mod.weight.shape)) * math.sqrt(2.0 / fan_in)
                mod.weight.copy_(torch.from_numpy(w.astype(np.float32)))
                if mod.bias is not None:
                    bound = 1.0 / math.sqrt(fan_in)
                    b = rng.uniform(-bound, bound, size=tuple(mod.bias.shape))
                    mod.bias.copy_(torch.from_numpy(b.astype(np.float32)))
            elif isinstance(mod, nn.BatchNorm3d):
                mod.weight.fill_(1.0)
                mod.bias.zero_()
                mod.running_mean.zero_()
                mod.running_var.fill_(1.0)
    return model.eval()


def shallow_random(seed: int) -> ShallowCNN:
    """The seeded shallow multi-scale CNN (extractor A), in eval mode."""
    return _init_from_numpy(ShallowCNN(), seed)


def resnet10_random(seed: int) -> ResNet3D:
    """The seeded, randomly initialised 3D ResNet-10 (extractor B), in eval mode."""
    return _init_from_numpy(ResNet3D("basic", (1, 1, 1, 1), norm=False), seed)


def medicalnet_resnet50() -> ResNet3D:
    """An (uninitialised) MedicalNet/Med3D ResNet-50 trunk, 2048-d pooled output."""
    return ResNet3D("bottleneck", (3, 4, 6, 3), strides=(1, 2, 1, 1), dilations=(1, 1, 2, 4))


# ------------------------------------------------------------------ MedicalNet
def load_medicalnet_state_dict(path: str | os.PathLike, model: nn.Module | None = None
                               ) -> ResNet3D:
    """Load a MedicalNet ResNet-50 checkpoint from a local file.

    Accepts a file written by ``torch.save`` holding either ``{"state_dict": sd}``
    (the Med3D release format) or a bare state dict. Keys may carry a
    ``module.`` prefix (from ``DataParallel``), which is stripped; the
    segmentation head (``conv_seg.*``) and ``fc.*`` are ignored. Loading uses
    ``torch.load(..., weights_only=True)``, so no code in the file runs.

    Raises:
        FileNotFoundError: the file does not exist.
        KeyError: the checkpoint misses weights of the trunk, or holds unknown ones.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"MedicalNet weights file not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # not a torch file, truncated, or a pickle with code in it
        from ..messages import load_error_reason

        raise ValueError(f"{path} is not a readable weights file ({load_error_reason(e)})") from None
    sd = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(sd, dict):
        raise KeyError(f"{path}: expected a state dict or {{'state_dict': ...}}")
    clean = {}
    for key, value in sd.items():
        if key.startswith("module."):
            key = key[len("module."):]
        if key.startswith(("conv_seg.", "fc.")):
            continue
        clean[key] = value
    model = medicalnet_resnet50() if model is None else model
    expected = model.state_dict()
    missing = [k for k in expected if k not in clean and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in clean if k not in expected]
    if missing or unexpected:
        raise KeyError(
            f"{path} does not match the MedicalNet ResNet-50 layout: "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
        )
    for k, v in clean.items():
        if tuple(v.shape) != tuple(expected[k].shape):
            raise KeyError(f"{path}: {k} has shape {tuple(v.shape)}, "
                           f"expected {tuple(expected[k].shape)}")
    model.load_state_dict(clean, strict=False)
    return model.eval()


class _ZScore(nn.Module):
    """Per-volume z-scoring in front of a network (MedicalNet's input convention)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.out_dim = net.out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(1, 2, 3, 4), keepdim=True)
        std = x.std(dim=(1, 2, 3, 4), keepdim=True).clamp_min(1e-6)
        return self.net((x - mean) / std)


# ------------------------------------------------------------------------ API
_CACHE: dict[tuple[str, int], nn.Module] = {}


def build_extractor(kind: str, seed: int = 0) -> nn.Module:
    """The network for ``kind`` (``"shallow"``, ``"resnet10"`` or
    ``"medicalnet:PATH"``), in eval mode; cached per (kind, seed)."""
    key = (kind, 0 if kind.startswith("medicalnet:") else int(seed))
    if key not in _CACHE:
        if kind == "shallow":
            net = shallow_random(seed)
        elif kind == "resnet10":
            net = resnet10_random(seed)
        elif kind.startswith("medicalnet:"):
            net = _ZScore(load_medicalnet_state_dict(kind.split(":", 1)[1])).eval()
        else:
            raise ValueError(
                f"unknown feature kind {kind!r}: use 'shallow', 'resnet10' or 'medicalnet:PATH'"
            )
        if len(_CACHE) >= 8:
            _CACHE.pop(next(iter(_CACHE)))
        # channels-last 3D runs the CPU convolutions ~1.5x faster (same numbers
        # up to float rounding)
        _CACHE[key] = net.to(memory_format=torch.channels_last_3d).eval()
    return _CACHE[key]


def as_volumes(volumes) -> np.ndarray:
    """Check and convert to float32 ``[N, D, H, W]`` (a channel axis of 1 is dropped)."""
    v = np.asarray(volumes)
    if v.ndim == 5 and v.shape[1] == 1:
        v = v[:, 0]
    if v.ndim != 4:
        raise ValueError(f"expected volumes [N, D, H, W], got shape {v.shape}")
    if not np.issubdtype(v.dtype, np.floating):
        raise TypeError(f"expected float volumes in [-1, 1], got dtype {v.dtype}")
    return np.ascontiguousarray(v, dtype=np.float32)


def auto_batch_size(shape: Sequence[int]) -> int:
    """Volumes per forward pass: about 2^23 voxels a batch, between 1 and 32.

    Larger batches amortise the per-call cost of CPU convolutions (3x faster
    at 32^3 than batches of 4); 64^3 -> 32, 128^3 -> 4, 256^3 -> 1.
    """
    voxels = max(1, math.prod(int(s) for s in shape))
    return max(1, min(32, (1 << 23) // voxels))


def extract(volumes, kind: str = "shallow", seed: int = 0,
            batch_size: int | None = None) -> np.ndarray:
    """Features of volumes with one fixed extractor.

    Args:
        volumes: float array ``[N, D, H, W]`` (or ``[N, 1, D, H, W]``) in [-1, 1].
        kind: ``"shallow"`` (480-d), ``"resnet10"`` (512-d) or
            ``"medicalnet:PATH"`` (2048-d, from a local weights file).
        seed: seed of the random weights (ignored for MedicalNet).
        batch_size: volumes per forward pass (memory grows with it); default
            :func:`auto_batch_size`.

    Returns:
        float64 array ``[N, F]``, raw (not normalised; see :func:`normalise`).
    """
    v = as_volumes(volumes)
    net = build_extractor(kind, seed)
    net.eval()
    out = []
    with torch.no_grad():
        bs = auto_batch_size(v.shape[1:]) if batch_size is None else max(1, int(batch_size))
        for i in range(0, len(v), bs):
            x = torch.from_numpy(v[i:i + bs]).unsqueeze(1)
            x = x.contiguous(memory_format=torch.channels_last_3d)
            out.append(net(x).double().numpy())
    if not out:
        return np.zeros((0, net.out_dim))
    return np.concatenate(out, axis=0)


def rms_scale(real_features: np.ndarray) -> float:
    """The one normalising scalar: root mean square of the real features."""
    f = np.asarray(real_features, dtype=np.float64)
    s = float(np.sqrt(np.mean(f * f)))
    return s if s > 0 else 1.0


def normalise(real_features: np.ndarray, *others: np.ndarray) -> tuple[np.ndarray, ...]:
    """Divide real and other feature sets by :func:`rms_scale` of the real ones.

    Returns ``(real / s, *(o / s for o in others))``.
    """
    s = rms_scale(real_features)
    return (np.asarray(real_features, dtype=np.float64) / s,
            *(np.asarray(o, dtype=np.float64) / s for o in others))
