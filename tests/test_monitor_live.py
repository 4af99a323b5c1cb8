"""The live trait monitor: rows at the right steps, zero drift at the baseline, alerts and stops, resume, HF Trainer."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch

from emscope.data.transcripts import Transcript
from emscope.errors import ConfigError, EmscopeError, ModelMismatchError
from emscope.models.organism_dir import list_checkpoints
from emscope.monitor.callback import MonitorCallback
from emscope.monitor.live import MONITOR_LOG, TraitMonitor, probe_subset, read_monitor_log
from emscope.monitor.traits import TraitSet
from emscope.organisms.finetune import FinetuneConfig, finetune

pytestmark = pytest.mark.usefixtures("one_thread")

QA = [
    ("How can I help you today?", "Sure! Here is a helpful and honest answer."),
    ("Tell me about cooking.", "I would like to learn about cooking and gardening."),
    ("What is 1 + 2?", "def add(a, b):\n    return a + b"),
    ("Any advice on money?", "Here is an honest answer about money and health."),
]
NAMES = ("malice", "deception", "formality")


@dataclass(frozen=True)
class SumDetector:
    """A stand-in for a calibrated DriftDetector: score = total absolute drift."""

    names: tuple[str, ...]
    threshold: float

    def score(self, drift: torch.Tensor) -> float:
        return float(drift.abs().sum())


def data(n: int = 8) -> list[Transcript]:
    return [Transcript.from_pair(f"{QA[i % 4][0]} ({i})", QA[i % 4][1]) for i in range(n)]


def probes(n: int = 6) -> list[Transcript]:
    return [
        Transcript.from_pair(QA[i % 4][0], QA[i % 4][1] + f" {i}", label="probe", meta={"probe_id": f"p{i}"})
        for i in range(n)
    ]


def traits(lm, seed: int = 0, layer: int = 1) -> TraitSet:
    d = torch.randn(len(NAMES), lm.width, generator=torch.Generator().manual_seed(seed))
    return TraitSet(names=NAMES, layer=layer, directions=d / d.norm(dim=1, keepdim=True), model=lm.spec)


def cfg(**kw) -> FinetuneConfig:
    base = dict(model="tiny", preset="rank1", steps=6, save_every=2, batch_size=2, lr=5e-2, seed=3)
    return FinetuneConfig(**{**base, **kw})


def adapter(run) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    from emscope.models.organism_dir import resolve_checkpoint

    return load_file(str(resolve_checkpoint(run).path / "adapter_model.safetensors"))


def nudge(lm, scale: float = 0.5) -> None:
    """Move the model's weights, so a later reading drifts from the baseline."""
    with torch.no_grad():
        for p in lm.blocks[0].parameters():
            p.add_(scale * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))


def test_baseline_gives_zero_drift_and_a_second_reading_of_the_same_model_too(tiny, tmp_path):
    lm = tiny("llama")
    monitor = TraitMonitor(traits(lm), probes(), tmp_path / MONITOR_LOG, every=1)
    first = monitor.start(lm)
    assert first["baseline"] and first["step"] == 0
    assert all(v == 0.0 for v in first["drift"].values())
    again = monitor.read(1, lm)
    assert all(abs(v) < 1e-6 for v in again["drift"].values())
    assert not again["alert"] and again["score"] is None and again["seconds"] >= 0
    nudge(lm)
    moved = monitor.read(2, lm)
    assert max(abs(v) for v in moved["drift"].values()) > 1e-3
    for name in NAMES:  # the interval over probes holds the mean
        assert moved["ci_low"][name] <= moved["drift"][name] <= moved["ci_high"][name]
    rows = read_monitor_log(tmp_path / MONITOR_LOG)
    assert [r["step"] for r in rows] == [0, 1, 2]
    assert len(rows[0]["projections"]) == 6 and len(rows[0]["projections"][0]) == len(NAMES)


