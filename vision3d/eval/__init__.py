"""Metrics (pure functions; docs/ARCHITECTURE.md, Layers).

* :mod:`~vision3d.eval.views`: PSNR / SSIM / LPIPS of rendered views (``vision3d eval views``);
* :mod:`~vision3d.eval.lpips`: the LPIPS v0.1 network (AlexNet / VGG16) and its packaged weights;
* :mod:`~vision3d.eval.geometry`: Chamfer distance and F-score of point sets;
* :mod:`~vision3d.eval.depth`: depth-completion metrics (``vision3d eval depth``);
* :mod:`~vision3d.eval.kitti`, :mod:`~vision3d.eval.waymo`: KITTI AP and Waymo AP/APH;
* :mod:`~vision3d.eval.stages`: the ``evaluate_views`` pipeline stage.
"""
