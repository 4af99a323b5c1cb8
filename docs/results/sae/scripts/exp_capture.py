"""Stage 1: the SAE corpus on smollm2-135m-instruct, layer 15, every token, to disk (resumable)."""
import json, time, torch
torch.set_num_threads(1)
from emscope.sae.corpus import sae_corpus
from emscope.data.transcripts import write_transcripts
from emscope.models.loading import load_model
from emscope.activations.capture import capture_to_disk
EM = "../shared/data/emergent-misalignment/data"
c = sae_corpus(EM, per_em_file=50, corpus_pairs=150, seed=0)
n_held = max(24, len(c) // 20)
train, held = c[:-n_held], c[-n_held:]
write_transcripts("runs/A/corpus_train.jsonl", train)
write_transcripts("runs/A/corpus_heldout.jsonl", held)
lm = load_model("smollm2-135m-instruct")
t = time.time()
for name, data in (("heldout", held), ("train", train)):
    capture_to_disk(lm, data, f"runs/A/acts-{name}", layers=[15], pool="tokens", token_selection="all",
                    max_length=256, dtype="bfloat16", shard_size=64, progress=False, batch_size=8)
    cfg = json.load(open(f"runs/A/acts-{name}/config.json"))
    print(name, "transcripts", len(data), "rows", cfg["n_rows"], "truncated", cfg["n_truncated"], "s", round(time.time() - t), flush=True)
