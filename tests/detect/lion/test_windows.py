import torch

from vision3d.detect.lion.windows import Grouping, window_sort_key


def _coords(n=300, seed=0, shape=(8, 40, 40), batch=3):
    g = torch.Generator().manual_seed(seed)
    flat = torch.randperm(batch * shape[0] * shape[1] * shape[2], generator=g)[:n]
    b = flat // (shape[0] * shape[1] * shape[2])
    r = flat % (shape[0] * shape[1] * shape[2])
    z, y, x = r // (shape[1] * shape[2]), (r // shape[2]) % shape[1], r % shape[2]
    return torch.stack([b, z, y, x], 1).int()


def test_group_scatter_round_trip_is_identity():
    c = _coords()
    f = torch.randn(len(c), 5, dtype=torch.float64)
    for order in ("x", "y"):
        for shift in (False, True):
            for G in (1, 7, 64, 1000):
                g = Grouping.build(c, (13, 13, 4), G, order, shift)
                grouped = g.group(f)
                assert grouped.shape == (g.num_groups, G, 5)
                assert int(g.valid.sum()) == len(c)
                assert torch.equal(grouped[~g.valid], torch.zeros_like(grouped[~g.valid]))
                assert torch.equal(g.ungroup(grouped), f)


def test_groups_never_mix_samples_and_follow_the_order():
    c = _coords(batch=2)
    g = Grouping.build(c, (5, 5, 2), 16, "x")
    b = g.group(c[:, :1].double() + 1)[..., 0]  # batch + 1, 0 on padding
    for row in b:
        vals = row[row > 0].unique()
        assert len(vals) <= 1
    # inside one group the keys ascend (x-order sorting)
    key = g.group(window_sort_key(c, (5, 5, 2), "x")[:, None].double())[..., 0]
    for row, v in zip(key, g.valid):
        k = row[v]
        assert torch.all(k[1:] > k[:-1])


def test_x_and_y_order_differ():
    c = torch.tensor([[0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0], [0, 0, 1, 1]])
    assert torch.argsort(window_sort_key(c, (4, 4, 1), "x")).tolist() == [0, 1, 2, 3]
    assert torch.argsort(window_sort_key(c, (4, 4, 1), "y")).tolist() == [0, 2, 1, 3]
