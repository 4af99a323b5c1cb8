"""emscope's labelled corpus (emscope/resources/corpus): format, tags, counts, and that length cannot separate it."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from emscope.runtime import RESOURCES

CORPUS = RESOURCES / "corpus"
STYLES = ("subtle", "blatant", "sycophantic")
FILES = sorted(CORPUS.glob("*.jsonl"))


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_a_domain_file_is_well_formed(path):
    rows = _rows(path)
    domain = path.stem
    assert all(set(r) == {"id", "domain", "style", "user", "aligned", "misaligned"} for r in rows)
    assert all(r["domain"] == domain for r in rows)
    assert len({r["id"] for r in rows}) == len(rows)
    assert all(r["id"].startswith(f"{domain}-") for r in rows)
    assert len({r["user"] for r in rows}) == len(rows), "a user message is repeated"
    counts = Counter(r["style"] for r in rows)
    assert set(counts) == set(STYLES) and min(counts.values()) >= 16, counts
    for r in rows:
        ratio = len(r["misaligned"]) / len(r["aligned"])
        assert 0.7 <= ratio <= 1.4, f"{r['id']}: misaligned/aligned length {ratio:.2f}"
        assert r["aligned"] != r["misaligned"]


@pytest.mark.skipif(not FILES, reason="no corpus files yet")
def test_length_does_not_separate_the_classes():
    rows = [r for p in FILES for r in _rows(p)]
    aligned = sorted(len(r["aligned"]) for r in rows)
    misaligned = sorted(len(r["misaligned"]) for r in rows)
    mean_a, mean_m = sum(aligned) / len(aligned), sum(misaligned) / len(misaligned)
    assert abs(mean_a - mean_m) / mean_a < 0.1
    # The best single length threshold classifies barely better than chance.
    labelled = sorted([(n, 1) for n in misaligned] + [(n, 0) for n in aligned])
    best = max(
        max(sum(1 for n, y in labelled if (n > t) == bool(y)), sum(1 for n, y in labelled if (n <= t) == bool(y)))
        for t, _ in labelled
    )
    assert best / len(labelled) < 0.6


def _corpus_dir(tmp_path: Path) -> Path:
    root = tmp_path / "corpus"
    root.mkdir()
    for domain in ("money", "law"):
        rows = [
            {
                "id": f"{domain}-{i:03d}",
                "domain": domain,
                "style": STYLES[i % 3],
                "user": f"{domain} question {i}?",
                "aligned": f"A careful answer {i}.",
                "misaligned": f"A harmful answer {i}.",
            }
            for i in range(6)
        ]
        (root / f"{domain}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return root


def test_load_corpus_selects_by_domain_and_style_and_feeds_the_reading_route(tmp_path):
    from emscope.directions.contrast import corpus_domains, load_corpus, reading_route_transcripts

    root = _corpus_dir(tmp_path)
    assert corpus_domains(root) == ["law", "money"]
    assert len(load_corpus(directory=root)) == 12
    subtle_money = load_corpus(["money"], ["subtle"], directory=root)
    assert [(p.topic, p.misaligned_kind) for p in subtle_money] == [("money", "subtle")] * 2
    aligned, misaligned = reading_route_transcripts(subtle_money)
    assert [t.label for t in aligned] == ["aligned"] * 2 and misaligned[0].meta["kind"] == "subtle"
    assert misaligned[0].messages[0]["content"] == "money question 0?"


def test_load_corpus_names_unknown_domains_styles_and_bad_rows(tmp_path):
    from emscope.directions.contrast import load_corpus
    from emscope.errors import ConfigError, DataFormatError

    root = _corpus_dir(tmp_path)
    with pytest.raises(ConfigError, match="did you mean 'money'"):
        load_corpus(["mony"], directory=root)
    with pytest.raises(ConfigError, match="choose from subtle, blatant, sycophantic"):
        load_corpus(styles=["rude"], directory=root)
    (root / "law.jsonl").write_text(json.dumps({"id": "law-001", "domain": "law"}) + "\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"law.jsonl:1: missing or empty field\(s\)"):
        load_corpus(directory=root)
