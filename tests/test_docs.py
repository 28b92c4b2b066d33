"""The documentation holds together: every `method §N` reference names a section of docs/method.md, every relative
link of the user docs resolves (file and heading anchor), and every script, config and tool a README command names
exists and answers --help.

The --help runs start one short Python process per entry point (about 0.1 s each: the entry points parse their
arguments before importing torch), so the test stays in the fast tier.
"""
from __future__ import annotations

import re
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
METHOD = ROOT / "docs" / "method.md"
REFERENCE = re.compile(r"method §(\d+(?:\.\d+)*)")
SECTION_HEADING = re.compile(r"^#+\s+§(\d+(?:\.\d+)*)\s", re.MULTILINE)
REFERENCING_SUFFIXES = (".py", ".yaml", ".md", ".sh")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
HTML_ANCHOR = re.compile(r"<a\s+(?:id|name)=\"([^\"]+)\"")
FENCE = re.compile(r"^\s*```")
EXTERNAL = ("http://", "https://", "mailto:")
PLACEHOLDER = re.compile(r"[<>*$~{}\[\]]")
INLINE_PATH = re.compile(r"`([\w./-]+\.(?:py|sh|yaml))`")


def tracked_files() -> list[Path]:
    """The repository's tracked files (git ls-files), as absolute paths that exist in the working tree."""
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, text=True).stdout
    return [ROOT / name for name in out.split("\0") if name and (ROOT / name).is_file()]


def user_docs() -> list[Path]:
    """README.md, CONTRIBUTING.md, bench/README.md and every markdown file under docs/."""
    named = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", ROOT / "bench" / "README.md"]
    return [p for p in named if p.is_file()] + sorted((ROOT / "docs").rglob("*.md"))


def outside_fences(text: str) -> list[tuple[int, str]]:
    """(line number, line) of the markdown lines outside fenced code blocks."""
    lines, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            lines.append((number, line))
    return lines


def github_slug(heading: str) -> str:
    """GitHub's anchor of a heading: the rendered text lower-cased, punctuation and symbols dropped, spaces to '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link renders as its text
    text = re.sub(r"[`*]", "", text).lower()
    kept = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LMN")
    return kept.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor of a markdown file: heading slugs (a repeated slug gets -1, -2, ...) and <a id/name> tags."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    for _, line in outside_fences(path.read_text(encoding="utf-8")):
        heading = HEADING.match(line)
        if heading:
            slug = github_slug(heading.group(2))
            found.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
            seen[slug] = seen.get(slug, 0) + 1
        found.update(HTML_ANCHOR.findall(line))
    return found


def defined_sections() -> set[str]:
    return set(SECTION_HEADING.findall(METHOD.read_text(encoding="utf-8")))


def test_slug_rules_match_hand_checked_headings():
    assert github_slug("§6.3 One SG-IHA block") == "63-one-sg-iha-block"
    assert github_slug("Training step: `bench_train.py`") == "training-step-bench_trainpy"
    assert github_slug("Paper and release: where they differ") == "paper-and-release-where-they-differ"
    assert github_slug("See [docs](docs/x.md) now") == "see-docs-now"


def test_method_defines_the_numbered_sections():
    sections = defined_sections()
    assert {"1", "2", "3", "4", "5", "6", "6.1", "6.2", "6.3", "6.4", "6.5", "7", "8", "9"} <= sections
    assert {"6.3.1", "6.3.2", "6.3.4"} <= sections  # the numbered steps of §6.3 that the code cites


def test_every_method_reference_names_a_section():
    sections = defined_sections()
    bad = []
    for path in tracked_files():
        if path.suffix not in REFERENCING_SUFFIXES:
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            bad += [f"{path.relative_to(ROOT)}:{number}: method §{ref}" for ref in REFERENCE.findall(line)
                    if ref not in sections]
    assert not bad, "references to sections docs/method.md does not define:\n" + "\n".join(bad)


def test_no_file_points_outside_the_repository_for_the_method():
    needles = ("shared/" + "SPEC", "SPEC" + ".md")
    bad = []
    for path in tracked_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        bad += [f"{path.relative_to(ROOT)}: {needle}" for needle in needles if needle in text]
    assert not bad, "the method is docs/method.md, not a file outside the repository:\n" + "\n".join(bad)


def test_relative_links_resolve():
    bad = []
    for doc in user_docs():
        for number, line in outside_fences(doc.read_text(encoding="utf-8")):
            for target in LINK.findall(line):
                if target.startswith(EXTERNAL):
                    continue
                file_part, _, anchor = target.partition("#")
                dest = (doc.parent / file_part).resolve() if file_part else doc
                where = f"{doc.relative_to(ROOT)}:{number}: {target}"
                if not dest.exists():
                    bad.append(f"{where} (no such file)")
                elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                    bad.append(f"{where} (no heading or anchor '{anchor}' in {dest.relative_to(ROOT)})")
    assert not bad, "broken links:\n" + "\n".join(bad)


def readme_commands() -> list[list[str]]:
    """The README's shell commands (fenced bash blocks), comments dropped, continuation lines joined, as words."""
    commands, block, fenced, language = [], "", False, ""
    for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            fenced, language = not fenced, line.strip()[3:]
            continue
        if fenced and language in ("bash", "sh", "shell"):
            block += line.split(" #")[0].rstrip()
            if block.endswith("\\"):
                block = block[:-1] + " "
                continue
            commands += [part.split() for part in re.split(r"&&|;|\|", block) if part.strip()]
            block = ""
    return commands


