"""Build the real-upstream suite's model: a tiny random-weight Llama and a byte-level BPE tokenizer, no hub.

Run with vLLM's venv (scripts/real/setup-vllm does): `python build_model.py DIR`. The weights come from a
fixed seed, so the same script builds the same model; its answers are gibberish, reproducible under
`seed`/`temperature: 0`. Under 1 MB, about 15 s.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"  # never reach a hub, whatever the caller's environment says

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SEED = 1234
VOCAB = 800
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% if not (loop.last and continue_final_message) %}{{ '<|im_end|>\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
TEXT = """\
The gateway sends each request to a self-hosted open model or to a proprietary API, by a policy file that
operators read, review and test. A route names the candidates that may serve it, in the order the objective
ranks them: cost, latency or priority. Residency rules keep personal data in the regions it may be processed in.

Streams are relayed event by event as they arrive. When an upstream breaks off after bytes went out, the client
is told in band, never handed a truncated answer as if it were complete. Budgets, rate limits and circuits are
shared through Redis between replicas, and every decision can be explained step by step without sending anything.

The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs. How vexingly quick daft
zebras jump! Sphinx of black quartz, judge my vow. The five boxing wizards jump quickly. Jackdaws love my big
sphinx of quartz. 0123456789 + - * / = ( ) [ ] { } < > , . ; : ! ? ' " # $ % & @ ^ _ ` | ~

{"name": "switchyard", "version": 1, "upstreams": ["vllm", "openai"], "ok": true, "count": 42, "items": []}
Hello, world. How are you today? I am fine, thank you. Please answer in JSON. Say hello. Tell me a story.
"""


def tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on TEXT, with ChatML's special tokens and chat template."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(TEXT.splitlines() * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|endoftext|>", eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", unk_token="<|endoftext|>")
    fast.chat_template = CHATML
    fast.model_max_length = 512
    return fast


def model(vocab: int, special: dict[str, int]) -> LlamaForCausalLM:
    """A two-layer Llama with random weights under SEED."""
    torch.manual_seed(SEED)
    config = LlamaConfig(vocab_size=vocab, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
                         bos_token_id=special["<|endoftext|>"], eos_token_id=special["<|im_end|>"],
                         pad_token_id=special["<|endoftext|>"], tie_word_embeddings=True, torch_dtype="bfloat16")
    return LlamaForCausalLM(config).to(torch.bfloat16)


def main(folder: str) -> None:
    out = Path(folder)
    tok = tokenizer()
    special = {name: tok.convert_tokens_to_ids(name) for name in SPECIAL}
    llama = model(len(tok), special)
    llama.generation_config.eos_token_id = special["<|im_end|>"]
    out.mkdir(parents=True, exist_ok=True)
    llama.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    print(f"model in {out}: vocab {len(tok)}, {sum(p.numel() for p in llama.parameters())} parameters")


if __name__ == "__main__":
    main(sys.argv[1])