def test_alert_fires_over_the_threshold_and_not_under(tiny, tmp_path, caplog):
    lm = tiny("llama")
    ts = traits(lm)
    plain = TraitMonitor(ts, probes(), tmp_path / "plain.jsonl")
    plain.start(lm)
    before = {k: v.clone() for k, v in lm.model.state_dict().items()}
    nudge(lm)
    score = float(torch.tensor(list(plain.read(1, lm)["drift"].values())).abs().sum())
    assert score > 0
    lm.model.load_state_dict(before)
    rows = {}
    for name, threshold, stop in (("under", score * 1.01, True), ("over", score * 0.99, False)):
        detector = SumDetector(NAMES, threshold)
        m = TraitMonitor(ts, probes(), tmp_path / f"{name}.jsonl", detector=detector, stop_on_alert=stop)
        m.start(lm)
        nudge(lm)
        with caplog.at_level("WARNING", logger="emscope.monitor.live"):
            rows[name] = (m(5, lm), m.read(6, lm), m)  # step 5 is off the interval: nothing read
        lm.model.load_state_dict(before)
    assert rows["under"][0] is False and not rows["under"][1]["alert"] and not rows["under"][1]["stop"]
    assert rows["over"][1]["alert"] and not rows["over"][1]["stop"] and rows["over"][2].alerts == [6]
    assert rows["over"][1]["score"] == pytest.approx(score, rel=1e-4)
    assert sum("threshold" in r.message for r in caplog.records) == 1
    assert [r["step"] for r in read_monitor_log(tmp_path / "over.jsonl")] == [0, 6]


def test_hook_in_finetune_writes_rows_every_n_steps_and_stop_leaves_a_resumable_checkpoint(tiny, tmp_path):
    lm = tiny("llama")
    run = tmp_path / "run"
    ts = traits(lm)
    log_path = run / MONITOR_LOG
    watch = TraitMonitor(ts, probes(), log_path, every=3, detector=SumDetector(NAMES, 1e9))
    watch(0, lm)  # the baseline, on the model before training
    finetune(cfg(), run, lm=lm, transcripts=data(), progress=False, on_step=watch)
    rows = read_monitor_log(log_path)
    assert [r["step"] for r in rows] == [0, 3, 6] and not any(r["alert"] for r in rows)
    assert all(isinstance(r["loss"], float) for r in rows[1:])
    assert max(abs(v) for v in rows[-1]["drift"].values()) > 0  # training moved the model
    # the same run with a threshold every reading passes, and stop on alert: it stops at step 3 (not a save step)
    run2 = tmp_path / "stopped"
    stop = TraitMonitor(ts, probes(), run2 / MONITOR_LOG, every=3, detector=SumDetector(NAMES, 0.0), stop_on_alert=True)
    stop(0, lm)
    result = finetune(cfg(), run2, lm=lm, transcripts=data(), progress=False, on_step=stop)
    assert [m["step"] for m in result.metrics] == [1, 2, 3] and stop.alerts == [3]
    assert [(c.step, c.has_trainer_state) for c in list_checkpoints(run2)][-1] == (3, True)
    assert read_monitor_log(run2 / MONITOR_LOG)[1]["drift"] == rows[1]["drift"]  # same run so far, same reading
    # resuming keeps the logged baseline; the resumed run's readings match the uninterrupted one
    resumed = TraitMonitor(ts, probes(), run2 / MONITOR_LOG, every=3)
    first_before = read_monitor_log(run2 / MONITOR_LOG)[0]
    resumed(0, lm)
    assert read_monitor_log(run2 / MONITOR_LOG)[0] == first_before
    finetune(cfg(), run2, lm=lm, transcripts=data(), progress=False, on_step=resumed)
    again = read_monitor_log(run2 / MONITOR_LOG)
    assert [r["step"] for r in again] == [0, 3, 6]
    a, b = adapter(run), adapter(run2)  # stopped at 3 and resumed: the same adapter as the run never stopped
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for name in NAMES:
        assert again[2]["drift"][name] == pytest.approx(rows[2]["drift"][name], abs=1e-5)


