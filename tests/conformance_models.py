"""The architectures of the conformance suite (``tests/test_conformance.py``): each is a real kind of
network with its own activations and blocks, small enough to run every capability in seconds.

* ``transformers`` vision models built offline from a tiny config (random weights; BatchNorm statistics
  and LayerNorm affine parameters randomised too, so the norms are not identities): ResNet (BatchNorm +
  residual adds), ConvNeXt (LayerNorm + GELU), MobileNetV2 (depthwise convs + ReLU6), EfficientNet (SiLU +
  squeeze-excite products), RegNet (grouped convs + squeeze-excite). Wrapped to take [0, 1] images and
  return the logits tensor.
* hand-made nets: PReLU, LeakyReLU, ELU, ceil-mode pools, three output heads (a tuple), inline
  preprocessing (``relu(conv(x * 2 - 1))`` with the functional ``torch.relu``).
* trained: the committed MNIST CNN and MTCNN's ONet (``tests/third_party.py``).

Each :class:`Arch` names the layers each capability uses (a hidden spatial layer, a weighted pair for
direct weights, a pair for expanded weights, a block for a transcoder) and what the net contains, so the
suite knows which methods' rules apply.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn
import torch.nn.functional as F

N_CLASSES = 5


def _randomise_norms(model: nn.Module, seed: int) -> None:
    """Give every BatchNorm random running statistics and affine parameters, every LayerNorm a random
    affine: at initialisation they are identities, which would hide a method that ignores them."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
                m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                m.bias.copy_(torch.randn(c, generator=g) * 0.2)
            elif hasattr(m, "weight") and hasattr(m, "bias") and "LayerNorm" in type(m).__name__ \
                    and isinstance(m.weight, torch.Tensor) and m.weight.dim() == 1:
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.2)


