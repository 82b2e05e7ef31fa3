"""Sparse 3D convolution on spconv, CPU and CUDA.

spconv is imported on first use (:func:`import_spconv`), so ``import
vision3d.backend`` stays fast and works without it; using a block without
spconv installed raises a UserError saying what to install.

CPU training fix (the one place it lives): spconv 2.3's backward pass
(``spconv/pytorch/ops.py``, e.g. ``indice_conv_backward``) calls
``get_current_stream()`` unconditionally, which runs
``torch.cuda.current_stream()`` and, on a CPU-only torch build, raises
"Torch not compiled with CUDA enabled"; the stream it asks for is never used
for CPU tensors (the forward pass already passes 0 for them).
:func:`import_spconv` rebinds the name ``get_current_stream`` in the spconv
modules that imported it to a wrapper that returns 0 when CUDA is not
available and defers to spconv's own function otherwise. Nothing changes on
machines with CUDA; site-packages is not edited.

CPU correctness fix (same place, same time): spconv 2.3's CPU
``scatter_add_cpu`` (``spconv/csrc/sparse/gather.py``, used by every CPU
sparse conv forward and backward) keeps its row pointers in variables shared
by all threads of its parallel loop, a data race: with more than one thread,
outputs are intermittently wrong (seen: 2 of 200 float32 and 85 of 200
float64 calls of one small strided conv on 2 threads; exact on 1 thread).
:func:`import_spconv` gives ``spconv.pytorch.ops`` a ``SpconvOps`` whose
``scatter_add_cpu`` is torch's ``index_add_`` on the same buffers; every
other ``SpconvOps`` member is spconv's own.

CPU tensors with a CUDA build of spconv: its convolutions default to the
implicit-GEMM algorithm, which has no CPU kernels ("implicit gemm only support
cuda"). :func:`import_spconv` wraps ``SparseConvolutionBase._conv_forward`` to
run the native (gather-GEMM-scatter) algorithm on CPU inputs and the layer's
own algorithm on CUDA inputs; all layers see the same device in one forward
pass, so layers that share an ``indice_key`` stay consistent. Weights are
KRSC for every algorithm in spconv 2.3, so nothing is converted. CPU-only
builds already use the native algorithm and are left alone.

Empty inputs (a LiDAR scan with no point in range): spconv 2.3 fails on a
tensor with zero active sites -- on the CPU its compute kernel asserts ("tensor
must not empty"), on CUDA already its index generation ("CUDA kernel launch
blocks must be positive"). :func:`import_spconv` wraps
``SparseConvolutionBase._conv_forward`` so that zero input sites give zero
output sites ([0, C_out] features) with the spatial shape spconv would give,
and zero gradients; a strided conv records its shapes under its ``indice_key``
so that the inverse conv after it finds them. Tensors with sites go to spconv
unchanged.

All four patches are applied together, once, by :func:`import_spconv`, which
every function and class here calls before touching spconv.
"""

from __future__ import annotations

import importlib.util
import threading
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from vision3d.errors import UserError

_lock = threading.Lock()
_spconv = None

_INSTALL_HINT = (
    "spconv is not installed: `pip install spconv` (CPU) or `pip install spconv-cu126` "
    "(CUDA 12.6; pick the -cuXXX wheel matching your CUDA)"
)


def spconv_available() -> bool:
    """True if spconv can be imported (checked without importing it)."""
    return _spconv is not None or importlib.util.find_spec("spconv") is not None


def _patch_stream_lookup() -> None:
    import spconv.pytorch.cppcore as cppcore

    original = cppcore.get_current_stream
    if getattr(original, "_vision3d_patched", False):
        return

    def get_current_stream():
        # Only CUDA tensors need a stream, and they cannot exist without CUDA.
        if not torch.cuda.is_available():
            return 0
        return original()

    get_current_stream._vision3d_patched = True  # type: ignore[attr-defined]
    get_current_stream.__wrapped__ = original  # type: ignore[attr-defined]
    # spconv modules do `from spconv.pytorch.cppcore import get_current_stream`,
    # so the name must be rebound where each of them looks it up.
    import spconv.pytorch.hash as sp_hash
    import spconv.pytorch.ops as sp_ops
    import spconv.pytorch.utils as sp_utils

    for mod in (cppcore, sp_ops, sp_utils, sp_hash):
        if getattr(mod, "get_current_stream", None) is original:
            mod.get_current_stream = get_current_stream


