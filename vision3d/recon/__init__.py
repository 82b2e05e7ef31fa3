"""Photos to 3D: sparse-view Gaussian splatting from 2-4 photos.

Modules (the pipeline ``pipelines/sparse_view_splat.yaml`` runs them as stages,
see :mod:`vision3d.recon.stages`):

* :mod:`~vision3d.recon.views`   - load a view set (transforms.json, COLMAP, photo folder)
* :mod:`~vision3d.recon.poses`   - few-view pycolmap SfM, known-pose triangulation, Sim(3) alignment
* :mod:`~vision3d.recon.init`    - SfM / depth / visual-hull / random initial Gaussians
* :mod:`~vision3d.recon.losses`  - photometric loss and the sparse-view regularisers
* :mod:`~vision3d.recon.trainer` - the optimisation loop on :mod:`vision3d.backend`
* :mod:`~vision3d.recon.render`  - depth colourisation, turntable cameras, video
"""