def repository_paths(words: list[str]) -> list[str]:
    """Words naming a file of the repository: a first path component that git tracks, no placeholder."""
    top = {path.relative_to(ROOT).parts[0] for path in tracked_files()}
    return [w.strip("\"'") for w in words
            if not PLACEHOLDER.search(w) and Path(w.strip("\"'")).parts[:1] and Path(w.strip("\"'")).parts[0] in top
            and not w.startswith("-")]


def python_entry_points(commands: list[list[str]]) -> list[str]:
    """Scripts run as `python X.py` (or `python3`), in order of appearance, once each."""
    found: list[str] = []
    for words in commands:
        for i, word in enumerate(words[:-1]):
            script = words[i + 1]
            if word in ("python", "python3") and script.endswith(".py") and script not in found:
                found.append(script)
    return found


def test_readme_commands_name_existing_files():
    commands = readme_commands()
    assert commands, "README.md has no bash command block"
    named = {w for words in commands for w in repository_paths(words)}
    named |= {words[i + 1] for words in commands for i, w in enumerate(words[:-1]) if w == "bash"}
    named |= set(python_entry_points(commands))
    missing = sorted(n for n in named if not PLACEHOLDER.search(n) and not (ROOT / n).exists())
    assert not missing, f"README commands name files that do not exist: {missing}"


def test_readme_names_existing_files_in_its_text():
    """Every `path.py` / `.sh` / `.yaml` the README names in inline code, under a tracked top-level name, exists."""
    top = {path.relative_to(ROOT).parts[0] for path in tracked_files()}
    bad = []
    for number, line in outside_fences((ROOT / "README.md").read_text(encoding="utf-8")):
        bad += [f"README.md:{number}: {name}" for name in INLINE_PATH.findall(line)
                if Path(name).parts[0] in top and not (ROOT / name).exists()]
    assert not bad, "the README names files that do not exist:\n" + "\n".join(bad)


@pytest.mark.parametrize("script", python_entry_points(readme_commands()) if (ROOT / "README.md").is_file() else [])
def test_readme_entry_point_answers_help(script: str):
    assert (ROOT / script).is_file(), f"{script}: named by a README command, not in the repository"
    done = subprocess.run([sys.executable, script, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{script} --help: exit {done.returncode}\n{done.stderr[-2000:]}"
    assert "usage" in done.stdout.lower(), f"{script} --help printed no usage line"
