import numpy as np
import pytest

from seqpred.batches import TrainBatches, eval_batches, split_validation, windows
from seqpred.errors import CorpusError


def test_windows_are_views_not_copies():
    ids = np.arange(1000, dtype=np.int32)
    view = windows(ids, 51)
    assert view.shape == (950, 51)
    assert np.shares_memory(view, ids)
    assert view.base is not None and view.nbytes > ids.nbytes  # logical size, no storage of its own
    assert np.array_equal(view[7], ids[7:58])


def test_sequence_batches_shift_targets_by_one():
    ids = np.arange(500, dtype=np.int32)
    batches = TrainBatches(ids, seq_len=10, batch_size=4, objective="sequence", seed=3)
    batch = batches.batch(0)
    assert batch.inputs.shape == (4, 10) and batch.targets.shape == (4, 10)
    assert np.array_equal(batch.targets, batch.inputs + 1)
    assert batches.windows_per_epoch == (500 - 1) // 10  # an epoch predicts about every token once
    assert batches.batches_per_epoch == 49 // 4


def test_last_objective_predicts_the_token_after_the_window():
    ids = np.arange(200, dtype=np.int32)
    batches = TrainBatches(ids, seq_len=50, batch_size=5, objective="last", seed=0)
    batch = batches.batch(0)
    assert batch.inputs.shape == (5, 50) and batch.targets.shape == (5,)
    assert np.array_equal(batch.targets, batch.inputs[:, -1] + 1)
    assert batches.windows_per_epoch == 150  # a window at every position


def test_order_depends_on_seed_only_and_covers_every_window_once_per_epoch():
    ids = np.arange(300, dtype=np.int32)
    a = TrainBatches(ids, 5, 4, "last", seed=1)
    b = TrainBatches(ids.copy(), 5, 4, "last", seed=1)
    c = TrainBatches(ids, 5, 4, "last", seed=2)
    first = [a.batch(s).inputs[:, 0] for s in range(a.batches_per_epoch)]
    assert all(np.array_equal(x, b.batch(s).inputs[:, 0]) for s, x in enumerate(first))
    assert not np.array_equal(first[0], c.batch(0).inputs[:, 0])
    starts = np.concatenate(first)
    assert len(np.unique(starts)) == len(starts) == a.batches_per_epoch * 4
    # the next epoch is another permutation
    assert not np.array_equal(a.batch(a.batches_per_epoch).inputs[:, 0], first[0])


def test_iteration_from_a_step_equals_random_access():
    ids = np.arange(1000, dtype=np.int32)
    batches = TrainBatches(ids, 12, 8, "sequence", seed=5)
    stream = batches.iter_from(7)
    for step in range(7, 7 + 3 * batches.batches_per_epoch):
        got = next(stream)
        want = batches.batch(step)
        assert np.array_equal(got.inputs, want.inputs) and np.array_equal(got.targets, want.targets)


def test_sequence_windows_start_anywhere_and_vary_between_epochs():
    ids = np.arange(1000, dtype=np.int32)  # a token's id is its position
    batches = TrainBatches(ids, 10, 1000, "sequence", seed=0)
    assert batches.windows_per_epoch == batches.batch_size == 99
    starts = np.concatenate([batches.batch(e).inputs[:, 0] for e in range(20)])
    assert len({int(s) % 10 for s in starts}) == 10, "starts stay on a grid"
    assert starts.min() >= 0 and starts.max() <= 1000 - 11
    assert not np.array_equal(batches.batch(0).inputs, batches.batch(1).inputs)
    again = TrainBatches(ids, 10, 1000, "sequence", seed=0)
    assert np.array_equal(again.batch(3).inputs, batches.batch(3).inputs)


def test_validation_is_a_contiguous_tail():
    ids = np.arange(1000, dtype=np.int32)
    train, val = split_validation(ids, 0.1, seq_len=20)
    assert len(val) == 100 and val[0] == 900 and train[-1] == 899
    assert np.shares_memory(train, ids) and np.shares_memory(val, ids)


def test_corpus_shorter_than_a_window_is_refused():
    with pytest.raises(CorpusError, match="shorter than one training window"):
        split_validation(np.arange(30, dtype=np.int32), 0.1, seq_len=20)


def test_eval_batches_cover_the_text_without_overlap():
    ids = np.arange(101, dtype=np.int32)
    batches = list(eval_batches(ids, 10, "sequence", batch_size=3))
    inputs = np.concatenate([b.inputs for b in batches])
    assert inputs.shape == (10, 10)
    assert np.array_equal(inputs.ravel(), np.arange(100))