class _SpconvOpsRaceFree:
    """spconv's ``SpconvOps`` with a race-free CPU ``scatter_add_cpu`` (see the module docstring)."""

    def __init__(self, ops) -> None:
        self._ops = ops

    def __getattr__(self, name: str):
        return getattr(self._ops, name)

    def scatter_add_cpu(self, out, inp, inds) -> None:
        # out[inds[i]] += inp[i] for i < len(inds); inds are unique per call.
        try:
            o = torch.from_numpy(out.numpy_view())
            i = torch.from_numpy(inp.numpy_view())
            ix = torch.from_numpy(inds.numpy_view())
        except (TypeError, ValueError, RuntimeError):
            # a dtype numpy cannot view (bfloat16): spconv's kernel on one thread
            n = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                self._ops.scatter_add_cpu(out, inp, inds)
            finally:
                torch.set_num_threads(n)
            return
        o.index_add_(0, ix.to(torch.int64), i[: ix.shape[0]])


def _patch_scatter_add() -> None:
    import spconv.pytorch.ops as sp_ops

    if not isinstance(sp_ops.SpconvOps, _SpconvOpsRaceFree):
        sp_ops.SpconvOps = _SpconvOpsRaceFree(sp_ops.SpconvOps)


def _patch_cpu_algo() -> None:
    from spconv.core import ConvAlgo
    from spconv.cppconstants import CPU_ONLY_BUILD

    if CPU_ONLY_BUILD:
        return
    import spconv.pytorch.conv as sp_conv

    base = sp_conv.SparseConvolutionBase
    original = base._conv_forward
    if getattr(original, "_vision3d_patched", False):
        return

    def _conv_forward(self, training, input, *args, **kwargs):
        own = self.__dict__.setdefault("_vision3d_cuda_algo", self.algo)
        # implicit GEMM has CUDA kernels only; native runs anywhere
        self.algo = own if input.features.is_cuda else ConvAlgo.Native
        return original(self, training, input, *args, **kwargs)

    _conv_forward._vision3d_patched = True  # type: ignore[attr-defined]
    base._conv_forward = _conv_forward


@dataclass
class _EmptyIndices:
    """What a strided conv on zero sites records under its ``indice_key`` for the inverse conv after it."""

    spatial_shape: list[int]
    out_spatial_shape: list[int]
    is_subm: bool = False


def _patch_empty_inputs() -> None:
    import spconv.pytorch.conv as sp_conv
    import spconv.pytorch.ops as sp_ops

    base = sp_conv.SparseConvolutionBase
    original = base._conv_forward
    if getattr(original, "_vision3d_empty", False):
        return

    def _conv_forward(self, training, input, weight, bias, *args, **kwargs):
        if input.features.shape[0] > 0:
            return original(self, training, input, weight, bias, *args, **kwargs)
        # Zero input sites give zero output sites; only the output's spatial shape (and, for a
        # strided conv, the record its inverse conv looks up) must be right.
        shape = list(input.spatial_shape)
        indice_dict = input.indice_dict.copy()
        if self.inverse:
            datas = input.find_indice_pair(self.indice_key)
            if datas is None:
                raise ValueError(f"inverse conv: no indice data for key {self.indice_key!r}")
            out_shape = list(datas.spatial_shape)
        elif self.subm:
            out_shape = shape
        else:
            if self.transposed:
                out_shape = sp_ops.get_deconv_output_size(shape, self.kernel_size, self.stride, self.padding,
                                                          self.dilation, self.output_padding)
            else:
                out_shape = sp_ops.get_conv_output_size(shape, self.kernel_size, self.stride, self.padding,
                                                        self.dilation)
            if self.indice_key is not None and self.indice_key not in indice_dict:
                indice_dict[self.indice_key] = _EmptyIndices(shape, list(out_shape))
        # [0, C_out], still a function of the features and the weights: backward gives zero gradients.
        feats = input.features.new_zeros((0, self.out_channels)) + (input.features.sum() + weight.sum()) * 0
        out = input.shadow_copy().replace_feature(feats)
        out.indices = input.indices[:0]
        out.indice_dict = indice_dict
        out.spatial_shape = out_shape
        return out

    _conv_forward._vision3d_empty = True  # type: ignore[attr-defined]
    _conv_forward.__wrapped__ = original  # type: ignore[attr-defined]
    base._conv_forward = _conv_forward


def import_spconv():
    """Import ``spconv.pytorch`` once, apply the four fixes (module docstring), return it.

    Raises:
        UserError: spconv is not installed (the message says how to install it).
    """
    global _spconv
    if _spconv is not None:
        return _spconv
    with _lock:
        if _spconv is None:
            try:
                import spconv.pytorch as sp
            except ImportError as e:
                raise UserError(f"{_INSTALL_HINT} ({e})") from None
            _patch_stream_lookup()
            _patch_scatter_add()
            _patch_cpu_algo()
            _patch_empty_inputs()
            _spconv = sp
    return _spconv


