"""The synthetic checkpoint's shape: model sizes (``SynthSpec``), the release's tensor table and its
``config.json`` in each dialect (transformers v5, v4, the real download's), and the image processor config.

Names, shapes and config keys are those of the ``Glm4vForConditionalGeneration`` release, so the
converter and runtime meet the same layout as with the real weights.
"""
from __future__ import annotations

from dataclasses import dataclass

from convert.synthetic.synth_tokenizer import SPECIAL_TOKENS, Bpe, _special_ids, _train_bpe


@dataclass(frozen=True)
class SynthSpec:
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int
    mrope_section: tuple[int, int, int]
    vision_depth: int
    vision_hidden_size: int
    vision_num_heads: int
    vision_image_size: int
    vision_out_hidden_size: int
    vision_intermediate_size: int  # the merger's width; vision block MLPs use out_hidden_size
    vocab_size: int | None = None  # None: tokenizer size rounded up to a multiple of 64
    default_shards: int | None = None  # None: ~4 GB per shard


SIZES: dict[str, SynthSpec] = {
    "tiny": SynthSpec(128, 2, 4, 2, 256, (2, 3, 3), 2, 64, 2, 112, 128, 192, default_shards=2),
    "medium": SynthSpec(1024, 4, 8, 2, 2816, (8, 12, 12), 24, 1536, 12, 336, 1024, 2816, default_shards=3),
    "full": SynthSpec(4096, 40, 32, 2, 13696, (8, 12, 12), 24, 1536, 12, 336, 4096, 13696, vocab_size=151552),
}
DIALECTS = ("v5", "v4", "release")
ROPE_THETA, PARTIAL_ROTARY = 500000.0, 0.5
PATCH, TEMPORAL_PATCH, MERGE = 14, 2, 2

PREPROCESSOR_CONFIG = {
    "size": {"shortest_edge": 12544, "longest_edge": 9633792}, "do_rescale": True,
    "do_normalize": True, "do_resize": True, "patch_size": PATCH, "temporal_patch_size": TEMPORAL_PATCH,
    "merge_size": MERGE, "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "image_processor_type": "Glm4vImageProcessor", "processor_class": "Glm46VProcessor",
}

# (name, shape in terms of _dims(), init).  Init kinds: w = linear/conv weight with
# std 1/sqrt(fan_in), norm = gain near 1, bias, pos, embed (see _INIT).
_VISION = [
    ("model.visual.patch_embed.proj.weight", ("vh", 3, TEMPORAL_PATCH, PATCH, PATCH), "w"),
    ("model.visual.patch_embed.proj.bias", ("vh",), "bias"),
    ("model.visual.embeddings.position_embedding.weight", ("npos", "vh"), "pos"),
    ("model.visual.post_conv_layernorm.weight", ("vh",), "norm"),
    ("model.visual.post_layernorm.weight", ("vh",), "norm"),
    ("model.visual.downsample.weight", ("vo", "vh", MERGE, MERGE), "w"),
    ("model.visual.downsample.bias", ("vo",), "bias"),
    ("model.visual.merger.proj.weight", ("vo", "vo"), "w"),
    ("model.visual.merger.post_projection_norm.weight", ("vo",), "norm"),
    ("model.visual.merger.post_projection_norm.bias", ("vo",), "bias"),
    ("model.visual.merger.gate_proj.weight", ("vm", "vo"), "w"),
    ("model.visual.merger.up_proj.weight", ("vm", "vo"), "w"),
    ("model.visual.merger.down_proj.weight", ("vo", "vm"), "w"),
]
_VISION_BLOCK = [
    ("norm1.weight", ("vh",), "norm"), ("norm2.weight", ("vh",), "norm"),
    ("attn.qkv.weight", ("3vh", "vh"), "w"), ("attn.proj.weight", ("vh", "vh"), "w"),
    ("mlp.gate_proj.weight", ("vo", "vh"), "w"), ("mlp.up_proj.weight", ("vo", "vh"), "w"),
    ("mlp.down_proj.weight", ("vh", "vo"), "w"),
]
_TEXT = [
    ("model.language_model.embed_tokens.weight", ("vocab", "h"), "embed"),
    ("model.language_model.norm.weight", ("h",), "norm"),
    ("lm_head.weight", ("vocab", "h"), "w"),
]
_TEXT_LAYER = [
    ("self_attn.q_proj.weight", ("q", "h"), "w"), ("self_attn.q_proj.bias", ("q",), "bias"),
    ("self_attn.k_proj.weight", ("kv", "h"), "w"), ("self_attn.k_proj.bias", ("kv",), "bias"),
    ("self_attn.v_proj.weight", ("kv", "h"), "w"), ("self_attn.v_proj.bias", ("kv",), "bias"),
    ("self_attn.o_proj.weight", ("h", "q"), "w"),
    ("mlp.gate_up_proj.weight", ("2i", "h"), "w"), ("mlp.down_proj.weight", ("h", "i"), "w"),
    ("input_layernorm.weight", ("h",), "norm"), ("post_attention_layernorm.weight", ("h",), "norm"),
    ("post_self_attn_layernorm.weight", ("h",), "norm"), ("post_mlp_layernorm.weight", ("h",), "norm"),
]
# kind -> (mean, std or None for 1/sqrt(fan_in))
_INIT = {"w": (0.0, None), "norm": (1.0, 0.1), "bias": (0.0, 0.1), "pos": (0.0, 0.5), "embed": (0.0, 1.0)}