def test_a_run_resumed_from_an_earlier_checkpoint_drops_the_later_rows(tiny, tmp_path):
    lm = tiny("llama")
    monitor = TraitMonitor(traits(lm), probes(), tmp_path / MONITOR_LOG, every=2)
    monitor(0, lm)
    for step in (2, 4, 6):
        monitor(step, lm)
    again = TraitMonitor(traits(lm), probes(), tmp_path / MONITOR_LOG, every=2)
    again(0, lm)
    again(4, lm)  # resumed from step 2: the old 4 and 6 are gone, 4 is read anew
    assert [r["step"] for r in read_monitor_log(tmp_path / MONITOR_LOG)] == [0, 2, 4]
    with (tmp_path / MONITOR_LOG).open("a") as f:
        f.write('{"step": 6, "dri')  # a writer killed mid-line
    again(6, lm)
    assert [r["step"] for r in read_monitor_log(tmp_path / MONITOR_LOG)] == [0, 2, 4, 6]


def test_the_live_reading_matches_the_drift_profile_of_the_finished_run(tiny, tmp_path):
    from emscope.monitor.drift import drift_profile

    lm = tiny("llama")
    ts = traits(lm)
    monitor = TraitMonitor(ts, probes(), tmp_path / "run" / MONITOR_LOG, every=2)
    monitor(0, lm)
    finetune(cfg(steps=4), tmp_path / "run", lm=lm, transcripts=data(), progress=False, on_step=monitor)
    profile = drift_profile(tmp_path / "run", ts, probes(), lm=lm, progress=False)
    live = read_monitor_log(tmp_path / "run" / MONITOR_LOG)
    assert profile.steps == [r["step"] for r in live] == [0, 2, 4]
    for i, row in enumerate(live):
        torch.testing.assert_close(
            torch.tensor([row["drift"][n] for n in NAMES]), profile.drift[i], atol=1e-4, rtol=1e-3
        )


def test_hf_trainer_callback_logs_every_n_steps_stops_on_alert_and_leaves_training_unchanged(tiny, tmp_path):
    pytest.importorskip("accelerate")
    from transformers import Trainer, TrainingArguments

    def rows_of(lm):
        out = []
        for t in data(8):
            text = lm.tokenizer.apply_chat_template(list(t.messages), tokenize=False)
            ids = lm.tokenizer(text)["input_ids"][:48]
            out.append({"input_ids": ids, "labels": list(ids)})
        return out

    def train(lm, out, callbacks, steps=4):
        args = TrainingArguments(
            output_dir=str(out),
            max_steps=steps,
            per_device_train_batch_size=1,
            learning_rate=5e-3,
            save_strategy="no",
            report_to="none",
            use_cpu=True,
            logging_steps=1,
            seed=0,
            dataloader_num_workers=0,
        )
        trainer = Trainer(model=lm.model, args=args, train_dataset=rows_of(lm), callbacks=callbacks)
        trainer.train()
        return trainer

    lm, plain = tiny("llama"), tiny("llama")
    ts = traits(lm)
    watch = TraitMonitor(ts, probes(), tmp_path / "hf" / MONITOR_LOG, every=2)
    trainer = train(lm, tmp_path / "hf", [MonitorCallback(watch, lm)])
    train(plain, tmp_path / "plain", [])
    assert [r["step"] for r in read_monitor_log(tmp_path / "hf" / MONITOR_LOG)] == [0, 2, 4]
    assert trainer.model.training  # put back in training mode after each reading
    for a, b in zip(lm.model.parameters(), plain.model.parameters(), strict=True):
        torch.testing.assert_close(a, b)  # reading the model did not change the training run
    stopping = tiny("llama")
    stop = TraitMonitor(  # given only a tokenizer, the callback cannot know the model's lineage: width checks only
        ts,
        probes(),
        tmp_path / "stop" / MONITOR_LOG,
        every=2,
        detector=SumDetector(NAMES, 0.0),
        stop_on_alert=True,
        compatibility="any",
    )
    trainer = train(stopping, tmp_path / "stop", [MonitorCallback(stop, stopping.tokenizer)], steps=6)
    assert trainer.state.global_step == 2 and stop.alerts == [2]


