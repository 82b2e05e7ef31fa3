"""``rasterize_gaussians``: one API, CUDA (gsplat) and CPU (ours) paths.

CUDA tensors go to ``gsplat.rasterization`` (imported lazily, so importing
this module never touches gsplat's CUDA code). CPU tensors go to our own
implementation with the same rules: EWA projection, tile binning, sorting and
compositing in a C++ extension (:mod:`._ext`, ``csrc/rasterize_cpu.cpp``)
with hand-written backward passes, or, if the extension cannot be built, the
pure-torch reference (:mod:`.projection` + :mod:`.reference`, autograd)
after a one-time warning.
"""

from __future__ import annotations

import math
from typing import Any, Dict, NamedTuple, Optional

import torch
from torch import Tensor

from ...errors import UserError
from . import _ext
from .projection import Projection, project_gaussians
from .reference import bin_gaussians_torch, rasterize_to_pixels_torch
from .sh import sh_to_color

__all__ = ["GaussianRender", "rasterize_gaussians"]

_BACKENDS = ("auto", "gsplat", "cpp", "torch")
_DEPTH_MODES = ("expected", "accumulated")


class GaussianRender(NamedTuple):
    """Result of :func:`rasterize_gaussians` (also unpacks as a 4-tuple).

    Attributes:
        rgb: ``[C, H, W, D]`` composited colours (``D`` = 3 for RGB/SH), with
            the background blended in as ``+ T_final * background``.
        alpha: ``[C, H, W, 1]`` accumulated opacity ``1 - T_final``.
        depth: ``[C, H, W, 1]`` camera-space z in world units, or None when
            ``render_depth=False``. ``depth_mode="expected"`` gives
            ``sum_i w_i z_i / max(alpha, 1e-10)`` (gsplat "RGB+ED", 0 where
            nothing was hit); ``"accumulated"`` gives ``sum_i w_i z_i`` (gsplat
            "RGB+D"; equals expected depth times alpha).
        meta: dict in the layout of gsplat's ``rasterization(..., packed=False)``
            ``meta``, so ``gsplat.strategy.DefaultStrategy`` can read it:
            ``means2d [C, N, 2]`` (pixels; call ``retain_grad()`` before
            backward, or use ``absgrad=True`` to also get ``.absgrad``),
            ``radii [C, N, 2]`` int32 (x and y half-sizes of the pixel box,
            0 = culled, gsplat 1.5.x convention), ``depths [C, N]``,
            ``conics [C, N, 3]``, ``opacities [C, N]``, ``tiles_per_gauss [C, N]``,
            ``isect_offsets [C, th, tw]``, ``flatten_ids [M]``, ``isect_ids``,
            ``width``, ``height``, ``n_cameras``, ``n_batches`` (1),
            ``tile_size``, ``tile_width``, ``tile_height``, ``gaussian_ids``,
            ``camera_ids``, ``batch_ids`` (None: unpacked layout), plus
            ``visible [C, N]`` bool and ``backend`` ("gsplat", "cpp" or "torch").
    """

    rgb: Tensor
    alpha: Tensor
    depth: Optional[Tensor]
    meta: Dict[str, Any]


class _ProjectCPU(torch.autograd.Function):
    """The C++ twin of :func:`project_gaussians` (same rules, hand-written
    backward); gradients for means, quats, scales, world_to_cam, not K."""

    @staticmethod
    def forward(ctx, means, quats, scales, opacities, world_to_cam, K, width, height, near, far,
                eps2d, radius_clip, antialiased):
        radii, means2d, depths, conics, comps = _ext.get_ops().project_fwd(
            means, quats, scales, opacities, world_to_cam, K, width, height, near, far, eps2d,
            radius_clip, antialiased,
        )
        ctx.save_for_backward(means, quats, scales, world_to_cam, K, radii, comps)
        ctx.cfg = (width, height, eps2d, antialiased)
        ctx.mark_non_differentiable(radii)
        return radii, means2d, depths, conics, comps

    @staticmethod
    def backward(ctx, _v_radii, v_means2d, v_depths, v_conics, v_comps):
        means, quats, scales, world_to_cam, K, radii, comps = ctx.saved_tensors
        width, height, eps2d, antialiased = ctx.cfg
        C, N = radii.shape[:2]

        def g(v, shape):
            return means.new_zeros(shape) if v is None else v.contiguous()

        v_m, v_q, v_s, v_w = _ext.get_ops().project_bwd(
            means, quats, scales, world_to_cam, K, width, height, eps2d, radii, comps,
            g(v_means2d, (C, N, 2)), g(v_depths, (C, N)), g(v_conics, (C, N, 3)),
            v_comps.contiguous() if (antialiased and v_comps is not None) else None,
            ctx.needs_input_grad[4],
        )
        return (v_m, v_q, v_s, None, v_w if ctx.needs_input_grad[4] else None,
                None, None, None, None, None, None, None, None)


