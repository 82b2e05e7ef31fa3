"""`vision3d info`: versions and which backends are usable on this machine."""

from __future__ import annotations

import importlib


def _probe(label: str, fn) -> str:
    try:
        detail = fn()
        return f"  {label:22s} yes" + (f" ({detail})" if detail else "")
    except Exception as e:  # any failure means "not usable here", with why
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return f"  {label:22s} no  ({msg[:100]})"


def backend_report() -> list[str]:
    import torch

    from vision3d.pipeline.runner import package_versions

    lines = ["versions:"]
    lines += [f"  {k:22s} {v}" for k, v in package_versions().items()]
    cuda = torch.cuda.is_available()
    lines.append("backends:")
    lines.append(_probe("torch CUDA", lambda: torch.cuda.get_device_name(0) if cuda else (_ for _ in ()).throw(RuntimeError("no CUDA device"))))

    def gsplat_cuda():
        if not cuda:
            raise RuntimeError("needs a CUDA device")
        importlib.import_module("gsplat")
        return "gsplat.rasterization"

    def gsplat_cpu():
        from vision3d.backend.gaussians import rasterize_gaussians  # noqa: F401

        return "vision3d CPU rasterizer"

    def spconv_dev(dev: str):
        def f():
            import spconv.pytorch  # noqa: F401

            if dev == "cuda" and not cuda:
                raise RuntimeError("needs a CUDA device")
            return importlib.import_module("spconv").__version__
        return f

    lines.append(_probe("Gaussians on CUDA", gsplat_cuda))
    lines.append(_probe("Gaussians on CPU", gsplat_cpu))
    lines.append(_probe("spconv CPU", spconv_dev("cpu")))
    lines.append(_probe("spconv CUDA", spconv_dev("cuda")))
    lines.append(_probe("open3d", lambda: importlib.import_module("open3d").__version__))
    lines.append(_probe("pycolmap", lambda: importlib.import_module("pycolmap").__version__))
    lines.append(_probe("pybullet", lambda: (importlib.import_module("pybullet"), "")[1]))
    lines.append(_probe("gradio", lambda: importlib.import_module("gradio").__version__))
    return lines
