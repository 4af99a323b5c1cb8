import sys, time, resource, torch
torch.set_num_threads(1)
from pathlib import Path
from safetensors.torch import save_file
from emscope.data.transcripts import load_transcripts
from emscope.models.loading import load_model
from emscope.sae.model import load_sae
from emscope.sae.diff import model_stats
sae_dir, spec = sys.argv[1], sys.argv[2]
sae = load_sae(sae_dir)
T = load_transcripts("runs/A/diff_transcripts.jsonl")
t = time.time()
s = model_stats(sae, load_model(spec), T, "response", 256)
path = Path(f"runs/A/stats/{Path(sae_dir).name}/{spec.replace('/', '_')}.safetensors")
path.parent.mkdir(parents=True, exist_ok=True)
save_file({k: v.contiguous() for k, v in s.items()}, path)
print("stats", spec, round(time.time() - t), "s wall", resource.getrusage(resource.RUSAGE_SELF).ru_utime, "s cpu")
