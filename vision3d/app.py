"""The Gradio app: 2-4 photos in, an orbitable Gaussian-splat scene out.

Thin by design (see docs/ARCHITECTURE.md, "Layers": entry points): it checks the uploads, lays
them out as the pipeline's input folder, builds a job config from a preset in
``configs/`` and runs it with :func:`vision3d.pipeline.runner.run_job` -- the
same code path as ``vision3d run``. Method logic lives in the pipeline.

Per request::

    <runs root>/<request id>/
        input/images/<photo>       the uploaded photos (names kept, sanitised)
        input/masks/<stem>.png     optional object masks, one per photo
        input/transforms.json      optional poses (nerfstudio), file paths rewritten
        run/                       the run directory (manifest.json, stages, ...)
        preview/                   what the page shows: colourised depth maps, the splat framed for the viewer
        vision3d-run-<id>.zip      the run directory as a zip

Only the ``keep_runs`` most recent request folders are kept.

Environment (all optional):
    VISION3D_APP_RUNS        runs root (default: <tmp>/vision3d-app)
    VISION3D_APP_KEEP_RUNS   how many request folders to keep (default 8)
    VISION3D_APP_PRESETS     extra preset job configs (os.pathsep-separated YAML paths)
    VISION3D_APP_SET         overrides applied to every job, ';'-separated
                             ``key.path=value`` items as for ``vision3d run --set``
"""

import html
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

# Before gradio is imported anywhere: no usage analytics, no version check.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from vision3d.errors import UserError  # noqa: E402

log = logging.getLogger("vision3d.app")

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO_ROOT / "configs"
ASSETS_DIR = REPO_ROOT / "assets"

# ---------------------------------------------------------------------------- limits

MIN_PHOTOS = 2
MAX_PHOTOS = 4
MIN_SIDE = 64  # pixels, shorter side
MAX_SIDE = 4096  # pixels, longer side
MAX_PIXELS = 16_000_000  # 16 MP
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
_UNSUPPORTED = {".heic": "HEIC (iPhone)", ".heif": "HEIF", ".avif": "AVIF", ".dng": "RAW",
                ".cr2": "RAW", ".nef": "RAW", ".arw": "RAW", ".gif": "GIF"}

LIMITS_TEXT = (f"{MIN_PHOTOS}-{MAX_PHOTOS} photos (PNG/JPEG/WebP), each at least {MIN_SIDE} px on the short side "
               f"and at most {MAX_SIDE} px on the long side and {MAX_PIXELS // 1_000_000} MP")


# ---------------------------------------------------------------------------- validation (no gradio)


@dataclass
class Photo:
    """One uploaded photo that passed validation."""

    path: Path  # where the upload lies
    name: str  # file name in the request folder (sanitised, unique)
    width: int
    height: int


def _display_name(p: Path | str) -> str:
    return Path(p).name


def safe_name(name: str) -> str:
    """A file name safe to write anywhere: letters, digits, ``._-``; keeps the suffix."""
    stem, suffix = os.path.splitext(Path(name).name)
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "photo"
    suffix = re.sub(r"[^A-Za-z0-9.]+", "", suffix.lower())
    return f"{stem[:80]}{suffix}"


def _open_image(path: Path, what: str):
    """Decode an image fully (size limits checked first); UserError naming the file otherwise."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    name = _display_name(path)
    hint = _UNSUPPORTED.get(path.suffix.lower())
    if hint:
        raise UserError(f"{what} '{name}' is a {hint} file, which is not supported; convert it to PNG or JPEG")
    try:
        with Image.open(path) as im:
            w, h = im.size
            _check_size(name, what, w, h)
            im.load()
            out = ImageOps.exif_transpose(im)
            return out if out is not im else im.copy()
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


def _as_paths(files: Any) -> list[Path]:
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
    """Check the uploaded photos: count, readable images, size limits, unique names.

    Raises:
        UserError: one line naming the photo and the limit.
    """
    paths = _as_paths(files)
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
        im = _open_image(p, "photo")
        name = safe_name(p.name)
        if Path(name).suffix not in IMAGE_SUFFIXES:
            name = f"{Path(name).stem}.png"  # decodable but odd extension: stored re-encoded as PNG
        key = Path(name).stem.lower()
        if key in seen:
            if seen[key] == p.name:
                raise UserError(f"photo '{p.name}' was uploaded twice; remove one copy (x next to its name)")
            raise UserError(f"photos '{seen[key]}' and '{p.name}' have the same name; rename one of them")
        seen[key] = p.name
        photos.append(Photo(p, name, im.width, im.height))
    first = photos[0]
    for ph in photos[1:]:
        if (ph.width, ph.height) != (first.width, first.height):
            raise UserError(f"photo '{ph.path.name}' is {ph.width}×{ph.height} px but '{first.path.name}' is "
                            f"{first.width}×{first.height} px; use photos from one camera at one size and orientation")
    return photos


def validate_masks(files: Any, photos: Sequence[Photo]) -> dict[str, Path]:
    """Match object masks to photos (by file name stem, else by upload order).

    Returns:
        photo name -> mask path, for every photo (empty when no masks were uploaded).
    """
    paths = _as_paths(files)
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
    paths = _as_paths(file)
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


# ---------------------------------------------------------------------------- presets


@dataclass
class Preset:
    name: str  # shown in the dropdown
    path: Path  # the job config
    description: str = ""
    overrides: tuple[str, ...] = ()  # ``key.path=value`` items applied to this preset only


def _leading_comment(path: Path, max_sentences: int = 2) -> str:
    """The first sentences of a config's leading comment block (``Run:`` lines left out)."""
    lines = []
    for line in path.read_text().splitlines():
        s = line.strip()
        if not s.startswith("#"):
            break
        s = s.lstrip("#").strip()
        if s and not s.lower().startswith("run:"):
            lines.append(s)
    text = " ".join(lines)
    sentences = re.split(r"(?<=[.!?])\s+", text)
    return " ".join(sentences[:max_sentences]).strip()


