"""Image, mask and depth-image files.

Conventions:
    * Colour images are float32 tensors ``[H, W, 3]`` in [0, 1], row 0 at the top,
      exactly as displayed: the EXIF orientation tag (phone photos) is applied
      on load with ``PIL.ImageOps.exif_transpose``.
    * Large photos: ``load_image(path, max_side=...)`` returns the photo at its working size
      (:func:`working_size`); a JPEG is reduced while it is decoded (PIL ``draft``, DCT-domain
      1/2-1/8), so a 48 MP phone photo is never held at full size.
    * RGBA images: :func:`load_image` composites them over a background colour
      (white by default, as nerfstudio's Blender loader does);
      :func:`load_image_rgba` returns colour and alpha separately.
    * Masks are ``[H, W]`` bool, stored as 8-bit single-channel PNG (0 / 255),
      the layout nerfstudio's ``mask_path`` expects.
    * Depth images are ``[H, W]`` float32 metres (z-depth, 0 = missing), stored
      as 16-bit single-channel PNG in units of ``scale`` metres (default 1e-3,
      i.e. millimetres: nerfstudio's ``depth_unit_scale_factor``). nerfstudio
      also allows ``.npy`` depth files: :func:`load_depth` reads those as float
      metres (non-finite or negative values mean missing).

Every writer is atomic (see :mod:`vision3d.io.atomic`). Unreadable files raise
:class:`vision3d.errors.UserError` naming the file.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np
import torch

from vision3d.errors import UserError
from vision3d.io.atomic import atomic_path

if TYPE_CHECKING:
    import PIL.Image

#: Extensions :func:`list_images` picks up (case-insensitive).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
# Formats users commonly try that PIL cannot decode without plugins: named in errors.
_UNSUPPORTED_HINTS = {".heic": "HEIC (iPhone)", ".heif": "HEIF", ".dng": "RAW", ".cr2": "RAW", ".nef": "RAW"}


@contextlib.contextmanager
def open_image(path: str | os.PathLike) -> Iterator["PIL.Image.Image"]:
    """``PIL.Image.open`` with one-line UserErrors; errors while using the image inside the block too.

    Pictures above PIL's decompression-bomb limit (2 x ``Image.MAX_IMAGE_PIXELS``, ~179
    megapixels) are refused with a message saying so; PIL's warning for those between
    89 and 179 megapixels (large phone photos) is silenced, they load.

    Raises:
        UserError: missing file, HEIC/RAW files, a file PIL cannot identify or decode
            (truncated, corrupt), or a picture too large to decode safely.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: image file not found; check the path")
    hint = _UNSUPPORTED_HINTS.get(path.suffix.lower())
    if hint:
        raise UserError(f"{path}: {hint} images are not supported; convert it to PNG or JPEG")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                yield im
    except Image.DecompressionBombError:
        raise UserError(f"{path}: image is too large to decode safely (more than "
                        f"{2 * (Image.MAX_IMAGE_PIXELS or 0) / 1e6:.0f} megapixels); downscale it") from None
    except UnidentifiedImageError:
        raise UserError(f"{path}: cannot read: not an image file PIL can decode; use PNG or JPEG") from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        # truncated or corrupt data; keep PIL's reason on the same line
        reason = " ".join(str(e).split())[:160] or type(e).__name__
        raise UserError(f"{path}: could not decode image ({reason}); re-export it as PNG or JPEG") from None


def _swaps_axes(im) -> bool:
    """The EXIF orientation of ``im`` turns it by 90 degrees (orientations 5-8 swap width and height)."""
    return im.getexif().get(0x0112, 1) in (5, 6, 7, 8)


def _open(path: Path, max_side: int | None = None):
    """Open and fully decode an image with PIL, EXIF orientation applied.

    With ``max_side``, a JPEG larger than that is decoded at a reduced scale (PIL's
    ``draft``: libjpeg scales by 1/2, 1/4 or 1/8 in the DCT domain, so a 48 MP photo is never
    held at full size) that still has at least ``max_side`` pixels on its longer side.
    """
    from PIL import ImageOps

    with open_image(path) as im:
        if max_side is not None and im.format == "JPEG" and max(im.size) > max_side:
            s = max_side / max(im.size)
            im.draft("RGB", (max(1, math.ceil(im.size[0] * s)), max(1, math.ceil(im.size[1] * s))))
        im.load()  # decode now so truncated files fail here, not later
        out = ImageOps.exif_transpose(im)
        if out is im:  # exif_transpose may return the same object; detach it from the file
            out = im.copy()
    return out


