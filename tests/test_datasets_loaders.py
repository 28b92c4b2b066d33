"""build_dataloaders on the toy dataset: batch contents per loss set, eval sets, samplers, reproducibility."""
import logging

import pytest
import torch

from datasets.build import build_dataloaders
from datasets.samplers import IdentitySampler, build_train_sampler
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
    assert len(bundle.train_loader) == 12 * 2 * 2 // 8  # ids x images x captions, drop_last


def test_only_needed_keys(toy_root):
    batch = next(iter(build_dataloaders(config(toy_root, loss_names="sdm+id")).train_loader))
    assert set(batch) == {"images", "caption_ids", "pids", "image_ids"}


def test_eval_sets(toy_root, caplog):
    bundle = build_dataloaders(config(toy_root, dataset_name="RSTPReid"))
    assert set(bundle.eval_sets) == {"val", "test"}
    test = bundle.eval_sets["test"]
    g_pids = torch.cat([p for p, _ in test.image_loader])
    q_pids = torch.cat([p for p, _ in test.text_loader])
    assert torch.equal(g_pids, test.g_pids) and torch.equal(q_pids, test.q_pids)
    assert len(test.img_paths) == 5 * 2 and len(test.captions) == 5 * 2 * 2
    pids, images = next(iter(test.image_loader))
    assert images.shape == (7, 3, 32, 16)
    with caplog.at_level(logging.WARNING):
        icfg = build_dataloaders(config(toy_root, dataset_name="ICFG-PEDES"))
    assert set(icfg.eval_sets) == {"test"} and "no 'val' split" in caplog.text


@pytest.mark.parametrize("workers", [0, 2])
def test_same_seed_same_batches(toy_root, workers):
    def first_batches():
        torch.manual_seed(0)  # the main process's RNG drives augmentation when workers == 0
        loader = build_dataloaders(config(toy_root, num_workers=workers)).train_loader
        return [b for _, b in zip(range(2), loader)]

    a, b = first_batches(), first_batches()
    for x, y in zip(a, b):
        for key in x:
            assert torch.equal(x[key], y[key]), key
    c = build_dataloaders(config(toy_root, num_workers=workers, seed=1)).train_loader
    assert not torch.equal(next(iter(c))["pids"], a[0]["pids"])


def test_identity_sampler_batches_and_ranks():
    pids = [i // 3 for i in range(30)]  # 10 ids x 3 samples
    batches = {}
    for rank in (0, 1):
        sampler = IdentitySampler(pids, batch_size=4, num_instance=2, seed=0, world_size=2, rank=rank)
        order = list(sampler)
        assert len(order) == len(sampler) and len(order) % 4 == 0
        batches[rank] = [order[i:i + 4] for i in range(0, len(order), 4)]
        for batch in batches[rank]:
            counts = sorted([pids[i] for i in batch].count(p) for p in {pids[i] for i in batch})
            assert counts == [2, 2]  # P = 2 identities x K = 2 instances
    assert len(batches[0]) == len(batches[1])
    assert not {tuple(b) for b in batches[0]} & {tuple(b) for b in batches[1]}
    sampler = IdentitySampler(pids, batch_size=4, num_instance=2, seed=0)
    assert list(sampler) != list(sampler)  # reshuffled every epoch
    sampler.set_epoch(3)
    again = IdentitySampler(pids, batch_size=4, num_instance=2, seed=0)
    again.set_epoch(3)
    assert list(sampler) == list(again)


def test_distributed_random_sampler_shards():
    pids = list(range(20))
    shards = [list(build_train_sampler("random", pids, 4, 4, 0, torch.Generator(), world_size=2, rank=r))
              for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 10
    assert sorted(shards[0] + shards[1]) == pids