def _vocab_size(spec: SynthSpec, bpe: Bpe | None = None) -> int:
    used = len((bpe or _train_bpe())[0]) + len(SPECIAL_TOKENS)
    return spec.vocab_size or -(-used // 64) * 64


def _dims(spec: SynthSpec) -> dict[str, int]:
    head = spec.hidden_size // spec.num_attention_heads
    return {"h": spec.hidden_size, "q": spec.num_attention_heads * head,
            "kv": spec.num_key_value_heads * head, "i": spec.intermediate_size,
            "2i": 2 * spec.intermediate_size, "vocab": _vocab_size(spec),
            "vh": spec.vision_hidden_size, "3vh": 3 * spec.vision_hidden_size,
            "vo": spec.vision_out_hidden_size, "vm": spec.vision_intermediate_size,
            "npos": (spec.vision_image_size // PATCH) ** 2}


def tensor_table(spec: SynthSpec) -> list[tuple[str, tuple[int, ...], str]]:
    """All (name, shape, init) of the checkpoint, sorted by name like a real release."""
    d = _dims(spec)
    rows = list(_VISION) + list(_TEXT)
    rows += [(f"model.visual.blocks.{n}.{k}", s, i) for n in range(spec.vision_depth) for k, s, i in _VISION_BLOCK]
    rows += [(f"model.language_model.layers.{n}.{k}", s, i)
             for n in range(spec.num_hidden_layers) for k, s, i in _TEXT_LAYER]
    return sorted((n, tuple(d[x] if isinstance(x, str) else x for x in s), i) for n, s, i in rows)


def build_config(spec: SynthSpec, dialect: str, bpe: Bpe | None = None) -> dict:
    if dialect == "release":
        from convert.synthetic.synth_release import release_config
        return release_config(build_config(spec, "v5", bpe), ROPE_THETA, PARTIAL_ROTARY, list(spec.mrope_section))
    ids = _special_ids(bpe)
    head = spec.hidden_size // spec.num_attention_heads
    assert sum(spec.mrope_section) * 2 == int(head * PARTIAL_ROTARY), "mrope_section must cover rotary_dim/2"
    text = {
        "model_type": "glm4v_text", "vocab_size": _vocab_size(spec, bpe), "hidden_size": spec.hidden_size,
        "intermediate_size": spec.intermediate_size, "num_hidden_layers": spec.num_hidden_layers,
        "num_attention_heads": spec.num_attention_heads, "num_key_value_heads": spec.num_key_value_heads,
        "hidden_act": "silu", "max_position_embeddings": 131072, "rms_norm_eps": 1e-5,
        "attention_bias": True, "attention_dropout": 0.0, "initializer_range": 0.02, "use_cache": True,
        "pad_token_id": ids["<|endoftext|>"],
        "eos_token_id": [ids["<|endoftext|>"], ids["<|user|>"], ids["<|observation|>"]],
    }
    mrope = list(spec.mrope_section)
    if dialect == "v5":
        text["rope_parameters"] = {"rope_type": "default", "rope_theta": ROPE_THETA,
                                   "mrope_section": mrope, "partial_rotary_factor": PARTIAL_ROTARY}
    elif dialect == "v4":
        text.update(rope_theta=ROPE_THETA, partial_rotary_factor=PARTIAL_ROTARY,
                    rope_scaling={"rope_type": "default", "type": "default", "mrope_section": mrope})
    else:
        raise ValueError(f"unknown dialect {dialect!r}; expected one of {DIALECTS}")
    vision = {
        "model_type": "glm4v_vision", "depth": spec.vision_depth, "hidden_size": spec.vision_hidden_size,
        "num_heads": spec.vision_num_heads, "hidden_act": "silu", "attention_bias": False,
        "attention_dropout": 0.0, "in_channels": 3, "image_size": spec.vision_image_size,
        "patch_size": PATCH, "temporal_patch_size": TEMPORAL_PATCH, "spatial_merge_size": MERGE,
        "rms_norm_eps": 1e-5, "out_hidden_size": spec.vision_out_hidden_size,
        "intermediate_size": spec.vision_intermediate_size, "initializer_range": 0.02,
    }
    tok = {k: ids[t] for k, t in [
        ("image_token_id", "<|image|>"), ("video_token_id", "<|video|>"),
        ("image_start_token_id", "<|begin_of_image|>"), ("image_end_token_id", "<|end_of_image|>"),
        ("video_start_token_id", "<|begin_of_video|>"), ("video_end_token_id", "<|end_of_video|>")]}
    dtype_key, version = ("dtype", "5.24.0") if dialect == "v5" else ("torch_dtype", "4.57.1")
    return {"architectures": ["Glm4vForConditionalGeneration"], "model_type": "glm4v",
            "text_config": text, "vision_config": vision, **tok, "tie_word_embeddings": False,
            dtype_key: "bfloat16", "transformers_version": version}
