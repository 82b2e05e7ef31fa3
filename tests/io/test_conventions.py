"""Camera conventions agree: ours (OpenCV) <-> nerfstudio (OpenGL c2w) <-> COLMAP.

Each format is re-projected with its *own* convention (written out here
independently of vision3d's converters), and all must land on the same pixels.
"""

import json

import numpy as np
import pycolmap
import torch

from vision3d.core.cameras import Cameras
from vision3d.io.colmap import read_colmap, to_reconstruction, write_colmap
from vision3d.io.nerfstudio import opencv_w2c_to_opengl_c2w, opengl_c2w_to_opencv_w2c, write_transforms


def random_rig(n=5, seed=0):
    rng = np.random.default_rng(seed)
    w2c = np.zeros((n, 4, 4))
    for i in range(n):
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        q *= np.sign(np.linalg.det(q))  # proper rotation
        w2c[i, :3, :3] = q
        w2c[i, :3, 3] = [0.0, 0.0, 4.0] + rng.normal(size=3) * 0.3  # world origin in front
        w2c[i, 3, 3] = 1
    K = np.array([[[120.0 + i, 0.0, 64.3], [0.0, 118.0, 47.9], [0.0, 0.0, 1.0]] for i in range(n)])
    cams = Cameras(torch.tensor(w2c, dtype=torch.float32), torch.tensor(K, dtype=torch.float32), 128, 96,
                   [f"{i}.png" for i in range(n)])
    pts = rng.normal(size=(200, 3)) * 0.8
    return cams, pts


def test_nerfstudio_opengl_projection_agrees(tmp_path):
    cams, pts = random_rig()
    uv_ours, z_ours = cams.project(torch.tensor(pts, dtype=torch.float32))
    write_transforms(tmp_path / "transforms.json", cams, [f"{i}.png" for i in range(len(cams))])
    meta = json.loads((tmp_path / "transforms.json").read_text())
    for i, fr in enumerate(meta["frames"]):
        c2w = np.array(fr["transform_matrix"])
        p_cam = (np.linalg.inv(c2w) @ np.c_[pts, np.ones(len(pts))].T).T[:, :3]
        x, y, z = p_cam.T  # OpenGL camera: x right, y up, looking down -z
        u = fr["fl_x"] * x / -z + fr["cx"]
        v = -fr["fl_y"] * y / -z + fr["cy"]  # image rows grow downwards
        np.testing.assert_allclose(np.c_[u, v], uv_ours[i].numpy(), atol=2e-3)
        np.testing.assert_allclose(-z, z_ours[i].numpy(), atol=1e-5)
    # and the converters are inverse of each other
    c2w = opencv_w2c_to_opengl_c2w(cams.world_to_cam)
    assert torch.allclose(opengl_c2w_to_opencv_w2c(c2w), cams.world_to_cam, atol=1e-6)


def test_colmap_projection_agrees(tmp_path):
    cams, pts = random_rig()
    uv_ours, _ = cams.project(torch.tensor(pts, dtype=torch.float32))
    rec = to_reconstruction(cams)
    for img in rec.images.values():
        i = int(img.name.split(".")[0])
        cam = rec.cameras[img.camera_id]
        p_cam = (img.cam_from_world().matrix() @ np.c_[pts, np.ones(len(pts))].T).T
        uv = cam.img_from_cam(p_cam)  # pycolmap's own projection
        np.testing.assert_allclose(uv, uv_ours[i].numpy(), atol=2e-3)
    # through files and back, both ways
    write_colmap(tmp_path / "m", cams)
    back = read_colmap(tmp_path / "m")
    uv_back, _ = back.cameras.project(torch.tensor(pts, dtype=torch.float32))
    order = [back.cameras.names.index(n) for n in cams.names]
    np.testing.assert_allclose(uv_back[order].numpy(), uv_ours.numpy(), atol=2e-3)


def test_colmap_pixel_centres_are_at_half(tmp_path):
    """COLMAP's SIFT puts the centre of pixel (row r, col c) at (c + 0.5, r + 0.5), like us."""
    from PIL import Image

    yy, xx = np.mgrid[0:96, 0:128].astype(float)
    img = np.full((96, 128), 0.2)
    centres = [(40, 30), (90, 60)]  # (col, row) pixel indices of blob centres
    for c, r in centres:
        img += 0.8 * np.exp(-((yy - r) ** 2 + (xx - c) ** 2) / (2 * 3.0**2))
    (tmp_path / "img").mkdir()
    Image.fromarray((np.clip(img, 0, 1) * 255).round().astype(np.uint8)).save(tmp_path / "img" / "a.png")
    opts = pycolmap.FeatureExtractionOptions()
    opts.num_threads = 1
    pycolmap.extract_features(tmp_path / "db.db", tmp_path / "img", extraction_options=opts,
                              device=pycolmap.Device.cpu)
    db = pycolmap.Database.open(str(tmp_path / "db.db"))
    kp = db.read_keypoints(1)[:, :2]
    db.close()
    for c, r in centres:
        d = np.linalg.norm(kp - [c + 0.5, r + 0.5], axis=1)
        assert d.min() < 0.05, (c, r, kp)


def test_pixels_floor_to_the_containing_pixel_and_flag_what_is_outside():
    K = torch.tensor([[[10.0, 0, 4.0], [0, 10.0, 3.0], [0, 0, 1]]])
    cams = Cameras(torch.eye(4)[None], K, 8, 6)
    pts = torch.tensor([[0.0, 0.0, 1.0],       # principal point (4, 3): pixel centre at +0.5 -> column 4, row 3
                        [-0.399, -0.299, 1.0],  # (0.01, 0.01) -> pixel (0, 0)
                        [0.5, 0.0, 1.0],        # u = 9: right of the image
                        [0.0, 0.0, -1.0]])      # behind the camera
    u, v, z, inside = cams.pixels(pts)
    assert inside[0].tolist() == [True, True, False, False]
    assert (u[0, :2].tolist(), v[0, :2].tolist()) == ([4, 0], [3, 0])
    assert int(u[0, 2]) == 7  # clamped into the image so that it can index a map
    assert torch.allclose(z[0], torch.tensor([1.0, 1.0, 1.0, -1.0]))
