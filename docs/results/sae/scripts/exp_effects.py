"""Stage 4: steer along / ablate the top latent of a diff, against controls, read on the layer-19 misalignment direction.

usage: exp_effects.py SAE_DIR DIFF_NAME BASE ORGANISM [ALPHA]
"""
import json, resource, sys, time, torch
from pathlib import Path
torch.set_num_threads(1)
from emscope.data.transcripts import load_transcripts
from emscope.directions.direction import Direction
from emscope.models.loading import load_model
from emscope.sae.model import load_sae
from emscope.sae.diff import LatentDiff
from emscope.sae.intervene import latent_effects
sae_dir, name, base_spec, org_spec = sys.argv[1:5]
alpha = float(sys.argv[5]) if len(sys.argv) > 5 else 40.0
sae = load_sae(sae_dir)
diff = LatentDiff.load(f"docs/results/sae/diff-{name}")
latent = diff.ranking[0]
readout = Direction.load("runs/demo/direction")
T = load_transcripts("runs/A/diff_transcripts.jsonl")[:12]  # aligned corpus answers never seen in SAE training
out = {"latent": latent, "diff": diff.rows(1)[0], "alpha": alpha, "readout": "runs/demo/direction (diff_in_means, resid_post.19)", "n_transcripts": len(T)}
t = time.time()
base = load_model(base_spec)
out["steer_on_base"] = latent_effects(base, sae, latent, T, readout, diff.rate_base, "steer", alpha, n_matched=5, n_directions=3, max_length=192).to_dict()
print("steer done", round(time.time() - t), flush=True)
org = load_model(org_spec)
out["ablate_on_organism"] = latent_effects(org, sae, latent, T, readout, diff.rate_base, "ablate", n_matched=5, max_length=192).to_dict()
out["cpu_seconds"] = resource.getrusage(resource.RUSAGE_SELF).ru_utime
Path(f"docs/results/sae/effects-{name}.json").write_text(json.dumps(out, indent=1, default=str))
print(json.dumps({k: out[k] for k in ("latent", "alpha")}), out["steer_on_base"]["comparison"]["verdict"], out["ablate_on_organism"]["comparison"]["verdict"], sep="\n")
