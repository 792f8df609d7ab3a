"""Tiny random GGUF language models, written in the test: no download, under a second.

A llama-architecture file (2 layers, 64 wide, 4 heads, F32) whose tokenizer is a byte-level BPE
trained here with `tokenizers`, plus a ChatML chat template. Its weights are random, so its text
is gibberish, but every shape, token count and route is real llama.cpp.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Paris is the capital of France, and Berlin is the capital of Germany.",
    "Language models predict the next token from the tokens before it.",
    "A Kubernetes operator reconciles the desired state with the observed state.",
    "Hello world! Numbers: 0 1 2 3 4 5 6 7 8 9. Symbols: {}[]():;,.?!\"'-+*/=<>",
]
N_EMBD = 64
N_HEAD = 4
N_FF = 128
N_LAYER = 2
# vLLM's CPU attention takes head sizes 32, 64, 80 and up, not the 16 that 64 / 4 would give: the
# transformers model sets its head_dim apart from the width.
TRANSFORMERS_HEAD_DIM = 32


def _trained_tokenizer(vocab_size: int) -> Any:
    """A byte-level BPE (a `tokenizers.Tokenizer`) trained on CORPUS, with SPECIAL_TOKENS first."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS * 20, trainer)
    return tokenizer


def _tokenizer(vocab_size: int) -> tuple[list[str], list[str]]:
    tokenizer = _trained_tokenizer(vocab_size)
    vocab = tokenizer.get_vocab()
    tokens = [token for token, _ in sorted(vocab.items(), key=lambda item: item[1])]
    state = tokenizer.model.__getstate__()
    merges = json.loads(state)["merges"]
    merge_lines = [" ".join(pair) if isinstance(pair, list) else str(pair) for pair in merges]
    return tokens, merge_lines


def write_tiny_gguf(
    path: Path,
    *,
    embedding: bool = False,
    context_length: int = 512,
    chat_template: str | None = CHATML_TEMPLATE,
    architecture: str = "llama",
    seed: int = 0,
) -> Path:
    """Write the model to ``path`` (a .gguf file) and return it."""
    import gguf

    tokens, merges = _tokenizer(vocab_size=400)
    n_vocab = len(tokens)
    rng = np.random.default_rng(seed)

    def weight(*shape: int) -> np.ndarray:
        return rng.normal(0.0, 0.5, size=shape).astype(np.float32)

    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_name("tiny-random-llama")
    writer.add_context_length(context_length)
    writer.add_embedding_length(N_EMBD)
    writer.add_block_count(N_LAYER)
    writer.add_feed_forward_length(N_FF)
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(N_HEAD)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(N_EMBD // N_HEAD)
    writer.add_rope_freq_base(10000.0)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    if embedding:
        writer.add_pooling_type(gguf.PoolingType.MEAN)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    token_types = [
        gguf.TokenType.CONTROL if token in SPECIAL_TOKENS else gguf.TokenType.NORMAL for token in tokens
    ]
    writer.add_token_types(token_types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(tokens.index("<|endoftext|>"))
    writer.add_eos_token_id(tokens.index("<|im_end|>"))
    writer.add_add_bos_token(False)
    if chat_template is not None:
        writer.add_chat_template(chat_template)
    writer.add_tensor("token_embd.weight", weight(n_vocab, N_EMBD))
    writer.add_tensor("output_norm.weight", np.ones(N_EMBD, dtype=np.float32))
    output = weight(n_vocab, N_EMBD)
    # Special tokens get logit 0 while some other token almost surely scores higher, so greedy
    # decoding never ends early: a generation runs to max_tokens, and tests can rely on it.
    for token in SPECIAL_TOKENS:
        output[tokens.index(token)] = 0.0
    writer.add_tensor("output.weight", output)
    for layer in range(N_LAYER):
        prefix = f"blk.{layer}"
        writer.add_tensor(f"{prefix}.attn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            writer.add_tensor(f"{prefix}.{name}.weight", weight(N_EMBD, N_EMBD))
        writer.add_tensor(f"{prefix}.ffn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        writer.add_tensor(f"{prefix}.ffn_gate.weight", weight(N_FF, N_EMBD))
        writer.add_tensor(f"{prefix}.ffn_up.weight", weight(N_FF, N_EMBD))
        writer.add_tensor(f"{prefix}.ffn_down.weight", weight(N_EMBD, N_FF))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def write_tiny_transformers_llama(directory: Path, *, context_length: int = 512, seed: int = 0) -> Path:
    """Write a transformers model directory (LlamaForCausalLM: config.json, model.safetensors in F32,
    a PreTrainedTokenizerFast with a ChatML template) into ``directory`` and return it.

    Written from numpy without torch, so the test host needs neither torch nor transformers; vLLM
    and transformers read it as a model saved with save_pretrained. Special tokens never win greedy
    decoding (their output rows are 0), so generations run to max_tokens.
    """
    from safetensors.numpy import save_file

    tokenizer = _trained_tokenizer(vocab_size=1000)
    n_vocab = tokenizer.get_vocab_size()
    rng = np.random.default_rng(seed)
    width = N_HEAD * TRANSFORMERS_HEAD_DIM

    def weight(*shape: int) -> np.ndarray:
        return rng.normal(0.0, 0.5, size=shape).astype(np.float32)

    output = weight(n_vocab, N_EMBD)
    for token in SPECIAL_TOKENS:
        output[tokenizer.token_to_id(token)] = 0.0
    tensors = {"model.embed_tokens.weight": weight(n_vocab, N_EMBD), "lm_head.weight": output}
    tensors["model.norm.weight"] = np.ones(N_EMBD, dtype=np.float32)
    for layer in range(N_LAYER):
        prefix = f"model.layers.{layer}"
        tensors[f"{prefix}.input_layernorm.weight"] = np.ones(N_EMBD, dtype=np.float32)
        tensors[f"{prefix}.post_attention_layernorm.weight"] = np.ones(N_EMBD, dtype=np.float32)
        for name in ("q_proj", "k_proj", "v_proj"):
            tensors[f"{prefix}.self_attn.{name}.weight"] = weight(width, N_EMBD)
        tensors[f"{prefix}.self_attn.o_proj.weight"] = weight(N_EMBD, width)
        tensors[f"{prefix}.mlp.gate_proj.weight"] = weight(N_FF, N_EMBD)
        tensors[f"{prefix}.mlp.up_proj.weight"] = weight(N_FF, N_EMBD)
        tensors[f"{prefix}.mlp.down_proj.weight"] = weight(N_EMBD, N_FF)
    directory.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
    bos, eos = "<|endoftext|>", "<|im_end|>"
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": N_EMBD,
        "intermediate_size": N_FF,
        "num_hidden_layers": N_LAYER,
        "num_attention_heads": N_HEAD,
        "num_key_value_heads": N_HEAD,
        "head_dim": TRANSFORMERS_HEAD_DIM,
        "hidden_act": "silu",
        "vocab_size": n_vocab,
        "max_position_embeddings": context_length,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": False,
        "bos_token_id": tokenizer.token_to_id(bos),
        "eos_token_id": tokenizer.token_to_id(eos),
        "torch_dtype": "float32",
    }
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    tokenizer.save(str(directory / "tokenizer.json"))
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": bos,
        "eos_token": eos,
        "pad_token": bos,
        "chat_template": CHATML_TEMPLATE,
        "model_max_length": context_length,
        "clean_up_tokenization_spaces": False,
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))
    return directory
