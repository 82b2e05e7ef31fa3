"""The sparse_voxel_surface pipeline end to end on a tiny scene (few iterations): a mesh in mesh/, scored."""

import json

from vision3d.io.mesh import load_mesh
from vision3d.pipeline.config import REPO_ROOT, load_job
from vision3d.pipeline.runner import run_job


def test_preset_runs_end_to_end(tiny_scene, tmp_path):
    job = load_job(REPO_ROOT / "configs" / "sparse_voxel_surface.yaml",
                   [f"data={tiny_scene}", "stages.train.fit={iterations: 20, init_resolution: 8, subdivide_at: [10], "
                    "depth_l1: 0.5}", "stages.mesh.orbit_views=4", "stages.evaluate.chamfer_points=1000"])
    assert [s.id for s in job.stages] == ["views", "cameras", "depth_prior", "train", "render", "mesh", "evaluate"]
    res = run_job(job, out=tmp_path / "run", quiet=True)
    run = res.run_dir
    m = json.loads((run / "metrics.json").read_text())
    assert m["train"]["n_voxels"] > 512 and m["train"]["loss_last"] < m["train"]["loss_first"]
    assert load_mesh(run / "mesh" / "mesh" / "mesh.ply").num_faces > 10
    e = m["evaluate"]
    assert 5 < e["psnr"] < 60 and e["mesh_chamfer"] > 0 and 0 <= e["mesh_fscore"] <= 1
