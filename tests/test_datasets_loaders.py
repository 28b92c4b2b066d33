"""build_dataloaders on the toy dataset: batch contents per loss set, eval sets, samplers, per-sample randomness."""
import logging
from collections import Counter

import pytest
import torch

from datasets import DatasetError
from datasets.build import build_dataloaders
from datasets.samplers import IdentityBatchSampler, RandomBatchSampler, SampleKey
from utils.config import load_config

SMALL = {"img_size": [32, 16], "batch_size": 8, "test_batch_size": 7, "num_workers": 0}


def config(root, **overrides):
    return load_config(None, {"root_dir": str(root), **SMALL, **overrides})


def test_train_batch_with_all_losses(toy_root, tokenizer):
    bundle = build_dataloaders(config(toy_root))
    batch = next(iter(bundle.train_loader))
    assert set(batch) == {"images", "caption_ids", "pids", "image_ids", "mlm_ids", "mlm_labels",
                          "question_ids", "question_mask", "answer_ids"}
    assert batch["images"].shape == (8, 3, 32, 16) and batch["images"].dtype == torch.float32
    for key in ("caption_ids", "mlm_ids", "mlm_labels", "question_ids", "question_mask", "answer_ids"):
        assert batch[key].shape == (8, 77) and batch[key].dtype == torch.long, key
    assert batch["pids"].shape == (8,) and 0 <= batch["pids"].min() and batch["pids"].max() < bundle.num_classes
    assert bundle.num_classes == 12
    assert (batch["question_ids"] == tokenizer.mask_id).any(dim=1).all()
    assert (batch["answer_ids"][:, 1:4] == tokenizer.mask_id).all()
    assert len(bundle.train_loader) == 12 * 2 * 2 // 8  # ids x images x captions


def test_only_needed_keys(toy_root):
    batch = next(iter(build_dataloaders(config(toy_root, loss_names="sdm+id")).train_loader))
    assert set(batch) == {"images", "caption_ids", "pids", "image_ids"}


def test_eval_sets(toy_root):
    bundle = build_dataloaders(config(toy_root, dataset_name="RSTPReid"))
    assert set(bundle.eval_sets) == {"val", "test"}
    test = bundle.eval_sets["test"]
    g_pids = torch.cat([p for p, _ in test.image_loader])
    q_pids = torch.cat([p for p, _ in test.text_loader])
    assert torch.equal(g_pids, test.g_pids) and torch.equal(q_pids, test.q_pids)
    assert len(test.img_paths) == 5 * 2 and len(test.captions) == 5 * 2 * 2
    pids, images = next(iter(test.image_loader))
    assert images.shape == (7, 3, 32, 16)
    assert set(build_dataloaders(config(toy_root, dataset_name="ICFG-PEDES", eval_splits=["test"])).eval_sets) \
        == {"test"}


def test_a_configured_split_the_dataset_lacks_is_an_error(toy_root):
    with pytest.raises(DatasetError, match=r"ICFG-PEDES.json: no record has split 'val'.*\['train', 'test'\]"):
        build_dataloaders(config(toy_root, dataset_name="ICFG-PEDES"))  # eval_splits [val, test] by default


def _epoch(loader_or_bundle, epoch):
    loader_or_bundle.set_epoch(epoch)
    return list(loader_or_bundle.train_loader)


@pytest.mark.parametrize("workers", [0, 2])
def test_batches_depend_on_seed_and_epoch_only(toy_root, workers):
    reference = build_dataloaders(config(toy_root, num_workers=0))
    other = build_dataloaders(config(toy_root, num_workers=workers))
    torch.manual_seed(123)  # the global generator must not matter (evaluation or anything else may draw from it)
    a = _epoch(reference, 2)
    torch.manual_seed(7)
    torch.rand(5)
    b = _epoch(other, 2)
    assert len(a) == len(b)
    for x, y in zip(a, b):
        for key in x:
            assert torch.equal(x[key], y[key]), key
    assert not torch.equal(_epoch(reference, 3)[0]["pids"], a[0]["pids"])  # another epoch, another order
    seed1 = build_dataloaders(config(toy_root, num_workers=0, seed=1))
    assert not torch.equal(_epoch(seed1, 2)[0]["pids"], a[0]["pids"])


def test_a_sample_is_the_same_tensor_wherever_it_is_drawn(toy_root):
    bundle = build_dataloaders(config(toy_root))
    dataset = bundle.train_set
    dataset.set_epoch(4)
    first = dataset[SampleKey(5, 11)]
    for index in (3, 9, 0):  # other samples in between, in any order
        dataset[SampleKey(index, index)]
    again = dataset[SampleKey(5, 11)]
    for key in first:
        assert torch.equal(first[key], again[key]), key
    assert not torch.equal(dataset[SampleKey(5, 12)]["images"], first["images"])  # drawn again later in the epoch
    dataset.set_epoch(5)
    changed = dataset[SampleKey(5, 11)]
    assert not torch.equal(first["images"], changed["images"])  # augmentation draws anew each epoch


