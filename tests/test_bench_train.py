"""bench/bench_train.py at tiny sizes: realistic synthetic batches, consistent counts, a well-formed table."""
import argparse

import pytest
import torch

from bench import bench_train
from bench.memory import cpu_allocation_peak
from tests.markdown_table import table_rows
from utils.tokenizer import get_tokenizer

TINY_ARGS = ["--tiny", "--steps", "2", "--warmup", "1", "--batch_size", "4"]
HALF_MS = 0.0005  # rounding error of a time printed with 3 decimals
FP32_BYTES = 4


def sgiha_params(d: int, embed: int, text: int, vision: int, blocks: int, ratio: int) -> int:
    """SG-IHA head size counted by hand from method §6.3 (weights + biases, LayerNorms 2 x width)."""
    noise_filter = 2 * embed + embed * vision + vision
    cross = 2 * text + 2 * vision + (text * d + d) + (vision * 2 * d + 2 * d) + (d * d + d)
    self_attn = 2 * d + (d * 3 * d + 3 * d) + (d * d + d)
    mlp = 2 * d + (d * ratio * d + ratio * d) + (ratio * d * d + d)
    return blocks * (noise_filter + cross + self_attn + mlp) + 2 * d + d * embed + embed


def irra_params(d: int, depth: int, vocab: int) -> int:
    """IRRA branch size counted by hand from method §5: cross-attention, transformer, 3 LayerNorms, MLM head."""
    attention = 4 * d * d + 4 * d
    block = 2 * 2 * d + attention + (d * 4 * d + 4 * d) + (4 * d * d + d)
    head = (d * d + d) + 2 * d + (d * vocab + vocab)
    return attention + depth * block + 3 * 2 * d + head


def tiny_namespace(**changes) -> argparse.Namespace:
    return bench_train.parse_args(TINY_ARGS + [f"--{k}={v}" for k, v in changes.items()])


def test_synthetic_batch_looks_like_real_training_data():
    tok = get_tokenizer()
    cfg = bench_train.bench_config("irra_sgiha", 64, "none", False, tiny=False)
    batch = bench_train.synthetic_batch(cfg, bench_train.NUM_CLASSES, torch.Generator().manual_seed(1))
    assert batch["images"].shape == (64, 3, 384, 128)
    assert int(batch["pids"].max()) < bench_train.NUM_CLASSES
    lo, hi = bench_train.CAPTION_TOKENS
    masked_total = real_total = 0
    for i in range(64):
        caption = batch["caption_ids"][i].tolist()
        eot = caption.index(tok.eot_id)
        assert caption[0] == tok.sot_id and lo <= eot - 1 <= hi and not any(caption[eot + 1:])
        assert int(batch["caption_ids"][i].argmax()) == eot  # the global feature is read at EOT (method §3)
        question = batch["question_ids"][i].tolist()
        masked = [j for j, t in enumerate(question) if t == tok.mask_id]
        assert 2 <= len(masked) <= 3 and masked == list(range(masked[0], masked[0] + len(masked)))
        assert [t for j, t in enumerate(question) if j not in masked] == [t for j, t in enumerate(caption)
                                                                          if j not in masked]
        assert batch["question_mask"][i].tolist() == [1] * (eot + 1) + [0] * (len(caption) - eot - 1)
        answer = [t for t in batch["answer_ids"][i].tolist() if t]
        phrase = [caption[j] for j in masked]
        assert answer == [tok.sot_id] + [tok.mask_id] * cfg.sgiha.answer_prefix_masks + phrase + [tok.eot_id]
        labels = batch["mlm_labels"][i]
        assert torch.equal(labels[labels > 0], batch["caption_ids"][i][labels > 0])
        masked_total += int((labels > 0).sum())
        real_total += eot - 1
    assert 0.10 < masked_total / real_total < 0.20  # method §5: p = 0.15 over ~3,200 tokens


def test_batch_statistics_counts_by_hand():
    tok = get_tokenizer()
    ids = torch.zeros(2, 10, dtype=torch.long)
    ids[0, :5] = torch.tensor([tok.sot_id, 5, 6, 7, tok.eot_id])  # 3 word tokens
    ids[1, :7] = torch.tensor([tok.sot_id, 5, 6, 7, 8, 9, tok.eot_id])  # 5 word tokens
    labels = torch.zeros_like(ids)
    labels[0, 2] = labels[1, 1] = 5
    question = ids.clone()
    question[0, 1:3] = tok.mask_id
    answer = torch.zeros_like(ids)
    answer[:, :4] = torch.tensor([tok.sot_id, tok.mask_id, 5, tok.eot_id])
    stats = bench_train.batch_statistics({"caption_ids": ids, "mlm_labels": labels, "question_ids": question,
                                          "answer_ids": answer})
    assert stats == {"caption_tokens": 4.0, "mlm_masked_share": 2 / 8, "question_masks": 1.0, "answer_tokens": 2.0}


