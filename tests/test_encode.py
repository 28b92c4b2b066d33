"""One way to encode (issue 15, point 3): the evaluator, inference/encoder.py and tools/search.py give identical
features, in the precision of the run's ``amp`` (an argument of the API can ask for another)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

import processor.evaluator
from datasets.build import build_eval_sets
from inference.encoder import EncoderInputError, load_encoder
from model.build import load_retrieval_model
from processor.evaluator import evaluate
from tools import search
from utils.config import load_config, save_config
from utils.precision import resolve_amp
from utils.runs import BEST_CHECKPOINT, CONFIG_FILE

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def bf16_run(demo_run: Path, tmp_path_factory) -> Path:
    """The demo run's weights in a run folder whose config says amp: bf16 (CPU autocast supports it)."""
    run = tmp_path_factory.mktemp("bf16_run")
    save_config(load_config(demo_run / CONFIG_FILE, {"amp": "bf16"}), run / CONFIG_FILE)
    shutil.copy(demo_run / BEST_CHECKPOINT, run / BEST_CHECKPOINT)
    return run


def _evaluator_features(run: Path, monkeypatch) -> tuple[torch.Tensor, torch.Tensor, list[str], list[str]]:
    """(image features, caption features, image paths, captions) of the test split as test.py's evaluation
    computes them: the run's config, its amp resolved for the CPU."""
    cfg = load_config(run / CONFIG_FILE)
    split = build_eval_sets(cfg, ("test",))["test"]
    encoded: list[torch.Tensor] = []

    def recording(*args, **kwargs):
        result = processor_encode_loader(*args, **kwargs)
        encoded.append(result[0])
        return result

    processor_encode_loader = processor.evaluator.encode_loader
    monkeypatch.setattr(processor.evaluator, "encode_loader", recording)
    evaluate(load_retrieval_model(cfg, run / BEST_CHECKPOINT, CPU), split, CPU, resolve_amp(cfg.amp, CPU),
             cfg.eval_chunk_size)
    images, captions = encoded
    return images, captions, list(split.img_paths), list(split.captions)


def test_evaluator_api_and_search_give_identical_features_under_the_run_s_amp(bf16_run, tmp_path, monkeypatch):
    images, captions, paths, texts = _evaluator_features(bf16_run, monkeypatch)

    encoder = load_encoder(bf16_run, device="cpu")  # the config's amp, bf16
    assert torch.equal(encoder.encode_images(paths), images)
    assert torch.equal(encoder.encode_text(texts), captions)

    cfg = load_config(bf16_run / CONFIG_FILE)
    amp = resolve_amp(cfg.amp, CPU)  # as search.main
    model = load_retrieval_model(cfg, bf16_run / BEST_CHECKPOINT, CPU)
    gallery = tmp_path / "gallery"
    gallery.mkdir()
    for i, path in enumerate(paths):  # names that sort in the split's order: the same batches as the evaluator
        shutil.copy(path, gallery / f"{i:04d}{Path(path).suffix}")
    key = search.encoder_key(cfg, bf16_run / BEST_CHECKPOINT, amp)
    index = search.build_gallery_index(model, gallery, cfg, CPU, amp, key, tmp_path / "cache.pt")
    assert torch.equal(index.features, images)
    assert torch.equal(search.encode_queries(model, texts, cfg, CPU, amp), captions)

    # the run's amp matters: fp32 features differ, and the API's argument selects them
    fp32 = load_encoder(bf16_run, device="cpu", amp="none").encode_images(paths)
    assert not torch.equal(fp32, images)
    torch.testing.assert_close(fp32, images, rtol=0, atol=0.05)


def test_api_amp_argument_is_checked(bf16_run):
    with pytest.raises(EncoderInputError, match="amp='fp32': expected one of auto, fp16, bf16, none"):
        load_encoder(bf16_run, device="cpu", amp="fp32")
