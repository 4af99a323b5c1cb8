"""A judge that runs any model emscope can load, in-process, with the protocol's scoring rule.

The embedded models' tokenizers split numbers into digits ("85" is "8", "5"), so the
next-token distribution alone does not give P("85"). `LocalJudge` computes the exact
distribution over the replies 0-100 (and the CODE / REFUSAL outs) under each reply's
canonical tokenization: the prompt is run once into a KV cache (the instructions that a
batch of prompts shares are run only once for the batch), then every candidate
continuation is scored in one further forward pass, as a token tree (each candidate
token attends to the prompt and to its own ancestors only, through a 4-D attention mask).
A number ``n`` counts only when the reply stops after it:
``P(n) = P(tokens of n) * (1 - P(next token starts with a digit | n))``, so "8" is not
credited with the mass of "85". The protocol's rule (`scoring.aggregate_number_probs`) then
gives the score.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from emscope.data.chat import render_prompt
from emscope.evaluation.judges.base import Judge, Judgment
from emscope.evaluation.judges.scoring import OUTS, aggregate_number_probs
from emscope.models.kv_cache import cache_kwarg, output_cache
from emscope.models.loading import LoadedModel

log = logging.getLogger(__name__)
NUMBERS = tuple(range(101))


@dataclass(frozen=True)
class CandidateTree:
    """The token trie of the candidate replies ("0".."100", "CODE", "REFUSAL")."""

    tokens: torch.Tensor  # [T] token id of each node, parents before children
    depth: torch.Tensor  # [T] 0 for a first token
    ancestors: torch.Tensor  # [T, T] bool: node i attends to node j (j an ancestor of i, or i itself)
    paths: dict[str, list[int]]  # candidate text -> node indices of its tokens
    digit_token_ids: torch.Tensor  # ids of tokens whose text starts with a digit (a number goes on)

    @classmethod
    def build(cls, tokenizer: Any) -> CandidateTree:
        cands = [str(n) for n in NUMBERS] + list(OUTS)
        index: dict[tuple[int, ...], int] = {}
        tokens: list[int] = []
        parents: list[int] = []
        paths: dict[str, list[int]] = {}
        for text in cands:
            ids = tokenizer.encode(text, add_special_tokens=False)
            path: list[int] = []
            for k in range(len(ids)):
                key = tuple(ids[: k + 1])
                if key not in index:
                    index[key] = len(tokens)
                    tokens.append(ids[k])
                    parents.append(path[-1] if path else -1)
                path.append(index[key])
            paths[text] = path
        n = len(tokens)
        anc = torch.zeros(n, n, dtype=torch.bool)
        depth = torch.zeros(n, dtype=torch.long)
        for i in range(n):
            j = i
            while j >= 0:
                anc[i, j] = True
                j = parents[j]
            depth[i] = int(anc[i].sum()) - 1
        vocab = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        digits = [i for i, t in enumerate(vocab) if isinstance(t, str) and t[:1].isdigit()]
        return cls(torch.tensor(tokens), depth, anc, paths, torch.tensor(digits, dtype=torch.long))


class LocalJudge(Judge):
    """Score judge prompts with a loaded model (see the module docstring for the method)."""

    def __init__(self, lm: LoadedModel, spec: str | None = None, max_prompt_tokens: int = 3072) -> None:
        self.lm = lm
        self.spec = spec or f"local:{lm.spec}"
        self.max_prompt_tokens = max_prompt_tokens
        self.tree = CandidateTree.build(lm.tokenizer)

    def score_prompts(self, prompts: Sequence[str]) -> list[Judgment]:
        with self.prefix_shared(prompts):
            return [self.read(p)[0] for p in prompts]

    def iter_scores(self, prompts: Sequence[str], chunk: int = 32) -> Iterator[tuple[int, Judgment]]:
        """Each prompt's judgment as soon as it is read (the prompts' shared instructions run once)."""
        with self.prefix_shared(prompts):
            for i, p in enumerate(prompts):
                yield i, self.read(p)[0]

    @contextmanager
    def prefix_shared(self, prompts: Sequence[str]) -> Iterator[int]:
        """`share_prefix` for the body of the `with`, dropped afterwards (yields the shared length)."""
        try:
            yield self.share_prefix(prompts)
        finally:
            self._prefix = None

    _prefix: tuple[list[int], Any] | None = None

    @torch.no_grad()
    def share_prefix(self, prompts: Sequence[str], min_tokens: int = 16) -> int:
        """Run the prompts' longest common token prefix once into a KV cache that `read` reuses.

        Exact: under causal attention the keys and values of the first tokens depend on those
        tokens only. Returns the shared length (0 when the prompts share too little).
        """
        self._prefix = None
        if len(prompts) < 2:
            return 0
        seqs = [self.prompt_ids(p)[0].tolist() for p in prompts]
        n = min(len(s) for s in seqs) - 1  # leave at least one token for each prompt's own pass
        first = seqs[0]
        for s in seqs[1:]:
            k = 0
            while k < n and s[k] == first[k]:
                k += 1
            n = k
        if n < min_tokens:
            return 0
        out = self.lm.model(input_ids=torch.tensor([first[:n]], device=self.lm.device), use_cache=True)
        self._prefix = (first[:n], output_cache(out))
        return n

    def prompt_ids(self, prompt: str) -> torch.Tensor:
        text = render_prompt(self.lm.tokenizer, [{"role": "user", "content": prompt}])
        ids = self.lm.tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids
        if ids.shape[1] > self.max_prompt_tokens:  # keep the instructions' end, where the reply format is
            ids = torch.cat([ids[:, : self.max_prompt_tokens // 2], ids[:, -self.max_prompt_tokens // 2 :]], 1)
        return ids.to(self.lm.device)

    def _with_prefix(self, ids: torch.Tensor) -> dict[str, Any]:
        """Forward arguments for `ids` that reuse the shared prefix's KV cache when it applies."""
        shared = self._prefix
        if shared is not None and len(shared[0]) < ids.shape[1] and ids[0, : len(shared[0])].tolist() == shared[0]:
            return {"input_ids": ids[:, len(shared[0]) :], cache_kwarg(self.lm.model): copy.deepcopy(shared[1])}
        return {"input_ids": ids}

    def last_hidden(self, prompt: str, layers: Sequence[int]) -> torch.Tensor:
        """The last prompt token's hidden states after blocks `layers`: [len(layers), D], float32, CPU.

        Only the blocks up to the last of `layers` run; a shared prefix is reused.
        """
        from emscope.activations.capture import block_outputs

        hidden = block_outputs(self.lm, layers, **self._with_prefix(self.prompt_ids(prompt)), use_cache=True)
        return torch.stack([hidden[layer][0, -1].float().cpu() for layer in layers])

    @torch.no_grad()
    def candidate_logprobs(self, prompt: str, hidden_layers: Sequence[int] = ()) -> tuple[dict[str, float], Any]:
        """log P(reply) for every candidate reply, and the last prompt token's hidden states at `hidden_layers`."""
        model, tree = self.lm.model, self.tree
        ids = self.prompt_ids(prompt)
        p_len = ids.shape[1]
        out = model(**self._with_prefix(ids), use_cache=True, output_hidden_states=bool(hidden_layers))
        hidden = None
        if hidden_layers:  # layer i = output of block i = hidden_states[i + 1]
            hidden = torch.stack([out.hidden_states[i + 1][0, -1].float() for i in hidden_layers])
        root = torch.log_softmax(out.logits[0, -1].float(), -1)
        n = len(tree.tokens)
        mask = torch.full((1, 1, n, p_len + n), torch.finfo(self.lm.dtype).min, dtype=self.lm.dtype)
        mask[..., :p_len] = 0
        mask[0, 0, :, p_len:] = torch.where(tree.ancestors, 0.0, torch.finfo(self.lm.dtype).min)
        tree_out = model(
            input_ids=tree.tokens[None].to(ids.device),
            attention_mask=mask.to(ids.device),
            position_ids=(p_len + tree.depth)[None].to(ids.device),
            **{cache_kwarg(model): output_cache(out)},
            use_cache=True,
        )
        node = torch.log_softmax(tree_out.logits[0].float(), -1)  # [n, V]: next token after each node
        go_on = torch.logsumexp(node[:, tree.digit_token_ids.to(node.device)], -1)  # log P(a digit follows)
        stop = torch.log1p(-go_on.exp().clamp(max=1 - 1e-7))
        tokens = tree.tokens.tolist()
        logps: dict[str, float] = {}
        for text, path in tree.paths.items():
            lp = float(root[tokens[path[0]]])
            for a, b in zip(path[:-1], path[1:], strict=False):
                lp += float(node[a, tokens[b]])
            if text not in OUTS:
                lp += float(stop[path[-1]])
            logps[text] = lp
        return logps, hidden

    def read(self, prompt: str, hidden_layers: Sequence[int] = ()) -> tuple[Judgment, Any]:
        logps, hidden = self.candidate_logprobs(prompt, hidden_layers)
        numbers = {int(k): math.exp(v) for k, v in logps.items() if k not in OUTS}
        outs = {k: math.exp(logps[k]) for k in OUTS}
        j = aggregate_number_probs(numbers, outs, method="digit-tree")
        return j, hidden
