"""A real trained CNN that nobody here wrote: MTCNN's ONet from the PyPI package ``facenet-pytorch``.

The package ships its trained weights (``facenet_pytorch/data/onet.pt``, a plain state dict) inside
the wheel, so nothing is fetched from a hub. It is installed by the test set-up *without* its
dependencies (``pip install --no-deps facenet-pytorch==2.6.0``, see the Makefile): its package
``__init__`` imports torchvision, which these machines cannot use, so we never import the package.
Instead we execute the package's own ``models/mtcnn.py`` (the authors' ``ONet`` class, unchanged)
with a stand-in for its one torchvision-using import, and load the shipped weights with
``weights_only=True``.

ONet: 48x48 RGB face crops, PReLU activations, ceil-mode max pools, three output heads
(box regression (N, 4), landmarks (N, 10), face probability (N, 2) after a softmax). Its own
preprocessing is ``(pixel - 127.5) * 0.0078125`` on 0..255 pixels; :func:`onet` wraps it so it
takes [0, 1] images like every model of this toolkit, and returns the face *logits* (before the
softmax) as a single output, keeping the three heads reachable as modules.

:func:`face_crops` gives real 48 px RGB examples: crops of the Grace Hopper portrait that
matplotlib ships in its sample data (a dependency we already have), plus crops of matplotlib's
other sample pictures as non-faces.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import torch
from torch import nn

FACENET_VERSION = "2.6.0"


def facenet_dir() -> Path | None:
    """The installed ``facenet_pytorch`` folder, found without importing the package (None if absent)."""
    spec = importlib.util.find_spec("facenet_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _authors_onet_class() -> type[nn.Module]:
    root = facenet_dir()
    if root is None:
        raise ModuleNotFoundError("facenet-pytorch is not installed: pip install --no-deps facenet-pytorch==2.6.0")
    name = "_facenet_pytorch_mtcnn"
    if name in sys.modules:
        return sys.modules[name].ONet
    # mtcnn.py does `from .utils.detect_face import detect_face, extract_face` (torchvision inside);
    # ONet never calls them, so a stand-in package provides the two names.
    pkg = types.ModuleType("_facenet_stub")
    pkg.__path__ = []  # a package, so the relative import resolves against it
    utils = types.ModuleType("_facenet_stub.utils")
    utils.__path__ = []
    detect = types.ModuleType("_facenet_stub.utils.detect_face")

    def _unavailable(*_a, **_k):
        raise RuntimeError("detect_face needs torchvision, which the tests do not use")

    detect.detect_face = detect.extract_face = _unavailable
    sys.modules.update({"_facenet_stub": pkg, "_facenet_stub.utils": utils, "_facenet_stub.utils.detect_face": detect})
    spec = importlib.util.spec_from_file_location("_facenet_stub.mtcnn", root / "models" / "mtcnn.py")
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "_facenet_stub"
    spec.loader.exec_module(module)
    sys.modules[name] = module
    return module.ONet


class FaceONet(nn.Module):
    """ONet taking [0, 1] RGB images; returns the face logits (N, 2): index 1 is "face".

    ``net`` is the authors' module, with its own layer names (``net.conv1``, ``net.prelu1``, ...,
    ``net.dense6_1`` the face head, ``net.dense6_2`` boxes, ``net.dense6_3`` landmarks).
    """

    input_shape = (3, 48, 48)
    class_names = ["not face", "face"]

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.net
        h = (x * 255.0 - 127.5) * 0.0078125
        h = n.pool1(n.prelu1(n.conv1(h)))
        h = n.pool2(n.prelu2(n.conv2(h)))
        h = n.pool3(n.prelu3(n.conv3(h)))
        h = n.prelu4(n.conv4(h))
        h = h.permute(0, 3, 2, 1).contiguous()
        h = n.prelu5(n.dense5(h.view(h.shape[0], -1)))
        return n.dense6_1(h)


def onet_raw() -> nn.Module:
    """The authors' ONet with its shipped weights, three heads as the authors return them."""
    cls = _authors_onet_class()
    net = cls(pretrained=False)
    sd = torch.load(facenet_dir() / "data" / "onet.pt", map_location="cpu", weights_only=True)
    net.load_state_dict(sd)
    return net.eval()


def onet() -> FaceONet:
    """ONet with trained weights as a [0, 1]-input model with one output (the face logits)."""
    return FaceONet(onet_raw()).eval()


def _sample_image(name: str) -> np.ndarray:
    import matplotlib
    from PIL import Image

    path = Path(matplotlib.get_data_path()) / "sample_data" / name
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0


def _crops(img: np.ndarray, boxes: list[tuple[int, int, int]]) -> torch.Tensor:
    from PIL import Image

    out = []
    pil = Image.fromarray((img * 255).round().astype(np.uint8))
    for y, x, s in boxes:
        c = pil.crop((x, y, x + s, y + s)).resize((48, 48), Image.BILINEAR)
        out.append(np.asarray(c, dtype=np.float32) / 255.0)
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous()


def face_crops(n_jitter: int = 5) -> torch.Tensor:
    """48 px RGB crops around Grace Hopper's face (600x512 portrait; face near y 100..330, x 150..360),
    at several scales and offsets: (N, 3, 48, 48) in [0, 1]."""
    img = _sample_image("grace_hopper.jpg")
    boxes = []
    for s in (200, 230, 260):
        for dy in np.linspace(-20, 20, n_jitter):
            for dx in np.linspace(-20, 20, n_jitter):
                boxes.append((int(95 + dy), int(135 + dx), s))
    return _crops(img, boxes)


def other_crops(per_image: int = 24, seed: int = 0) -> torch.Tensor:
    """Random 48-160 px crops of the portrait's background and of matplotlib's other sample pictures
    (no faces there): (N, 3, 48, 48) in [0, 1]."""
    rng = np.random.default_rng(seed)
    out = []
    for name in ("grace_hopper.jpg", "logo2.png", "Minduka_Present_Blue_Pack.png"):
        img = _sample_image(name)
        h, w = img.shape[:2]
        boxes = []
        for _ in range(per_image):
            s = int(rng.integers(48, max(49, min(160, h, w))))
            boxes.append((int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1)), s))
        out.append(_crops(img, boxes))
    return torch.cat(out)


def real_examples() -> torch.Tensor:
    """Every real 48 px example (faces first): the dataset a visualization must beat."""
    return torch.cat([face_crops(), other_crops()])
