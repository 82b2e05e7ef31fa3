"""Pinhole cameras in the OpenCV convention.

Convention (the only one used inside vision3d; converters live in ``vision3d.io``):
x right, y down, z forward; ``world_to_cam`` maps homogeneous world points to the
camera frame; ``K`` maps camera points to pixels with pixel centres at +0.5, so
the centre of the top-left pixel is (0.5, 0.5).

Views of different sizes (portrait and landscape phone photos, two phones) share one
*canvas* of ``width`` x ``height`` pixels, the largest of the views' sizes; each view's
own image fills the canvas's top-left corner (so its ``K`` is unchanged) and ``sizes``
holds the view's own width and height. Per-view maps (images, masks, depth) of such a
set are [C, H, W] canvases; :meth:`Cameras.frame_mask` says which pixels lie in each
view's own frame (docs/ARCHITECTURE.md, "Conventions").
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Cameras:
    """A batch of C pinhole cameras.

    Attributes:
        world_to_cam: [C, 4, 4] float, rigid transforms world -> camera (OpenCV).
        K: [C, 3, 3] float, intrinsics in pixels (pixel centres at +0.5).
        width: image width in pixels: of every view, or with ``sizes`` the canvas (the largest width).
        height: image height in pixels: of every view, or with ``sizes`` the canvas (the largest height).
        names: optional per-view names (e.g. image file names), length C.
        sizes: [C, 2] int64 each view's own (width, height) in pixels when the views differ in
            size, else None (every view is ``width`` x ``height``; a ``sizes`` that says so is
            normalised to None, so one-size sets take exactly the one-size code paths).
    """

    world_to_cam: torch.Tensor
    K: torch.Tensor
    width: int
    height: int
    names: list[str] = field(default_factory=list)
    sizes: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.world_to_cam.ndim == 2:
            self.world_to_cam = self.world_to_cam[None]
        if self.K.ndim == 2:
            self.K = self.K[None]
        if self.world_to_cam.shape[1:] != (4, 4) or self.K.shape[1:] != (3, 3):
            raise ValueError(
                f"Cameras: expected world_to_cam [C,4,4] and K [C,3,3], got "
                f"{tuple(self.world_to_cam.shape)} and {tuple(self.K.shape)}"
            )
        if self.world_to_cam.shape[0] != self.K.shape[0]:
            raise ValueError("Cameras: world_to_cam and K disagree on the number of views")
        if self.sizes is not None:
            sz = torch.as_tensor(self.sizes, dtype=torch.int64).reshape(-1, 2).cpu()
            if len(sz) != self.world_to_cam.shape[0]:
                raise ValueError(f"Cameras: {len(sz)} sizes for {self.world_to_cam.shape[0]} views")
            if bool((sz[:, 0] > self.width).any() or (sz[:, 1] > self.height).any() or (sz < 1).any()):
                raise ValueError(f"Cameras: view sizes must lie within the {self.width}x{self.height} canvas")
            same = bool((sz[:, 0] == self.width).all() and (sz[:, 1] == self.height).all())
            self.sizes = None if same else sz

    @classmethod
    def from_sizes(cls, world_to_cam: torch.Tensor, K: torch.Tensor, sizes, names: list[str] | None = None
                   ) -> "Cameras":
        """Cameras of views with their own sizes ``sizes`` [C, 2] (width, height); the canvas is
        the largest width and the largest height."""
        sz = torch.as_tensor(sizes, dtype=torch.int64).reshape(-1, 2)
        return cls(world_to_cam, K, int(sz[:, 0].max()), int(sz[:, 1].max()), list(names or []), sz)

    @property
    def widths(self) -> torch.Tensor:
        """[C] int64 each view's own width in pixels."""
        return self.sizes[:, 0] if self.sizes is not None else torch.full((len(self),), self.width)

    @property
    def heights(self) -> torch.Tensor:
        """[C] int64 each view's own height in pixels."""
        return self.sizes[:, 1] if self.sizes is not None else torch.full((len(self),), self.height)

    def size(self, index: int) -> tuple[int, int]:
        """(width, height) of view ``index``'s own image."""
        if self.sizes is None:
            return self.width, self.height
        return int(self.sizes[index, 0]), int(self.sizes[index, 1])

    def frame_mask(self) -> torch.Tensor | None:
        """[C, H, W] bool, True on the pixels of each view's own frame within the canvas; None
        when every view fills the canvas (nothing to mask)."""
        if self.sizes is None:
            return None
        cols = torch.arange(self.width)[None, None, :] < self.sizes[:, 0, None, None]
        rows = torch.arange(self.height)[None, :, None] < self.sizes[:, 1, None, None]
        return cols & rows

    def __len__(self) -> int:
        return self.world_to_cam.shape[0]

    def __getitem__(self, idx) -> "Cameras":
        if isinstance(idx, int):
            idx = [idx]
        names = [self.names[i] for i in torch.arange(len(self))[idx].tolist()] if self.names else []
        sizes = None if self.sizes is None else self.sizes[idx]
        return Cameras(self.world_to_cam[idx], self.K[idx], self.width, self.height, names, sizes)

    def to(self, device) -> "Cameras":
        return Cameras(self.world_to_cam.to(device), self.K.to(device), self.width, self.height, list(self.names),
                       self.sizes)

    @property
    def cam_to_world(self) -> torch.Tensor:
        """[C, 4, 4] camera -> world transforms."""
        return torch.linalg.inv(self.world_to_cam)

    @property
    def centers(self) -> torch.Tensor:
        """[C, 3] camera centres in world coordinates."""
        return self.cam_to_world[:, :3, 3]

    def project(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Project world points into every view.

        Args:
            points: [N, 3] world points.
        Returns:
            uv: [C, N, 2] pixel coordinates (pixel centres at +0.5).
            z: [C, N] depth along the optical axis (camera z), same units as the world.
        """
        R = self.world_to_cam[:, :3, :3]
        t = self.world_to_cam[:, :3, 3]
        pc = torch.einsum("cij,nj->cni", R, points) + t[:, None, :]
        z = pc[..., 2]
        pix = torch.einsum("cij,cnj->cni", self.K, pc)
        uv = pix[..., :2] / pix[..., 2:3].clamp_min(1e-12)
        return uv, z

    def pixels(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The pixel each world point falls in, in every view.

        Args:
            points: [N, 3] world points.
        Returns:
            u, v: [C, N] long column / row indices, clamped into the image so that they can
            index a [C, H, W] map directly (values where ``inside`` is False mean nothing);
            z: [C, N] camera depth; inside: [C, N] bool, in front of the camera and in the
            view's own frame.
        """
        uv, z = self.project(points)
        u, v = uv[..., 0].floor().long(), uv[..., 1].floor().long()
        if self.sizes is None:
            inside = (z > 0) & (u >= 0) & (u < self.width) & (v >= 0) & (v < self.height)
        else:
            w, h = self.sizes[:, 0, None].to(u.device), self.sizes[:, 1, None].to(u.device)
            inside = (z > 0) & (u >= 0) & (u < w) & (v >= 0) & (v < h)
        return u.clamp(0, self.width - 1), v.clamp(0, self.height - 1), z, inside

    def pixel_rays(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """World-space rays through every pixel centre of view ``index``.

        The grid is the canvas (``height`` x ``width``): with ``sizes`` the view's own pixels
        are its top-left ``[:h, :w]`` block, the rest are rays beyond its edge.

        Returns:
            origins: [H, W, 3]; directions: [H, W, 3] with unit camera-z component
            (so ``origin + d * direction`` is the point at depth d).
        """
        dev, dt = self.K.device, self.K.dtype
        v, u = torch.meshgrid(
            torch.arange(self.height, device=dev, dtype=dt) + 0.5,
            torch.arange(self.width, device=dev, dtype=dt) + 0.5,
            indexing="ij",
        )
        pix = torch.stack([u, v, torch.ones_like(u)], -1)
        d_cam = pix @ torch.linalg.inv(self.K[index]).T
        c2w = self.cam_to_world[index]
        d_world = d_cam @ c2w[:3, :3].T
        origins = c2w[:3, 3].expand_as(d_world)
        return origins, d_world


def look_at(eye: torch.Tensor, target: torch.Tensor, up: torch.Tensor | None = None) -> torch.Tensor:
    """OpenCV world_to_cam [4, 4] for a camera at ``eye`` [3] looking at ``target`` [3].

    ``up`` [3] is the world up direction (default +z); the image y axis points
    against it.
    """
    eye = torch.as_tensor(eye, dtype=torch.float64)
    target = torch.as_tensor(target, dtype=torch.float64)
    up = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64) if up is None else torch.as_tensor(up, dtype=torch.float64)
    z = target - eye
    z = z / z.norm()
    x = torch.linalg.cross(z, up)
    if x.norm() < 1e-9:  # looking straight along up: any perpendicular works
        x = torch.linalg.cross(z, torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))
    x = x / x.norm()
    y = torch.linalg.cross(z, x)
    R = torch.stack([x, y, z])  # rows: camera axes in world coordinates
    w2c = torch.eye(4, dtype=torch.float64)
    w2c[:3, :3] = R
    w2c[:3, 3] = -R @ eye
    return w2c.float()


def intrinsics_from_fov(fov_y_deg: float, width: int, height: int) -> torch.Tensor:
    """K [3, 3] for a vertical field of view in degrees, principal point at the image centre."""
    import math

    fy = 0.5 * height / math.tan(math.radians(fov_y_deg) / 2)
    return torch.tensor([[fy, 0.0, width / 2], [0.0, fy, height / 2], [0.0, 0.0, 1.0]])