# --------------------------------------------------------------------------- tensors


def build_sparse_tensor(
    features: torch.Tensor,
    coords: torch.Tensor,
    spatial_shape: Sequence[int],
    batch_size: int,
    *,
    check: bool = True,
):
    """Make a ``spconv.pytorch.SparseConvTensor``.

    Args:
        features: [M, C] float features of the M active voxels.
        coords: [M, 4] integer ``(batch, z, y, x)`` voxel indices, on the same
            device as ``features`` (converted to int32 as spconv wants).
        spatial_shape: ``(Z, Y, X)`` grid size in voxels.
        batch_size: number of samples; batch indices are in ``[0, batch_size)``.
        check: verify coordinates lie in the grid (one pass; syncs on CUDA).
            spconv itself does not check, and out-of-grid indices corrupt
            memory or give silent garbage.

    Returns:
        ``SparseConvTensor`` sharing ``features``.

    Raises:
        UserError: wrong shapes, dtypes, devices or out-of-grid coordinates.
    """
    sp = import_spconv()
    if not isinstance(features, torch.Tensor) or features.ndim != 2 or not features.dtype.is_floating_point:
        raise UserError("features must be a float tensor [M, C]")
    if not isinstance(coords, torch.Tensor) or coords.ndim != 2 or coords.shape[1] != 4:
        got = tuple(coords.shape) if isinstance(coords, torch.Tensor) else type(coords).__name__
        raise UserError(f"coords must be an integer tensor [M, 4] (batch, z, y, x), got {got}")
    if coords.dtype.is_floating_point or coords.dtype == torch.bool:
        raise UserError(f"coords must be integer, got {coords.dtype}")
    if coords.shape[0] != features.shape[0]:
        raise UserError(f"coords has {coords.shape[0]} rows but features has {features.shape[0]}")
    if coords.device != features.device:
        raise UserError(f"coords are on {coords.device} but features on {features.device}")
    try:
        shape = [int(v) for v in spatial_shape]
    except (TypeError, ValueError):
        raise UserError(f"spatial_shape must be 3 integers (Z, Y, X), got {spatial_shape!r}") from None
    if len(shape) != 3 or min(shape) < 1:
        raise UserError(f"spatial_shape must be 3 positive integers (Z, Y, X), got {spatial_shape!r}")
    if int(batch_size) < 1:
        raise UserError(f"batch_size must be >= 1, got {batch_size!r}")
    if check and coords.shape[0]:
        bound = torch.tensor([int(batch_size)] + shape, device=coords.device)
        c = coords.to(torch.int64)
        bad = ((c < 0) | (c >= bound)).any(dim=1)
        if bool(bad.any()):
            row = int(bad.nonzero()[0, 0])
            raise UserError(
                f"coords row {row} = {c[row].tolist()} (batch, z, y, x) is outside batch_size {batch_size} "
                f"x spatial_shape {tuple(shape)}"
            )
    return sp.SparseConvTensor(features, coords.to(torch.int32).contiguous(), shape, int(batch_size))


def sparse_tensor_from_voxels(voxels):
    """``SparseConvTensor`` from a :class:`vision3d.core.SparseVoxels`."""
    return build_sparse_tensor(voxels.features, voxels.coords, voxels.spatial_shape, voxels.batch_size)


def to_dense_bev(x) -> torch.Tensor:
    """Bird's-eye view of a sparse tensor: height folded into channels.

    Args:
        x: ``SparseConvTensor`` with features [M, C], indices [M, 4] ``(batch,
            z, y, x)`` and spatial shape (D, H, W) = (z, y, x) voxels.

    Returns:
        [B, C * D, H, W] dense tensor in the features' dtype, channel index
        ``c * D + d`` (OpenPCDet's ``HeightCompression``, i.e. ``x.dense()``
        reshaped); empty cells are 0. Differentiable w.r.t. the features.
    """
    sp = import_spconv()
    if not isinstance(x, sp.SparseConvTensor):
        raise UserError(f"to_dense_bev expects a spconv SparseConvTensor, got {type(x).__name__}")
    # Scatter ourselves rather than call x.dense(): spconv's dense() indexes
    # with a list of tensors, which torch deprecates (a warning on every call,
    # an error in a later torch).
    d, h, w = (int(v) for v in x.spatial_shape)
    feats = x.features
    c = feats.shape[1]
    idx = x.indices.to(torch.int64)
    cell = ((idx[:, 0] * d + idx[:, 1]) * h + idx[:, 2]) * w + idx[:, 3]
    grid = feats.new_zeros(x.batch_size * d * h * w, c).index_copy(0, cell, feats)
    # [B, D, H, W, C] -> [B, C, D, H, W] -> [B, C * D, H, W]
    return grid.view(x.batch_size, d, h, w, c).permute(0, 4, 1, 2, 3).reshape(x.batch_size, c * d, h, w)