def _project_cpp(means, quats, scales, opacities, world_to_cam, K, width, height, near, far,
                 eps2d, radius_clip, antialiased) -> Projection:
    radii, means2d, depths, conics, comps = _ProjectCPU.apply(
        means.contiguous(), quats.contiguous(), scales.contiguous(),
        opacities.detach().contiguous(), world_to_cam.contiguous(), K.detach().contiguous(),
        width, height, float(near), float(far), float(eps2d), float(radius_clip), antialiased,
    )
    C = world_to_cam.shape[0]
    if antialiased:
        return Projection(radii, means2d, depths, conics, opacities[None, :] * comps, comps)
    return Projection(radii, means2d, depths, conics, opacities[None, :].expand(C, -1), None)


class _RasterizeCPU(torch.autograd.Function):
    """Binned compositing through the C++ kernels; gradients for means2d,
    conics, colors, opacities and background."""

    @staticmethod
    def forward(ctx, means2d, conics, colors, opacities, background, radii, width, height,
                tile_size, isect_offsets, flatten_ids, absgrad):
        ops = _ext.get_ops()
        rc, ra, last = ops.rasterize_fwd(
            means2d, conics, colors, opacities, background, radii, width, height, tile_size,
            isect_offsets, flatten_ids,
        )
        ctx.save_for_backward(means2d, conics, colors, opacities, background, radii,
                              isect_offsets, flatten_ids, ra, last)
        ctx.cfg = (width, height, tile_size, absgrad)
        ctx.mark_non_differentiable(last)
        return rc, ra, last

    @staticmethod
    def backward(ctx, v_rc, v_ra, _v_last):
        (means2d, conics, colors, opacities, background, radii, isect_offsets, flatten_ids,
         ra, last) = ctx.saved_tensors
        width, height, tile_size, absgrad = ctx.cfg
        if v_rc is None:
            v_rc = ra.new_zeros(ra.shape[:-1] + (colors.shape[-1],))
        if v_ra is None:
            v_ra = torch.zeros_like(ra)
        v_rc, v_ra = v_rc.contiguous(), v_ra.contiguous()
        v_m, v_c, v_col, v_op, v_abs = _ext.get_ops().rasterize_bwd(
            means2d, conics, colors, opacities, background, radii, width, height, tile_size,
            isect_offsets, flatten_ids, ra, last, v_rc, v_ra, absgrad,
        )
        if absgrad:
            # gsplat's convention: DefaultStrategy(absgrad=True) reads means2d.absgrad
            means2d.absgrad = v_abs
        v_bg = None
        if background is not None and ctx.needs_input_grad[4]:
            v_bg = (v_rc * (1.0 - ra)).sum(dim=(1, 2))
        return v_m, v_c, v_col, v_op, v_bg, None, None, None, None, None, None, None


def _fail(msg: str) -> None:
    raise UserError(msg)


def _shape(t: Tensor) -> str:
    return "[" + ", ".join(str(s) for s in t.shape) + "]"


