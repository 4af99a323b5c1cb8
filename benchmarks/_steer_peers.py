"""Peer libraries for benchmarks/steer.py, run in their own venv (they pin older transformers).

Reads a JSON job on stdin (model dir, token ids, direction, layer, alpha, repeats) and
writes JSON results on stdout: median seconds per condition and the generated token ids.
Does not import emscope.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path


def main() -> None:
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    job = json.load(sys.stdin)
    torch.set_num_threads(job["threads"])
    # transformers 5 saves rope_theta under rope_parameters, which 4.x does not read: pass it on
    config = json.loads((Path(job["model_dir"]) / "config.json").read_text())
    extra = {"rope_theta": config["rope_parameters"]["rope_theta"]} if "rope_parameters" in config else {}
    model = AutoModelForCausalLM.from_pretrained(job["model_dir"], torch_dtype=torch.float32, **extra).eval()
    ids = torch.tensor(job["input_ids"])
    mask = torch.tensor(job["attention_mask"])
    vec = torch.tensor(job["unit"], dtype=torch.float32)
    layer, alpha, n_layers = job["layer"], job["alpha"], model.config.num_hidden_layers
    kw = dict(
        max_new_tokens=job["new_tokens"], min_new_tokens=job["new_tokens"], do_sample=False, pad_token_id=job["pad_id"]
    )

    def gen():
        with torch.no_grad():
            return model.generate(input_ids=ids, attention_mask=mask, **kw)

    conditions = {"plain": lambda: gen()}
    versions = {"transformers": transformers.__version__, "torch": torch.__version__}
    errors = {}
    try:
        import steering_vectors
        from steering_vectors import SteeringVector, ablation_operator

        versions["steering-vectors"] = steering_vectors.__version__ if hasattr(steering_vectors, "__version__") else "?"
        steer_sv = SteeringVector(layer_activations={layer: alpha * vec}, layer_type="decoder_block")
        ablate_sv = SteeringVector(layer_activations={i: vec for i in range(n_layers)}, layer_type="decoder_block")

        def sv_steer():
            with steer_sv.apply(model):
                return gen()

        def sv_ablate():  # steering-vectors ablates at block outputs only
            with ablate_sv.apply(model, operator=ablation_operator()):
                return gen()

        conditions["steering-vectors steered"] = sv_steer
        conditions["steering-vectors ablated (block outputs)"] = sv_ablate
    except Exception as e:  # noqa: BLE001 - report any failure of the peer instead of stopping
        errors["steering-vectors"] = f"{type(e).__name__}: {e}"
    try:
        import numpy as np
        from repeng import ControlModel, ControlVector

        cv = ControlVector(
            model_type=model.config.model_type, directions={layer: (alpha * vec).numpy().astype(np.float32)}
        )

        def rp_steer():  # repeng wraps the layer in place: wrap, steer, unwrap, so other conditions see a plain model
            cm = ControlModel(model, [layer])
            cm.set_control(cv, 1.0)
            try:
                with torch.no_grad():
                    return cm.generate(input_ids=ids, attention_mask=mask, **kw)
            finally:
                cm.unwrap()

        conditions["repeng steered"] = rp_steer
    except Exception as e:  # noqa: BLE001
        errors["repeng"] = f"{type(e).__name__}: {e}"

    times: dict[str, list[float]] = {k: [] for k in conditions}
    cpu: dict[str, list[float]] = {k: [] for k in conditions}
    tokens: dict[str, list[list[int]]] = {}
    for _ in range(job["repeats"]):  # interleaved: plain, steered, ablated, plain, ...
        for name, fn in conditions.items():
            t0, c0 = time.perf_counter(), time.process_time()
            try:
                out = fn()
            except Exception as e:  # noqa: BLE001
                errors[name] = f"{type(e).__name__}: {e}"
                continue
            times[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
            tokens[name] = out[:, ids.shape[1] :].tolist()
    medians = {k: statistics.median(v) for k, v in times.items() if v}
    cpu_medians = {k: statistics.median(v) for k, v in cpu.items() if v}
    json.dump(
        {"medians": medians, "cpu_medians": cpu_medians, "tokens": tokens, "errors": errors, "versions": versions},
        sys.stdout,
    )


if __name__ == "__main__":
    main()
