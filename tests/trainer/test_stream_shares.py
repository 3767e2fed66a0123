"""Streamed data (plugin API 2) keeps the same-examples guarantee: for any process count, global
batch s of an epoch is the same examples, each rank reading its contiguous share of it through
tf.data, with the epoch's order drawn from (seed, epoch) as the in-memory path draws it."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from scalelab_trainer.step import Layout, epoch_order
from scalelab_trainer.stream import Feed, InputTime, cast_load, share_ids, stream_of

pytestmark = pytest.mark.unit


def _layout(n: int, batch: int, size: int, rank: int) -> Layout:
    return Layout(n=n, batch=batch, size=size, rank=rank, micro=1)


@pytest.mark.parametrize(("n", "batch"), [(100, 32), (101, 10), (7, 4), (5, 8)])
def test_a_global_batch_is_the_same_examples_for_one_two_and_three_processes(
    n: int, batch: int
) -> None:
    for epoch in (1, 2, 3):
        order = epoch_order(n, seed=5, epoch=epoch, shuffle=True)
        alone = share_ids(_layout(n, batch, 1, 0), order)
        assert [list(ids) for ids in alone] == [
            list(order[s : s + batch]) for s in range(0, n, batch)
        ]
        for size in (2, 3):
            ranks = [share_ids(_layout(n, batch, size, r), order) for r in range(size)]
            for s, ids in enumerate(alone):
                # rank after rank, the shares are the global batch, in its order
                joined = np.concatenate([ranks[r][s] for r in range(size)])
                np.testing.assert_array_equal(joined, ids)
                shares = [len(ranks[r][s]) for r in range(size)]
                assert max(shares) - min(shares) <= 1


def test_the_epoch_order_is_drawn_from_the_seed_and_the_epoch_only() -> None:
    first = epoch_order(50, seed=1, epoch=2, shuffle=True)
    np.testing.assert_array_equal(first, epoch_order(50, seed=1, epoch=2, shuffle=True))
    assert not np.array_equal(first, epoch_order(50, seed=1, epoch=3, shuffle=True))
    np.testing.assert_array_equal(np.sort(first), np.arange(50))
    np.testing.assert_array_equal(epoch_order(50, seed=1, epoch=2, shuffle=False), np.arange(50))
    # the in-memory path's permutation, unchanged
    legacy = np.random.default_rng([1, 2]).permutation(50)
    np.testing.assert_array_equal(first, legacy)


def _index_load(key: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    i = tf.strings.to_number(key, tf.int64)
    return tf.reshape(tf.cast(i, tf.float32), [1]), i


def test_every_rank_is_fed_its_share_through_tf_data_over_several_shuffled_epochs() -> None:
    """Three ranks' feeds (built here on one process) hand over, step by step and epoch after
    epoch, exactly the examples the in-graph rule takes; a rank whose share is empty gets an
    empty batch of the right shape."""
    n, batch, size = 23, 4, 3  # the last global batch has 3 examples: one rank gets none
    stream = stream_of(np.array([str(i) for i in range(n)]), _index_load)
    steps = -(-n // batch)
    for rank in range(size):
        layout = _layout(n, batch, size, rank)

        def order(epoch: int) -> np.ndarray:
            return epoch_order(n, 9, epoch, shuffle=True)

        feed = Feed(stream, layout, order, (1, 3))
        for epoch in (1, 2, 3):
            want = share_ids(layout, order(epoch))
            for s in range(steps):
                x, y = feed.batch(s)
                np.testing.assert_array_equal(y.numpy(), want[s])
                assert x.shape == (len(want[s]), 1)
            waited, called = feed.epoch_done()
            assert waited >= 0.0
            assert called == 0.0


def test_examples_reach_the_model_as_float32_and_integer_labels_as_int64() -> None:
    def load(key: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return tf.ones([2], tf.float64), tf.constant(1, tf.int32)

    x, y = cast_load(load)(tf.constant("k"))
    assert (x.dtype, y.dtype) == (tf.float32, tf.int64)
    stream = stream_of(np.array(["a", "b"]), load)
    assert stream.x_spec.shape == (2,)
    assert stream.empty()[0].shape == (0, 2)


def test_an_epoch_is_input_bound_when_it_waited_for_input_more_than_a_tenth_of_its_time() -> None:
    assert InputTime(0.5, 4.5, 0.1).fields()["inputBound"] is False
    slow = InputTime(3.0, 1.0, 0.75).fields()
    assert slow == {
        "inputWaitSeconds": 3.0,
        "stepCallSeconds": 1.0,
        "inputWaitFraction": 0.75,
        "inputBound": True,
    }
    total = InputTime()
    total.add(InputTime(1.0, 1.0, 0.5))
    total.add(InputTime(0.0, 2.0, 0.0))
    assert total.fraction == 0.25