def test_parameter_counts_match_hand_counts():
    args = tiny_namespace(steps=1, warmup=0)
    base = bench_train.measure_recipe("clip_finetune", args)
    with_sgiha = bench_train.measure_recipe("clip_finetune_sgiha", args)
    irra = bench_train.measure_recipe("irra", args)
    o = bench_train.TINY_OVERRIDES
    d = o["backbone.embed_dim"]
    assert base["params"] == base["backbone_params"] + d * bench_train.TINY_NUM_CLASSES + bench_train.TINY_NUM_CLASSES
    assert with_sgiha["params"] - base["params"] == sgiha_params(
        d, d, o["backbone.text_width"], o["backbone.vision_width"], len(o["sgiha.layers"]), 4)
    assert irra["params"] - base["params"] == irra_params(d, o["mlm.cmt_depth"], 49408)
    # CLIP's unused logit_scale is frozen; everything else trains.
    assert base["trainable_params"] == base["params"] - 1
    for result in (base, with_sgiha, irra):
        assert result["steps"] == 1 and result["samples"] == 4 and len(result["step_times"]) == 1
        assert all(torch.isfinite(torch.tensor(v)) for v in result["last_losses"].values())
        assert set(result["last_losses"]) == {f"{n}_loss" for n in result["losses"]}
        # At the Adam step the fp32 weights, their gradients and Adam's two moment buffers are all held at once.
        held_at_step = FP32_BYTES * (result["params"] + 3 * result["trainable_params"])
        assert result["peak_bytes"] >= held_at_step


def test_cpu_allocation_peak_counts_the_block_not_the_process_history():
    mib = 2 ** 20
    released = torch.empty(64 * mib // FP32_BYTES)  # memory the process held and freed before the block (issue 20)
    released.fill_(1.0)
    del released
    with cpu_allocation_peak() as measured:
        a = torch.empty(4 * mib // FP32_BYTES)
        b = torch.empty(4 * mib // FP32_BYTES)
        del a
        c = torch.empty(mib // FP32_BYTES)  # 5 MiB held now, below the 8 MiB held before `del a`
        del b, c
        d = torch.empty(2 * mib // FP32_BYTES)
    assert d.numel() and measured["peak_bytes"] == 8 * mib


@pytest.mark.slow
def test_tiny_run_in_subprocesses_writes_a_consistent_table(tmp_path):
    out = tmp_path / "train.md"
    table = bench_train.main(TINY_ARGS + ["--recipes", "irra", "irra_sgiha", "--out", str(out)])
    assert out.read_text(encoding="utf-8") == table
    rows = table_rows(table, "recipe")
    assert list(rows) == ["irra", "irra_sgiha"]
    for cells in rows.values():
        s_per_step, samples_per_s = float(cells[3]), float(cells[5])
        low, high = (float(x) for x in cells[4].split("-"))
        assert low <= s_per_step <= high
        # Cells are rounded (s/step to 3 decimals, samples/s to 2): check against the bounds that allows.
        assert 4 / (s_per_step + HALF_MS) - 0.005 <= samples_per_s <= 4 / (s_per_step - HALF_MS) + 0.005
    base, sgiha = rows["irra"], rows["irra_sgiha"]
    assert sgiha[1] == "sdm+id+mlm+aqa" and base[8] == "" and base[9] == ""
    with_sgiha, without = float(sgiha[3]), float(base[3])
    lowest = 100 * ((with_sgiha - HALF_MS) / (without + HALF_MS) - 1) - 0.5  # the percentage is rounded too
    highest = 100 * ((with_sgiha + HALF_MS) / (without - HALF_MS) - 1) + 0.5
    assert lowest <= float(sgiha[8].rstrip("%")) <= highest
    assert float(sgiha[6]) > 0 and float(sgiha[7]) >= float(sgiha[6])
    assert all(c == "" for c in sgiha[10:])  # tiny runs are not compared with the release


def test_release_columns_only_for_the_release_setting():
    result = {"recipe": "irra_sgiha", "s_per_step": 2.8, "process_peak_bytes": 3.1 * bench_train.GIB}
    release = bench_train.parse_args(["--device", "cpu"])
    assert bench_train._release_cells(result, release) == ["5.6-5.7", f"{2.8 / 5.65:.2f}x", "6.2", "0.50x"]
    assert bench_train._release_cells(result, bench_train.parse_args(["--device", "cpu", "--batch_size", "8"])) \
        == [""] * 4
    assert bench_train._release_cells({**result, "recipe": "clip_finetune"}, release) == [""] * 4