def working_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    """(width, height) of a ``width`` x ``height`` photo downscaled so that its longer side is at
    most ``max_side`` (aspect ratio kept, rounded; unchanged when already small enough)."""
    s = 1.0 if max_side is None else min(1.0, max_side / max(width, height))
    return max(1, round(width * s)), max(1, round(height * s))


def _area_resize(a: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Area-filtered downscale of [H, W, C] float32 to [height, width, C]."""
    x = a.permute(2, 0, 1)[None]
    return torch.nn.functional.interpolate(x, size=(height, width), mode="area")[0].permute(1, 2, 0).contiguous()


def _to_float_array(im) -> np.ndarray:
    """PIL image -> float32 [H, W, C] in [0, 1], C in {1, 3, 4}."""
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(im).astype(np.float32) / 65535.0  # 16-bit greyscale PNGs
        return np.clip(a, 0.0, 1.0)[..., None]
    if mode == "F":
        return np.asarray(im, dtype=np.float32)[..., None]
    if mode in ("1", "L"):
        return np.asarray(im.convert("L"), dtype=np.float32)[..., None] / 255.0
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
        return np.asarray(im.convert("RGBA"), dtype=np.float32) / 255.0
    return np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0


def load_image_rgba(path: str | os.PathLike, *, max_side: int | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Load an image as colour and (if present) alpha.

    Args:
        path: PNG/JPEG/WebP/BMP/TIFF file. EXIF orientation is applied.
        max_side: downscale images whose longer side (as displayed) exceeds this to
            :func:`working_size` (area filter); JPEGs are reduced while decoding (PIL ``draft``),
            so the full-size pixels are never decoded. None: full size.
    Returns:
        rgb: [H, W, 3] float32 in [0, 1] (not premultiplied; greyscale is replicated).
        alpha: [H, W] float32 in [0, 1], or None when the file has no alpha channel.
    Raises:
        UserError: missing, unreadable or unsupported file.
    """
    rgb, alpha, size = _load_reduced(Path(path), max_side)
    if (rgb.shape[1], rgb.shape[0]) != size:
        rgb = _area_resize(rgb, *size)
        alpha = None if alpha is None else _area_resize(alpha[..., None], *size)[..., 0]
    return rgb, alpha


def _load_reduced(path: Path, max_side: int | None) -> tuple[torch.Tensor, torch.Tensor | None, tuple[int, int]]:
    """(rgb [H, W, 3], alpha [H, W] or None, the working (width, height)): the image as decoded,
    JPEGs already reduced towards ``max_side`` by :func:`_open`, not yet resized to the working size."""
    if max_side is None:
        a = _to_float_array(_open(path))
        size = (a.shape[1], a.shape[0])
    else:
        with open_image(path) as im:  # the displayed size decides the working size
            w0, h0 = im.size[::-1] if _swaps_axes(im) else im.size
        a = _to_float_array(_open(path, max_side))
        size = working_size(w0, h0, max_side)
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    alpha = None
    if a.shape[-1] == 4:
        alpha = torch.from_numpy(np.ascontiguousarray(a[..., 3]))
        a = a[..., :3]
    return torch.from_numpy(np.ascontiguousarray(a)), alpha, size


def load_image(path: str | os.PathLike, background: Sequence[float] = (1.0, 1.0, 1.0), *,
               max_side: int | None = None) -> torch.Tensor:
    """Load an image as float RGB.

    Args:
        path: PNG/JPEG/WebP/BMP/TIFF file. EXIF orientation is applied.
        max_side: downscale to :func:`working_size` while loading (see :func:`load_image_rgba`).
        background: RGB in [0, 1] that RGBA images are composited over
            (``rgb * alpha + background * (1 - alpha)``); use
            :func:`load_image_rgba` to get the alpha channel instead.
    Returns:
        [H, W, 3] float32 in [0, 1].
    Raises:
        UserError: missing, unreadable or unsupported file.
    """
    rgb, alpha, size = _load_reduced(Path(path), max_side)
    if alpha is not None:  # composite at the decoded size, then resize (as a full-size load and resize does)
        bg = torch.tensor(background, dtype=rgb.dtype)
        rgb = rgb * alpha[..., None] + bg * (1 - alpha[..., None])
    if (rgb.shape[1], rgb.shape[0]) != size:
        rgb = _area_resize(rgb, *size)
    return rgb


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) of an image as displayed (after EXIF orientation), without decoding pixels."""
    with open_image(path) as im:
        w, h = im.size
        swap = _swaps_axes(im)
    return (h, w) if swap else (w, h)


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly inside ``folder``, sorted by file name.

    Hidden files (starting with ".") and non-image extensions are skipped, so
    stray files such as ``.DS_Store`` or ``notes.txt`` do not break a folder.
    Files named like HEIC/RAW photos raise, since the user probably meant them.

    Raises:
        UserError: the folder does not exist, holds no images, or holds HEIC/RAW files.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: image folder not found; check the path")
    files = sorted((p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")), key=lambda p: p.name)
    for p in files:
        hint = _UNSUPPORTED_HINTS.get(p.suffix.lower())
        if hint:
            raise UserError(f"{p}: {hint} images are not supported; convert it to PNG or JPEG")
    images = [p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS]
    if not images:
        raise UserError(f"{folder}: no images found (looked for {', '.join(IMAGE_EXTENSIONS)}); add PNG or JPEG files")
    return images


def load_image_folder(folder: str | os.PathLike, max_side: int | None = None,
                      background: Sequence[float] = (1.0, 1.0, 1.0)) -> tuple[list[Path], torch.Tensor]:
    """Load every image of a folder (see :func:`list_images` for which files).

    Args:
        folder: directory of PNG/JPEG images, all of the same size.
        max_side: if given, images whose longer side exceeds it are downscaled
            (Lanczos, aspect ratio kept) so that the longer side equals it.
        background: composite colour for RGBA images (see :func:`load_image`).
    Returns:
        paths: the N image paths, sorted by name.
        images: [N, H, W, 3] float32 in [0, 1].
    Raises:
        UserError: unreadable file, or images of different sizes (naming both).
    """
    from PIL import Image

    paths = list_images(folder)
    out = []
    for p in paths:
        img = load_image(p, background)
        if max_side is not None and max(img.shape[:2]) > max_side:
            h, w = img.shape[:2]
            s = max_side / max(h, w)
            nw, nh = max(1, round(w * s)), max(1, round(h * s))
            pil = Image.fromarray((img.numpy() * 255 + 0.5).astype(np.uint8)).resize((nw, nh), Image.LANCZOS)
            img = torch.from_numpy(np.asarray(pil, dtype=np.float32) / 255.0)
        if out and img.shape != out[0].shape:
            h0, w0 = out[0].shape[:2]
            h, w = img.shape[:2]
            raise UserError(
                f"{p}: image is {w}x{h} but {paths[0].name} is {w0}x{h0}; all images in {Path(folder)} "
                f"must have the same size (crop or resize them to one size)"
            )
        out.append(img)
    return paths, torch.stack(out)


def _as_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def save_image(path: str | os.PathLike, image, quality: int = 95) -> Path:
    """Write an image atomically; the format follows the suffix (.png, .jpg, ...).

    Args:
        path: output file.
        image: [H, W, 3] (or [H, W] / [H, W, 1] greyscale, or [H, W, 4] RGBA)
            float in [0, 1] (clamped, rounded to 8 bits) or uint8; tensor or array.
        quality: JPEG quality.
    Returns:
        Path(path).
    """
    from PIL import Image

    a = _as_numpy(image)
    if a.dtype != np.uint8:
        a = (np.clip(a.astype(np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] not in (3, 4)):
        raise ValueError(f"save_image: expected [H,W,3], [H,W,4] or [H,W], got {a.shape}")
    im = Image.fromarray(np.ascontiguousarray(a))
    path = Path(path)
    kwargs = {"quality": quality} if path.suffix.lower() in (".jpg", ".jpeg") else {}
    if kwargs and im.mode == "RGBA":
        im = im.convert("RGB")
    with atomic_path(path) as tmp:
        im.save(tmp, format=Image.registered_extensions().get(path.suffix.lower()), **kwargs)
    return path


def load_mask(path: str | os.PathLike) -> torch.Tensor:
    """Load a mask image as [H, W] bool (True where the pixel value is > 0.5 of full scale).

    Colour masks use their first channel; RGBA masks their alpha.
    """
    a = _to_float_array(_open(Path(path)))
    ch = a[..., 3] if a.shape[-1] == 4 else a[..., 0]
    return torch.from_numpy(ch > 0.5)


def save_mask(path: str | os.PathLike, mask) -> Path:
    """Write a [H, W] bool mask as an 8-bit single-channel PNG (0 / 255), atomically."""
    m = _as_numpy(mask).astype(bool)
    if m.ndim != 2:
        raise ValueError(f"save_mask: expected [H, W], got {m.shape}")
    return save_image(path, m.astype(np.uint8) * 255)


def save_depth_png(path: str | os.PathLike, depth, scale: float = 1e-3) -> Path:
    """Write z-depth as a 16-bit single-channel PNG, atomically.

    Args:
        depth: [H, W] float metres; 0, negative, NaN or inf mean missing and are stored as 0.
        scale: metres per PNG unit (1e-3: millimetres, nerfstudio's default).
            Depths beyond 65535 * scale are clipped to 65535.
    """
    from PIL import Image

    d = _as_numpy(depth).astype(np.float64)
    if d.ndim != 2:
        raise ValueError(f"save_depth_png: expected [H, W], got {d.shape}")
    valid = np.isfinite(d) & (d > 0)
    q = np.where(valid, np.round(np.where(valid, d, 0.0) / scale), 0.0)
    q = np.clip(q, 0, 65535).astype(np.uint16)
    with atomic_path(path) as tmp:
        Image.fromarray(q).save(tmp, format="PNG")  # uint16 array -> mode "I;16"
    return Path(path)


def load_depth(path: str | os.PathLike, scale: float = 1e-3) -> torch.Tensor:
    """Load a depth map as [H, W] float32 metres (0 = missing), by file type.

    Args:
        path: a 16-bit PNG (value * ``scale`` metres, see :func:`load_depth_png`) or a
            ``.npy`` array of float metres, ``[H, W]`` or ``[H, W, 1]`` (never unpickled;
            NaN, inf and values <= 0 read as missing).
        scale: metres per PNG unit (nerfstudio's ``depth_unit_scale_factor``); not used for ``.npy``.

    Raises:
        UserError: unreadable file, or an array that is not a numeric [H, W] map.
    """
    path = Path(path)
    if path.suffix.lower() != ".npy":
        return load_depth_png(path, scale)
    if not path.is_file():
        raise UserError(f"{path}: depth file not found; check the path")
    try:
        a = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:120]
        raise UserError(f"{path}: not a numpy depth array ({first}); save it with numpy.save as float metres") from None
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim != 2 or not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise UserError(f"{path}: expected an [H, W] numeric depth array in metres, got {a.dtype} {a.shape}")
    d = a.astype(np.float32)
    d[~np.isfinite(d) | (d < 0)] = 0.0
    return torch.from_numpy(np.ascontiguousarray(d))


def load_depth_png(path: str | os.PathLike, scale: float = 1e-3) -> torch.Tensor:
    """Load a 16-bit depth PNG as [H, W] float32 metres (value * scale; 0 = missing).

    Raises:
        UserError: unreadable file, or an 8-bit/colour image (not a depth map).
    """
    path = Path(path)
    im = _open(path)
    if im.mode not in ("I;16", "I;16B", "I;16L", "I"):
        raise UserError(
            f"{path}: depth images must be 16-bit single-channel PNG (got PIL mode {im.mode}); "
            f"write depth with save_depth_png or in millimetres as uint16"
        )
    return torch.from_numpy(np.asarray(im).astype(np.float32) * np.float32(scale))
