"""epoch_views: every training view once per epoch, seeded."""

import itertools

import torch

from vision3d.utils.sampling import epoch_views


def test_every_view_once_per_epoch_and_seeded():
    draws = list(itertools.islice(epoch_views(5, torch.Generator().manual_seed(3)), 20))
    for e in range(4):
        assert sorted(draws[5 * e:5 * e + 5]) == [0, 1, 2, 3, 4]
    assert draws[:5] != draws[5:10] or draws[5:10] != draws[10:15]  # epochs are reshuffled
    again = list(itertools.islice(epoch_views(5, torch.Generator().manual_seed(3)), 20))
    other = list(itertools.islice(epoch_views(5, torch.Generator().manual_seed(4)), 20))
    assert again == draws and other != draws


def test_draws_lazily_from_the_generator():
    # The next epoch's permutation is drawn only when it starts, so other draws from the same
    # generator in between (random backgrounds) see the same stream as before.
    g = torch.Generator().manual_seed(0)
    it = epoch_views(3, g)
    first = [next(it) for _ in range(3)]
    state = g.get_state()
    assert sorted(first) == [0, 1, 2] and torch.equal(g.get_state(), state)
    next(it)
    assert not torch.equal(g.get_state(), state)
