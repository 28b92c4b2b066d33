"""inference/encoder.py: one encoder from a run folder, a checkpoint or an export folder, with the evaluator's
features."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from PIL import Image

from datasets.build import build_eval_sets
from inference.encoder import EncoderInputError, load_encoder
from model.build import load_retrieval_model
from model.encode import encode_loader
from model.open_clip_format import write_export
from utils.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from utils.config import load_config
from utils.images import ImageError
from utils.runs import BEST_CHECKPOINT, CONFIG_FILE

CPU = torch.device("cpu")
CAPTION = "a woman with long black hair in a red coat, blue jeans and white shoes"


@pytest.fixture(scope="module")
def sources(demo_run: Path, tmp_path_factory) -> dict[str, Path]:
    """The demo run as a run folder, a checkpoint file and an export folder."""
    cfg = load_config(demo_run / CONFIG_FILE)
    export_dir = tmp_path_factory.mktemp("export")
    write_export(cfg, load_retrieval_model(cfg, demo_run / BEST_CHECKPOINT, CPU).state_dict(), export_dir, "demo")
    return {"run folder": demo_run, "checkpoint": demo_run / BEST_CHECKPOINT, "export": export_dir}


@pytest.fixture(scope="module")
def test_split(demo_run: Path):
    return build_eval_sets(load_config(demo_run / CONFIG_FILE), ("test",))["test"]


def test_every_source_gives_the_evaluators_features(demo_run: Path, sources, test_split):
    cfg = load_config(demo_run / CONFIG_FILE)
    model = load_retrieval_model(cfg, demo_run / BEST_CHECKPOINT, CPU)
    image_feats, _ = encode_loader(model.encode_image, test_split.image_loader, CPU, "none", "images")
    text_feats, _ = encode_loader(model.encode_text, test_split.text_loader, CPU, "none", "captions")

    outputs = {}
    for name, path in sources.items():
        encoder = load_encoder(path, device="cpu", batch_size=5)  # several batches, the last one short
        images = encoder.encode_images(test_split.img_paths)
        captions = encoder.encode_text(test_split.captions)
        torch.testing.assert_close(images, image_feats, rtol=0, atol=1e-6)
        torch.testing.assert_close(captions, text_feats, rtol=0, atol=1e-6)
        assert images.dtype == captions.dtype == torch.float32
        torch.testing.assert_close(captions.norm(dim=-1), torch.ones(len(captions)))
        single = (encoder.encode_text(CAPTION), encoder.encode_images(test_split.img_paths[0]),
                  encoder.encode_images(Image.open(test_split.img_paths[0])))
        assert [s.shape for s in single] == [(1, 64)] * 3
        torch.testing.assert_close(single[1], image_feats[:1], rtol=0, atol=1e-6)
        torch.testing.assert_close(single[2], single[1], rtol=0, atol=0)  # a PIL image = its file
        outputs[name] = (images, captions, *single)
    first = outputs.pop("run folder")
    for name, tensors in outputs.items():
        for a, b in zip(first, tensors):
            assert torch.equal(a, b), name


def test_pil_images_in_any_mode_and_mixed_lists(sources, test_split):
    encoder = load_encoder(sources["export"], device="cpu")
    path = test_split.img_paths[1]
    mixed = encoder.encode_images([path, Image.open(path).convert("RGBA"), Path(path)])
    assert mixed.shape == (3, 64)
    torch.testing.assert_close(mixed[1:], mixed[:1].expand(2, -1), rtol=0, atol=0)
    assert encoder.encode_images([]).shape == (0, 64)


def test_long_captions_are_truncated_with_a_warning(sources, caplog):
    encoder = load_encoder(sources["run folder"], device="cpu")
    caplog.set_level(logging.WARNING, logger="inference.encoder")
    caplog.clear()
    encoder.encode_text(CAPTION)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    long = CAPTION + " and a big black backpack" * 8
    features = encoder.encode_text([CAPTION, long])
    assert "1 caption(s) exceed text_length 40 tokens" in caplog.text and "#1 (" in caplog.text
    # what is encoded: SOT, the first 38 tokens, EOT (method §4)
    tokenizer = encoder.tokenizer
    ids = torch.tensor([tokenizer.sot_id] + tokenizer.encode(long)[:38] + [tokenizer.eot_id])
    with torch.no_grad():
        expected = torch.nn.functional.normalize(encoder.model.encode_text(ids[None]), dim=-1)
    torch.testing.assert_close(features[1:], expected, rtol=0, atol=1e-6)


def test_bad_paths_and_inputs_are_user_errors(sources, tmp_path: Path):
    with pytest.raises(EncoderInputError, match="no such file or folder"):
        load_encoder(tmp_path / "missing")
    with pytest.raises(EncoderInputError, match="neither a run folder"):
        load_encoder(tmp_path)
    state = load_checkpoint(sources["checkpoint"])
    del state["config"]
    save_checkpoint(state, tmp_path / "old.pth")
    with pytest.raises(CheckpointError, match="holds no 'config'"):
        load_encoder(tmp_path / "old.pth")
    encoder = load_encoder(sources["export"], device="cpu")
    with pytest.raises(EncoderInputError, match="captions: expected str, got int"):
        encoder.encode_text(["fine", 3])
    with pytest.raises(EncoderInputError, match="images: expected .*, got int"):
        encoder.encode_images(7)
    with pytest.raises(ImageError, match="nothing.jpg"):
        encoder.encode_images(tmp_path / "nothing.jpg")
