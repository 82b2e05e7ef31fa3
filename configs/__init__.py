"""Runnable job configs (``<job>.yaml``: copy one and edit it), installed as ``vision3d.configs``.

The files live at the top of the repository; setup.py maps this folder into the
package so that installed copies (the app's presets) find them with importlib.resources.
"""
