"""bench/bench_inference.py at tiny sizes: with and without SG-IHA the retrieval model is one and the same."""
import torch

from bench import bench_inference, bench_train
from model.build import build_model, build_retrieval_model
from tests.markdown_table import table_rows
from utils.precision import resolve_device

TINY_ARGS = ["--tiny", "--batch_size", "4", "--batches", "1", "--device", "cpu"]


def test_tiny_run_shows_one_retrieval_model(tmp_path):
    out = tmp_path / "inference.md"
    table = bench_inference.main(TINY_ARGS + ["--recipes", "clip_finetune", "irra_sgiha", "--out", str(out)])
    assert out.read_text(encoding="utf-8") == table
    rows = table_rows(table, "trained")
    assert list(rows) == ["clip_finetune", "irra_sgiha"]
    cfg = bench_train.bench_config("irra_sgiha", 4, "none", False, tiny=True)
    backbone = sum(p.numel() for p in build_retrieval_model(cfg).parameters())
    for cells in rows.values():
        assert int(cells[2].replace(",", "")) == backbone  # method §6.5: exactly the backbone's parameters
        assert cells[3] == "yes"
        assert float(cells[4]) > 0 and float(cells[5]) > 0
    # The training models differ (SG-IHA and the IRRA branch exist only there).
    assert int(rows["irra_sgiha"][1].replace(",", "")) > int(rows["clip_finetune"][1].replace(",", ""))


def test_retrieval_part_keeps_the_trained_backbone_weights():
    args = bench_inference.parse_args(TINY_ARGS)
    cfg = bench_train.bench_config("irra_sgiha", 4, "none", False, tiny=True)
    torch.manual_seed(5)
    training = build_model(cfg, bench_train.TINY_NUM_CLASSES).eval()
    torch.manual_seed(5)
    retrieval, training_params = bench_inference.retrieval_part("irra_sgiha", args)
    assert training_params == sum(p.numel() for p in training.parameters())
    batch = bench_train.synthetic_batch(cfg, 1, torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(retrieval.encode_image(batch["images"]), training.backbone.encode_image(batch["images"]))
        assert torch.equal(retrieval.encode_text(batch["caption_ids"]),
                           training.backbone.encode_text(batch["caption_ids"]))


def test_same_model_check_is_not_vacuous():
    args = bench_inference.parse_args(TINY_ARGS)
    cpu = resolve_device("cpu")
    cfg = bench_train.bench_config("irra", 4, "none", False, tiny=True)
    probe = bench_train.synthetic_batch(cfg, 1, torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    first, _ = bench_inference.retrieval_part("clip_finetune", args)
    torch.manual_seed(1)  # other weights: the check must load the first model's weights to compare
    second, _ = bench_inference.retrieval_part("irra_sgiha", args)
    deeper_cfg = bench_train.bench_config("irra", 4, "none", False, tiny=True)
    deeper_cfg.backbone.text_layers += 1
    deeper = build_retrieval_model(deeper_cfg).eval()
    own = {k: v.clone() for k, v in second.state_dict().items()}
    same = bench_inference.same_model_checks({"a": first, "b": second, "c": deeper}, probe, cpu, "none")
    assert same == {"a": True, "b": True, "c": False}
    assert all(torch.equal(v, own[k]) for k, v in second.state_dict().items())  # weights restored afterwards
