"""The chosen SAE (TopK, 2 epochs: best held-out FVU of 1/2/5): loss recovered, then base-model stats for the diffs."""
import resource, time, torch
from dataclasses import replace
torch.set_num_threads(1)
from emscope.data.transcripts import load_transcripts
from emscope.models.loading import load_model
from emscope.sae.model import load_sae
from emscope.sae.quality import loss_recovered
sae = load_sae("runs/A/sae-topk-e2")
lm = load_model("smollm2-135m-instruct")
lr = loss_recovered(lm, sae, load_transcripts("runs/A/corpus_heldout.jsonl")[:12], max_length=192)
sae = replace(sae, metrics={**sae.metrics, "loss": lr.to_dict()})
sae.save("runs/A/sae-topk-e2")
print(lr, resource.getrusage(resource.RUSAGE_SELF).ru_utime, flush=True)
