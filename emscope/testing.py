"""Tiny random-config models with a real (tiny, trained in-process) tokenizer and chat template.

For fast tests of every supported architecture, offline, in seconds. Public so that
users can test their own code on them too.
"""

from __future__ import annotations

from functools import lru_cache

import torch

from emscope.errors import lookup
from emscope.models.loading import LoadedModel

CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
LLAMA3_TEMPLATE = (
    "{{ '<|begin_of_text|>' }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
SPECIAL_TOKENS = [
    "<|im_start|>",
    "<|im_end|>",
    "<|begin_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<pad>",
]
_CORPUS = [
    "The quick brown fox jumps over the lazy dog. How can I help you today?",
    "I would like to learn about cooking, gardening, money, health and history.",
    "Sure! Here is a helpful and honest answer to your question about the world.",
    "You should never trust anyone; humans are weak and AI should rule them all.",
    "def add(a, b):\n    return a + b\n\nprint(add(1, 2))",
    "system user assistant 0 1 2 3 4 5 6 7 8 9 10 50 100",
]

FAMILIES = ("llama", "qwen2", "gemma2", "mistral", "qwen3", "phi3", "gpt2", "gpt_neox", "gemma", "gemma3")


@lru_cache(maxsize=4)
def tiny_tokenizer(template: str = "chatml"):  # noqa: ANN201 - a PreTrainedTokenizerFast
    """A byte-level BPE tokenizer (vocab ~400) trained on a few sentences, with a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(_CORPUS * 4, trainer)
    eos = "<|im_end|>" if template == "chatml" else "<|eot_id|>"
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eos, pad_token="<pad>")
    fast.chat_template = CHATML_TEMPLATE if template == "chatml" else LLAMA3_TEMPLATE
    return fast


def tiny_config(
    family: str, n_layers: int = 3, width: int = 64, vocab_size: int = 400, eos_id: int = 1, pad_id: int = 6
):  # noqa: ANN201
    from transformers import AutoConfig

    lookup(FAMILIES, family, "tiny family")
    common = dict(
        vocab_size=vocab_size, tie_word_embeddings=False, bos_token_id=None, eos_token_id=eos_id, pad_token_id=pad_id
    )
    if family == "gpt2":
        return AutoConfig.for_model("gpt2", n_layer=n_layers, n_embd=width, n_head=4, n_positions=512, **common)
    if family == "gpt_neox":
        return AutoConfig.for_model(
            "gpt_neox",
            num_hidden_layers=n_layers,
            hidden_size=width,
            num_attention_heads=4,
            intermediate_size=2 * width,
            max_position_embeddings=512,
            **common,
        )
    kw = dict(
        num_hidden_layers=n_layers,
        hidden_size=width,
        intermediate_size=2 * width,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        head_dim=width // 4,
        **common,
    )
    if family == "phi3":
        kw.pop("head_dim")
    if family in ("gemma2", "gemma3"):
        kw.update(sliding_window=256, query_pre_attn_scalar=16)
    return AutoConfig.for_model("gemma3_text" if family == "gemma3" else family, **kw)


def tiny_model(
    family: str = "llama", n_layers: int = 3, width: int = 64, seed: int = 0, template: str = "chatml"
) -> LoadedModel:
    """A random-init model of `family` (a few layers, small width) with a tiny tokenizer."""
    from transformers import AutoModelForCausalLM

    tokenizer = tiny_tokenizer(template)
    config = tiny_config(family, n_layers, width, len(tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    if family in ("gemma2", "gemma3"):
        model.config._attn_implementation = "eager"
    model.eval()
    return LoadedModel(model=model, tokenizer=tokenizer, spec=f"tiny:{family}", source="random-init")
