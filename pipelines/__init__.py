"""Named pipeline definitions (``<name>.yaml``), installed as ``vision3d.pipelines``.

The files live at the top of the repository; setup.py maps this folder into the
package so that installed copies find them with importlib.resources
(see vision3d.pipeline.config.available_pipelines).
"""
