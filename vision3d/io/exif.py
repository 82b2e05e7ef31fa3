"""Camera facts from a photo's EXIF: which camera took it and its focal length, as a focal prior.

Pose recovery from 2-4 photos needs a starting focal length; a phone photo's EXIF usually
states it. In order of preference (:func:`focal_prior`):

1. ``FocalLengthIn35mmFilm``: the focal length a 36 x 24 mm frame would need for the same
   angle of view. We take the equivalence on the frame diagonal (43.27 mm), the usual
   definition of "35 mm equivalent", so for a photo of ``w`` x ``h`` pixels
   ``f_px = f35 * hypot(w, h) / 43.27`` (any orientation, any aspect ratio).
2. ``FocalLength`` (mm, the real lens) with the sensor width: from the EXIF focal-plane
   resolution tags when present (``sensor_width = original_width / FocalPlaneXResolution``),
   else from :data:`PHONE_SENSORS` by make/model; ``f_px = f_mm / sensor_width_mm * w_long``.
3. Neither: None (the caller uses its default prior, ``focal_factor * max(w, h)``).

The focal is returned for the photo *as displayed* at a given size (EXIF orientation
applied, downscaled to the working size): the longer side of the picture is the longer side
of the sensor whichever way the phone was held.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

#: The 36 x 24 mm frame's diagonal in mm (the 35 mm equivalence of FocalLengthIn35mmFilm).
FULL_FRAME_DIAGONAL_MM = math.hypot(36.0, 24.0)

#: ``(make, model, FocalLength mm) -> FocalLengthIn35mmFilm`` of common phones' main cameras, as
#: these phones write the pair into their own photos' EXIF; the sensor follows from the ratio
#: (diagonal = 43.27 mm x f / f35). Used only for photos whose EXIF kept ``FocalLength`` but lost
#: the 35 mm value (some editors and messengers strip it). Lower-case make and model.
#: The pairs of the iPhone 7 Plus (3.99 / 28 mm) and XS Max (4.25 / 26 mm) were checked against
#: published EXIF dumps of their photos; the others are the makers' specifications. Extend it
#: with the pair your phone writes (``exiftool -FocalLength -FocalLengthIn35mmFormat``).
PHONE_SENSORS: dict[tuple[str, str, float], float] = {
    ("apple", "iphone 7 plus", 3.99): 28.0,
    ("apple", "iphone x", 4.0): 28.0,
    ("apple", "iphone xs max", 4.25): 26.0,
    ("apple", "iphone 11", 4.25): 26.0,
    ("apple", "iphone 12", 4.2): 26.0,
    ("apple", "iphone 13", 5.1): 26.0,
}

# EXIF tag ids (Exif 2.3 / CIPA DC-008)
_MAKE, _MODEL, _ORIENTATION, _EXIF_IFD = 0x010F, 0x0110, 0x0112, 0x8769
_FOCAL, _FOCAL_35 = 0x920A, 0xA405
_FP_XRES, _FP_UNIT = 0xA20E, 0xA210
_PIXEL_X, _PIXEL_Y = 0xA002, 0xA003
_UNIT_MM = {2: 25.4, 3: 10.0, 4: 1.0, 5: 1e-3}  # FocalPlaneResolutionUnit: inch, cm, mm, micrometre


@dataclass
class ExifCamera:
    """What a photo's EXIF says about its camera (None: not stated).

    Attributes:
        make, model: camera maker and model, stripped.
        focal_mm: ``FocalLength``, mm. focal_35mm: ``FocalLengthIn35mmFilm``, mm.
        sensor_width_mm: from the focal-plane resolution tags, mm (longer sensor side).
        orientation: EXIF orientation 1-8 (5-8 turn the picture by 90 degrees).
    """

    make: str | None = None
    model: str | None = None
    focal_mm: float | None = None
    focal_35mm: float | None = None
    sensor_width_mm: float | None = None
    orientation: int = 1

    @property
    def camera_id(self) -> str | None:
        """``"make model"`` when either is known: photos of different ids are different cameras."""
        name = " ".join(x for x in (self.make, self.model) if x)
        return name or None


def _number(v) -> float | None:
    try:
        x = float(v)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return x if math.isfinite(x) and x > 0 else None


def _text(v) -> str | None:
    if isinstance(v, bytes):
        v = v.decode("ascii", "ignore")
    if not isinstance(v, str):
        return None
    v = v.replace("\x00", "").strip()
    return v or None


def read_exif(path: str | os.PathLike) -> ExifCamera:
    """The camera facts in ``path``'s EXIF (an :class:`ExifCamera` of Nones when it has none).

    Reads the header only (no pixels are decoded). Raises :class:`~vision3d.errors.UserError`
    only for files that are not images (see :func:`vision3d.io.images.open_image`).
    """
    from vision3d.io.images import open_image

    with open_image(path) as im:
        ex = im.getexif()
        sub = ex.get_ifd(_EXIF_IFD)
        size = im.size
    out = ExifCamera(make=_text(ex.get(_MAKE)), model=_text(ex.get(_MODEL)),
                     focal_mm=_number(sub.get(_FOCAL)), focal_35mm=_number(sub.get(_FOCAL_35)),
                     orientation=int(ex.get(_ORIENTATION, 1) or 1))
    xres, unit = _number(sub.get(_FP_XRES)), _UNIT_MM.get(int(sub.get(_FP_UNIT, 2) or 2))
    if xres and unit:
        # FocalPlaneXResolution counts pixels per unit along the image width of the original file
        width_px = _number(sub.get(_PIXEL_X)) or float(size[0])
        height_px = _number(sub.get(_PIXEL_Y)) or float(size[1])
        out.sensor_width_mm = max(width_px, height_px) / xres * unit
    return out


def sensor_width_mm(exif: ExifCamera) -> float | None:
    """The longer sensor side in mm: from the EXIF tags, else from :data:`PHONE_SENSORS`, else None."""
    if exif.sensor_width_mm:
        return exif.sensor_width_mm
    if exif.make and exif.model and exif.focal_mm:
        f35 = PHONE_SENSORS.get((exif.make.lower(), exif.model.lower(), round(exif.focal_mm, 2)))
        if f35:
            diag = FULL_FRAME_DIAGONAL_MM * exif.focal_mm / f35
            return diag * 4 / 5  # phone main cameras are 4:3: the longer side is 4/5 of the diagonal
    return None


def focal_prior(exif: ExifCamera, width: int, height: int) -> tuple[float, str] | None:
    """Focal length in pixels for the photo shown at ``width`` x ``height`` pixels (EXIF
    orientation applied), and where it came from (``"exif_35mm"`` or ``"exif_sensor"``);
    None when the EXIF does not say (see the module docstring)."""
    if exif.focal_35mm:
        return exif.focal_35mm * math.hypot(width, height) / FULL_FRAME_DIAGONAL_MM, "exif_35mm"
    sw = sensor_width_mm(exif)
    if exif.focal_mm and sw:
        return exif.focal_mm / sw * max(width, height), "exif_sensor"
    return None
