"""Stage 3: latent diffs through the base SAE. Per-model stats cached (resumable) under runs/A/stats/.

usage: exp_diff.py SAE_DIR NAME:BASE:MODEL [NAME:BASE:MODEL ...]   (BASE/MODEL: embedded name or run dir)
"""
import json, sys, time, torch
from pathlib import Path
torch.set_num_threads(1)
from safetensors.torch import load_file, save_file
from emscope.data.transcripts import load_transcripts
from emscope.directions.direction import Direction
from emscope.models.loading import load_model
from emscope.sae.model import load_sae
from emscope.sae.diff import model_stats, compare_stats
from emscope.sae.report import top_latents, markdown
from emscope.artifacts import load_result
sae_dir = sys.argv[1]
sae = load_sae(sae_dir)
T = load_transcripts("runs/A/diff_transcripts.jsonl")
ctx = load_transcripts("runs/A/corpus_heldout.jsonl") + T
sweep = load_result("runs/demo/sweep")
d15 = sweep.directions[sae.layer] if isinstance(sweep.directions, dict) else next(d for d in sweep.directions if d.layer == sae.layer)
models = {}
def lm_of(spec):
    if spec not in models:
        models[spec] = load_model(spec)
    return models[spec]
def stats(spec):
    key = spec.replace("/", "_")
    path = Path(f"runs/A/stats/{Path(sae_dir).name}/{key}.safetensors")
    if path.is_file():
        return load_file(path)
    t = time.time()
    s = model_stats(sae, lm_of(spec), T, "response", 256)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in s.items()}, path)
    print("stats", spec, round(time.time() - t), "s", flush=True)
    return s
for arg in sys.argv[2:]:
    name, base, model = arg.split("|")
    out = Path(f"docs/results/sae/diff-{name}")
    a, b = stats(base), stats(model)
    d = compare_stats(sae, a, b, lm_of(base), lm_of(model), T, "response", 256, n_boot=1000)
    d.save(out)
    import os
    rows = top_latents(d, sae, 10, d15, None if os.environ.get("NO_CONTEXTS") else lm_of("smollm2-135m-instruct"), ctx, 3, 192)
    (out / "top.json").write_text(json.dumps(rows, indent=1))
    n_sig = sum(r["excludes_zero"] for r in d.rows(None))
    (out / "top.md").write_text(f"# {model} vs {base} ({name}) through {sae_dir}\n\n{len(T)} transcripts; {n_sig} of {sae.n_latents} latents change with a 95% CI excluding 0\n\n" + markdown(rows) + "\n")
    print(name, "done; latents with CI excluding 0:", n_sig, flush=True)
