"""The page: the Gradio Blocks (uploads, preset, Reconstruct / Cancel, viewer, tabs) and ``launch``.

Event handlers only move values between the widgets and :class:`vision3d.app.jobs.App`;
the checks live in :mod:`vision3d.app.uploads`, the runs in :mod:`vision3d.app.jobs`.
"""

# No ``from __future__ import annotations`` here: gradio reads the handlers' annotations
# (``request: gr.Request``) at run time to know what to pass them.
import json
from pathlib import Path
from typing import Any

from vision3d.app.jobs import App
from vision3d.app.status import IDLE_HTML, error_html, status_html
from vision3d.app.uploads import IMAGE_SUFFIXES, MAX_PHOTOS, MIN_PHOTOS, describe_photos, validate_photos
from vision3d.errors import UserError

# sample photos offered as examples: in a source checkout only (a wheel ships no assets/)
ASSETS_DIR = Path(__file__).resolve().parents[2] / "assets"

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
.v3d-failed { margin: 4px 0 6px 0; padding-left: 1.3em; }
.v3d-why { font-size: 0.9em; opacity: 0.85; }
.v3d-hint { margin-top: 6px; }
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


def build_app(app: App | None = None, probe_root: Path | None = None) -> "gr.Blocks":  # noqa: F821
    """The page. ``app`` carries presets, overrides and the runs root (defaults from the environment);
    ``probe_root``: where the Probe tab looks for sweeps (default :func:`vision3d.app.probe_tab.default_probe_root`)."""
    import gradio as gr

    from vision3d.app.probe_tab import probe_tab

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
                    with gr.Tab("Probe"):
                        probe_tab(probe_root)
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
                return error_html(str(e)), gr.update(value=None, visible=False)
            msg = status_html("idle", f"{len(ph)} photos ready ({describe_photos(ph)}).", "Press Reconstruct.")
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
           app: App | None = None, probe_root: Path | None = None):
    """Start the app on ``http://host:port`` (blocks unless ``prevent_thread_lock``). Returns the Blocks."""
    app = app or App()
    demo = build_app(app, probe_root)
    print(f"vision3d app: http://{host}:{port}  (runs under {app.runs_root})", flush=True)
    demo.launch(server_name=host, server_port=port, share=False, inbrowser=False,
                prevent_thread_lock=prevent_thread_lock, **launch_kwargs(app))
    return demo
