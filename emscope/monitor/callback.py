"""`MonitorCallback`: the live trait monitor as a `transformers.TrainerCallback`, for the HF Trainer and TRL.

Its own module because importing transformers' Trainer machinery takes seconds, which
`emscope.monitor.live` (imported by the CLI) should not pay.

    monitor = TraitMonitor(TraitSet.load("runs/traits"), probe_subset(load_probe_set(), 32), "out/monitor.jsonl")
    trainer = SFTTrainer(model=model, ..., callbacks=[MonitorCallback(monitor, lm)])

Made for one process. In a DDP run only the main process reads the model and logs, and a
stop it asks for reaches that process alone; a sharded model (FSDP, DeepSpeed ZeRO-3),
whose forward pass needs every process, is not supported.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from transformers import TrainerCallback

from emscope.errors import ConfigError
from emscope.models.loading import LoadedModel
from emscope.monitor.live import TraitMonitor

__all__ = ["MonitorCallback"]


class MonitorCallback(TrainerCallback):
    """A `transformers.TrainerCallback` (HF Trainer, TRL) around a `TraitMonitor`.

    ``on_train_begin`` records the baseline (a resumed run keeps the logged one); every
    ``monitor.every`` optimizer steps ``on_step_end`` reads the trainer's model and, when
    the monitor asks to stop, sets ``control.should_training_stop`` (and ``should_save``
    unless the trainer saves nothing, so the stopped run leaves a checkpoint). `lm` is the
    `LoadedModel` the trainer's model was built from (its tokenizer and lineage are used),
    or just a tokenizer.
    """

    def __init__(self, monitor: TraitMonitor, lm: LoadedModel | Any) -> None:
        self.monitor = monitor
        self.lm = lm if isinstance(lm, LoadedModel) else None
        self.tokenizer = lm.tokenizer if isinstance(lm, LoadedModel) else lm
        if not hasattr(self.tokenizer, "apply_chat_template"):
            raise ConfigError(f"MonitorCallback needs a LoadedModel or a tokenizer, got {type(lm).__name__}")

    def view(self, model: Any) -> LoadedModel:
        """The trainer's model as a `LoadedModel` (the PEFT wrapper's inner model, where the adapters sit)."""
        inner = model.get_base_model() if hasattr(model, "get_base_model") else model
        if self.lm is not None:
            return self.lm if inner is self.lm.model else replace(self.lm, model=inner, _blocks=None)
        spec = str(getattr(getattr(inner, "config", None), "name_or_path", "") or "trainer-model")
        return LoadedModel(model=inner, tokenizer=self.tokenizer, spec=spec, source="transformers.Trainer")

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if state.is_world_process_zero:
            self.monitor.start(self.view(model), step=int(state.global_step))

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> Any:
        step = int(state.global_step)
        if not state.is_world_process_zero or step % self.monitor.every:
            return None
        row = self.monitor.read(step, self.view(model))  # (the step's loss is logged only after this event)
        if row["stop"]:
            control.should_training_stop = True
            control.should_save = getattr(args, "save_strategy", "no") != "no"  # a SaveStrategy compares as str
        return control
