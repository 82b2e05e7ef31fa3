"""3D Gaussians: the scene representation shared by every splatting method."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

SH_C0 = 0.28209479177387814  # Y_0^0; DC colour = 0.5 + SH_C0 * f_dc, as in 3DGS


def num_sh_bases(degree: int) -> int:
    """Number of SH coefficients K for an SH degree 0..3."""
    return (degree + 1) ** 2


def rgb_to_sh(rgb: torch.Tensor) -> torch.Tensor:
    """DC SH coefficient from colour in [0, 1] (inverse of ``0.5 + SH_C0 * f_dc``)."""
    return (rgb - 0.5) / SH_C0


def sh_to_rgb(sh0: torch.Tensor) -> torch.Tensor:
    """Colour in [0, 1] (unclamped) from the DC SH coefficient."""
    return sh0 * SH_C0 + 0.5


@dataclass
class Gaussians:
    """N anisotropic 3D Gaussians, stored in their unconstrained (optimised) form.

    Attributes:
        means: [N, 3] centres in world units.
        quats: [N, 4] rotations as (w, x, y, z); not necessarily normalised.
        log_scales: [N, 3] natural log of the per-axis standard deviations.
        opacity_logits: [N] logit of opacity (opacity = sigmoid(logit)).
        sh: [N, K, 3] spherical-harmonic colour coefficients, K = (degree+1)^2;
            ``sh[:, 0]`` is the DC term (colour = 0.5 + SH_C0 * sh[:, 0]).
    """

    means: torch.Tensor
    quats: torch.Tensor
    log_scales: torch.Tensor
    opacity_logits: torch.Tensor
    sh: torch.Tensor

    def __post_init__(self) -> None:
        n = self.means.shape[0]
        shapes = {
            "means": (n, 3),
            "quats": (n, 4),
            "log_scales": (n, 3),
            "opacity_logits": (n,),
        }
        for name, shape in shapes.items():
            got = tuple(getattr(self, name).shape)
            if got != shape:
                raise ValueError(f"Gaussians.{name}: expected shape {shape}, got {got}")
        if self.sh.ndim != 3 or self.sh.shape[0] != n or self.sh.shape[2] != 3:
            raise ValueError(f"Gaussians.sh: expected [N, K, 3], got {tuple(self.sh.shape)}")
        if self.sh.shape[1] not in (1, 4, 9, 16):
            raise ValueError(f"Gaussians.sh: K must be 1, 4, 9 or 16 (SH degree 0-3), got {self.sh.shape[1]}")

    def __len__(self) -> int:
        return self.means.shape[0]

    @property
    def sh_degree(self) -> int:
        return int(round(self.sh.shape[1] ** 0.5)) - 1

    @property
    def scales(self) -> torch.Tensor:
        """[N, 3] per-axis standard deviations."""
        return self.log_scales.exp()

    @property
    def opacities(self) -> torch.Tensor:
        """[N] opacities in (0, 1)."""
        return torch.sigmoid(self.opacity_logits)

    def to(self, device) -> "Gaussians":
        return Gaussians(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def detach(self) -> "Gaussians":
        return Gaussians(**{f.name: getattr(self, f.name).detach() for f in fields(self)})

    def as_dict(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @staticmethod
    def cat(parts: "list[Gaussians]") -> "Gaussians":
        """One set of all ``parts`` (same SH degree), in order."""
        return Gaussians(*(torch.cat([getattr(g, f) for g in parts]) for f in
                           ("means", "quats", "log_scales", "opacity_logits", "sh")))

    @staticmethod
    def from_points(points: torch.Tensor, colors: torch.Tensor, scale: torch.Tensor | float,
                    opacity: float = 0.1, sh_degree: int = 0) -> "Gaussians":
        """Isotropic Gaussians at ``points`` [N,3] with ``colors`` [N,3] in [0,1].

        ``scale`` is a float or [N] standard deviation in world units.
        """
        n = points.shape[0]
        scale_t = torch.as_tensor(scale, dtype=points.dtype, device=points.device).expand(n)
        sh = torch.zeros(n, num_sh_bases(sh_degree), 3, dtype=points.dtype, device=points.device)
        sh[:, 0] = rgb_to_sh(colors.to(points.dtype))
        quats = torch.zeros(n, 4, dtype=points.dtype, device=points.device)
        quats[:, 0] = 1
        return Gaussians(
            means=points.clone(),
            quats=quats,
            log_scales=scale_t.clamp_min(1e-8).log()[:, None].repeat(1, 3),
            opacity_logits=torch.logit(torch.full((n,), opacity, dtype=points.dtype, device=points.device)),
            sh=sh,
        )
