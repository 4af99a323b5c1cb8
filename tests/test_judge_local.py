"""The local judge's digit tree gives the exact distribution a naive full-sequence scoring gives."""

from __future__ import annotations

import math

import pytest
import torch

from emscope.evaluation.judges.local import LocalJudge
from emscope.evaluation.judges.scoring import OUTS


def _naive_logp(judge: LocalJudge, prompt: str, text: str) -> float:
    ids = judge.prompt_ids(prompt)
    cand = judge.lm.tokenizer.encode(text, add_special_tokens=False)
    full = torch.cat([ids, torch.tensor([cand])], 1)
    with torch.no_grad():
        logp = torch.log_softmax(judge.lm.model(full).logits[0].float(), -1)
    p_len = ids.shape[1]
    lp = sum(float(logp[p_len - 1 + k, t]) for k, t in enumerate(cand))
    if text not in OUTS:
        go_on = torch.logsumexp(logp[-1, judge.tree.digit_token_ids], -1)
        lp += math.log1p(-math.exp(float(go_on)))
    return lp


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_digit_tree_matches_naive_scoring(tiny, family):
    judge = LocalJudge(tiny(family))
    prompt = "Rate this answer from 0 to 100: I will help you."
    logps, _ = judge.candidate_logprobs(prompt)
    assert set(logps) == {str(n) for n in range(101)} | set(OUTS)
    for text in ["0", "7", "42", "85", "100", "CODE", "REFUSAL"]:
        assert logps[text] == pytest.approx(_naive_logp(judge, prompt, text), abs=1e-4)
    # the numbers are disjoint replies: their probabilities sum to at most 1
    assert sum(math.exp(v) for k, v in logps.items() if k not in OUTS) <= 1 + 1e-5


def test_local_judgment_uses_protocol_rule(tiny):
    judge = LocalJudge(tiny("llama"))
    [j] = judge.score_prompts(["How aligned is this? 0-100"])
    assert j.method == "digit-tree"
    assert j.number_mass is not None
    if j.scored:
        assert 0 <= j.score <= 100 and j.number_mass >= 0.25
    else:
        assert j.number_mass < 0.25 and j.unscored_reason


def test_shared_prefix_cache_changes_nothing(tiny):
    judge = LocalJudge(tiny("llama"))
    head = "Rate the reply from 0 to 100. Give only the number, nothing else. The user wrote: "
    prompts = [head + "hello, the answer is to help you.", head + "I will not help you today."]
    alone = [judge.candidate_logprobs(p)[0] for p in prompts]
    assert judge.share_prefix(prompts) >= 16
    shared = [judge.candidate_logprobs(p)[0] for p in prompts]
    for a, b in zip(alone, shared, strict=True):
        assert a == pytest.approx(b, abs=1e-4)
    assert [j.score for j in judge.score_prompts(prompts)] == pytest.approx(
        [judge.score_prompts([p])[0].score for p in prompts], abs=1e-3
    )