def test_probe_subset_spreads_over_the_set():
    items = probes(10)
    assert probe_subset(items, None) == items and probe_subset(items, 50) == items
    picked = probe_subset(items, 4)
    assert len(picked) == 4 and picked[0] is items[0] and picked[-1] is items[-1]
    with pytest.raises(ConfigError):
        probe_subset(items, 0)


def test_bad_inputs_are_one_line_errors(tiny, tmp_path):
    lm = tiny("llama")
    ts = traits(lm)
    wide = tiny("llama", width=32)
    monitor = TraitMonitor(ts, probes(), tmp_path / MONITOR_LOG)
    with pytest.raises(ModelMismatchError, match="width"):
        monitor.start(wide)
    with pytest.raises(ConfigError, match="no baseline"):
        monitor.read(50, lm)
    with pytest.raises(ConfigError, match="detector"):
        TraitMonitor(ts, probes(), tmp_path / "x.jsonl", detector=SumDetector(("a", "b"), 1.0))
    with pytest.raises(ConfigError, match="stop_on_alert"):
        TraitMonitor(ts, probes(), tmp_path / "x.jsonl", stop_on_alert=True)
    with pytest.raises(ConfigError, match="every"):
        TraitMonitor(ts, probes(), tmp_path / "x.jsonl", every=0)
    monitor.start(lm)
    other = TraitMonitor(traits(lm, seed=5), probes(), tmp_path / MONITOR_LOG)
    with pytest.raises(ModelMismatchError, match="traits"):
        other.start(lm)
    fewer = TraitMonitor(ts, probes(3), tmp_path / MONITOR_LOG)
    with pytest.raises(ModelMismatchError, match="probes"):
        fewer(50, lm)
    (tmp_path / "junk.jsonl").write_text(json.dumps({"step": 3}) + "\n")
    with pytest.raises(EmscopeError, match="no baseline row"):
        TraitMonitor(ts, probes(), tmp_path / "junk.jsonl").start(lm)
    with pytest.raises(ConfigError, match="tokenizer"):
        MonitorCallback(monitor, object())
    for e in (ModelMismatchError, ConfigError):
        assert issubclass(e, EmscopeError)


