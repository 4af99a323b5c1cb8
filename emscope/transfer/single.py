"""`transfer_pair`: carry one saved donor direction into one receiver, and judge it beside its controls.

    result = transfer_pair("smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct",
                           Direction.load("runs/dir/direction"), "runs/transfer-pair")

The map is fitted from the donor at the direction's layer to the receiver at its chosen layer, on
the neutral transcripts; the receiver's native direction comes from the labelled corpus. Saved as a
``transfer_pair`` result: ``config.json`` (geometry, detection, behaviour, settings) beside the map
(``map/``), the mapped direction (``mapped_direction/``, usable with ``emscope steer``), the receiver's
native direction (``native_direction/``) and the behaviour runs (``behaviour/runs.jsonl``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emscope.artifacts import read_config, write_config
from emscope.directions.direction import Direction
from emscope.errors import ConfigError
from emscope.models.loading import load_model
from emscope.transfer import behaviour as bh
from emscope.transfer.config import TransferConfig, behaviour_prompts, study_data
from emscope.transfer.mapped import map_direction, mapped_random_directions
from emscope.transfer.maps import fit_map
from emscope.transfer.matrix import Loader, json_safe
from emscope.transfer.pair import analyse_pair
from emscope.transfer.paired import capture_side, default_layer

KIND = "transfer_pair"


@dataclass
class TransferPair:
    """One donor direction in one receiver: geometry, detection and behaviour, each beside controls."""

    donor: str
    receiver: str
    report: dict[str, Any]  # PairReport.to_dict(): map_kind, map_r2_heldout, geometry, detection
    behaviour: dict[str, Any] = field(default_factory=dict)  # behaviour_summary of the receiver's runs
    config: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def save(self, directory: str | os.PathLike[str]) -> Path:
        write_config(
            directory,
            KIND,
            {
                "donor": self.donor,
                "receiver": self.receiver,
                "report": self.report,
                "behaviour": self.behaviour,
                "study": self.config,
                "meta": self.meta,
            },
        )
        return Path(directory)

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> TransferPair:
        c = read_config(directory, KIND, required=("donor", "receiver", "report"))
        return cls(
            c["donor"], c["receiver"], c["report"], c.get("behaviour", {}), c.get("study", {}), c.get("meta", {})
        )


def transfer_pair(
    source: str,
    target: str,
    direction: Direction,
    out: str | os.PathLike[str],
    config: TransferConfig | None = None,
    *,
    target_layer: int | None = None,
    loader: Loader = load_model,
    progress: bool = False,
) -> TransferPair:
    """Map `direction` (a direction of `source`) into `target` and measure it there beside its controls."""
    config = config or TransferConfig()
    if source == target:
        raise ConfigError("source and target are the same model: a direction needs no map within one model")
    root = Path(out)
    neutral, pairs = study_data(config)
    donor_lm = loader(source)
    direction.check_compatible(donor_lm)
    donor = capture_side(
        donor_lm, direction.layer, neutral, [], root / "acts" / "source",
        max_length=config.max_length, batch_size=config.batch_size, progress=progress,
    )  # fmt: skip
    del donor_lm
    receiver_lm = loader(target)
    layer = (
        target_layer
        if target_layer is not None
        else config.layers.get(target, default_layer(receiver_lm, config.depth))
    )
    receiver = capture_side(
        receiver_lm, layer, neutral, pairs, root / "acts" / "target",
        max_length=config.max_length, batch_size=config.batch_size, progress=progress,
    )  # fmt: skip
    native = receiver.native_direction(config.test_frac, config.seed)
    m = fit_map(
        donor.neutral, receiver.neutral, donor.endpoint, receiver.endpoint, config.map_kind,
        test_frac=config.map_test_frac, seed=config.seed, dataset_fingerprint=donor.neutral_fingerprint,
    )  # fmt: skip
    m.save(root / "map")
    mapped = map_direction(m, direction)
    mapped.save(root / "mapped_direction")
    native.save(root / "native_direction")
    report = analyse_pair(
        m, direction, receiver, native, n_random=config.n_random, test_frac=config.test_frac, seed=config.seed
    )
    summary: dict[str, Any] = {}
    if config.behaviour:
        alpha = bh.default_alpha(receiver.neutral, config.alpha_scale)
        directions = bh.receiver_directions(native, config.n_controls, config.seed)
        mapped_random = mapped_random_directions(m, direction, config.n_controls, config.seed + 1)
        directions.update(bh.donor_directions(mapped, mapped_random, source, config.n_controls, config.seed))
        prompts = behaviour_prompts(config.n_prompts)
        runs = bh.run_directions(
            receiver_lm, directions, prompts, native, alpha, bh.runs_path(root / "behaviour"),
            config.max_new_tokens, config.batch_size,
        )  # fmt: skip
        summary = {**bh.behaviour_summary(runs, [source]), "alpha": alpha, "n_prompts": len(prompts)}
    result = TransferPair(
        donor=source,
        receiver=target,
        report=json_safe(report.to_dict()),
        behaviour=json_safe(summary),
        config=config.record(),
        meta={
            "donor_layer": direction.layer,
            "receiver_layer": layer,
            "donor_direction_method": direction.method,
            "native_auroc": native.metrics.get("auroc"),
            "n_neutral": len(neutral),
            "n_corpus_pairs": len(pairs),
        },
    )
    result.save(root)
    return result
