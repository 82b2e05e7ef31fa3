"""Gaussian half of the backend: rasterization, SH, densification helpers.

Public API (see each docstring for shapes and units):

* :func:`rasterize_gaussians` -> :class:`GaussianRender`
* :func:`project_gaussians`, :func:`quat_scale_to_covar`
* :func:`sh_to_color`, :func:`eval_sh`, :func:`rgb_to_sh`, :data:`SH_C0`
* :func:`make_default_strategy`, :class:`CPUMCMCStrategy`,
  :func:`compute_relocation`, :func:`inject_noise_to_position`
"""

from .densify import compute_relocation, inject_noise_to_position, make_default_strategy
from .projection import Projection, project_gaussians, quat_scale_to_covar
from .rasterize import GaussianRender, rasterize_gaussians
from .sh import SH_C0, eval_sh, rgb_to_sh, sh_to_color

__all__ = [
    "GaussianRender",
    "rasterize_gaussians",
    "Projection",
    "project_gaussians",
    "quat_scale_to_covar",
    "SH_C0",
    "eval_sh",
    "rgb_to_sh",
    "sh_to_color",
    "make_default_strategy",
    "CPUMCMCStrategy",
    "compute_relocation",
    "inject_noise_to_position",
]


def __getattr__(name: str):
    # CPUMCMCStrategy subclasses a gsplat class: import gsplat only when asked
    if name == "CPUMCMCStrategy":
        from .mcmc import CPUMCMCStrategy

        return CPUMCMCStrategy
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
