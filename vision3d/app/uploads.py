"""What the app accepts: checks on uploaded photos, masks and poses, and the input folder they become.

No gradio here: every check raises :class:`vision3d.errors.UserError` with one line
naming the file and the limit, so the same checks serve the page and the tests.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from vision3d.errors import UserError

MIN_PHOTOS = 2
MAX_PHOTOS = 4
MIN_SIDE = 64  # pixels, shorter side
MAX_SIDE = 8192  # pixels, longer side (48 MP phone photos are 8064 x 6048)
MAX_PIXELS = 50_000_000  # 50 MP
#: the longer side photos are used at (the views stage's default ``max_side``); larger photos are
#: downscaled while they are decoded (vision3d.io.images.load_image), smaller ones are used as they are
WORKING_SIDE = 512
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
_UNSUPPORTED = {".heic": "HEIC (iPhone)", ".heif": "HEIF", ".avif": "AVIF", ".dng": "RAW",
                ".cr2": "RAW", ".nef": "RAW", ".arw": "RAW", ".gif": "GIF"}

LIMITS_TEXT = (f"{MIN_PHOTOS}-{MAX_PHOTOS} photos (PNG/JPEG/WebP), each at least {MIN_SIDE} px on the short side "
               f"and at most {MAX_SIDE} px on the long side and {MAX_PIXELS // 1_000_000} MP; portrait and "
               f"landscape may be mixed, and photos are used at {WORKING_SIDE} px on the long side")


@dataclass
class Photo:
    """One uploaded photo that passed validation."""

    path: Path  # where the upload lies
    name: str  # file name in the request folder (sanitised, unique)
    width: int  # as displayed (EXIF orientation applied), pixels
    height: int

    def used_size(self, max_side: int = WORKING_SIDE) -> tuple[int, int]:
        """(width, height) the reconstruction uses this photo at."""
        from vision3d.io.images import working_size

        return working_size(self.width, self.height, max_side)


def describe_photos(photos: Sequence[Photo], max_side: int = WORKING_SIDE) -> str:
    """One line saying, per photo, its size and the size it is used at."""
    parts = []
    for ph in photos:
        uw, uh = ph.used_size(max_side)
        used = "used as is" if (uw, uh) == (ph.width, ph.height) else f"used at {uw}×{uh}"
        parts.append(f"{ph.path.name}: {ph.width}×{ph.height} px, {used}")
    return "; ".join(parts)


def _display_name(p: Path | str) -> str:
    return Path(p).name


def safe_name(name: str) -> str:
    """A file name safe to write anywhere: letters, digits, ``._-``; keeps the suffix."""
    stem, suffix = os.path.splitext(Path(name).name)
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "photo"
    suffix = re.sub(r"[^A-Za-z0-9.]+", "", suffix.lower())
    return f"{stem[:80]}{suffix}"


def _open_image(path: Path, what: str, reduced: bool = False):
    """Decode an image (size limits checked first); UserError naming the file otherwise.

    ``reduced``: a JPEG is decoded at 1/8 scale in the DCT domain (PIL ``draft``): every byte
    of it is still read, so a truncated file fails here, without holding a 48 MP photo in
    memory; the returned image is then that small version (its ``info["full_size"]`` is the
    full size as displayed).
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    name = _display_name(path)
    hint = _UNSUPPORTED.get(path.suffix.lower())
    if hint:
        raise UserError(f"{what} '{name}' is a {hint} file, which is not supported; convert it to PNG or JPEG")
    try:
        with Image.open(path) as im:
            w, h = im.size
            _check_size(name, what, w, h)
            if im.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # turned by 90 degrees when displayed
                w, h = h, w
            if reduced and im.format == "JPEG":
                im.draft("RGB", (max(1, w // 8), max(1, h // 8)))
            im.load()
            out = ImageOps.exif_transpose(im)
            out = out if out is not im else im.copy()
            out.info["full_size"] = (w, h)
            return out
    except UserError:
        raise
    except Image.DecompressionBombError:
        raise UserError(f"{what} '{name}' is far too large; the limit is {MAX_SIDE} px per side and "
                        f"{MAX_PIXELS // 1_000_000} MP: downscale it") from None
    except UnidentifiedImageError:
        raise UserError(f"{what} '{name}' is not an image; upload PNG, JPEG or WebP files") from None
    except (OSError, ValueError, SyntaxError):
        raise UserError(f"{what} '{name}' could not be decoded (truncated or corrupt?); re-export it as PNG or JPEG") from None


def _check_size(name: str, what: str, w: int, h: int) -> None:
    if min(w, h) < MIN_SIDE:
        raise UserError(f"{what} '{name}' is too small ({w}×{h} px); each photo needs at least "
                        f"{MIN_SIDE} px on its shorter side")
    if max(w, h) > MAX_SIDE or w * h > MAX_PIXELS:
        raise UserError(f"{what} '{name}' is too large ({w}×{h} px, {w * h / 1e6:.1f} MP); the limit is "
                        f"{MAX_SIDE} px per side and {MAX_PIXELS // 1_000_000} MP: downscale it")


def as_paths(files: Any) -> list[Path]:
    """Gradio file values (paths, dicts, FileData-like objects, or None) -> paths."""
    if files is None:
        return []
    if isinstance(files, (str, os.PathLike)) or hasattr(files, "path") or isinstance(files, dict):
        files = [files]
    out = []
    for f in files:
        if f is None:
            continue
        if isinstance(f, dict):
            f = f.get("path") or f.get("name")
        elif hasattr(f, "path") and not isinstance(f, (str, os.PathLike)):
            f = f.path
        out.append(Path(f))
    return out


def validate_photos(files: Any) -> list[Photo]:
    """Check the uploaded photos: count, readable images, size limits, unique names. Photos may
    differ in size and orientation (each keeps its own; see :func:`describe_photos`).

    Raises:
        UserError: one line naming the photo and the limit.
    """
    paths = as_paths(files)
    n = len(paths)
    if n < MIN_PHOTOS:
        got = "no photo" if n == 0 else "1 photo"
        raise UserError(f"Upload {MIN_PHOTOS} to {MAX_PHOTOS} photos of the same object from different sides; "
                        f"you uploaded {got}")
    if n > MAX_PHOTOS:
        raise UserError(f"Upload {MIN_PHOTOS} to {MAX_PHOTOS} photos; you uploaded {n}. Remove {n - MAX_PHOTOS} of them")
    photos: list[Photo] = []
    seen: dict[str, str] = {}
    for p in paths:
        im = _open_image(p, "photo", reduced=True)
        name = safe_name(p.name)
        if Path(name).suffix not in IMAGE_SUFFIXES:
            name = f"{Path(name).stem}.png"  # decodable but odd extension: stored re-encoded as PNG
        key = Path(name).stem.lower()
        if key in seen:
            if seen[key] == p.name:
                raise UserError(f"photo '{p.name}' was uploaded twice; remove one copy (x next to its name)")
            raise UserError(f"photos '{seen[key]}' and '{p.name}' have the same name; rename one of them")
        seen[key] = p.name
        photos.append(Photo(p, name, *im.info["full_size"]))
    return photos


def validate_masks(files: Any, photos: Sequence[Photo]) -> dict[str, Path]:
    """Match object masks to photos (by file name stem, else by upload order).

    Returns:
        photo name -> mask path, for every photo (empty when no masks were uploaded).
    """
    paths = as_paths(files)
    if not paths:
        return {}
    if len(paths) != len(photos):
        raise UserError(f"upload one mask per photo: {len(photos)} photos but {len(paths)} masks "
                        "(or remove the masks; they are optional)")
    by_stem = {Path(safe_name(p.name)).stem.lower(): p for p in paths}
    matched: dict[str, Path] = {}
    for ph in photos:
        stem = Path(ph.name).stem.lower()
        m = by_stem.get(stem) or by_stem.get(f"{stem}_mask") or by_stem.get(f"mask_{stem}")
        if m is not None:
            matched[ph.name] = m
    if len(matched) != len(photos):
        if matched:
            missing = [ph.path.name for ph in photos if ph.name not in matched]
            raise UserError(f"no mask named like photo(s) {', '.join(missing)}; give each mask its photo's name "
                            "(e.g. photo 'cup_1.jpg' -> mask 'cup_1.png')")
        matched = {ph.name: m for ph, m in zip(photos, paths)}  # no names in common: upload order
    for ph in photos:
        im = _open_image(matched[ph.name], "mask")
        if (im.width, im.height) != (ph.width, ph.height):
            raise UserError(f"mask '{matched[ph.name].name}' is {im.width}×{im.height} px but its photo "
                            f"'{ph.path.name}' is {ph.width}×{ph.height} px; masks must match their photos")
    return matched


def validate_transforms(file: Any, photos: Sequence[Photo]) -> dict[str, Any] | None:
    """Check a nerfstudio ``transforms.json`` and point its frames at the uploaded photos.

    Every photo needs a frame whose ``file_path`` has the photo's name (the folder
    part is ignored); frames for photos that were not uploaded are dropped.

    Returns:
        the rewritten transforms dict, or None when none was uploaded.
    """
    paths = as_paths(file)
    if not paths:
        return None
    p = paths[0]
    try:
        data = json.loads(p.read_text())
    except UnicodeDecodeError:
        raise UserError(f"'{p.name}' is not a text file; upload the transforms.json that holds the camera poses") from None
    except json.JSONDecodeError as e:
        raise UserError(f"'{p.name}' is not valid JSON (line {e.lineno}: {e.msg}); upload a nerfstudio transforms.json") from None
    if not isinstance(data, dict) or not isinstance(data.get("frames"), list):
        raise UserError(f"'{p.name}' has no 'frames' list; upload a nerfstudio transforms.json")
    def key(file_path: Any) -> str:
        return Path(safe_name(Path(str(file_path)).name)).stem.lower()

    frames_by: dict[str, dict] = {}
    for i, fr in enumerate(data["frames"]):
        if not isinstance(fr, dict) or "file_path" not in fr or "transform_matrix" not in fr:
            raise UserError(f"'{p.name}': frames[{i}] needs 'file_path' and 'transform_matrix'")
        frames_by[key(fr["file_path"])] = fr
    frames = []
    missing = []
    new_path: dict[str, str] = {}
    for ph in photos:
        fr = frames_by.get(Path(ph.name).stem.lower())
        if fr is None:
            missing.append(ph.path.name)
            continue
        fr = dict(fr)
        new_path[Path(ph.name).stem.lower()] = fr["file_path"] = f"images/{ph.name}"
        fr.pop("mask_path", None)
        fr.pop("depth_file_path", None)
        frames.append(fr)
    if missing:
        raise UserError(f"'{p.name}' has no frame for photo(s) {', '.join(missing)}; its frames' file_path "
                        "must name the uploaded photos (or leave out transforms.json to recover poses)")
    out = {**data, "frames": frames}
    # split lists (train/val/test_filenames) name frames by file_path: follow the rewrite, drop the rest
    for split in ("train", "val", "test"):
        k = f"{split}_filenames"
        if k in out:
            if not isinstance(out[k], list):
                raise UserError(f"'{p.name}': '{k}' must be a list of image paths")
            kept = [new_path[key(f)] for f in out[k] if key(f) in new_path]
            if kept:
                out[k] = kept
            else:
                del out[k]
    return out


@dataclass
class RequestInput:
    """The validated uploads, ready to be written as a pipeline input folder."""

    photos: list[Photo]
    masks: dict[str, Path] = field(default_factory=dict)
    transforms: dict[str, Any] | None = None


def validate_inputs(photos: Any, masks: Any = None, transforms: Any = None) -> RequestInput:
    """All checks on one request's uploads; :class:`UserError` with one clear line otherwise."""
    ph = validate_photos(photos)
    return RequestInput(ph, validate_masks(masks, ph), validate_transforms(transforms, ph))


def write_input_folder(req: RequestInput, dest: Path) -> Path:
    """Lay the uploads out as the pipeline expects: ``images/``, ``masks/``, ``transforms.json``."""
    from PIL import Image

    images = dest / "images"
    images.mkdir(parents=True, exist_ok=True)
    for ph in req.photos:
        if ph.path.suffix.lower() == Path(ph.name).suffix:
            shutil.copyfile(ph.path, images / ph.name)
        else:
            with Image.open(ph.path) as im:
                im.save(images / ph.name)
    if req.masks:
        (dest / "masks").mkdir(exist_ok=True)
        for ph in req.photos:
            with Image.open(req.masks[ph.name]) as im:
                m = im.convert("RGBA").getchannel("A") if im.mode in ("RGBA", "LA", "PA") else im.convert("L")
                m.point(lambda v: 255 if v >= 128 else 0).save(dest / "masks" / f"{Path(ph.name).stem}.png")
    if req.transforms is not None:
        tf = req.transforms
        if req.masks:
            tf = {**tf, "frames": [{**fr, "mask_path": f"masks/{Path(fr['file_path']).stem}.png"} for fr in tf["frames"]]}
        (dest / "transforms.json").write_text(json.dumps(tf, indent=2))
    return dest
