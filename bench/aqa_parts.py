"""Which attribute types a trained SG-IHA head answers: AQA accuracy per part on the toy data.

    python bench/aqa_parts.py --config_file <run>/configs.yaml [--checkpoint PATH] [--split test]
        [--batch_size B] [--max_questions N] [--seed S] [--out FILE.md] [--key value ...]

Every caption of the split asks one question per visible part it names (toy_regions.json, as in the pointing game of
tools/visualize_grounding.py). The questions are shuffled (``--seed``) and cut into batches of ``--batch_size``
(default: the run's batch_size), and within each batch every SG-IHA output Z picks the answer of highest cosine, as
the training accuracy does (method §6.4). Per part it prints how often that answer is the question's own ("exact"), has
the same phrase (an identical answer elsewhere in the batch), or names the same part; and the mean AQA loss of the
batches (method §6.4, the run's temperature) against its chance value 2 ln B. docs/experiments/demo.md reports what it
measured.
"""
from __future__ import annotations

import argparse
import math
import random
import sys
from pathlib import Path
from typing import NamedTuple, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # project imports when run as bench/...py

import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from datasets.toy import read_regions  # noqa: E402
from datasets.transforms import build_transform  # noqa: E402
from inference.grounding import Question, bridge_features, encode_answers, encode_questions, load_grounding_model  # noqa: E402
from model.objectives import compute_aqa, cosine_matrix  # noqa: E402
from tools.visualize_grounding import split_records, toy_questions  # noqa: E402
from utils.config import Config, load_config  # noqa: E402
from utils.errors import UserError  # noqa: E402
from utils.images import load_image  # noqa: E402
from utils.precision import resolve_device  # noqa: E402
from utils.runs import default_checkpoint  # noqa: E402
from utils.tokenizer import get_tokenizer  # noqa: E402


class PartScore(NamedTuple):
    """Answer picks of one part's questions: how many, and how many were right by each criterion."""

    count: int
    exact: int  # the question's own answer
    same_phrase: int  # an answer with the question's phrase
    same_part: int  # an answer naming the question's part


