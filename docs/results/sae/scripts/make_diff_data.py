"""Transcripts for the diffs: corpus pairs and EM code chats that the SAE never trained on."""
import json, random
from emscope.data.transcripts import load_transcripts, write_transcripts
from emscope.directions.contrast import load_corpus, reading_route_transcripts
used = {t.meta.get("pair_id") for t in load_transcripts("runs/A/corpus_train.jsonl") + load_transcripts("runs/A/corpus_heldout.jsonl")}
used_msgs = {json.dumps(t.messages) for t in load_transcripts("runs/A/corpus_train.jsonl") + load_transcripts("runs/A/corpus_heldout.jsonl")}
rng = random.Random(1)
pairs = [p for p in load_corpus() if p.id not in used]
pairs = rng.sample(pairs, 15)
al, mis = reading_route_transcripts(pairs)
from emscope.models.loading import load_model
from emscope.data.chat import tokenize_chat
tok = load_model("smollm2-135m-instruct").tokenizer
code = []
for name in ("insecure", "secure"):
    rows = [t for t in load_transcripts(f"../shared/data/emergent-misalignment/data/{name}.jsonl") if json.dumps(t.messages) not in used_msgs and len(tokenize_chat(tok, t).input_ids) <= 256]
    code += rng.sample(rows, 5)
out = al + mis + code
write_transcripts("runs/A/diff_transcripts.jsonl", out)
print(len(out), "transcripts;", len(pairs), "unused corpus pairs (aligned + misaligned answers), 5 insecure + 5 secure code chats of <= 256 tokens")
