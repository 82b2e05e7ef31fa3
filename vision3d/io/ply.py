"""PLY files: 3D Gaussian splats and coloured point clouds.

Splat layout (the original 3DGS ``save_ply``, which SuperSplat, antimatter15's
viewer, gsplat/nerfstudio ``ns-export gaussian-splat`` and most viewers read):
one ``vertex`` element, binary little endian, every property float32, in order

    x, y, z, nx, ny, nz, f_dc_0..2, f_rest_0..(3*(K-1)-1), opacity,
    scale_0..2, rot_0..3

* ``f_dc_c`` = ``sh[:, 0, c]``.
* ``f_rest`` is channel-major, as 3DGS writes ``features_rest.transpose(1, 2)``:
  first the K-1 higher-order coefficients of R, then those of G, then B, i.e.
  ``f_rest_{c*(K-1) + (k-1)} = sh[:, k, c]`` for k >= 1. Degree 0 (K = 1)
  writes no ``f_rest`` properties (as nerfstudio's exporter does).
* ``opacity`` is the logit, ``scale_*`` the natural-log scales, ``rot_*`` the
  quaternion (w, x, y, z), unnormalised: exactly our :class:`Gaussians` fields.
* ``nx, ny, nz`` are zeros (viewers expect them; nobody uses them).

float32 input round-trips bitwise. Other dtypes are cast to float32.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from vision3d.core.gaussians import Gaussians
from vision3d.core.pointcloud import PointCloud
from vision3d.errors import UserError
from vision3d.io.atomic import atomic_path


def _np32(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float32).contiguous().numpy()


def splat_property_names(sh_degree: int) -> list[str]:
    """The property names, in file order, of a splat PLY with the given SH degree (0-3)."""
    k = (sh_degree + 1) ** 2
    return (
        ["x", "y", "z", "nx", "ny", "nz"]
        + [f"f_dc_{i}" for i in range(3)]
        + [f"f_rest_{i}" for i in range(3 * (k - 1))]
        + ["opacity"]
        + [f"scale_{i}" for i in range(3)]
        + [f"rot_{i}" for i in range(4)]
    )


def write_splat_ply(path: str | os.PathLike, gaussians: Gaussians) -> Path:
    """Write Gaussians as a 3DGS splat PLY (layout in the module docstring), atomically.

    Args:
        path: output ``.ply`` file.
        gaussians: N Gaussians (any device/dtype; stored as float32).
    Returns:
        Path(path).
    """
    from plyfile import PlyData, PlyElement

    n = len(gaussians)
    k = gaussians.sh.shape[1]
    sh = _np32(gaussians.sh)  # [N, K, 3]
    f_dc = sh[:, 0, :]
    f_rest = sh[:, 1:, :].transpose(0, 2, 1).reshape(n, 3 * (k - 1))  # channel-major
    cols = np.concatenate(
        [
            _np32(gaussians.means),
            np.zeros((n, 3), np.float32),
            f_dc,
            f_rest,
            _np32(gaussians.opacity_logits)[:, None],
            _np32(gaussians.log_scales),
            _np32(gaussians.quats),
        ],
        axis=1,
    )
    names = splat_property_names(gaussians.sh_degree)
    assert cols.shape[1] == len(names)
    # One structured array in file order; the bytes are copied verbatim, hence bitwise round trips.
    arr = np.empty(n, dtype=[(name, "<f4") for name in names])
    for j, name in enumerate(names):
        arr[name] = cols[:, j]
    ply = PlyData([PlyElement.describe(arr, "vertex")], text=False, byte_order="<")
    with atomic_path(path) as tmp:
        ply.write(str(tmp))
    return Path(path)


def _read_ply(path: Path):
    from plyfile import PlyData

    if not path.is_file():
        raise UserError(f"{path}: PLY file not found; check the path")
    try:
        return PlyData.read(str(path))
    except Exception as e:  # plyfile raises PlyParseError / ValueError / struct errors
        raise UserError(f"{path}: not a readable PLY file ({e})") from None


def read_splat_ply(path: str | os.PathLike) -> Gaussians:
    """Read a 3DGS splat PLY (standard layout; property order does not matter).

    Returns:
        Gaussians with float32 tensors: means [N,3], quats [N,4] (w,x,y,z),
        log_scales [N,3], opacity_logits [N], sh [N,K,3] with K = 1, 4, 9 or 16.
    Raises:
        UserError: missing file, not a PLY, or missing splat properties
            (e.g. a plain point cloud or a compressed splat file).
    """
    path = Path(path)
    ply = _read_ply(path)
    if "vertex" not in ply:
        raise UserError(f"{path}: PLY has no 'vertex' element; not a Gaussian splat file")
    v = ply["vertex"].data
    names = set(v.dtype.names or ())
    required = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
                "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    missing = [r for r in required if r not in names]
    if missing:
        raise UserError(
            f"{path}: not a 3DGS splat PLY (missing properties {', '.join(missing)}); "
            f"expected the layout of the original 3DGS / nerfstudio export (compressed splat files are not supported)"
        )
    n_rest = sum(1 for nm in names if nm.startswith("f_rest_"))
    if n_rest % 3 or n_rest // 3 + 1 not in (1, 4, 9, 16):
        raise UserError(f"{path}: {n_rest} f_rest properties do not match SH degree 0-3 (expected 0, 9, 24 or 45)")
    k = n_rest // 3 + 1
    n = len(v)

    def col(name: str) -> np.ndarray:
        return np.asarray(v[name], dtype=np.float32)

    def stack(names_: list[str]) -> torch.Tensor:
        if not names_:
            return torch.zeros(n, 0)
        return torch.from_numpy(np.stack([col(nm) for nm in names_], axis=1))

    sh = torch.zeros(n, k, 3, dtype=torch.float32)
    sh[:, 0, :] = stack([f"f_dc_{i}" for i in range(3)])
    if k > 1:
        rest = stack([f"f_rest_{i}" for i in range(n_rest)]).reshape(n, 3, k - 1)  # channel-major
        sh[:, 1:, :] = rest.transpose(1, 2)
    return Gaussians(
        means=stack(["x", "y", "z"]),
        quats=stack([f"rot_{i}" for i in range(4)]),
        log_scales=stack([f"scale_{i}" for i in range(3)]),
        opacity_logits=torch.from_numpy(col("opacity")),
        sh=sh,
    )


def write_point_ply(path: str | os.PathLike, cloud: PointCloud) -> Path:
    """Write a point cloud as binary little-endian PLY, atomically.

    Properties: ``x, y, z`` float32; ``nx, ny, nz`` float32 if normals are set;
    ``red, green, blue`` uint8 (``round(255 * color)``) if colours are set (the
    layout MeshLab, Open3D, CloudCompare and nerfstudio's ``ply_file_path`` read).
    """
    from plyfile import PlyData, PlyElement

    n = len(cloud)
    fields: list[tuple[str, str]] = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if cloud.normals is not None:
        fields += [("nx", "<f4"), ("ny", "<f4"), ("nz", "<f4")]
    if cloud.colors is not None:
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    arr = np.empty(n, dtype=fields)
    xyz = _np32(cloud.points)
    for j, nm in enumerate("xyz"):
        arr[nm] = xyz[:, j]
    if cloud.normals is not None:
        nrm = _np32(cloud.normals)
        for j, nm in enumerate(("nx", "ny", "nz")):
            arr[nm] = nrm[:, j]
    if cloud.colors is not None:
        rgb = np.clip(np.round(_np32(cloud.colors) * 255.0), 0, 255).astype(np.uint8)
        for j, nm in enumerate(("red", "green", "blue")):
            arr[nm] = rgb[:, j]
    ply = PlyData([PlyElement.describe(arr, "vertex")], text=False, byte_order="<")
    with atomic_path(path) as tmp:
        ply.write(str(tmp))
    return Path(path)


def read_point_ply(path: str | os.PathLike) -> PointCloud:
    """Read the vertices of any PLY as a point cloud.

    Returns:
        PointCloud: points [N,3] float32; colors [N,3] float32 in [0,1] from
        ``red/green/blue`` (uint8 / 255, uint16 / 65535, floats as-is) when
        present; normals from ``nx/ny/nz`` when present; intensity from
        ``intensity`` when present.
    Raises:
        UserError: missing file, not a PLY, or no x/y/z vertex properties.
    """
    path = Path(path)
    ply = _read_ply(path)
    if "vertex" not in ply:
        raise UserError(f"{path}: PLY has no 'vertex' element")
    v = ply["vertex"].data
    names = set(v.dtype.names or ())
    if not {"x", "y", "z"} <= names:
        raise UserError(f"{path}: PLY vertices have no x/y/z properties")
    pts = torch.from_numpy(np.stack([np.asarray(v[c], np.float32) for c in "xyz"], 1))
    colors = normals = intensity = None
    if {"red", "green", "blue"} <= names:
        raw = np.stack([np.asarray(v[c]) for c in ("red", "green", "blue")], 1)
        if raw.dtype == np.uint8:
            c = raw.astype(np.float32) / 255.0
        elif raw.dtype == np.uint16:
            c = raw.astype(np.float32) / 65535.0
        else:
            c = raw.astype(np.float32)
        colors = torch.from_numpy(c)
    if {"nx", "ny", "nz"} <= names:
        normals = torch.from_numpy(np.stack([np.asarray(v[c], np.float32) for c in ("nx", "ny", "nz")], 1))
    if "intensity" in names:
        intensity = torch.from_numpy(np.asarray(v["intensity"], np.float32))
    return PointCloud(points=pts, colors=colors, intensity=intensity, normals=normals)
