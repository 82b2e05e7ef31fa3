"""The C++ CPU rasterizer (``csrc/rasterize_cpu.cpp``), built and loaded by :mod:`vision3d.backend._cpp`.

Built once per machine and source version on first use (a cold build is
~16 s of CPU, about 20 s wall on an idle two-core machine) and cached in
``$VISION3D_EXT_DIR`` (default ``~/.cache/vision3d/torch_extensions``); see
:mod:`vision3d.backend._cpp` for the caching and hashing rules.

If the build fails (no compiler, no ninja, ...), :func:`get_ops` returns None
after one warning and callers fall back to the pure-torch reference.
Set ``VISION3D_GS_CPU_EXT=0`` to skip the extension on purpose,
``VISION3D_EXT_VERBOSE=1`` to see the compiler output.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from vision3d.backend import _cpp
from vision3d.backend._cpp import extension_dir

__all__ = ["get_ops", "extension_dir", "build_error"]

_NAME = "vision3d_gs_cpu"  # TORCH_LIBRARY name in the source
_SRC = Path(__file__).parent / "csrc" / "rasterize_cpu.cpp"
_CFLAGS = ["-O3", "-fopenmp", "-std=c++17"]
_LDFLAGS = ["-fopenmp"]
_state: dict[str, Any] = _cpp.new_state()


def _build() -> Any:
    return _cpp.build_extension(_NAME, _SRC, _CFLAGS, _LDFLAGS)


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
    return _cpp.load_once(
        _state,
        _build,
        env_var="VISION3D_GS_CPU_EXT",
        what="the C++ CPU Gaussian rasterizer",
        fallback="the slower pure-torch rasterizer",
    )