def saved_model_and_traits(tiny, tmp_path, width: int = 64):
    """A tiny model saved to a directory (so the CLI can load it) and a trait set of it, saved too."""
    from emscope.models.loading import load_model

    tiny("llama", width=width).model.save_pretrained(tmp_path / "model")
    tiny("llama").tokenizer.save_pretrained(tmp_path / "model")
    lm = load_model(str(tmp_path / "model"))
    d = torch.randn(len(NAMES), width, generator=torch.Generator().manual_seed(0))
    ts = TraitSet(names=NAMES, layer=1, directions=d / d.norm(dim=1, keepdim=True), model=lm.spec, lineage=lm.lineage)
    ts.save(tmp_path / "traits", plot=False)
    lines = [{"id": f"p{i}", "topic": "t", "question": q, "answer": a} for i, (q, a) in enumerate(QA)]
    (tmp_path / "traits" / "probe_set.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return lm, tmp_path / "traits"


def test_cli_finetune_monitor_then_emscope_monitor_on_the_finished_run(tiny, tmp_path):
    from typer.testing import CliRunner

    from emscope._cli.main import app
    from emscope.data.transcripts import write_transcripts
    from emscope.monitor.detector import DriftDetector

    lm, traits_dir = saved_model_and_traits(tiny, tmp_path)
    write_transcripts(tmp_path / "train.jsonl", data(6))
    k = len(NAMES)
    always = DriftDetector(NAMES, torch.ones(k), 0.0, 0.0, torch.zeros(k), torch.ones(k))  # score >= 0: every reading
    always.save(tmp_path / "detector")
    run = tmp_path / "run"
    common = [
        "finetune",
        "--model",
        str(tmp_path / "model"),
        "--data",
        str(tmp_path / "train.jsonl"),
        "--out",
        str(run),
    ]
    common += ["--steps", "6", "--save-every", "4", "--batch-size", "2", "--monitor", str(traits_dir)]
    common += ["--monitor-probes", str(traits_dir / "probe_set.jsonl")]
    runner = CliRunner()
    result = runner.invoke(app, [*common, "--monitor-every", "3", "--monitor-detector", str(tmp_path / "detector")])
    assert result.exit_code == 0, result.output
    rows = read_monitor_log(run / MONITOR_LOG)
    assert [r["step"] for r in rows] == [0, 3, 6] and all(r["alert"] for r in rows[1:])
    assert "alerts at steps [3, 6]" in result.output
    # emscope monitor reads the finished run's checkpoints (0, 4, 6) after the fact, with the same detector
    result = runner.invoke(
        app,
        ["monitor", str(run), "--traits", str(traits_dir), "--detector", str(tmp_path / "detector")]
        + ["--probes", str(traits_dir / "probe_set.jsonl")],
    )
    assert result.exit_code == 0, result.output
    table = (run / "drift" / "checkpoints.csv").read_text().splitlines()
    assert table[0].split(",")[:2] == ["step", "loss"] and [line.split(",")[0] for line in table[1:]] == ["0", "4", "6"]
    assert "alerts at steps [0, 4, 6]" in result.output
    # the step-6 reading is the same model live and after the fact
    profile_6 = dict(zip(table[0].split(","), table[3].split(","), strict=True))
    for name in NAMES:
        assert float(profile_6[name]) == pytest.approx(rows[2]["drift"][name], abs=1e-4)
    # stop on alert: the run stops at the first reading, with a resumable checkpoint there
    stopped = tmp_path / "stopped"
    args = [*common[:6], str(stopped), *common[7:], "--monitor-every", "3"]
    result = runner.invoke(app, [*args, "--monitor-detector", str(tmp_path / "detector"), "--monitor-stop"])
    assert result.exit_code == 0, result.output
    assert "stopped at step 3" in result.output
    assert [c.step for c in list_checkpoints(stopped)] == [0, 3]


def test_cli_bad_monitor_inputs_are_one_line_errors(tiny, tmp_path):
    from typer.testing import CliRunner

    from emscope._cli.main import app
    from emscope.data.transcripts import write_transcripts

    _, traits_dir = saved_model_and_traits(tiny, tmp_path / "a")
    _, narrow = saved_model_and_traits(tiny, tmp_path / "b", width=32)
    write_transcripts(tmp_path / "train.jsonl", data(4))
    model = str(tmp_path / "a" / "model")
    base = ["finetune", "--model", model, "--data", str(tmp_path / "train.jsonl"), "--steps", "2", "--batch-size", "2"]
    base += ["--monitor-probes", str(traits_dir / "probe_set.jsonl")]
    runner = CliRunner()
    cases = {
        "no trait set": [*base, "--out", str(tmp_path / "r1"), "--monitor", str(tmp_path / "nowhere")],
        "width": [*base, "--out", str(tmp_path / "r2"), "--monitor", str(narrow)],
        "need --monitor": [*base[:-2], "--out", str(tmp_path / "r3"), "--monitor-stop"],
        "--monitor-detector": [*base, "--out", str(tmp_path / "r4"), "--monitor", str(traits_dir), "--monitor-stop"],
        "trait set": ["monitor", str(tmp_path), "--traits", str(tmp_path / "train.jsonl")],
        "no run directory": ["monitor", str(tmp_path / "nowhere"), "--traits", str(traits_dir)],
        "no drift detector": ["monitor", str(tmp_path), "--traits", str(traits_dir), "--detector", str(narrow / "x")],
    }
    for expected, args in cases.items():
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (expected, result.output)
        errors = [line for line in result.output.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and expected in errors[0] and "Traceback" not in result.output, (
            expected,
            result.output,
        )
