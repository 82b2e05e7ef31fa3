"""Build (once, JIT) and load the C++ CPU rasterizer.

The extension is compiled with the system C++ compiler through
``torch.utils.cpp_extension.load`` the first time it is needed and cached in
``$VISION3D_EXT_DIR`` (default ``~/.cache/vision3d/torch_extensions``) under a
name that hashes the source, the torch version and the flags, so an edited
source or another torch never picks up a stale build. It includes only light
ATen headers (no ``torch/extension.h``, which alone takes ~30 s to compile)
and registers plain torch ops: a cold build is ~16 s of CPU (about 20 s wall
on an idle two-core machine), once per machine and source version.

If the build fails (no compiler, no ninja, ...), :func:`get_ops` returns None
after one warning and callers fall back to the pure-torch reference.
Set ``VISION3D_GS_CPU_EXT=0`` to skip the extension on purpose.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import sys
import threading
import warnings
from pathlib import Path
from typing import Any, Optional

import torch

__all__ = ["get_ops", "extension_dir", "build_error"]

_SRC = Path(__file__).parent / "csrc" / "rasterize_cpu.cpp"
_CFLAGS = ["-O3", "-fopenmp", "-std=c++17"]
_LDFLAGS = ["-fopenmp"]
_lock = threading.Lock()
_state: dict[str, Any] = {"tried": False, "ops": None, "error": None}


def extension_dir() -> Path:
    """Root folder of the JIT build cache (``$VISION3D_EXT_DIR`` or ``~/.cache/vision3d/torch_extensions``)."""
    root = os.environ.get("VISION3D_EXT_DIR")
    if root:
        return Path(root).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "vision3d" / "torch_extensions"


def _ensure_ninja_on_path() -> None:
    # A venv's python run by full path does not put the venv's bin (where the
    # ninja wheel lives) on PATH; cpp_extension looks ninja up on PATH.
    if shutil.which("ninja"):
        return
    candidates = [os.path.dirname(sys.executable)]
    try:  # the `ninja` PyPI package knows where its binary is
        import ninja  # type: ignore

        candidates.insert(0, ninja.BIN_DIR)
    except Exception:
        pass
    for d in candidates:
        if os.path.exists(os.path.join(d, "ninja")):
            os.environ["PATH"] = d + os.pathsep + os.environ.get("PATH", "")
            return


def _build() -> Any:
    from torch.utils.cpp_extension import load

    src = _SRC.read_bytes()
    key = [torch.__version__, platform.machine(), *_CFLAGS, *_LDFLAGS]
    tag = hashlib.sha1(src + " ".join(key).encode()).hexdigest()[:10]
    name = f"vision3d_gs_cpu_{tag}"
    build_dir = extension_dir() / name
    build_dir.mkdir(parents=True, exist_ok=True)
    _ensure_ninja_on_path()
    load(
        name=name,
        sources=[str(_SRC)],
        extra_cflags=_CFLAGS,
        extra_ldflags=_LDFLAGS,
        build_directory=str(build_dir),
        is_python_module=False,
        verbose=os.environ.get("VISION3D_EXT_VERBOSE", "0") == "1",
    )
    return torch.ops.vision3d_gs_cpu


def build_error() -> Optional[str]:
    """Why the extension is unavailable (None if it loaded or was not tried yet)."""
    return _state["error"]


def get_ops() -> Optional[Any]:
    """The compiled ops namespace (``torch.ops.vision3d_gs_cpu``), or None if unavailable.

    Builds on first call (thread-safe; concurrent processes serialise on a
    file lock inside the build folder). Warns once when the build fails.
    """
    if _state["tried"]:
        return _state["ops"]
    with _lock:
        if _state["tried"]:
            return _state["ops"]
        if os.environ.get("VISION3D_GS_CPU_EXT", "1") == "0":
            _state["error"] = "disabled by VISION3D_GS_CPU_EXT=0"
        else:
            try:
                _state["ops"] = _build()
            except Exception as exc:  # any build/load failure means: use the torch path
                _state["error"] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"
                warnings.warn(
                    "vision3d: the C++ CPU Gaussian rasterizer could not be built "
                    f"({_state['error']}); falling back to the slower pure-torch "
                    "rasterizer. Set VISION3D_EXT_VERBOSE=1 to see the compiler output.",
                    RuntimeWarning,
                    stacklevel=3,
                )
        _state["tried"] = True
        return _state["ops"]