# --------------------------------------------------------------------------- blocks

_CONV_TYPES = ("subm", "spconv", "inverse")


def sparse_conv_block(
    in_channels: int,
    out_channels: int,
    kernel_size: int | Sequence[int] = 3,
    *,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    conv_type: str = "subm",
    subm: bool | None = None,
    indice_key: str | None = None,
    norm: bool = True,
    act: bool = True,
    bn_eps: float = 1e-3,
    bn_momentum: float = 0.01,
):
    """Sparse conv + BatchNorm1d + ReLU (OpenPCDet's ``post_act_block``).

    Args:
        in_channels, out_channels: feature channels.
        kernel_size, stride, padding: per-axis ``(z, y, x)`` or one int.
        conv_type: ``"subm"`` (``SubMConv3d``: output sites = input sites, stride
            ignored), ``"spconv"`` (``SparseConv3d``: strided, dilates the active
            set) or ``"inverse"`` (``SparseInverseConv3d``; needs ``indice_key``
            of the ``"spconv"`` layer it undoes).
        subm: shorthand overriding ``conv_type``: True -> ``"subm"``, False -> ``"spconv"``.
        indice_key: layers sharing a key reuse spconv's index pairs (same
            sites, same kernel): saves time and memory.
        norm, act: append BatchNorm1d (eps/momentum as OpenPCDet) and ReLU.
            The conv has a bias only when ``norm`` is False.

    Returns:
        ``spconv.pytorch.SparseSequential``, CPU or CUDA, trainable on both.
    """
    sp = import_spconv()
    if subm is not None:
        conv_type = "subm" if subm else "spconv"
    if conv_type not in _CONV_TYPES:
        raise UserError(f"conv_type must be one of {', '.join(_CONV_TYPES)}; got {conv_type!r}")
    if int(in_channels) < 1 or int(out_channels) < 1:
        raise UserError(f"channels must be >= 1, got {in_channels} -> {out_channels}")
    bias = not norm
    if conv_type == "subm":
        conv = sp.SubMConv3d(in_channels, out_channels, kernel_size, padding=padding, bias=bias, indice_key=indice_key)
    elif conv_type == "spconv":
        conv = sp.SparseConv3d(
            in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias, indice_key=indice_key
        )
    else:
        if indice_key is None:
            raise UserError("conv_type='inverse' needs the indice_key of the strided layer it inverts")
        conv = sp.SparseInverseConv3d(in_channels, out_channels, kernel_size, indice_key=indice_key, bias=bias)
    layers = [conv]
    if norm:
        layers.append(nn.BatchNorm1d(out_channels, eps=bn_eps, momentum=bn_momentum))
    if act:
        layers.append(nn.ReLU())
    return sp.SparseSequential(*layers)


def encoder_stage(
    in_channels: int,
    out_channels: int,
    *,
    num_subm: int = 2,
    stride: int | Sequence[int] = 2,
    padding: int | Sequence[int] = 1,
    key: str,
):
    """One encoder stage: a strided ``SparseConv3d`` block, then ``num_subm`` ``SubMConv3d`` blocks.

    With ``stride=1`` the first block is a ``SubMConv3d`` too (no downsampling),
    as OpenPCDet's first stage. ``key`` names the stage's index pairs
    (``f"spconv{key}"`` for the strided conv, ``f"subm{key}"`` for the rest).

    Returns:
        ``spconv.pytorch.SparseSequential``.
    """
    sp = import_spconv()
    if int(num_subm) < 0:
        raise UserError(f"num_subm must be >= 0, got {num_subm}")
    strides = [stride] * 3 if isinstance(stride, int) else list(stride)
    blocks = []
    if all(s == 1 for s in strides):
        blocks.append(sparse_conv_block(in_channels, out_channels, 3, padding=1, conv_type="subm", indice_key=f"subm{key}"))
    else:
        blocks.append(
            sparse_conv_block(
                in_channels, out_channels, 3, stride=stride, padding=padding, conv_type="spconv",
                indice_key=f"spconv{key}",
            )
        )
    for _ in range(int(num_subm)):
        blocks.append(sparse_conv_block(out_channels, out_channels, 3, padding=1, conv_type="subm", indice_key=f"subm{key}"))
    return sp.SparseSequential(*blocks)