def test_a_sample_repeated_in_a_batch_draws_its_randomness_again(toy_root):
    """The identity sampler repeats samples of an identity with fewer than K (IRRA draws each copy anew)."""
    bundle = build_dataloaders(config(toy_root, sampler="identity", num_instance=8))  # K = 8 > 4 samples per id
    batch = next(iter(bundle.train_loader))
    copies: dict[tuple, list[int]] = {}
    for row, sample in enumerate(zip(batch["image_ids"].tolist(), map(tuple, batch["caption_ids"].tolist()))):
        copies.setdefault(sample, []).append(row)
    repeated = [rows for rows in copies.values() if len(rows) > 1]
    assert repeated  # the test's premise: the batch holds copies of one sample
    pairs = [(first, other) for first, *others in repeated for other in others]
    assert all(not torch.equal(batch["images"][a], batch["images"][b]) for a, b in pairs)  # crops, flips, erasing
    for key in ("mlm_ids", "question_ids"):  # a short caption's few choices may coincide, but not every time
        assert not all(torch.equal(batch[key][a], batch[key][b]) for a, b in pairs), key


def _union_of_shares(make, world_size: int, epoch: int = 1) -> list[list[int]]:
    """The global batches as the union of every rank's shares, step by step, in rank order."""
    samplers = [make(world_size, rank) for rank in range(world_size)]
    for s in samplers:
        s.set_epoch(epoch)
    lengths = {len(s) for s in samplers}
    assert len(lengths) == 1  # every rank takes the same number of steps
    steps = [list(s) for s in samplers]
    union = [sum((steps[r][t] for r in range(world_size)), []) for t in range(lengths.pop())]
    positions = [key.position for batch in union for key in batch]
    assert positions == list(range(len(positions)))  # the ranks' shares count the epoch's global order
    return [[key.index for key in batch] for batch in union]


@pytest.mark.parametrize("num_samples, batch_size", [(70, 8), (64, 8), (41, 64), (9, 4), (7, 4)])
def test_random_batches_are_the_same_for_any_world_size(num_samples, batch_size):
    def make(world_size, rank):
        return RandomBatchSampler(num_samples, batch_size, seed=5, drop_last=False, world_size=world_size, rank=rank)

    single = _union_of_shares(make, 1)
    assert sorted(i for batch in single for i in batch) == list(range(num_samples))  # every sample, once
    assert all(len(b) == batch_size for b in single[:-1])
    for world_size in (2, 4):
        if 2 <= num_samples % batch_size < world_size:  # the one exception: a last batch too small to share
            assert _union_of_shares(make, world_size)[-1] == single[-2] + single[-1]
        else:
            assert _union_of_shares(make, world_size) == single
    assert _union_of_shares(make, 1, epoch=2) != single


def test_last_batch_rules():
    def batches(num_samples, drop_last=False, world_size=1):
        return _union_of_shares(lambda w, r: RandomBatchSampler(num_samples, 8, 0, drop_last, w, r), world_size)

    assert [len(b) for b in batches(17)] == [8, 9]  # one sample left: merged into the previous batch
    assert [len(b) for b in batches(18)] == [8, 8, 2]
    assert [len(b) for b in batches(18, drop_last=True)] == [8, 8]
    assert [len(b) for b in batches(19, world_size=4)] == [8, 11]  # 3 samples cannot give 4 processes one each
    assert [len(b) for b in batches(5)] == [5]  # a split smaller than the batch trains in one batch
    with pytest.raises(DatasetError, match="at least 2 samples"):
        batches(1)


def test_identity_batches_are_whole_groups_and_the_same_for_any_world_size():
    pids = [i // 5 for i in range(50)] + [10] * 2  # 10 ids x 5 samples, one id with 2 (fewer than K: repeated)

    def make(world_size, rank, drop_last=False):
        return IdentityBatchSampler(pids, batch_size=8, num_instance=2, seed=0, drop_last=drop_last,
                                    world_size=world_size, rank=rank)

    single = _union_of_shares(make, 1)
    for batch in single:
        counts = Counter(pids[i] for i in batch)
        assert all(c % 2 == 0 for c in counts.values())  # K = 2 instances per identity
    full = [b for b in single if len(b) == 8]
    assert all(len(Counter(pids[i] for i in b)) == 4 for b in full[:-1])  # P = 4 identities
    assert len(single[-1]) < 8  # the leftover groups: a last batch with fewer identities
    for world_size in (2, 4):
        union = _union_of_shares(make, world_size)
        if len(single[-1]) // 2 < world_size:  # fewer groups than processes: merged into the previous batch
            assert union == single[:-2] + [single[-2] + single[-1]]
        else:
            assert union == single
    samplers = [make(2, rank) for rank in (0, 1)]
    for share0, share1 in zip(*samplers):  # a process holds whole K-groups
        assert all(Counter(pids[k.index] for k in share).most_common()[-1][1] % 2 == 0 for share in (share0, share1))
    assert all(len(b) == 8 for b in _union_of_shares(lambda w, r: make(w, r, drop_last=True), 1))


def test_identity_sampler_sizes_that_do_not_fit():
    pids = [i // 4 for i in range(40)]
    with pytest.raises(DatasetError, match="multiple of num_instance 3"):
        IdentityBatchSampler(pids, 8, 3, 0, False)
    with pytest.raises(DatasetError, match="do not divide over 3 processes"):
        IdentityBatchSampler(pids, 8, 2, 0, False, world_size=3)
    with pytest.raises(DatasetError, match="the training split has 10"):
        IdentityBatchSampler(pids, 48, 2, 0, False)


def test_merged_last_batch_is_logged(toy_root, caplog):
    with caplog.at_level(logging.INFO):
        bundle = build_dataloaders(config(toy_root, batch_size=47))  # 48 captions: one left over
        assert [len(b["pids"]) for b in _epoch(bundle, 1)] == [48]
    assert "merged into the previous batch" in caplog.text