def discover_presets(config_dir: Path = CONFIG_DIR, extra: Sequence[Path] = ()) -> list[Preset]:
    """Presets = ``configs/sparse_view_*.yaml`` (+ ``configs/default.yaml`` when it runs the
    same pipeline) + ``extra``. The name drops the ``sparse_view_`` prefix."""
    import yaml

    found: list[Path] = sorted(config_dir.glob("sparse_view_*.yaml"))
    pipelines = set()
    for p in found:
        try:
            pipelines.add((yaml.safe_load(p.read_text()) or {}).get("pipeline"))
        except Exception:  # a broken preset is reported when it is run, not here
            pass
    default = config_dir / "default.yaml"
    if default.exists():
        try:
            if (yaml.safe_load(default.read_text()) or {}).get("pipeline") in pipelines or not found:
                found.insert(0, default)
        except Exception:
            pass
    found += [Path(e) for e in extra]
    out = []
    for p in found:
        name = p.stem.removeprefix("sparse_view_").replace("_", " ")
        out.append(Preset(name, p, _leading_comment(p)))
    # fast ones first: they are what a visitor should try first
    out.sort(key=lambda pr: (0 if "fast" in pr.name else 1 if pr.name == "default" else 2, pr.name))
    return out


def _env_presets() -> list[Path]:
    return [Path(p) for p in os.environ.get("VISION3D_APP_PRESETS", "").split(os.pathsep) if p.strip()]


def _env_overrides() -> list[str]:
    return [s.strip() for s in re.split(r"[;\n]", os.environ.get("VISION3D_APP_SET", "")) if s.strip()]


def build_job(preset: Preset, data: Path, run_dir: Path, overrides: Sequence[str] = ()):
    """The preset's job config with ``data`` and ``out`` set to this request's folders, validated."""
    from vision3d.pipeline.config import load_yaml, resolve_job

    raw = load_yaml(preset.path, "preset config")
    raw["data"] = str(data)
    raw["out"] = str(run_dir)
    return resolve_job(raw, preset.path.resolve(), list(overrides))


# ---------------------------------------------------------------------------- runs root


def default_runs_root() -> Path:
    return Path(os.environ.get("VISION3D_APP_RUNS") or Path(tempfile.gettempdir()) / "vision3d-app")


ACTIVE_MARKER = ".active"