def encoder_spatial_shape(grid_spatial_shape: Sequence[int]) -> tuple[int, int, int]:
    """Spatial shape to give :class:`SparseEncoder` for a voxel grid's ``(Z, Y, X)``.

    OpenPCDet pads z by one voxel (``grid_size[::-1] + [1, 0, 0]``) so that the
    stride-8 output has an even number of height cells (41 -> 2 on KITTI).
    """
    z, y, x = (int(v) for v in grid_spatial_shape)
    return (z + 1, y, x)


class SparseEncoder(nn.Module):
    """Sparse 3D backbone with 8x downsampling (OpenPCDet's ``VoxelBackBone8x``).

    Stages (spatial stride 1, 2, 4, 8): input SubM conv to ``channels[0]``, then
    four stages of :func:`encoder_stage` with ``channels``, the last strided
    with padding ``(0, 1, 1)``; then a ``(3, 1, 1)`` conv with stride ``(2, 1,
    1)`` to ``out_channels`` that halves the height once more.

    Args:
        in_channels: voxel feature channels (e.g. 4 for mean x, y, z, intensity).
        channels: per-stage channels, 4 entries (KITTI: 16, 32, 64, 64).
        out_channels: channels of the encoded tensor (KITTI: 128).
        num_subm: SubM blocks after each strided conv (stage 1 has one).

    ``forward(x)`` takes a ``SparseConvTensor`` (features [M, in_channels],
    spatial shape (Z, Y, X), see :func:`encoder_spatial_shape`) and returns a
    dict: ``"encoded"`` (stride-8 ``SparseConvTensor``, ``out_channels``),
    ``"multi_scale"`` (``{"x_conv1".."x_conv4"}`` tensors at stride 1, 2, 4, 8)
    and ``"stride"`` (8). :func:`to_dense_bev` of ``"encoded"`` gives the BEV
    map [B, out_channels * D', Y / 8, X / 8].
    """

    def __init__(
        self,
        in_channels: int,
        channels: Sequence[int] = (16, 32, 64, 64),
        out_channels: int = 128,
        *,
        num_subm: int = 2,
    ) -> None:
        super().__init__()
        sp = import_spconv()
        ch = [int(c) for c in channels]
        if len(ch) != 4 or min(ch) < 1:
            raise UserError(f"channels must be 4 positive integers, got {channels!r}")
        self.conv_input = sparse_conv_block(in_channels, ch[0], 3, padding=1, conv_type="subm", indice_key="subm1")
        self.conv1 = encoder_stage(ch[0], ch[0], num_subm=0, stride=1, key="1")
        self.conv2 = encoder_stage(ch[0], ch[1], num_subm=num_subm, stride=2, padding=1, key="2")
        self.conv3 = encoder_stage(ch[1], ch[2], num_subm=num_subm, stride=2, padding=1, key="3")
        self.conv4 = encoder_stage(ch[2], ch[3], num_subm=num_subm, stride=2, padding=(0, 1, 1), key="4")
        self.conv_out = sp.SparseSequential(
            sp.SparseConv3d(ch[3], out_channels, (3, 1, 1), stride=(2, 1, 1), padding=0, bias=False,
                            indice_key="spconv_down2"),
            nn.BatchNorm1d(out_channels, eps=1e-3, momentum=0.01),
            nn.ReLU(),
        )
        self.out_channels = out_channels

    def forward(self, x) -> dict:
        x = self.conv_input(x)
        x1 = self.conv1(x)
        x2 = self.conv2(x1)
        x3 = self.conv3(x2)
        x4 = self.conv4(x3)
        out = self.conv_out(x4)
        return {
            "encoded": out,
            "multi_scale": {"x_conv1": x1, "x_conv2": x2, "x_conv3": x3, "x_conv4": x4},
            "stride": 8,
        }


# spconv classes by name, imported on first access (PEP 562), so callers can
# write `sparse_conv.SparseConvTensor(...)` without importing spconv themselves
# and still get the CPU-backward fix.
_LAZY_NAMES = ("SparseConvTensor", "SparseSequential", "SubMConv3d", "SparseConv3d", "SparseInverseConv3d")


def __getattr__(name: str):
    if name in _LAZY_NAMES:
        return getattr(import_spconv(), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
