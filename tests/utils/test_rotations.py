"""Quaternion helpers in the (w, x, y, z) convention."""

import numpy as np
from scipy.spatial.transform import Rotation

from vision3d.utils.rotations import quat_from_matrix, quat_multiply


def _matrix(q):
    w, x, y, z = q / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def test_quat_from_matrix_round_trip_and_scalar_first():
    Rs = Rotation.random(20, random_state=0).as_matrix()
    q = quat_from_matrix(Rs)
    assert q.shape == (20, 4)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1, atol=1e-12)
    for R, qi in zip(Rs, q):
        np.testing.assert_allclose(_matrix(qi), R, atol=1e-10)
    np.testing.assert_allclose(np.abs(quat_from_matrix(np.eye(3))), [1, 0, 0, 0], atol=1e-12)
    q90 = quat_from_matrix(Rotation.from_euler("z", 90, degrees=True).as_matrix())
    np.testing.assert_allclose(q90 * np.sign(q90[0]), [np.sqrt(0.5), 0, 0, np.sqrt(0.5)], atol=1e-12)


def test_product_composes_rotations_and_keeps_norms():
    rng = np.random.default_rng(0)
    a = quat_from_matrix(Rotation.random(random_state=1).as_matrix())
    b = rng.normal(size=(7, 4)) * 3  # unnormalised, like a Gaussian's quats
    ab = quat_multiply(a, b)
    np.testing.assert_allclose(np.linalg.norm(ab, axis=1), np.linalg.norm(b, axis=1), rtol=1e-12)
    for bi, abi in zip(b, ab):
        np.testing.assert_allclose(_matrix(abi), _matrix(a) @ _matrix(bi), atol=1e-10)
