"""The status box above the Reconstruct button: HTML for each state of a request.

``data-kind`` on the outer element (idle | run | ok | error | cancelled) is what
the page's CSS and the browser tests key on.
"""

from __future__ import annotations

import html
import re
from typing import Sequence

from vision3d.app.uploads import LIMITS_TEXT, Photo


def status_html(kind: str, title: str, detail: str = "", fraction: float | None = None) -> str:
    """The box: ``kind`` is idle | ok | run | error | cancelled; ``detail`` is HTML (escape text first)."""
    bar = ""
    if fraction is not None:
        pct = max(0.0, min(1.0, fraction)) * 100
        bar = (f'<div class="v3d-bar" role="progressbar" aria-valuenow="{pct:.0f}" aria-valuemin="0" '
               f'aria-valuemax="100"><div style="width:{pct:.1f}%"></div></div>')
    det = f'<div class="v3d-detail">{detail}</div>' if detail else ""
    return f'<div class="v3d-status v3d-{kind}" data-kind="{kind}"><div class="v3d-title">{html.escape(title)}</div>{bar}{det}</div>'


def error_html(msg: str) -> str:
    """A one-line error (plain text) in the box."""
    return status_html("error", "Cannot reconstruct", html.escape(msg))


IDLE_HTML = status_html("idle", "Upload 2-4 photos, then press Reconstruct.", html.escape(LIMITS_TEXT) + ".")

POSES_HINT = ("In this app: upload photos with more overlap (neighbouring photos at most ~30-45° apart, the object "
              "textured and filling most of the frame), or upload a transforms.json with the camera poses "
              "(under 'Optional: object masks and camera poses').")


def photos_named(msg: str, photos: Sequence[Photo]) -> list[tuple[Photo, str]]:
    """The uploaded photos an error message names, each with the reason in parentheses after its name.

    The pipeline names a photo by its file name or its stem (``IMG_1.jpg`` or ``IMG_1``),
    possibly followed by ``(reason)``, e.g. ``IMG_1 (best pair: 12 matches)``.

    Returns:
        ``(photo, reason)`` in upload order; ``reason`` is ``""`` when none follows the name.
    """
    out = []
    for ph in photos:
        stem = re.escape(ph.name.rsplit(".", 1)[0])
        m = re.search(rf"(?<![\w.-]){stem}(?:\.\w+)?(?![\w-])(?:\s*\(([^()]*)\))?", msg)
        if m:
            out.append((ph, (m.group(1) or "").strip()))
    return out


def pose_failure_html(msg: str, photos: Sequence[Photo]) -> str:
    """Pose recovery refused the photos: which ones failed and why, then the pipeline's message.

    Args:
        msg: the cameras stage's one-line :class:`~vision3d.errors.UserError` text.
        photos: the request's photos (matched to the message by name; shown by their upload names).
    """
    named = photos_named(msg, photos)
    items = "".join(
        f'<li data-photo="{html.escape(ph.path.name)}"><b>{html.escape(ph.path.name)}</b>'
        + (f" — {html.escape(reason)}" if reason else "") + "</li>"
        for ph, reason in named)
    failed = (f'<div>Photos that failed ({len(named)} of {len(photos)}):</div>'
              f'<ul class="v3d-failed">{items}</ul>') if named else ""
    detail = (f'{failed}<div class="v3d-why">{html.escape(msg)}</div>'
              f'<div class="v3d-hint">{html.escape(POSES_HINT)}</div>')
    return status_html("error", "Camera poses could not be recovered from these photos", detail)
