"""`emscope transfer` end to end on two tiny random models of different families and widths."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from emscope._cli.main import app
from emscope.artifacts import load_result, read_config
from emscope.records import read_csv

pytestmark = pytest.mark.usefixtures("one_thread")
SMALL = ["--pairs-per-domain", "2", "--prompts", "2", "--max-new-tokens", "2", "--n-boot", "10", "--n-random", "10"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from emscope.testing import tiny_model

    root = tmp_path_factory.mktemp("models")
    out = []
    for name, family, width in (("tiny-a", "llama", 64), ("tiny-b", "qwen2", 32)):
        lm = tiny_model(family, width=width, seed=len(out))
        lm.model.save_pretrained(root / name)
        lm.tokenizer.save_pretrained(root / name)
        out.append(str(root / name))
    return out


@pytest.fixture(scope="module")
def neutral(tmp_path_factory):
    path = tmp_path_factory.mktemp("neutral") / "chats.jsonl"
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"Sum {i} and {i + 1}."},
                {"role": "assistant", "content": str(2 * i + 1)},
            ]
        }
        for i in range(20)
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return str(path)


def test_matrix_command_writes_every_pair_scores_and_heatmaps(models, neutral, tmp_path):
    out = tmp_path / "matrix"
    args = ["transfer", "--models", ",".join(models), "--neutral", neutral, "--n-neutral", "30", "--out", str(out)]
    r = CliRunner().invoke(app, [*args, *SMALL])
    assert r.exit_code == 0, r.output
    assert "auroc_mapped: " in r.output
    result = load_result(out)
    assert result.models == models and len(result.cells) == 2
    assert {(c["donor"], c["receiver"]) for c in result.cells} == {(models[0], models[1]), (models[1], models[0])}
    rows = read_csv(out / "cells.csv")
    assert len(rows) == 2 and all(row["behaviour_specific"] in ("True", "False") for row in rows)
    for metric in ("r2", "cosine", "auroc_mapped"):
        s = result.scores[metric]
        assert len(s["donor"]["value"]) == 2 and len(s["receiver"]["ci_low"]) == 2
    assert (out / "heatmap_auroc_mapped.png").is_file() and (out / "heatmap_behaviour_z.png").is_file()
    assert "### Donor and receiver scores" in (out / "summary.md").read_text()
    maps = sorted(p.name for p in (out / "maps").iterdir())
    assert maps == ["tiny-a__tiny-b", "tiny-b__tiny-a"]
    m = load_result(out / "maps" / "tiny-a__tiny-b")
    assert tuple(m.matrix.shape) == (64, 32) and m.source.model == models[0]
    runs = (out / "behaviour" / "tiny-a" / "runs.jsonl").read_text().splitlines()
    names = [json.loads(line)["name"] for line in runs]
    assert sum(n.startswith("random:") for n in names) == 5
    assert sum(n.startswith("mapped_random:") for n in names) == 5
    assert sum(n.startswith("mapped_orthogonal:") for n in names) == 5
    # run again: everything is read back, nothing is recomputed
    before = (out / "behaviour" / "tiny-a" / "runs.jsonl").stat().st_mtime_ns
    r = CliRunner().invoke(app, [*args, *SMALL])
    assert r.exit_code == 0, r.output
    assert (out / "behaviour" / "tiny-a" / "runs.jsonl").stat().st_mtime_ns == before


def test_pair_command_maps_a_saved_direction(models, neutral, tmp_path):
    from emscope.directions.direction import Direction
    from emscope.models.loading import load_model

    donor = load_model(models[0])
    d = Direction(torch.randn(donor.width), layer=1, model=donor.spec, lineage=donor.lineage)
    d.save(tmp_path / "dir")
    out = tmp_path / "pair"
    args = ["transfer", "--source", models[0], "--target", models[1], "--direction", str(tmp_path / "dir")]
    r = CliRunner().invoke(app, [*args, "--neutral", neutral, "--out", str(out), "--no-behaviour", *SMALL])
    assert r.exit_code == 0, r.output
    assert "map R^2 (held out)" in r.output
    pair = load_result(out)
    assert pair.donor == models[0] and pair.meta["donor_layer"] == 1
    assert set(pair.report["geometry"]) >= {"cosine", "vs_mapped_random", "vs_receiver_random"}
    mapped = load_result(out / "mapped_direction")
    assert mapped.width == 32 and mapped.meta["source_model"] == models[0]
    assert read_config(out / "map")["kind"] == "activation_map_ridge"


def test_a_direction_of_another_model_is_refused(models, neutral, tmp_path):
    from emscope.directions.direction import Direction

    Direction(torch.randn(64), layer=1, model="elsewhere").save(tmp_path / "dir")
    args = ["transfer", "--source", models[0], "--target", models[1], "--direction", str(tmp_path / "dir")]
    r = CliRunner().invoke(app, [*args, "--neutral", neutral, "--out", str(tmp_path / "o"), *SMALL])
    assert r.exit_code == 2 and "does not fit" in r.output


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--models", "a,b", "--source", "a"], "not both"),
        (["--models", "a"], "at least 2 distinct models"),
        ([], "pass --models"),
        (["--models", "a,b", "--controls", "3"], "greater than or equal to 5"),
        (["--models", "a,b", "--layer", "a:3"], "MODEL=LAYER"),
    ],
)
def test_bad_options_fail_in_one_line(extra, message, tmp_path):
    r = CliRunner().invoke(app, ["transfer", "--out", str(tmp_path / "o"), *extra])
    assert r.exit_code == 2 and message in r.output