def _scale_up(model: nn.Module, seed: int) -> None:
    """``transformers`` initialises linear layers with std 0.02, which makes the logits ~1e-3: re-draw
    conv and linear weights with a fan-in scale so the logits are O(1) and the checks are not vacuous."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)


class HFClassifier(nn.Module):
    """A ``transformers`` image classifier taking [0, 1] images (it normalises them itself) and
    returning the logits tensor; the wrapped model is ``self.hf``."""

    input_shape = (3, 32, 32)
    class_names = [f"class{i}" for i in range(N_CLASSES)]

    def __init__(self, hf: nn.Module) -> None:
        super().__init__()
        self.hf = hf

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.hf(pixel_values=(x - 0.5) / 0.25).logits


def _hf(kind: str, seed: int) -> nn.Module:
    import transformers as T

    torch.manual_seed(seed)
    if kind == "resnet":
        hf = T.ResNetForImageClassification(T.ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
                                                           layer_type="basic", num_labels=N_CLASSES))
    elif kind == "convnext":
        hf = T.ConvNextForImageClassification(T.ConvNextConfig(num_channels=3, hidden_sizes=[8, 16], depths=[1, 1], num_stages=2,
                                                               patch_size=2, num_labels=N_CLASSES))
    elif kind == "mobilenetv2":
        hf = T.MobileNetV2ForImageClassification(T.MobileNetV2Config(num_channels=3, image_size=32, depth_multiplier=0.25,
                                                                     num_labels=N_CLASSES))
    elif kind == "efficientnet":
        hf = T.EfficientNetForImageClassification(T.EfficientNetConfig(num_channels=3, image_size=32, width_coefficient=0.25,
                                                                       depth_coefficient=0.2, hidden_dim=320,
                                                                       num_labels=N_CLASSES))
    elif kind == "regnet":
        hf = T.RegNetForImageClassification(T.RegNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
                                                           groups_width=4, num_labels=N_CLASSES))
    else:  # pragma: no cover
        raise ValueError(kind)
    _scale_up(hf, seed + 1)
    _randomise_norms(hf, seed + 2)
    model = HFClassifier(hf.eval()).eval()
    _unit_logit_spread(model, [m for m in hf.modules() if isinstance(m, nn.Linear)][-1])
    return model


def _unit_logit_spread(model: nn.Module, head: nn.Linear) -> None:
    """Scale the classifier so the logits vary by about 1 across seeded images: deep random nets forget
    their input (EfficientNet's logits vary by ~3e-4), which would make every completeness check vacuous."""
    with torch.no_grad():
        y = model(inputs_for(model, 16, seed=99))
        spread = float(y.std(0).mean())
        if spread > 0:
            head.weight.mul_(1.0 / spread)
            head.bias.mul_(1.0 / spread)


class SmallNet(nn.Module):
    """conv(3->8) act pool conv(8->12) act pool fc: the activation and the pool are the variable parts."""

    input_shape = (3, 32, 32)
    class_names = [f"class{i}" for i in range(N_CLASSES)]

    def __init__(self, act: Callable[[], nn.Module], pool: Callable[[], nn.Module] = lambda: nn.MaxPool2d(2)) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.act1 = act()
        self.pool1 = pool()
        self.conv2 = nn.Conv2d(8, 12, 3, padding=1)
        self.act2 = act()
        self.pool2 = pool()
        self.flatten = nn.Flatten()
        with torch.no_grad():
            n = self.pool2(self.conv2(self.pool1(self.conv1(torch.zeros(1, 3, 32, 32))))).numel()
        self.fc = nn.Linear(n, N_CLASSES)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        return self.flatten(self.pool2(self.act2(self.conv2(self.pool1(self.act1(self.conv1(x)))))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.trunk(x))


class MultiHeadNet(SmallNet):
    """Three output heads, returned as a tuple (class logits, a box (4), landmarks (10)), like MTCNN's nets."""

    def __init__(self) -> None:
        super().__init__(nn.ReLU)
        n = self.fc.in_features
        self.box = nn.Linear(n, 4)
        self.landmarks = nn.Linear(n, 10)

    def forward(self, x: torch.Tensor):  # type: ignore[override]
        h = self.trunk(x)
        return self.fc(h), self.box(h), self.landmarks(h)


class InlinePreNet(SmallNet):
    """Preprocessing inside ``forward`` and a functional ReLU: ``relu(conv1(x * 2 - 1))``."""

    def __init__(self) -> None:
        super().__init__(nn.ReLU)
        del self.act1  # the first activation is torch.relu, not a module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pool1(torch.relu(self.conv1(x * 2 - 1)))
        return self.fc(self.flatten(self.pool2(self.act2(self.conv2(h)))))


def _small(act: Callable[[], nn.Module] | None, seed: int, pool: Callable[[], nn.Module] | None = None,
           cls: type[SmallNet] = SmallNet) -> nn.Module:
    torch.manual_seed(seed)
    if cls is SmallNet:
        m = SmallNet(act, pool) if pool is not None else SmallNet(act)
    else:
        m = cls()
    _scale_up(m, seed + 1)
    with torch.no_grad():  # PReLU slopes differ per channel and from 0.25, so a rule that assumes ReLU shows
        for mod in m.modules():
            if isinstance(mod, nn.PReLU):
                mod.weight.copy_(torch.rand(mod.weight.shape, generator=torch.Generator().manual_seed(seed)) * 0.5)
    return m.eval()


class _PReLUPerLayer:
    """PReLU with one slope per channel of the layer it follows (8 then 12)."""

    def __init__(self) -> None:
        self.sizes = iter([8, 12])

    def __call__(self) -> nn.Module:
        return nn.PReLU(next(self.sizes))


@dataclass
class Arch:
    """An architecture of the suite and the layers each capability uses on it."""

    name: str
    build: Callable[[], nn.Module]
    what: str  # one line for the table
    layer: str  # a hidden spatial layer (capture, featvis, layer attribution, Grad-CAM, dictionaries)
    channel: int = 0
    weights: tuple[str, str] | None = None  # (src, dst conv): direct weights == dst's kernel
    expanded: tuple[str, str] | None = None  # (src, dst): expanded weights vs the Jacobian of the linearized path
    unit: tuple[str, str] | None = None  # (source layer, target layer) for unit attribution; default (expanded[0], layer)
    block: tuple[str, str] | None = None  # transcoder block (in_layer, out_layer), from the model input
    trained: bool = False
    multi_head: bool = False
    non_relu: tuple[str, ...] = ()  # what the net has besides ReLU (informational: the checks find modules themselves)
    functional_relu: bool = False  # a ReLU called as a function (no module to hook)
    examples: Callable[[], torch.Tensor] | None = None  # real examples (trained models)
    extra: dict = field(default_factory=dict)


def _mnist() -> nn.Module:
    import vision_interp as vi

    return vi.mnist_cnn(pretrained=True).eval()


def _mnist_examples() -> torch.Tensor:
    from vision_interp.data import load_mnist

    return load_mnist("test", limit=2000, download=False).images


def _onet() -> nn.Module:
    import third_party

    return third_party.onet()


def _onet_examples() -> torch.Tensor:
    import third_party

    return third_party.real_examples()


def _stage(kind: str, rest: str) -> str:
    return f"hf.{kind}.{rest}"


ARCHS: list[Arch] = [
    Arch("resnet", lambda: _hf("resnet", 10), "transformers ResNet: BatchNorm, residual adds, ReLU, max pool",
         layer="hf.resnet.encoder.stages.0.layers.0.layer.0.activation", channel=1,
         weights=("hf.resnet.encoder.stages.0.layers.0.layer.0.activation", "hf.resnet.encoder.stages.0.layers.0.layer.1.convolution"),
         expanded=("hf.resnet.embedder.embedder.convolution", "hf.resnet.encoder.stages.0.layers.0.layer.0.convolution"),
         block=("input", "hf.resnet.embedder.embedder.activation")),
    Arch("convnext", lambda: _hf("convnext", 20), "transformers ConvNeXt: LayerNorm, GELU, depthwise 7x7, linear layers on NHWC",
         layer="hf.convnext.encoder.stages.0.layers.0.dwconv", channel=1,
         weights=("hf.convnext.embeddings.layernorm", "hf.convnext.encoder.stages.0.layers.0.dwconv"),
         expanded=("hf.convnext.embeddings.patch_embeddings", "hf.convnext.encoder.stages.0.layers.0.dwconv"),
         block=("input", "hf.convnext.embeddings.patch_embeddings"), non_relu=("GELUActivation", "ConvNextLayerNorm")),
    Arch("mobilenetv2", lambda: _hf("mobilenetv2", 30), "transformers MobileNetV2: depthwise convs, ReLU6, BatchNorm, inverted residuals",
         layer="hf.mobilenet_v2.conv_stem.conv_3x3.activation", channel=1,
         weights=("hf.mobilenet_v2.conv_stem.first_conv.activation", "hf.mobilenet_v2.conv_stem.conv_3x3.convolution"),
         expanded=("hf.mobilenet_v2.conv_stem.first_conv.convolution", "hf.mobilenet_v2.conv_stem.conv_3x3.convolution"),
         block=("input", "hf.mobilenet_v2.conv_stem.first_conv.activation"), non_relu=("ReLU6",)),
    Arch("efficientnet", lambda: _hf("efficientnet", 40), "transformers EfficientNet: SiLU, squeeze-excite products, depthwise convs",
         layer="hf.efficientnet.embeddings.activation", channel=1,
         weights=("hf.efficientnet.embeddings.activation", "hf.efficientnet.encoder.blocks.0.depthwise_conv.depthwise_conv"),
         expanded=("hf.efficientnet.embeddings.convolution", "hf.efficientnet.encoder.blocks.0.depthwise_conv.depthwise_conv"),
         block=("input", "hf.efficientnet.embeddings.activation"), non_relu=("SiLU", "Sigmoid")),
    Arch("regnet", lambda: _hf("regnet", 50), "transformers RegNet: grouped convs, squeeze-excite (sigmoid product), BatchNorm",
         layer="hf.regnet.embedder.embedder.activation", channel=1,
         weights=("hf.regnet.embedder.embedder.activation", "hf.regnet.encoder.stages.0.layers.0.layer.0.convolution"),
         expanded=("hf.regnet.embedder.embedder.convolution", "hf.regnet.encoder.stages.0.layers.0.layer.0.convolution"),
         block=("input", "hf.regnet.embedder.embedder.activation"), non_relu=("Sigmoid",)),
    Arch("prelu", lambda: _small(_PReLUPerLayer(), 60), "hand-made: PReLU (per-channel slopes), max pool",
         layer="act1", channel=2, weights=("act1", "conv2"), expanded=("conv1", "conv2"), block=("input", "pool1"),
         non_relu=("PReLU",)),
    Arch("leaky", lambda: _small(lambda: nn.LeakyReLU(0.1), 61), "hand-made: LeakyReLU(0.1), max pool",
         layer="act1", channel=2, weights=("act1", "conv2"), expanded=("conv1", "conv2"), block=("input", "pool1"),
         non_relu=("LeakyReLU",)),
    Arch("elu", lambda: _small(nn.ELU, 62), "hand-made: ELU, max pool",
         layer="act1", channel=2, weights=("act1", "conv2"), expanded=("conv1", "conv2"), block=("input", "pool1"),
         non_relu=("ELU",)),
    Arch("ceilpool", lambda: _small(nn.ReLU, 63, pool=lambda: nn.MaxPool2d(3, 2, ceil_mode=True)),
         "hand-made: ReLU, 3x3/2 max pools with ceil_mode=True", layer="act1", channel=2, weights=("pool1", "conv2"),
         expanded=("conv1", "conv2"), block=("input", "pool1")),
    Arch("multihead", lambda: _small(None, 64, cls=MultiHeadNet), "hand-made: three output heads returned as a tuple",
         layer="act1", channel=2, weights=("act1", "conv2"), expanded=("conv1", "conv2"), block=("input", "pool1"),
         multi_head=True),
    Arch("inline", lambda: _small(None, 65, cls=InlinePreNet), "hand-made: inline preprocessing relu(conv1(x * 2 - 1)), functional ReLU",
         layer="conv1", channel=2, weights=("pool1", "conv2"), expanded=("conv1", "conv2"), unit=("pool1", "act2"),
         block=("input", "pool1"), functional_relu=True),
    Arch("mnist_cnn", _mnist, "trained: the committed MNIST CNN (99.20%)", layer="relu2", channel=3,
         weights=("relu1", "conv2"), expanded=("conv1", "conv2"), block=("input", "pool1"), trained=True,
         examples=_mnist_examples),
    Arch("onet", _onet, "trained third-party: MTCNN's ONet (facenet-pytorch 2.6.0), PReLU, ceil-mode pools, 48 px faces",
         layer="net.prelu3", channel=5, weights=("net.pool1", "net.conv2"), expanded=("net.conv1", "net.conv2"),
         block=("input", "net.pool1"), trained=True, non_relu=("PReLU",), examples=_onet_examples),
]

BY_NAME = {a.name: a for a in ARCHS}


def inputs_for(model: nn.Module, n: int = 3, seed: int = 0) -> torch.Tensor:
    """``n`` seeded images in [0, 1] of the model's declared input shape (smooth enough to look natural)."""
    from vision_interp.zoo.spec import model_spec

    shape = model_spec(model).input_shape
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, shape[0], shape[1] // 4, shape[2] // 4, generator=g)
    fine = torch.rand(n, *shape, generator=g)
    return (0.7 * F.interpolate(coarse, size=shape[1:], mode="bilinear", align_corners=False) + 0.3 * fine).clamp(0, 1)