def parse_args(argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config_file", required=True, help="the run's configs.yaml")
    parser.add_argument("--checkpoint", help="checkpoint (default: best.pth beside the config)")
    parser.add_argument("--split", default="test", help="split whose captions ask the questions (default test)")
    parser.add_argument("--batch_size", type=int, help="questions per batch (default: the run's batch_size)")
    parser.add_argument("--max_questions", type=int, help="use the first N shuffled questions (default all)")
    parser.add_argument("--seed", type=int, default=0, help="question shuffle (default 0)")
    parser.add_argument("--out", help="also write the table to this markdown file")
    args, overrides = parser.parse_known_args(argv)
    if args.batch_size is not None and args.batch_size < 2:
        parser.error(f"--batch_size {args.batch_size}: must be at least 2")
    return args, overrides


def whole_batches(count: int, batch_size: int) -> range:
    """Start indices of the whole batches of ``count`` items (a last, incomplete batch is dropped)."""
    return range(0, count - batch_size + 1, batch_size)


def pick_answers(answer: Tensor, bridge: Tensor, batch_size: int) -> Tensor:
    """For each question i, the index of the answer its output Z is closest to (cosine) within i's batch."""
    picks = []
    for start in whole_batches(len(bridge), batch_size):
        scores = cosine_matrix(bridge[start:start + batch_size], answer[start:start + batch_size])
        picks.append(scores.argmax(dim=1) + start)
    return torch.cat(picks) if picks else torch.zeros(0, dtype=torch.long)


def batch_losses(answer: Tensor, bridge: Tensor, batch_size: int, temperature: float) -> list[float]:
    """method §6.4's AQA loss of each whole batch."""
    return [float(compute_aqa(answer[s:s + batch_size], bridge[s:s + batch_size], temperature))
            for s in whole_batches(len(bridge), batch_size)]


def part_scores(picks: Tensor, questions: Sequence[Question]) -> dict[str, PartScore]:
    """Per part, how the picked answers (``picks[i]``: index of question i's pick) compare with the question's."""
    tallies: dict[str, list[int]] = {}
    for i, j in enumerate(picks.tolist()):
        q, a = questions[i], questions[j]
        row = tallies.setdefault(q.part, [0, 0, 0, 0])
        row[0] += 1
        row[1] += i == j
        row[2] += q.phrase == a.phrase
        row[3] += q.part == a.part
    return {part: PartScore(*row) for part, row in sorted(tallies.items())}


@torch.no_grad()
def features(model, questions: Sequence[Question], image_paths: Sequence[str], cfg: Config,
             device: torch.device) -> tuple[Tensor, Tensor]:
    """Answer features and SG-IHA outputs [Q, D] of the questions, in chunks of test_batch_size."""
    transform, tokenizer = build_transform(cfg, train=False), get_tokenizer()
    pixels = {i: transform(load_image(image_paths[i])) for i in sorted({q.image for q in questions})}  # once each
    answers, bridges = [], []
    for start in range(0, len(questions), cfg.test_batch_size):
        chunk = questions[start:start + cfg.test_batch_size]
        question_ids, _ = encode_questions(chunk, tokenizer, cfg)
        images = torch.stack([pixels[q.image] for q in chunk]).to(device)
        bridges.append(bridge_features(model, images, question_ids.to(device)).cpu())
        answer_ids = encode_answers(chunk, tokenizer, cfg).to(device)
        answers.append(model.backbone.text_features(answer_ids).global_feat.cpu())
    return torch.cat(answers), torch.cat(bridges)


def table(scores: dict[str, PartScore], losses: list[float], batch_size: int, split: str) -> str:
    total = PartScore(*(sum(s[k] for s in scores.values()) for k in range(4)))
    lines = [f"AQA on the {split} split, {len(losses)} batches of {batch_size}: loss {sum(losses) / len(losses):.3f} "
             f"(chance 2 ln {batch_size} = {2 * math.log(batch_size):.3f}); chance accuracy {1 / batch_size:.3f}", "",
             "| part | questions | exact | same phrase | same part |", "|---|---|---|---|---|"]
    for part, s in [*scores.items(), ("all", total)]:
        lines.append(f"| {part} | {s.count} | {s.exact / s.count:.2f} | {s.same_phrase / s.count:.2f} | "
                     f"{s.same_part / s.count:.2f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> tuple[dict[str, PartScore], list[float]]:
    args, overrides = parse_args(argv)
    cfg = load_config(args.config_file, overrides)
    device = resolve_device(cfg.device)
    checkpoint = Path(args.checkpoint) if args.checkpoint else default_checkpoint(args.config_file)
    model = load_grounding_model(cfg, checkpoint, device)
    records, dataset_dir = split_records(cfg, args.split)
    regions = read_regions(dataset_dir)
    if regions is None:
        raise UserError(f"{dataset_dir}: no toy_regions.json: the parts of the questions are known on toy data only")
    entries = [regions["images"][Path(r.img_path).relative_to(dataset_dir).as_posix()] for r in records]
    questions = [q for i, r in enumerate(records) for c in r.captions
                 for q in toy_questions(c, i, entries[i]["phrases"])]
    random.Random(args.seed).shuffle(questions)
    questions = questions[:args.max_questions]
    batch_size = args.batch_size or cfg.batch_size
    if len(questions) < batch_size:
        raise UserError(f"{len(questions)} questions: fewer than one batch of {batch_size}; use --batch_size")
    answer, bridge = features(model, questions, [r.img_path for r in records], cfg, device)
    scores = part_scores(pick_answers(answer, bridge, batch_size), questions)
    losses = batch_losses(answer, bridge, batch_size, cfg.sgiha.temperature)
    text = table(scores, losses, batch_size, args.split)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    return scores, losses


if __name__ == "__main__":
    main()
