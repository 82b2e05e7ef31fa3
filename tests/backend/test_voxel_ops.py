"""Coordinate hashing / unique and scatter reductions, against plain loops."""

from __future__ import annotations

import pytest
import torch

from vision3d.backend import (
    hash_coords,
    scatter_count,
    scatter_max,
    scatter_mean,
    scatter_sum,
    unhash_coords,
    unique_coords,
    unique_keys,
    voxel_mean,
)
from vision3d.errors import UserError


def test_hash_roundtrip_and_order():
    g = torch.Generator().manual_seed(0)
    shape = (3, 7, 11, 13)
    coords = torch.stack([torch.randint(0, s, (500,), generator=g) for s in shape], 1).int()
    keys = hash_coords(coords, shape)
    assert keys.dtype == torch.int64
    assert torch.equal(unhash_coords(keys, shape), coords)
    # row-major: sorting keys sorts rows lexicographically
    order = torch.argsort(keys, stable=True)
    rows = [tuple(r) for r in coords[order].tolist()]
    assert rows == sorted(rows)
    with pytest.raises(UserError):
        hash_coords(torch.tensor([[0, 7, 0, 0]]), shape)
    with pytest.raises(UserError):
        hash_coords(torch.tensor([[0.0, 1.0, 0.0, 0.0]]), shape)
    with pytest.raises(UserError):
        hash_coords(coords, (3, 7, 11))


@pytest.mark.parametrize("order", ["first", "sorted"])
def test_unique_coords_vs_loop(order):
    g = torch.Generator().manual_seed(1)
    coords = torch.randint(-3, 4, (300, 3), generator=g).int()
    res = unique_coords(coords, order=order)
    seen: dict = {}
    for i, r in enumerate(coords.tolist()):
        seen.setdefault(tuple(r), []).append(i)
    want = list(seen) if order == "first" else sorted(seen)
    assert [tuple(r) for r in res.values.tolist()] == want
    assert res.values.dtype == coords.dtype
    assert torch.equal(res.values[res.inverse], coords)
    assert res.counts.tolist() == [len(seen[k]) for k in want]
    assert res.first_index.tolist() == [seen[k][0] for k in want]
    # with an explicit shape (coords shifted to be non-negative) the same
    res2 = unique_coords(coords + 3, (7, 7, 7), order=order)
    assert torch.equal(res2.inverse, res.inverse) and torch.equal(res2.counts, res.counts)


def test_unique_keys_empty_and_errors():
    r = unique_keys(torch.zeros(0, dtype=torch.int64))
    assert r.values.numel() == 0 and r.inverse.numel() == 0
    with pytest.raises(UserError):
        unique_keys(torch.zeros(3), order="first")
    with pytest.raises(UserError):
        unique_keys(torch.zeros(3, dtype=torch.long), order="random")


def _loop_reduce(src, index, n, fn, empty=0.0):
    out = []
    for i in range(n):
        rows = [src[j] for j in range(len(index)) if index[j] == i]
        out.append(fn(torch.stack(rows)) if rows else torch.full(src.shape[1:], empty, dtype=src.dtype))
    return torch.stack(out)


@pytest.fixture
def case():
    g = torch.Generator().manual_seed(2)
    src = torch.randn(40, 3, 2, generator=g, dtype=torch.float64)
    index = torch.randint(-1, 9, (40,), generator=g)  # -1 rows are dropped; 9 has no rows -> empty
    return src, index, 10


def test_scatter_sum_mean_vs_loop(case):
    src, index, n = case
    assert torch.allclose(scatter_sum(src, index, n), _loop_reduce(src, index, n, lambda r: r.sum(0)))
    assert torch.allclose(scatter_mean(src, index, n), _loop_reduce(src, index, n, lambda r: r.mean(0)))
    assert scatter_count(index, n).tolist() == [int((index == i).sum()) for i in range(n)]
    # default dim_size = max + 1
    assert scatter_sum(src, index).shape[0] == int(index.max()) + 1


def test_scatter_max_vs_loop(case):
    src, index, n = case
    values, argmax = scatter_max(src, index, n)
    assert torch.equal(values, _loop_reduce(src, index, n, lambda r: r.max(0).values))
    for i in range(n):
        rows = (index == i).nonzero().squeeze(1)
        if rows.numel() == 0:
            assert (argmax[i] == -1).all()
        else:
            want = rows[src[rows].argmax(0)]
            assert torch.equal(argmax[i], want)
    # ties: first row wins
    v, a = scatter_max(torch.tensor([[1.0], [1.0], [0.5]]), torch.tensor([0, 0, 0]))
    assert a.item() == 0 and v.item() == 1.0


def test_scatter_gradcheck(case):
    src, index, n = case
    src = src.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda s: scatter_sum(s, index, n), (src,))
    assert torch.autograd.gradcheck(lambda s: scatter_mean(s, index, n), (src,))
    # random float64 values have no ties, so max is differentiable here
    assert torch.autograd.gradcheck(lambda s: scatter_max(s, index, n)[0], (src,))
    vox = torch.randn(5, 4, 3, dtype=torch.float64, requires_grad=True)
    num = torch.tensor([1, 4, 2, 3, 1])
    assert torch.autograd.gradcheck(lambda v: voxel_mean(v, num), (vox,))


def test_voxel_mean_ignores_padding():
    vox = torch.zeros(2, 3, 2)
    vox[0, :2] = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    vox[0, 2] = 100.0  # a filled "empty" slot (spconv's empty_mean mode) must not count
    vox[1, 0] = torch.tensor([5.0, 6.0])
    out = voxel_mean(vox, torch.tensor([2, 1], dtype=torch.int32))
    assert torch.equal(out, torch.tensor([[2.0, 3.0], [5.0, 6.0]]))


def test_scatter_errors():
    src = torch.randn(4, 2)
    for call in (
        lambda: scatter_sum(src, torch.tensor([0, 1, 2])),
        lambda: scatter_sum(src, torch.tensor([0.0, 1.0, 2.0, 3.0])),
        lambda: scatter_sum(src, torch.tensor([0, 1, 2, 5]), dim_size=3),
        lambda: scatter_mean(src.long(), torch.tensor([0, 1, 2, 3])),
        lambda: scatter_max(src, torch.tensor([[0, 1, 2, 3]])),
        lambda: scatter_count(torch.tensor([0, 4]), 2),
        lambda: voxel_mean(torch.zeros(2, 3), torch.tensor([1, 1])),
    ):
        with pytest.raises(UserError):
            call()


def test_scatter_empty():
    out = scatter_sum(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), 4)
    assert torch.equal(out, torch.zeros(4, 3))
    v, a = scatter_max(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), 2)
    assert torch.equal(v, torch.zeros(2, 3)) and (a == -1).all()
