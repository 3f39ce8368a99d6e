"""``ResumableSampler`` orders: distinct across a seed sweep, a function of (seed, epoch) only."""

from __future__ import annotations

import torch

from kwsnet.data.sampler import ResumableSampler, draw_seed

SIZE = 100


def test_seed_sweep_orders_are_pairwise_distinct() -> None:
    # With ``manual_seed(seed + epoch)`` seed 0's epoch 1 was seed 1's epoch 0: a sweep over
    # seeds replayed the same orders shifted by an epoch.
    orders = {
        (seed, epoch): tuple(ResumableSampler(SIZE, seed=seed).order(epoch))
        for seed in range(10)
        for epoch in range(50)
    }
    assert len(set(orders.values())) == len(orders) == 500


def test_order_depends_only_on_seed_and_epoch() -> None:
    a, b = ResumableSampler(SIZE, seed=7), ResumableSampler(SIZE, seed=7)
    torch.manual_seed(123)  # the global RNG plays no part
    first = a.order(3)
    torch.manual_seed(456)
    assert b.order(3) == first == a.order(3)
    assert sorted(first) == list(range(SIZE))
    b.set_epoch(3)
    assert [d.index for d in b] == first and {(d.epoch, d.seed) for d in b} == {(3, 7)}


def test_order_seed_is_not_an_item_draw_seed() -> None:
    # Items seed their draws with draw_seed(seed, epoch, index): the order must not reuse one.
    for seed, epoch in ((0, 0), (0, 1), (1, 0), (42, 9)):
        order = ResumableSampler(SIZE, seed=seed).order(epoch)
        for index in range(SIZE):
            gen = torch.Generator().manual_seed(draw_seed(seed, epoch, index))
            assert torch.randperm(SIZE, generator=gen).tolist() != order


def test_resume_mid_epoch_continues_the_same_order() -> None:
    whole = ResumableSampler(SIZE, seed=5)
    whole.set_epoch(2)
    full = [d.index for d in whole]
    resumed = ResumableSampler(SIZE, seed=0)
    resumed.load_state_dict(whole.state_dict(), start=37)
    assert [d.index for d in resumed] == full[37:]
    assert [d.index for d in resumed] == full  # the next iteration starts from the top