def prune_runs(root: Path, keep: int) -> list[Path]:
    """Delete all but the ``keep`` most recent request folders (never one still running)."""
    if not root.exists():
        return []
    # request ids start with a timestamp: name order is age order
    dirs = sorted((d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")),
                  key=lambda d: d.name, reverse=True)
    removed = []
    for d in dirs[max(keep, 0):]:
        marker = d / ACTIVE_MARKER
        if marker.exists() and time.time() - marker.stat().st_mtime < 24 * 3600:
            continue
        shutil.rmtree(d, ignore_errors=True)
        removed.append(d)
    return removed


# ---------------------------------------------------------------------------- results


@dataclass
class Results:
    splat: Path | None = None  # the splat PLY as the pipeline wrote it (downloads)
    viewer: Path | None = None  # a copy framed for the browser viewer
    mesh: Path | None = None
    video: Path | None = None
    depths: list[tuple[Path, str]] = field(default_factory=list)
    metrics: list[list[Any]] = field(default_factory=list)  # rows: view/stage, metric, value
    downloads: list[Path] = field(default_factory=list)
    summary: str = ""


def _is_gaussian_ply(p: Path) -> bool:
    try:
        with open(p, "rb") as f:
            head = f.read(4096).decode("latin-1")
        return head.startswith("ply") and "f_dc_0" in head and "opacity" in head
    except OSError:
        return False


def _files(p: Path) -> list[Path]:
    return [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file() and not q.name.startswith("."))


def _turbo(x):
    """Turbo-like colour map (polynomial fit, Google AI 2019), x in [0, 1] -> uint8 RGB."""
    import numpy as np

    x = np.clip(x, 0.0, 1.0)[..., None]
    c = [
        (0.13572138, 4.61539260, -42.66032258, 132.13108234, -152.94239396, 59.28637943),
        (0.09140261, 2.19418839, 4.84296658, -14.18503333, 4.27729857, 2.82956604),
        (0.10667330, 12.64194608, -60.58204836, 110.36276771, -89.90310912, 27.34824973),
    ]
    out = np.concatenate([sum(k[i] * x ** i for i in range(6)) for k in c], axis=-1)
    return (np.clip(out, 0, 1) * 255).astype(np.uint8)


def colorize_depth(src: Path, dst: Path) -> Path:
    """A viewable colour PNG of a depth map (16-bit PNG, float TIFF or .npy); near = warm."""
    import numpy as np
    from PIL import Image

    if src.suffix == ".npy":
        d = np.load(src).astype(np.float32).squeeze()
    else:
        with Image.open(src) as im:
            if im.mode in ("RGB", "RGBA", "P"):  # already a visualisation
                im.convert("RGB").save(dst)
                return dst
            d = np.asarray(im).astype(np.float32).squeeze()
    valid = np.isfinite(d) & (d > 0)
    rgb = np.zeros((*d.shape, 3), np.uint8)
    if valid.any():
        lo, hi = np.percentile(d[valid], [2, 98])
        t = 1.0 - (d - lo) / max(hi - lo, 1e-9)
        rgb[valid] = _turbo(0.1 + 0.85 * np.clip(t[valid], 0, 1))  # skip turbo's dark ends
    Image.fromarray(rgb).save(dst)
    return dst


_METRIC_LABELS = {
    "psnr": "PSNR (dB)", "ssim": "SSIM", "lpips": "LPIPS", "psnr_masked": "PSNR on the object (dB)",
    "psnr_object": "PSNR on the object (dB)", "depth_abs_rel": "depth abs. rel. error",
    "depth_rmse_mm": "depth RMSE (mm)", "depth_delta1": "depth δ<1.25", "chamfer": "Chamfer distance",
    "fscore": "F-score", "chamfer_object": "Chamfer distance (object)", "fscore_object": "F-score (object)",
}
_VIEW_KEYS = ("psnr", "ssim", "lpips", "psnr_masked")
_SCENE_KEYS = ("depth_abs_rel", "depth_rmse_mm", "depth_delta1", "chamfer", "fscore", "chamfer_object", "fscore_object")


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v:  # NaN
        return None
    return round(float(v), 4)


def _metric_rows(metrics: dict[str, dict[str, Any]], report: dict[str, Any] | None = None) -> list[list[Any]]:
    """Scores on held-out views as table rows ``[view, metric, value]``.

    ``report`` is the evaluation stage's report (``{"test": {"per_view": {view: {metric: v}}, ...}}``):
    one row per held-out view and metric, then the means when there are several views.
    Scene-level numbers (depth error, Chamfer, F-score) come from the stage metrics.
    Training-view scores (``train_*``) are not held-out scores and are left out.
    """
    rows: list[list[Any]] = []
    test = (report or {}).get("test") if isinstance(report, dict) else None
    if isinstance(test, dict) and isinstance(test.get("per_view"), dict):
        per = test["per_view"]
        for view, vm in per.items():
            for k in _VIEW_KEYS:
                v = _num((vm or {}).get(k))
                if v is not None:
                    rows.append([str(view), _METRIC_LABELS[k], v])
        if len(per) > 1:
            for k in _VIEW_KEYS:
                v = _num(test.get(k))
                if v is not None:
                    rows.append([f"mean of {len(per)} views", _METRIC_LABELS[k], v])
    elif not report:  # no report: scalar held-out metrics of any stage
        for m in metrics.values():
            for k in _VIEW_KEYS + ("psnr_object",):
                v = _num((m or {}).get(k)) if isinstance(m, dict) else None
                if v is not None:
                    rows.append(["held-out views", _METRIC_LABELS[k], v])
    if rows:
        for m in metrics.values():
            for k in _SCENE_KEYS:
                v = _num((m or {}).get(k)) if isinstance(m, dict) else None
                if v is not None:
                    rows.append(["scene" if "chamfer" in k or "fscore" in k else "held-out views", _METRIC_LABELS[k], v])
    return rows


def _camera_frame(cameras_json: Path | None):
    """(camera centres [V,3], optical axes [V,3], image-up axes [V,3]) of the training views, or None."""
    import numpy as np

    try:
        meta = json.loads(Path(cameras_json).read_text()) if cameras_json else None
        views = [v for v in meta["views"] if v.get("split", "train") == "train"] or meta["views"]
        w2c = np.asarray([v["world_to_cam"] for v in views], np.float64)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if w2c.ndim != 3 or w2c.shape[1:] != (4, 4):
        return None
    R, t = w2c[:, :3, :3], w2c[:, :3, 3]
    centres = -np.einsum("vji,vj->vi", R, t)  # -R^T t
    return centres, R[:, 2, :], -R[:, 1, :]  # OpenCV: z forward, y down


# Photos' camera distance in the viewer copy; the viewer starts at 5, so the object looks a bit
# smaller than in the photos, with some of its surroundings.
VIEWER_RADIUS = 3.5


def viewer_splat(splat: Path, cameras_json: Path | None, out: Path) -> Path:
    """A copy of the splat framed for the browser viewer (display only; downloads keep the original).

    Gradio's splat viewer (gsplat.js) orbits the origin from a fixed start
    (radius 5, -y up) and ignores ``camera_position``, so a scene in metres or
    in an arbitrary SfM frame shows up tiny or sideways. The copy is
    moved so that the point the photos look at is the origin, scaled so the
    photos' cameras sit at radius :data:`VIEWER_RADIUS`, and rotated so that the photos' up is -y and
    the first photo's viewpoint is the viewer's start. SH above degree 0 are
    dropped (the viewer shows the base colour only).
    """
    import numpy as np
    import torch

    from vision3d.core.gaussians import Gaussians
    from vision3d.io.ply import read_splat_ply, write_splat_ply

    g = read_splat_ply(splat)
    means = g.means.double().numpy()
    frame = _camera_frame(cameras_json)
    R = np.eye(3)
    if frame is not None and len(frame[0]) >= 2:
        centres, axes, ups = frame
        A = sum(np.eye(3) - np.outer(d, d) for d in axes)
        b = sum((np.eye(3) - np.outer(d, d)) @ c for d, c in zip(axes, centres))
        centre = np.linalg.solve(A, b) if np.linalg.matrix_rank(A) == 3 else centres.mean(0) + axes.mean(0)
        radius = float(np.linalg.norm(centres - centre, axis=1).mean())
        up = ups.mean(0)
        up /= max(np.linalg.norm(up), 1e-12)
        h = centres[0] - centre
        h -= (h @ up) * up
        if np.linalg.norm(h) > 1e-9 * max(radius, 1e-12):
            h /= np.linalg.norm(h)
            src = np.stack([up, h, np.cross(up, h)], 1)
            a = 0.5  # the viewer's start azimuth (rad)
            dst = np.stack([[0, -1, 0], [np.sin(a), 0, -np.cos(a)], [np.cos(a), 0, np.sin(a)]], 1)
            R = dst @ src.T
    else:
        w = torch.sigmoid(g.opacity_logits).double().numpy()
        keep = w > 0.1 if (w > 0.1).sum() > 10 else np.ones_like(w, bool)
        centre = np.median(means[keep], axis=0)
        radius = 2.0 * float(np.percentile(np.linalg.norm(means[keep] - centre, axis=1), 90)) or 1.0
    scale = VIEWER_RADIUS / max(radius, 1e-9)
    new_means = (means - centre) @ R.T * scale
    # rotate each Gaussian's frame: q' = q_R * q
    qr = _quat_from_matrix(R)
    q = g.quats.double().numpy()
    w1, x1, y1, z1 = qr
    w2, x2, y2, z2 = q[:, 0], q[:, 1], q[:, 2], q[:, 3]
    quats = np.stack([w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2, w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
                      w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2, w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2], 1)
    f = torch.float32
    view = Gaussians(torch.from_numpy(new_means).to(f), torch.from_numpy(quats).to(f),
                     g.log_scales + float(np.log(scale)), g.opacity_logits, g.sh[:, :1].clone())
    return write_splat_ply(out, view)


def _quat_from_matrix(R) -> tuple[float, float, float, float]:
    """(w, x, y, z) of a 3x3 rotation matrix."""
    import numpy as np

    m = np.asarray(R, np.float64)
    tr = m[0, 0] + m[1, 1] + m[2, 2]
    if tr > 0:
        s = 2.0 * np.sqrt(tr + 1.0)
        q = (0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s)
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        q = ((m[2, 1] - m[1, 2]) / s, 0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s)
    elif m[1, 1] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
        q = ((m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s)
    else:
        s = 2.0 * np.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
        q = ((m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s)
    return tuple(float(v) for v in q)


def _depth_caption(f: Path) -> str:
    split = f.parent.name
    return f"{f.stem} (held-out)" if split == "test" else f"{f.stem} (photo)" if split == "train" else f.stem


def collect_results(run_dir: Path, artifacts: dict[str, Path], metrics: dict[str, dict[str, Any]],
                    work: Path) -> Results:
    """Find what the page shows among the run's artifacts (by name first, then by file type)."""
    res = Results()
    arts = {k: Path(v) for k, v in artifacts.items() if k != "data" and Path(v).exists()}
    files = [(name, f) for name, p in arts.items() for f in _files(p)]

    def first(pred) -> Path | None:
        return next((f for _n, f in files if pred(_n, f)), None)

    res.splat = (first(lambda n, f: f.suffix == ".splat")
                 or first(lambda n, f: f.suffix == ".ply" and ("splat" in n or "gauss" in n) and _is_gaussian_ply(f))
                 or first(lambda n, f: f.suffix == ".ply" and _is_gaussian_ply(f)))
    if res.splat is not None:
        cams = first(lambda n, f: f.name == "cameras.json")
        try:
            (work / "preview").mkdir(parents=True, exist_ok=True)
            res.viewer = viewer_splat(res.splat, cams, work / "preview" / "scene_view.ply")
        except Exception:  # the viewer then shows the splat as it is
            log.warning("could not frame %s for the viewer", res.splat, exc_info=True)
            res.viewer = res.splat
    res.mesh = first(lambda n, f: "mesh" in n and f.suffix in (".ply", ".obj", ".glb", ".stl") and f != res.splat)
    res.video = (first(lambda n, f: f.suffix in (".mp4", ".webm") and "turntable" in (n + f.name))
                 or first(lambda n, f: f.suffix in (".mp4", ".webm")))
    # the rendered depth ("depth" artifact) rather than, say, a depth prior; held-out views first
    depth_arts = [n for n in arts if n == "depth"] or [n for n in arts if "depth" in n.lower()][:1]
    depth_files = [f for n, f in files if n in depth_arts and f.suffix.lower() in (".png", ".tif", ".tiff", ".npy", ".jpg")]
    depth_files.sort(key=lambda f: (f.parent.name != "test", str(f)))
    if depth_files:
        prev = work / "preview"
        prev.mkdir(parents=True, exist_ok=True)
        for i, f in enumerate(depth_files[:12]):
            try:
                res.depths.append((colorize_depth(f, prev / f"depth_{i:02d}_{f.stem}.png"), _depth_caption(f)))
            except Exception:  # a depth map the page cannot show is not worth failing the run
                log.warning("could not colourise %s", f, exc_info=True)
    report = None
    rep = arts.get("report")
    if rep is not None and rep.is_file() and rep.suffix == ".json":
        try:
            report = json.loads(rep.read_text())
        except ValueError:
            pass
    res.metrics = _metric_rows(metrics, report)
    zip_path = Path(shutil.make_archive(str(work / f"vision3d-run-{work.name}"), "zip", root_dir=run_dir))
    res.downloads = [p for p in (res.splat, res.mesh, zip_path) if p is not None]
    return res


# ---------------------------------------------------------------------------- status box (HTML)


def _status_html(kind: str, title: str, detail: str = "", fraction: float | None = None) -> str:
    """kind: idle | ok | run | error | cancelled."""
    bar = ""
    if fraction is not None:
        pct = max(0.0, min(1.0, fraction)) * 100
        bar = (f'<div class="v3d-bar" role="progressbar" aria-valuenow="{pct:.0f}" aria-valuemin="0" '
               f'aria-valuemax="100"><div style="width:{pct:.1f}%"></div></div>')
    det = f'<div class="v3d-detail">{detail}</div>' if detail else ""
    return f'<div class="v3d-status v3d-{kind}" data-kind="{kind}"><div class="v3d-title">{html.escape(title)}</div>{bar}{det}</div>'


def _err(msg: str) -> str:
    return _status_html("error", "Cannot reconstruct", html.escape(msg))


IDLE_HTML = _status_html("idle", "Upload 2-4 photos, then press Reconstruct.", html.escape(LIMITS_TEXT) + ".")


# ---------------------------------------------------------------------------- the worker


class _Progress:
    """Shared between the runner thread (writes) and the page loop (reads)."""

    def __init__(self, stage_ids: list[str]):
        self.stage_ids = stage_ids
        self.stage: str | None = None
        self.step = 0
        self.total: int | None = None
        self.lock = threading.Lock()

    def __call__(self, stage_id: str, step: int, total: int | None) -> None:
        with self.lock:
            self.stage, self.step, self.total = stage_id, step, total

    def snapshot(self, running: str | None = None) -> tuple[str | None, int, int | None, float]:
        """(stage, step, total, overall fraction); ``running`` is the stage the manifest says runs
        (stages without progress loops report nothing through the callback)."""
        with self.lock:
            stage, step, total = self.stage, self.step, self.total
        if running is not None and running != stage:
            stage, step, total = running, 0, None
        if stage is None or stage not in self.stage_ids:
            return stage, step, total, 0.0
        k = self.stage_ids.index(stage)
        within = (step / total) if total else 0.0
        return stage, step, total, (k + within) / len(self.stage_ids)


def _running_stage(manifest: Path) -> str | None:
    """The stage the runner's manifest marks as running (None when unknown)."""
    try:
        m = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return None
    return next((sid for sid, st in m.get("stages", {}).items() if isinstance(st, dict) and st.get("status") == "running"), None)


class App:
    """State shared by every session: presets, runs root, running jobs' cancel events."""

    def __init__(self, presets: list[Preset] | None = None, overrides: Sequence[str] | None = None,
                 runs_root: Path | None = None, keep_runs: int | None = None):
        self.presets = presets if presets is not None else discover_presets(extra=_env_presets())
        self.overrides = list(overrides) if overrides is not None else _env_overrides()
        self.runs_root = Path(runs_root or default_runs_root()).resolve()
        self.keep_runs = keep_runs if keep_runs is not None else int(os.environ.get("VISION3D_APP_KEEP_RUNS", "8"))
        self.cancels: dict[str, threading.Event] = {}
        self.lock = threading.Lock()

    def preset(self, name: str | None) -> Preset:
        for p in self.presets:
            if p.name == name:
                return p
        if not self.presets:
            raise UserError("no presets found: expected configs/sparse_view_*.yaml next to the vision3d package")
        raise UserError(f"unknown preset {name!r}; pick one of {', '.join(p.name for p in self.presets)}")

    def new_request_dir(self) -> Path:
        self.runs_root.mkdir(parents=True, exist_ok=True)
        prune_runs(self.runs_root, self.keep_runs - 1)
        rid = time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]
        d = self.runs_root / rid
        d.mkdir()
        (d / ACTIVE_MARKER).touch()
        return d

    def cancel(self, session: str) -> bool:
        with self.lock:
            ev = self.cancels.get(session)
        if ev is None:
            return False
        ev.set()
        return True

    def reconstruct(self, photos: Any, masks: Any, transforms: Any, preset_name: str | None,
                    session: str = "", gr_progress: Any = None) -> Iterator[tuple[str, Results | None, bool]]:
        """Validate, run the pipeline in a worker thread, yield ``(status_html, results, running)``.

        ``results`` is set on the last item when the run succeeded.
        """
        from vision3d.pipeline.runner import Cancelled, run_job

        try:
            req = validate_inputs(photos, masks, transforms)
            preset = self.preset(preset_name)
        except UserError as e:
            yield _err(str(e)), None, False
            return
        try:
            work = self.new_request_dir()
        except OSError as e:
            log.error("cannot create a run folder under %s", self.runs_root, exc_info=True)
            yield _err(f"the server cannot create a run folder ({e.strerror or e}); try again later"), None, False
            return
        try:
            data = write_input_folder(req, work / "input")
            job = build_job(preset, data, work / "run", [*self.overrides, *preset.overrides])
        except Exception as e:
            (work / ACTIVE_MARKER).unlink(missing_ok=True)
            if not isinstance(e, UserError):
                log.error("preparing run %s failed", work.name, exc_info=True)
                e = UserError(f"could not prepare the run ({type(e).__name__}: {e})")
            yield _err(self._clean(str(e), work)), None, False
            return

        stage_ids = [s.id for s in job.stages]
        prog = _Progress(stage_ids)
        cancel = threading.Event()
        box: dict[str, Any] = {}
        with self.lock:
            if session:
                self.cancels[session] = cancel

        def work_fn() -> None:
            try:
                box["result"] = run_job(job, out=work / "run", on_progress=prog, cancel=cancel, quiet=True)
            except BaseException as e:  # reported on the page by the loop below
                box["error"] = e
                if not isinstance(e, (UserError, Cancelled)):
                    box["trace"] = traceback.format_exc()

        t0 = time.monotonic()
        worker = threading.Thread(target=work_fn, name=f"vision3d-app-{work.name}", daemon=True)
        worker.start()
        n_photos = len(req.photos)
        head = f"Reconstructing from {n_photos} photos with preset '{preset.name}'"
        try:
            last = None
            while worker.is_alive():
                worker.join(0.25)
                stage, step, total, frac = prog.snapshot(_running_stage(work / "run" / "manifest.json"))
                if cancel.is_set():
                    msg = _status_html("run", "Cancelling...", "stopping at the next step", frac)
                else:
                    msg = _status_html("run", head, self._stage_text(stage_ids, stage, step, total, time.monotonic() - t0), frac)
                if gr_progress is not None:
                    try:
                        gr_progress(frac, desc=self._stage_plain(stage_ids, stage, step, total))
                    except Exception:
                        pass
                if msg != last:
                    last = msg
                    yield msg, None, True
        finally:
            if worker.is_alive():  # the page went away: stop the run
                cancel.set()
            with self.lock:
                if self.cancels.get(session) is cancel:
                    del self.cancels[session]
            (work / ACTIVE_MARKER).unlink(missing_ok=True)

        err = box.get("error")
        if isinstance(err, Cancelled) or (err is not None and cancel.is_set()):
            yield _status_html("cancelled", "Cancelled", "The run was stopped; nothing half-written was kept. "
                               "Press Reconstruct to start again."), None, False
            return
        if isinstance(err, UserError):
            msg = self._clean(str(err), work)
            if "mask" in msg.lower() and not req.masks:
                others = [p.name for p in self.presets if p.name != preset.name and "mask" not in p.description.lower()]
                msg += (" — in this app: upload one object mask per photo (under 'Optional: object masks and camera "
                        "poses')" + (f", or pick a preset that works without masks, such as "
                           f"'{next((n for n in others if 'vanilla' in n), others[-1])}'" if others else "")
                        + ".")
            yield _err(msg), None, False
            return
        if err is not None:
            log.error("run %s failed:\n%s", work.name, box.get("trace", repr(err)))
            yield _err(f"the pipeline failed unexpectedly ({type(err).__name__}: {self._clean(str(err), work)}). "
                       f"This is a bug, not your photos; the server log has the details (run {work.name})."), None, False
            return
        result = box["result"]
        try:
            res = collect_results(result.run_dir, result.artifacts, result.metrics, work)
        except Exception as e:
            log.error("collecting results of %s failed", work.name, exc_info=True)
            yield _err(f"the run finished but its results could not be shown ({type(e).__name__}: {e})"), None, False
            return
        wall = time.monotonic() - t0
        bits = [f"{n_photos} photos", f"preset '{preset.name}'", f"{wall:.0f} s"]
        n_g = next((m.get("n_gaussians") or m.get("num_gaussians") for m in reversed(list(result.metrics.values()))
                    if isinstance(m, dict) and (m.get("n_gaussians") or m.get("num_gaussians"))), None)
        if n_g:
            bits.append(f"{int(n_g):,} Gaussians")
        psnr = [r[2] for r in res.metrics if r[1] == _METRIC_LABELS["psnr"]]
        if psnr:
            bits.append(f"held-out PSNR {psnr[-1]:.2f} dB")
        res.summary = " · ".join(bits)
        yield _status_html("ok", "Done", html.escape(res.summary) + ". Drag the scene to orbit it; downloads are below.", 1.0), res, False

    @staticmethod
    def _clean(msg: str, work: Path) -> str:
        """Drop this request's folder prefix from messages: users know their photos by name."""
        for prefix in (str(work / "input") + os.sep, str(work / "input"), str(work) + os.sep):
            msg = msg.replace(prefix, "")
        return msg

    @staticmethod
    def _stage_plain(stage_ids: list[str], stage: str | None, step: int, total: int | None) -> str:
        if stage is None:
            return "starting"
        k = stage_ids.index(stage) + 1 if stage in stage_ids else 0
        it = f": {step}/{total}" if total else f": {step}" if step else ""
        return f"stage {k}/{len(stage_ids)} {stage}{it}"

    @classmethod
    def _stage_text(cls, stage_ids: list[str], stage: str | None, step: int, total: int | None, elapsed: float) -> str:
        if stage is None:
            return f"Starting the pipeline ({' → '.join(stage_ids)}) · {elapsed:.0f} s elapsed"
        k = stage_ids.index(stage) + 1 if stage in stage_ids else 0
        it = f" — iteration {step}/{total}" if total else f" — step {step}" if step else ""
        return f"Stage {k}/{len(stage_ids)}: <b>{html.escape(stage)}</b>{it} · {elapsed:.0f} s elapsed"


# ---------------------------------------------------------------------------- the page

CSS = """
#v3d-header h1 { margin-bottom: 0.1em; }
#v3d-header p { margin-top: 0.2em; }
.v3d-status { border-radius: 8px; padding: 10px 14px; border: 1px solid var(--border-color-primary);
              background: var(--block-background-fill); }
.v3d-status .v3d-title { font-weight: 600; }
.v3d-status .v3d-detail { margin-top: 4px; font-size: 0.92em; }
.v3d-ok { border-color: #16a34a; background: rgba(22,163,74,0.08); }
.v3d-error { border-color: #dc2626; background: rgba(220,38,38,0.08); }
.v3d-error .v3d-title { color: #dc2626; }
.v3d-cancelled { border-color: #d97706; background: rgba(217,119,6,0.08); }
.v3d-bar { height: 8px; border-radius: 4px; background: var(--border-color-primary); margin-top: 6px; overflow: hidden; }
.v3d-bar > div { height: 100%; background: var(--color-accent); transition: width 0.3s; }
footer { display: none !important; }
"""

INTRO = """\
# vision3d · photos to 3D
Turn **2–4 photos** of an object into a 3D Gaussian-splat scene you can orbit, with a turntable video,
depth maps and, when you supply poses, scores on held-out views.

1. Upload photos taken from different sides (masks and a nerfstudio `transforms.json` are optional).
2. Pick a preset: which sparse-view regularisers to use (the note under it says what each one does).
3. Press **Reconstruct**, then drag the result to orbit it.
"""


NO_HELDOUT = ("*No held-out views in this run.* To score the reconstruction on a view it was not trained on, "
              "upload a `transforms.json` whose `test_filenames` names one of your photos.")


def _theme():
    import gradio as gr

    return gr.themes.Default(
        primary_hue="indigo",
        font=["ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "Roboto", "Helvetica Neue", "Arial", "sans-serif"],
        font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"],
    )


def _example_from(folder: Path) -> tuple[list[Any], str] | None:
    """An example row (photos, masks, transforms) and its label from a sample data folder.

    With a ``transforms.json`` that lists held-out views, the example is
    ``MAX_PHOTOS - 1`` training photos plus one held-out photo, so the run is scored.
    """
    img_dir = folder / "images" if (folder / "images").is_dir() else folder
    imgs = sorted(p for p in img_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if len(imgs) < MIN_PHOTOS:
        return None
    tf = folder / "transforms.json"
    held_out = False
    if tf.is_file():
        try:
            meta = json.loads(tf.read_text())
        except ValueError:
            return None
        by_name = {p.name: p for p in imgs}
        train = [by_name[Path(f).name] for f in meta.get("train_filenames", []) if Path(f).name in by_name]
        test = [by_name[Path(f).name] for f in meta.get("test_filenames", []) if Path(f).name in by_name]
        if len(train) >= MIN_PHOTOS and test:
            imgs, held_out = train[: MAX_PHOTOS - 1] + test[:1], True
        else:
            imgs = (train or imgs)[:MAX_PHOTOS]
    else:
        tf = None
        imgs = imgs[:MAX_PHOTOS]
    mdir = folder / "masks"
    masks = [mdir / f"{p.stem}.png" for p in imgs] if mdir.is_dir() else []
    masks = masks if masks and all(m.is_file() for m in masks) else None
    what = [f"{len(imgs)} photos"] + (["poses"] if tf else ["poses recovered"]) + (["masks"] if masks else [])
    label = f"{folder.name}: " + ", ".join(what) + (", 1 held out for scoring" if held_out else "")
    return [[str(p) for p in imgs], [str(m) for m in masks] if masks else None, str(tf) if tf else None], label


def _examples() -> tuple[list[list[Any]], list[str]]:
    """Examples from ``assets/*`` (photo folders without poses first: the common case)."""
    found = []
    for d in sorted(p for p in ASSETS_DIR.iterdir() if p.is_dir()) if ASSETS_DIR.is_dir() else []:
        try:
            ex = _example_from(d)
        except OSError:
            continue
        if ex:
            found.append(ex)
    found.sort(key=lambda e: e[0][2] is not None)
    return [e[0] for e in found], [e[1] for e in found]


def build_app(app: App | None = None) -> "gr.Blocks":  # noqa: F821
    """The page. ``app`` carries presets, overrides and the runs root (defaults from the environment)."""
    import gradio as gr

    app = app or App()
    names = [p.name for p in app.presets]
    default = names[0] if names else None
    preset_info = {p.name: p.description for p in app.presets}

    with gr.Blocks(title="vision3d · photos to 3D", delete_cache=(3600, 6 * 3600), analytics_enabled=False) as demo:
        gr.Markdown(INTRO, elem_id="v3d-header")
        with gr.Row(equal_height=False):
            with gr.Column(scale=2, min_width=320):
                photos = gr.File(label=f"Photos ({MIN_PHOTOS}–{MAX_PHOTOS})", file_count="multiple",
                                 file_types=list(IMAGE_SUFFIXES), elem_id="v3d-photos", height=150)
                thumbs = gr.Gallery(show_label=False, columns=4, rows=1, height=110, interactive=False,
                                    allow_preview=False, object_fit="cover", elem_id="v3d-thumbs", visible=False,
                                    buttons=[])
                with gr.Accordion("Optional: object masks and camera poses", open=False):
                    masks = gr.File(label="Masks (one per photo, white = object)", file_count="multiple",
                                    file_types=[".png", ".jpg", ".jpeg", ".webp", ".bmp"], elem_id="v3d-masks", height=120)
                    transforms = gr.File(label="transforms.json (nerfstudio poses)", file_count="single",
                                         file_types=[".json"], elem_id="v3d-transforms", height=90)
                preset = gr.Dropdown(names, value=default, label="Preset", elem_id="v3d-preset",
                                     info=preset_info.get(default) or "how long to train, and which regulariser")
                with gr.Row():
                    run_btn = gr.Button("Reconstruct", variant="primary", elem_id="v3d-run", scale=3)
                    cancel_btn = gr.Button("Cancel", variant="stop", elem_id="v3d-cancel", interactive=False, scale=1)
                status = gr.HTML(IDLE_HTML, elem_id="v3d-status")
                ex, ex_labels = _examples()
                if ex:
                    gr.Examples(ex, inputs=[photos, masks, transforms], example_labels=ex_labels,
                                label="Sample photos: click one to load it, then press Reconstruct",
                                cache_examples=False, elem_id="v3d-examples")
            with gr.Column(scale=3, min_width=420):
                viewer = gr.Model3D(label="Gaussian splat scene (drag to orbit, scroll to zoom)", elem_id="v3d-viewer",
                                    height=440, interactive=False, clear_color=(0.96, 0.96, 0.97, 1.0))
                with gr.Tabs():
                    with gr.Tab("Turntable video"):
                        video = gr.Video(label="Turntable", elem_id="v3d-video", interactive=False, autoplay=True,
                                         loop=True, height=300)
                    with gr.Tab("Depth maps"):
                        depths = gr.Gallery(label="Rendered depth (near = red, far = blue)", elem_id="v3d-depths",
                                            columns=4, height=300, interactive=False)
                    with gr.Tab("Held-out metrics"):
                        metrics_note = gr.Markdown(NO_HELDOUT, elem_id="v3d-metrics-note")
                        metrics = gr.Dataframe(headers=["view", "metric", "value"], elem_id="v3d-metrics",
                                               interactive=False, visible=False,
                                               label="Scores on views held out from training")
                downloads = gr.File(label="Downloads: splat PLY, mesh, whole run (zip)", file_count="multiple",
                                    interactive=False, elem_id="v3d-downloads", height=140)

        outputs = [status, viewer, video, depths, metrics, metrics_note, downloads, run_btn, cancel_btn]

        def on_preset(name):
            return gr.update(info=preset_info.get(name) or "")

        preset.change(on_preset, preset, preset, concurrency_limit=None, show_progress="hidden")

        def on_photos(files):
            if not files:
                return IDLE_HTML, gr.update(value=None, visible=False)
            try:
                ph = validate_photos(files)
            except UserError as e:
                return _err(str(e)), gr.update(value=None, visible=False)
            msg = _status_html("idle", f"{len(ph)} photos ready ({ph[0].width}×{ph[0].height} px).",
                               "Press Reconstruct.")
            return msg, gr.update(value=[(str(p.path), p.path.name) for p in ph], visible=True)

        photos.change(on_photos, photos, [status, thumbs], concurrency_limit=None, show_progress="hidden")

        def run(photo_files, mask_files, tf_file, preset_name, request: gr.Request, progress=gr.Progress()):
            session = getattr(request, "session_hash", "") or ""
            empty = (None, None, None, gr.update(value=None, visible=False), NO_HELDOUT, None)
            cleared = False  # the previous run's results go when this one starts
            for msg, res, running in app.reconstruct(photo_files, mask_files, tf_file, preset_name, session, progress):
                btns = (gr.update(interactive=not running), gr.update(interactive=running))
                if res is None:
                    yield (msg, *((gr.skip(),) * 6 if cleared else empty), *btns)
                    cleared = True
                else:
                    table = (gr.update(value=res.metrics, visible=True) if res.metrics
                             else gr.update(value=None, visible=False))
                    yield (msg, str(res.viewer or res.splat) if res.splat else None, str(res.video) if res.video else None,
                           [(str(p), c) for p, c in res.depths] or None, table,
                           "" if res.metrics else NO_HELDOUT, [str(p) for p in res.downloads], *btns)

        run_btn.click(run, [photos, masks, transforms, preset], outputs, concurrency_limit=1,
                      concurrency_id="reconstruct", show_progress="full", show_progress_on=[viewer],
                      api_visibility="private")

        def do_cancel(request: gr.Request):
            if app.cancel(getattr(request, "session_hash", "") or ""):
                gr.Info("Cancelling: the run stops at its next step.")
            return gr.update(interactive=False)

        cancel_btn.click(do_cancel, None, cancel_btn, concurrency_limit=None, queue=False, api_visibility="private")
    demo.queue(default_concurrency_limit=1, max_size=16)
    demo.vision3d_app = app  # type: ignore[attr-defined]
    return demo


def launch_kwargs(app: App) -> dict[str, Any]:
    """Arguments for ``Blocks.launch`` shared by :func:`launch` and the tests."""
    return dict(theme=_theme(), css=CSS, allowed_paths=[str(app.runs_root), str(ASSETS_DIR)], show_error=False,
                footer_links=[], max_file_size="64mb", enable_monitoring=False, ssr_mode=False, quiet=True)


def launch(host: str = "127.0.0.1", port: int = 7860, *, prevent_thread_lock: bool = False,
           app: App | None = None):
    """Start the app on ``http://host:port`` (blocks unless ``prevent_thread_lock``). Returns the Blocks."""
    app = app or App()
    demo = build_app(app)
    print(f"vision3d app: http://{host}:{port}  (runs under {app.runs_root})", flush=True)
    demo.launch(server_name=host, server_port=port, share=False, inbrowser=False,
                prevent_thread_lock=prevent_thread_lock, **launch_kwargs(app))
    return demo