def _check_inputs(means, quats, scales, opacities, colors, world_to_cam, K, width, height,
                  sh_degree, background):
    for name, t in [("means", means), ("quats", quats), ("scales", scales),
                    ("opacities", opacities), ("colors", colors),
                    ("world_to_cam", world_to_cam), ("K", K)]:
        if not isinstance(t, Tensor):
            _fail(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            _fail(f"{name}: expected a floating-point tensor, got {t.dtype}")
    if means.dim() != 2 or means.shape[1] != 3:
        _fail(f"means: expected shape [N, 3], got {_shape(means)}")
    N = means.shape[0]
    if quats.shape != (N, 4):
        _fail(f"quats: expected shape [N, 4] = [{N}, 4] (w, x, y, z), got {_shape(quats)}")
    if scales.shape != (N, 3):
        _fail(f"scales: expected shape [N, 3] = [{N}, 3] (linear, not log), got {_shape(scales)}")
    if opacities.shape != (N,):
        _fail(f"opacities: expected shape [N] = [{N}] (in [0, 1], not logits), got {_shape(opacities)}")
    if world_to_cam.dim() != 3 or world_to_cam.shape[1:] != (4, 4):
        _fail(f"world_to_cam: expected shape [C, 4, 4], got {_shape(world_to_cam)}")
    C = world_to_cam.shape[0]
    if K.shape != (C, 3, 3):
        _fail(f"K: expected shape [C, 3, 3] = [{C}, 3, 3], got {_shape(K)}")
    if not (isinstance(width, int) and isinstance(height, int)) or width <= 0 or height <= 0:
        _fail(f"width/height: expected positive ints, got {width!r} x {height!r}")
    if sh_degree is None:
        if colors.dim() == 3:
            k = colors.shape[1]
            deg = int(round(math.sqrt(k))) - 1
            if (deg + 1) ** 2 != k or not 0 <= deg <= 3 or colors.shape[2] != 3:
                _fail(f"colors: expected [N, D] colours or [N, K, 3] SH with K in (1, 4, 9, 16), got {_shape(colors)}")
            sh_degree = deg
        elif colors.dim() != 2 or colors.shape[0] != N or colors.shape[1] < 1:
            _fail(f"colors: expected shape [N, D] = [{N}, D] or SH [N, K, 3], got {_shape(colors)}")
    if sh_degree is not None:
        if not isinstance(sh_degree, int) or not 0 <= sh_degree <= 3:
            _fail(f"sh_degree: expected an int in 0..3, got {sh_degree!r}")
        nb = (sh_degree + 1) ** 2
        if colors.dim() != 3 or colors.shape[0] != N or colors.shape[1] < nb or colors.shape[2] != 3:
            _fail(f"colors: sh_degree={sh_degree} needs SH coefficients [N, K>={nb}, 3] = [{N}, {nb}, 3], got {_shape(colors)}")
    D = 3 if sh_degree is not None else colors.shape[1]
    if background is not None:
        if not isinstance(background, Tensor):
            _fail(f"background: expected a tensor [C, {D}] or [{D}] or None, got {type(background).__name__}")
        if background.shape not in ((D,), (C, D)):
            _fail(f"background: expected shape [{D}] or [C, {D}] = [{C}, {D}], got {_shape(background)}")
    dev, dt = means.device, means.dtype
    for name, t in [("quats", quats), ("scales", scales), ("opacities", opacities),
                    ("colors", colors), ("world_to_cam", world_to_cam), ("K", K),
                    ("background", background)]:
        if t is None:
            continue
        if t.device != dev:
            _fail(f"{name}: expected device {dev} like means, got {t.device}")
        if t.dtype != dt:
            _fail(f"{name}: expected dtype {dt} like means, got {t.dtype}")
    return N, C, D, sh_degree


def rasterize_gaussians(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    world_to_cam: Tensor,
    K: Tensor,
    width: int,
    height: int,
    *,
    sh_degree: Optional[int] = None,
    near: float = 0.01,
    far: float = 1e10,
    background: Optional[Tensor] = None,
    render_depth: bool = True,
    depth_mode: str = "expected",
    eps2d: float = 0.3,
    radius_clip: float = 0.0,
    antialiased: bool = False,
    absgrad: bool = False,
    tile_size: int = 16,
    backend: str = "auto",
) -> GaussianRender:
    """Render 3D Gaussians into ``C`` pinhole cameras (3DGS / gsplat semantics).

    Cameras follow OpenCV: x right, y down, z forward; pixel ``(u, v)`` has its
    centre at ``(u + 0.5, v + 0.5)``. Differentiable w.r.t. ``means``,
    ``quats``, ``scales``, ``opacities``, ``colors``, ``background`` and
    ``world_to_cam`` (not ``K``).

    Args:
        means: ``[N, 3]`` centres, world units.
        quats: ``[N, 4]`` rotations (w, x, y, z); need not be normalised.
        scales: ``[N, 3]`` linear standard deviations (not log), world units.
        opacities: ``[N]`` in [0, 1] (post-sigmoid).
        colors: ``[N, D]`` features rendered as is (e.g. RGB in [0, 1]), or
            ``[N, K, 3]`` SH coefficients (K in 1, 4, 9, 16) turned into RGB as
            ``max(SH(dir) + 0.5, 0)`` with ``dir`` = mean - camera centre.
        world_to_cam: ``[C, 4, 4]`` world-to-camera transforms.
        K: ``[C, 3, 3]`` intrinsics in pixels.
        width, height: image size in pixels.
        sh_degree: SH degree 0..3 to evaluate when ``colors`` is ``[N, K, 3]``;
            None = the full degree that ``K`` holds.
        near, far: Gaussians with camera z outside ``[near, far]`` are culled
            (world units).
        background: ``[C, D]`` or ``[D]`` colour behind the Gaussians, or None
            (black). Not applied to depth.
        render_depth: also composite camera-space z (one extra channel).
        depth_mode: ``"expected"`` (``sum w z / alpha``) or ``"accumulated"``
            (``sum w z``); see :class:`GaussianRender`.
        eps2d: pixels^2 added to each 2D covariance (0.3 = 3DGS low-pass).
        radius_clip: cull Gaussians whose pixel radii are both ``<= radius_clip``.
        antialiased: Mip-Splatting opacity compensation (gsplat's
            ``rasterize_mode="antialiased"``).
        absgrad: also accumulate ``meta["means2d"].absgrad`` (sum over pixels
            of ``|dL/dmeans2d|``) during backward, for AbsGS-style densification.
        tile_size: tile edge in pixels (16 as gsplat).
        backend: ``"auto"`` (gsplat on CUDA, C++ on CPU with torch fallback),
            ``"gsplat"``, ``"cpp"`` or ``"torch"`` (the pure-torch reference;
            any device).

    Returns:
        :class:`GaussianRender` ``(rgb [C,H,W,D], alpha [C,H,W,1],
        depth [C,H,W,1] or None, meta)``, dtype of ``means``.

    Raises:
        UserError: wrong shapes, dtypes, devices or options.
    """
    N, C, D, sh_degree = _check_inputs(means, quats, scales, opacities, colors, world_to_cam,
                                       K, width, height, sh_degree, background)
    if depth_mode not in _DEPTH_MODES:
        _fail(f"depth_mode: expected one of {_DEPTH_MODES}, got {depth_mode!r}")
    if backend not in _BACKENDS:
        _fail(f"backend: expected one of {_BACKENDS}, got {backend!r}")
    if not isinstance(tile_size, int) or tile_size < 1:
        _fail(f"tile_size: expected a positive int (16 as gsplat), got {tile_size!r}")
    if not float(near) < float(far):
        _fail(f"near/far: expected near < far, got near={near!r}, far={far!r}")
    if background is not None and background.dim() == 1:
        background = background[None].expand(C, D)

    if backend == "auto":
        backend = "gsplat" if means.is_cuda else "cpp"
    if backend == "gsplat":
        if not means.is_cuda:
            _fail("backend: 'gsplat' needs CUDA tensors; use 'auto' or 'cpp' on CPU")
        return _rasterize_gsplat(means, quats, scales, opacities, colors, world_to_cam, K,
                                 width, height, sh_degree, near, far, background, render_depth,
                                 depth_mode, eps2d, radius_clip, antialiased, absgrad, tile_size)
    fell_back = False
    if backend == "cpp":
        if means.is_cuda:
            _fail("backend: 'cpp' needs CPU tensors; use 'auto' or 'gsplat' on CUDA")
        if _ext.get_ops() is None:
            backend, fell_back = "torch", True  # get_ops() already warned once
    if backend == "torch" and absgrad:
        why = f" (C++ extension unavailable: {_ext.build_error()})" if fell_back else ""
        _fail(f"absgrad: only the 'cpp' and 'gsplat' backends compute .absgrad{why}")

    project = _project_cpp if backend == "cpp" else project_gaussians
    proj = project(means, quats, scales, opacities, world_to_cam, K, width, height,
                   near=near, far=far, eps2d=eps2d, radius_clip=radius_clip,
                   antialiased=antialiased)
    if sh_degree is not None:
        campos = torch.linalg.inv(world_to_cam)[:, :3, 3]  # [C, 3]
        dirs = means[None, :, :] - campos[:, None, :]
        feats = sh_to_color(sh_degree, dirs, colors[None].expand(C, -1, -1, -1))  # [C, N, 3]
    else:
        feats = colors[None].expand(C, N, D)
    bg = background
    if render_depth:
        feats = torch.cat([feats, proj.depths[..., None]], dim=-1)
        if bg is not None:
            bg = torch.cat([bg, bg.new_zeros(C, 1)], dim=-1)
    feats = feats.contiguous()

    tile_w = math.ceil(width / tile_size)
    tile_h = math.ceil(height / tile_size)
    if backend == "cpp":
        ops = _ext.get_ops()
        tiles_per_gauss, isect_offsets, flatten_ids, isect_ids = ops.bin_gaussians(
            proj.means2d.detach().contiguous(), proj.radii.contiguous(),
            proj.depths.detach().contiguous(), tile_size, tile_w, tile_h,
        )
        out, alpha, _ = _RasterizeCPU.apply(
            proj.means2d, proj.conics.contiguous(), feats, proj.opacities.contiguous(),
            None if bg is None else bg.contiguous(), proj.radii, width, height, tile_size,
            isect_offsets, flatten_ids, absgrad,
        )
    else:
        tiles_per_gauss, isect_offsets, flatten_ids = bin_gaussians_torch(
            proj.means2d.detach(), proj.radii, proj.depths.detach(), tile_size, tile_w, tile_h
        )
        isect_ids = None
        out, alpha = rasterize_to_pixels_torch(
            proj.means2d, proj.conics, feats, proj.opacities, width, height, tile_size,
            isect_offsets, flatten_ids, background=bg,
        )

    rgb, depth = out[..., :D], None
    if render_depth:
        depth = out[..., D:]
        if depth_mode == "expected":
            depth = depth / alpha.clamp_min(1e-10)
    meta = {
        "batch_ids": None,
        "camera_ids": None,
        "gaussian_ids": None,
        "radii": proj.radii,
        "means2d": proj.means2d,
        "depths": proj.depths,
        "conics": proj.conics,
        "opacities": proj.opacities,
        "tile_width": tile_w,
        "tile_height": tile_h,
        "tiles_per_gauss": tiles_per_gauss,
        "isect_ids": isect_ids,
        "flatten_ids": flatten_ids,
        "isect_offsets": isect_offsets,
        "width": width,
        "height": height,
        "tile_size": tile_size,
        "n_batches": 1,
        "n_cameras": C,
        "visible": (proj.radii > 0).all(dim=-1),
        "backend": backend,
    }
    return GaussianRender(rgb, alpha, depth, meta)


def _rasterize_gsplat(means, quats, scales, opacities, colors, world_to_cam, K, width, height,
                      sh_degree, near, far, background, render_depth, depth_mode, eps2d,
                      radius_clip, antialiased, absgrad, tile_size) -> GaussianRender:
    if means.dtype != torch.float32:
        _fail(f"means: the CUDA (gsplat) path needs float32, got {means.dtype}")
    from gsplat.rendering import rasterization  # lazy: keeps CPU-only imports CUDA-free

    mode = ("RGB+ED" if depth_mode == "expected" else "RGB+D") if render_depth else "RGB"
    out, alpha, meta = rasterization(
        means, quats, scales, opacities, colors, world_to_cam, K, width, height,
        near_plane=near, far_plane=far, radius_clip=radius_clip, eps2d=eps2d,
        sh_degree=sh_degree, packed=False, tile_size=tile_size,
        backgrounds=None if background is None else background.contiguous(),
        render_mode=mode, absgrad=absgrad,
        rasterize_mode="antialiased" if antialiased else "classic",
    )
    D = out.shape[-1] - (1 if render_depth else 0)
    meta = dict(meta)
    meta["visible"] = (meta["radii"] > 0).all(dim=-1)
    meta["backend"] = "gsplat"
    return GaussianRender(out[..., :D], alpha, out[..., D:] if render_depth else None, meta)
