"""Build (once, JIT), cache and load the backend's small C++ CPU extensions.

One way to build every C++ kernel in :mod:`vision3d.backend` (the Gaussian
rasterizer in ``gaussians/csrc``, hard voxelisation in ``voxels/csrc``):

* compiled with the system C++ compiler through
  ``torch.utils.cpp_extension.load`` the first time an op is needed, with
  ninja from the venv;
* cached in ``$VISION3D_EXT_DIR`` (default
  ``~/.cache/vision3d/torch_extensions``) under ``<name>_<hash>``, the hash
  covering the source, the torch version, the machine and the flags, so an
  edited source or another torch never picks up a stale build;
* sources include only light ATen headers (no ``torch/extension.h``, which
  alone takes ~30 s to compile) and register plain torch ops with
  ``TORCH_LIBRARY(<name>, m)``: the loaded "module" is ``torch.ops.<name>``;
* if the build fails (no compiler, no ninja, ...), the loader returns None
  after one ``RuntimeWarning`` per extension and the caller falls back to its
  pure-Python path. Each extension has an environment switch
  (``<ENV>=0`` skips it on purpose); ``VISION3D_EXT_VERBOSE=1`` shows the
  compiler output.

Use :func:`load_extension` (memoised per name), or :func:`load_once` with
your own state dict and build function (what :mod:`.gaussians._ext` does, so
that its tests can swap them).
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
from typing import Any, Callable, Optional, Sequence

import torch

__all__ = ["extension_dir", "build_extension", "load_once", "load_extension", "extension_error", "new_state"]

DEFAULT_CFLAGS = ("-O3", "-fopenmp", "-std=c++17")
DEFAULT_LDFLAGS = ("-fopenmp",)

_lock = threading.RLock()
_registry: dict[str, dict[str, Any]] = {}  # name -> state, for load_extension


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


def build_extension(
    name: str,
    source_path: str | os.PathLike,
    cflags: Sequence[str] = DEFAULT_CFLAGS,
    ldflags: Sequence[str] = DEFAULT_LDFLAGS,
) -> Any:
    """Compile (or reuse the cached build of) one source file; return ``torch.ops.<name>``.

    Args:
        name: the library name in the source's ``TORCH_LIBRARY(<name>, m)``;
            the build folder is ``extension_dir() / f"{name}_{hash}"``.
        source_path: the single ``.cpp`` file.
        cflags, ldflags: compiler and linker flags (part of the hash).

    Raises:
        Exception: whatever the compiler, ninja or the loader raised.
    """
    from torch.utils.cpp_extension import load

    src_path = Path(source_path)
    src = src_path.read_bytes()
    cflags, ldflags = list(cflags), list(ldflags)
    key = [torch.__version__, platform.machine(), *cflags, *ldflags]
    tag = hashlib.sha1(src + " ".join(key).encode()).hexdigest()[:10]
    mod_name = f"{name}_{tag}"
    build_dir = extension_dir() / mod_name
    build_dir.mkdir(parents=True, exist_ok=True)
    _ensure_ninja_on_path()
    # Concurrent processes serialise on cpp_extension's file lock in build_dir.
    load(
        name=mod_name,
        sources=[str(src_path)],
        extra_cflags=cflags,
        extra_ldflags=ldflags,
        build_directory=str(build_dir),
        is_python_module=False,
        verbose=os.environ.get("VISION3D_EXT_VERBOSE", "0") == "1",
    )
    return getattr(torch.ops, name)


def new_state() -> dict[str, Any]:
    """A fresh "not tried yet" state for :func:`load_once`."""
    return {"tried": False, "ops": None, "error": None}


def load_once(
    state: dict[str, Any],
    build: Callable[[], Any],
    *,
    env_var: str,
    what: str,
    fallback: str,
) -> Optional[Any]:
    """Run ``build()`` the first time only; its ops namespace, or None if unavailable.

    Thread-safe. Records the result in ``state`` (``tried``, ``ops``,
    ``error``). Skips the build when ``$env_var`` is ``"0"``; on a failed
    build warns once: "vision3d: <what> could not be built (<error>);
    falling back to <fallback>. ..."
    """
    if state["tried"]:
        return state["ops"]
    with _lock:
        if state["tried"]:
            return state["ops"]
        if os.environ.get(env_var, "1") == "0":
            state["error"] = f"disabled by {env_var}=0"
        else:
            try:
                state["ops"] = build()
            except Exception as exc:  # any build/load failure means: use the fallback path
                msg = str(exc).strip()
                state["error"] = f"{type(exc).__name__}: {msg.splitlines()[-1] if msg else ''}"
                warnings.warn(
                    f"vision3d: {what} could not be built ({state['error']}); falling back to "
                    f"{fallback}. Set VISION3D_EXT_VERBOSE=1 to see the compiler output.",
                    RuntimeWarning,
                    stacklevel=4,
                )
        state["tried"] = True
        return state["ops"]


def load_extension(
    name: str,
    source_path: str | os.PathLike,
    cflags: Sequence[str] = DEFAULT_CFLAGS,
    ldflags: Sequence[str] = DEFAULT_LDFLAGS,
    *,
    env_var: str,
    what: str,
    fallback: str,
) -> Optional[Any]:
    """``torch.ops.<name>`` built from ``source_path``, or None (warned once) if it cannot be built.

    Memoised per ``name``: the first call builds or loads the cached build,
    later calls return the same answer at the cost of a dict lookup. See
    :func:`build_extension` for the arguments and :func:`load_once` for
    ``env_var`` / ``what`` / ``fallback``.
    """
    state = _registry.get(name)
    if state is None:
        with _lock:
            state = _registry.setdefault(name, new_state())
    if state["tried"]:
        return state["ops"]
    return load_once(
        state,
        lambda: build_extension(name, source_path, cflags, ldflags),
        env_var=env_var,
        what=what,
        fallback=fallback,
    )


def extension_error(name: str) -> Optional[str]:
    """Why the extension loaded by :func:`load_extension` is unavailable (None if loaded or not tried)."""
    state = _registry.get(name)
    return None if state is None else state["error"]


def _reset(name: str) -> None:
    """Forget the memoised result for ``name`` (tests)."""
    with _lock:
        _registry.pop(name, None)
