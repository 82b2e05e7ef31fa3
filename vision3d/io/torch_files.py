"""Reading torch checkpoint files safely.

A checkpoint is data a user hands us, never code (docs/ARCHITECTURE.md, Errors
and files): every ``torch.load`` goes through :func:`load_torch_file`, which
uses ``weights_only=True`` so that unpickling can only rebuild tensors and plain
containers (dict, list, tuple, str, int, float, bool, None). A file that asks
for anything else (a class, a function: what a malicious pickle uses to run
code) is refused before any of it runs. Checkpoints therefore store their
configuration as plain data (``model_dump(mode="json")``), not as objects.
"""

from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path
from typing import Any

import torch

from vision3d.errors import UserError

__all__ = ["load_torch_file"]


def load_torch_file(path: str | os.PathLike, what: str = "checkpoint", hint: str = "") -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)`` with one-line errors.

    Args:
        path: a file written by ``torch.save``.
        what: what the file should be, for messages (e.g. "detector checkpoint").
        hint: what the user can do, appended to every message.

    Returns:
        The unpickled object (tensors on the CPU).

    Raises:
        UserError: missing file, a file that is not a torch file (or is truncated), or one
            that holds Python objects other than tensors and plain data.
    """
    path = Path(path)
    tail = f"; {hint}" if hint else ""
    if not path.is_file():
        raise UserError(f"{path}: {what} not found{tail}")
    try:
        with warnings.catch_warnings():
            # e.g. "Detected pickle protocol 4": noise on stderr when the file is refused anyway
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's message spans many lines (and suggests weights_only=False, which we never do).
        if "unsupported global" in str(e).lower():  # a class or function: what a payload needs to run code
            raise UserError(f"{path}: refused to load this {what}: it holds Python objects, not only tensors and "
                            f"plain data, so loading it could run code{tail}") from None
        raise UserError(f"{path}: cannot read {what}: not a torch file{tail}") from None
    except PermissionError as e:
        raise UserError(f"{path}: cannot read {what} ({e.strerror}){tail}") from None
    except Exception as e:  # noqa: BLE001 - torch raises KeyError, EOFError, RuntimeError... on a bad file
        raise UserError(f"{path}: cannot read {what}: not a complete torch file ({_first_line(e)}){tail}") from None


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    return f"{type(e).__name__}: {lines[0][:160]}" if lines else type(e).__name__
