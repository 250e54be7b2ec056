"""Synthetic GLM-4.6V-Flash checkpoint in the exact Hugging Face release layout.

The real weights cannot be downloaded here, so the converter, runtime and
benchmarks are exercised against a checkpoint that has the same file layout,
config dialects, tensor names, shapes and dtype (BF16) as the
`Glm4vForConditionalGeneration` release, filled with seeded random values, plus a
small byte-level BPE tokenizer (GLM-4 pre-tokenizer, GLM special tokens) and a
GLM-4.6V style chat template.  Only the stdlib and numpy are used, so this can
ship with the product.

    python -m convert.synthetic.synth OUT_DIR --size tiny|medium|full --seed 0 --dialect v5|v4|release

``--dialect release`` follows the real download's formats rather than ours (the exporter's config
dialect, unflagged box/think tokens, the GLM-4.6V family template, the model card's sampling
defaults): see convert/synthetic/synth_release.py.
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import heapq
import json
import os
import re
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from runtime.common.files import atomic_write_bytes

# --------------------------------------------------------------------------- tokenizer

SPECIAL_TOKENS: list[str] = [
    "<|endoftext|>", "[MASK]", "[gMASK]", "[sMASK]", "<sop>", "<eop>",
    "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>",
    "<|begin_of_image|>", "<|end_of_image|>", "<|begin_of_video|>", "<|end_of_video|>",
    "<|begin_of_audio|>", "<|end_of_audio|>", "<|begin_of_transcription|>",
    "<|end_of_transcription|>", "<|code_prefix|>", "<|code_middle|>", "<|code_suffix|>",
    "<think>", "</think>", "<tool_call>", "</tool_call>", "<tool_response>",
    "</tool_response>", "<arg_key>", "<arg_value>", "</arg_key>", "</arg_value>",
    "/nothink", "<|begin_of_box|>", "<|end_of_box|>", "<|image|>", "<|video|>",
]
# The GLM release marks these as added-but-not-special so they survive decoding.
_NOT_SPECIAL = {"<think>", "</think>", "<tool_call>", "</tool_call>", "<tool_response>",
                "</tool_response>", "<arg_key>", "<arg_value>", "</arg_key>", "</arg_value>"}

# Verbatim from llama.cpp (llama-vocab.cpp, LLAMA_VOCAB_PRE_TYPE_CHATGLM4), so the
# GGUF pre-tokenizer and the HF tokenizer split text identically.
GLM4_REGEX = (r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+"
              r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
# stdlib `re` has no \p{..}; this approximation is only used to pick merges.
_TRAIN_SPLIT = re.compile(r"'(?:[sS]|[tT]|[rR][eE]|[vV][eE]|[mM]|[lL][lL]|[dD])"
                          r"|(?:[^\r\n\w]|_)?[^\W\d_]+|\d{1,3}| ?(?:[^\s\w]|_)+[\r\n]*"
                          r"|\s*[\r\n]+|\s+(?!\S)|\s+")

# Nameplate / equipment vocabulary the model is meant to read, in both languages.
_FIELDS = [
    ("manufacturer", "制造商", "Siemens"), ("model", "型号", "1LE1001-1DB23"),
    ("serial number", "编号", "SN2023041789"), ("rated voltage", "额定电压", "380 V"),
    ("rated current", "额定电流", "15.6 A"), ("rated power", "额定功率", "7.5 kW"),
    ("frequency", "频率", "50 Hz"), ("speed", "转速", "1450 rpm"),
    ("protection class", "防护等级", "IP55"), ("insulation class", "绝缘等级", "F"),
    ("power factor", "功率因数", "0.85"), ("efficiency", "效率", "IE3 91.0%"),
    ("weight", "重量", "68 kg"), ("date of manufacture", "出厂日期", "2021-06-15"),
    ("duty", "工作制", "S1"), ("connection", "接法", "Δ/Y"),
    ("ambient temperature", "环境温度", "40 °C"), ("standard", "标准", "GB/T 755-2019"),
    ("flow rate", "流量", "25 m³/h"), ("head", "扬程", "32 m"),
    ("rated capacity", "额定容量", "630 kVA"), ("phase", "相数", "3"),
]
_SENTENCES = """\
What is the serial number? The rated voltage is 220 V and the rated current is 10 A.
This is a nameplate of an electric motor. 这是一台电动机的铭牌。
Read the nameplate and return JSON with the fields manufacturer, model and serial number.
请读取铭牌并以JSON格式返回制造商、型号和编号。
The pump is driven by a three-phase asynchronous motor. 水泵由三相异步电动机驱动。
The transformer has a rated capacity of 630 kVA at 10 kV / 0.4 kV. 变压器的额定容量为630 kVA。
Voltage 400 V, current 32 A, power 15 kW, frequency 60 Hz, speed 2950 rpm, IP65, class F.
电压 380 V，电流 12.5 A，功率 5.5 kW，频率 50 Hz，转速 1480 r/min，防护等级 IP54。
Made in China. 中国制造。 Made in Germany. Made in Japan. Made in USA.
I can't read the label because the image is blurry. It's a pump, isn't it? We'll see.
The image shows a metal plate with text. 图片显示了一块带有文字的金属铭牌。
Please answer in English. 请用中文回答。 Thank you! 谢谢！ You're welcome.
Is the motor suitable for 460 V 60 Hz operation? Yes, the motor is rated for 460 V.
{"manufacturer": "ABB", "model": "M2BAX 132SMB 4", "serial_number": "3GBA131230-ADD"}
[{"field": "voltage", "value": 230}, {"field": "current", "value": 4.8}]
Step 1: locate the nameplate. Step 2: read each line. Step 3: output the result.
Equipment: compressor, generator, inverter, circuit breaker, valve, fan, gearbox, boiler, switchgear.
设备：压缩机、发电机、变频器、断路器、阀门、风机、减速机、锅炉、开关柜、电动机、水泵、变压器。
Warning: high voltage! Disconnect the power supply before opening the cover. 警告：高压危险！
The text on the plate is partly covered, so the model number may be incomplete.
铭牌上的文字部分被遮挡，型号可能不完整。 出厂编号、生产日期、额定转矩、冷却方式、海拔高度。
Rated torque 48 Nm, cooling IC411, altitude 1000 m, mounting B3, bearing 6206-2Z, frame 132M.
Input 100-240 V~ 50/60 Hz 1.5 A, output 24 V DC 2.5 A, Class II, CE, UL, CCC.
"""


def _corpus() -> str:
    """Field x template combinations give the trainer repeated, natural pairs."""
    lines = [_SENTENCES]
    for i, (en, zh, val) in enumerate(_FIELDS):
        lines += [f"What is the {en}? The {en} is {val}.", f"{en.title()}: {val}",
                  f"{zh}：{val}", f"{zh}是多少？{zh}为{val}。", f'"{en.replace(" ", "_")}": "{val}",',
                  f"Rated {en} {i * 37 + 110} V {i * 13 + 5}.{i % 10} A {1000 + i * 97} rpm"]
    return "\n".join(lines) * 2


@functools.lru_cache(maxsize=None)
def _bytes_to_unicode() -> tuple[str, ...]:
    """GPT-2 byte -> printable char table; index is the byte value."""
    keep = {*range(33, 127), *range(161, 173), *range(174, 256)}
    moved = iter(range(256, 512))  # unprintable bytes are shifted past Latin-1, in byte order
    return tuple(chr(b) if b in keep else chr(next(moved)) for b in range(256))


Bpe = tuple[tuple[str, ...], tuple[tuple[str, str], ...]]  # (vocab in id order, merges in rank order)
_DIGITS = frozenset("0123456789")


@functools.lru_cache(maxsize=None)
def _train_bpe(max_merges: int = 1600, corpus: str | None = None, split_digits: bool = False) -> Bpe:
    """Greedy BPE over the corpus; incremental pair counts keep it well under 1 s.

    ``split_digits`` forbids merging two digit strings, so every digit stays one token: a model
    that copies serial numbers then sees the same token for a digit in every context (and HF and
    llama.cpp, whose GLM-4 pre-split cuts digits into runs of 1-3, tokenize numbers identically)."""
    b2u = _bytes_to_unicode()
    freq = Counter("".join(b2u[b] for b in w.encode()) for w in _TRAIN_SPLIT.findall(corpus or _corpus()))
    words = [list(w) for w in sorted(freq)]
    counts = [freq[w] for w in sorted(freq)]
    pairs: Counter = Counter()
    where: dict[tuple[str, str], set[int]] = {}
    for i, w in enumerate(words):
        for p in zip(w, w[1:]):
            pairs[p] += counts[i]
            where.setdefault(p, set()).add(i)
    heap = [(-c, p) for p, c in pairs.items()]
    heapq.heapify(heap)
    vocab, seen, merges = list(b2u), set(b2u), []
    while heap and len(merges) < max_merges:
        c, p = heapq.heappop(heap)
        if pairs.get(p, 0) != -c:
            continue  # stale heap entry; the pair's count changed since it was pushed
        if split_digits and _DIGITS.issuperset(p[0] + p[1]):
            del pairs[p]
            continue
        merges.append(p)
        new = p[0] + p[1]
        if new not in seen:  # two merges can spell the same token; keep the first id
            seen.add(new)
            vocab.append(new)
        touched = set()
        for i in sorted(where.pop(p, ())):
            w = words[i]
            for q in zip(w, w[1:]):
                pairs[q] -= counts[i]
                touched.add(q)
            j, out = 0, []
            while j < len(w):
                if j + 1 < len(w) and w[j] == p[0] and w[j + 1] == p[1]:
                    out.append(new)
                    j += 2
                else:
                    out.append(w[j])
                    j += 1
            words[i] = out
            for q in zip(out, out[1:]):
                pairs[q] += counts[i]
                touched.add(q)
                where.setdefault(q, set()).add(i)
        for q in sorted(touched):
            if pairs[q] > 0:
                heapq.heappush(heap, (-pairs[q], q))
            else:
                del pairs[q]
    return tuple(vocab), tuple(merges)


def _special_ids(bpe: Bpe | None = None) -> dict[str, int]:
    base = len((bpe or _train_bpe())[0])
    return {t: base + i for i, t in enumerate(SPECIAL_TOKENS)}


# GLM-4.6V style; the release ships it as chat_template.jinja next to the tokenizer.
CHAT_TEMPLATE = r"""[gMASK]<sop>
{%- macro visible_text(content) -%}
{%- if content is string -%}{{ content }}
{%- elif content is iterable and content is not mapping -%}
{%- for item in content -%}
{%- if item is mapping and item.type == 'text' -%}{{ item.text }}
{%- elif item is string -%}{{ item }}{%- endif -%}
{%- endfor -%}
{%- elif content is none -%}{{ '' }}
{%- else -%}{{ content }}{%- endif -%}
{%- endmacro -%}
{%- for m in messages -%}
{%- if m.role == 'system' -%}
<|system|>{{ '\n' }}{{ visible_text(m.content) }}
{%- elif m.role == 'user' -%}
<|user|>{{ '\n' }}
{%- if m.content is string -%}{{ m.content }}
{%- else -%}
{%- for item in m.content -%}
{%- if item.type == 'video' or 'video' in item -%}<|begin_of_video|><|video|><|end_of_video|>
{%- elif item.type == 'image' or 'image' in item -%}<|begin_of_image|><|image|><|end_of_image|>
{%- elif item.type == 'text' -%}{{ item.text }}
{%- endif -%}
{%- endfor -%}
{%- endif -%}
{{- '/nothink' if (enable_thinking is defined and not enable_thinking and not visible_text(m.content).endswith('/nothink')) else '' -}}
{%- elif m.role == 'assistant' -%}
{%- set content = visible_text(m.content) -%}
{%- set reasoning = m.reasoning_content if m.reasoning_content is string else '' -%}
{%- if '</think>' in content -%}
{%- set reasoning = content.split('</think>')[0].split('<think>')[-1] -%}
{%- set content = content.split('</think>')[-1] -%}
{%- endif -%}
<|assistant|>{{ '\n<think>' + reasoning.strip() + '</think>' }}
{%- if content.strip() -%}{{ '\n' + content.strip() }}{%- endif -%}
{%- elif m.role == 'tool' or m.role == 'observation' -%}
{%- if loop.first or messages[loop.index0 - 1].role not in ['tool', 'observation'] -%}<|observation|>{%- endif -%}
{{ '\n<tool_response>\n' }}{{ visible_text(m.content) }}{{ '\n</tool_response>' }}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
<|assistant|>{{- '\n<think></think>' if (enable_thinking is defined and not enable_thinking) else '' -}}
{%- endif -%}"""


def build_tokenizer_files(out_dir: Path, bpe: Bpe | None = None, not_special=_NOT_SPECIAL,
                          template: str = CHAT_TEMPLATE) -> dict:
    """Write tokenizer.json & co. into out_dir; returns the ids others need. ``bpe``: another
    vocabulary (e.g. a task tokenizer) with the same special tokens; ``not_special``: the added
    tokens left unflagged; ``template``: the chat_template.jinja text."""
    out_dir = Path(out_dir)
    vocab, merges = bpe or _train_bpe()
    ids = _special_ids(bpe)
    added = [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": t not in not_special} for t, i in ids.items()]
    tokenizer = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": GLM4_REGEX}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                  "ignore_merges": False, "vocab": {t: i for i, t in enumerate(vocab)},
                  "merges": [list(m) for m in merges]},
    }
    specials = [t for t in SPECIAL_TOKENS if t not in not_special]
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>", "clean_up_tokenization_spaces": False, "do_lower_case": False,
        "remove_space": False, "model_max_length": 128000, "padding_side": "left",
        "additional_special_tokens": specials,
        "added_tokens_decoder": {str(a["id"]): {k: v for k, v in a.items() if k != "id"} for a in added},
    }
    smap = {"additional_special_tokens": specials, "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}
    _write_json(out_dir / "tokenizer.json", tokenizer)
    _write_json(out_dir / "tokenizer_config.json", config)
    _write_json(out_dir / "special_tokens_map.json", smap)
    atomic_write_bytes(out_dir / "chat_template.jinja", template.encode())
    return {"vocab_size_used": len(vocab) + len(SPECIAL_TOKENS), "special_ids": ids}


# --------------------------------------------------------------------------- model spec

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
STAMP = ".synth-complete.json"

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


# --------------------------------------------------------------------------- tensors

_CHUNK = 1 << 24  # elements per generation step: bounds memory for the 620M-element embeddings


def to_bf16(x: np.ndarray) -> np.ndarray:
    """float32 -> bf16 bit patterns (uint16), round to nearest even."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    return ((u + (((u >> 16) & 1) + np.uint32(0x7FFF))) >> 16).astype("<u2")  # safetensors is little-endian


def tensor_chunks(name: str, shape: tuple[int, ...], init: str, seed: int):
    """Yield the tensor as float32 row blocks; the stream depends only on (seed, name)."""
    key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")
    rng = np.random.default_rng([seed, key])
    mean, std = _INIT[init]
    if std is None:
        std = 1.0 / np.sqrt(float(np.prod(shape[1:])))
    row = int(np.prod(shape[1:]))
    rows_per = max(1, _CHUNK // max(row, 1))
    for r in range(0, shape[0], rows_per):
        n = min(rows_per, shape[0] - r)
        x = rng.standard_normal((n, *shape[1:]), dtype=np.float32)
        x *= np.float32(std)
        x += np.float32(mean)
        yield x


def tensor_values(name: str, shape: tuple[int, ...], init: str, seed: int) -> np.ndarray:
    """The whole tensor as float32 (before bf16 rounding); for tests and small tensors."""
    return np.concatenate(list(tensor_chunks(name, shape, init, seed)), axis=0)


def _split_shards(table, n: int) -> list[list]:
    sizes = [2 * int(np.prod(s)) for _, s, _ in table]
    total, shards, acc = sum(sizes), [[] for _ in range(n)], 0
    for row, size in zip(table, sizes):
        k = min(n - 1, acc * n // total)
        shards[k].append(row)
        acc += size
    return [s for s in shards if s]


class _Progress:
    def __init__(self, total: int, enabled: bool):
        self.total, self.done, self.enabled = total, 0, enabled
        self.t0 = self.last = time.monotonic()

    def add(self, n: int, final: bool = False):
        self.done += n
        now = time.monotonic()
        if self.enabled and (final or now - self.last >= 3.0):
            self.last = now
            print(f"synth: {self.done / 2**20:.0f}/{self.total / 2**20:.0f} MiB "
                  f"({100 * self.done / max(self.total, 1):.0f}%, {now - self.t0:.0f}s)", file=sys.stderr, flush=True)


def _write_safetensors(path: Path, rows, seed: int, progress: _Progress) -> None:
    header, off = {"__metadata__": {"format": "pt"}}, 0
    for name, shape, _ in rows:
        size = 2 * int(np.prod(shape))
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [off, off + size]}
        off += size
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as f:
        f.write(len(blob).to_bytes(8, "little") + blob)
        for name, shape, init in rows:
            for chunk in tensor_chunks(name, shape, init, seed):
                data = to_bf16(chunk)
                f.write(data.tobytes())
                progress.add(data.nbytes)
        f.flush()
        os.fsync(f.fileno())


# --------------------------------------------------------------------------- checkpoint

def _write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode())


def _fsync_dir(path: Path) -> None:
    try:  # makes the renames durable; some filesystems refuse directory fsync, which is harmless
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def _is_complete(out: Path, stamp: dict) -> bool:
    try:
        return json.loads((out / STAMP).read_text()) == stamp
    except (OSError, ValueError):
        return False


def make_checkpoint(out_dir: str | Path, size: str = "tiny", seed: int = 0, dialect: str = "v5",
                    n_shards: int | None = None, progress: bool = False) -> Path:
    """Build (or reuse) a synthetic checkpoint at out_dir and return its path."""
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; expected one of {sorted(SIZES)}")
    if dialect not in DIALECTS:
        raise ValueError(f"unknown dialect {dialect!r}; expected one of {DIALECTS}")
    out, spec = Path(out_dir), SIZES[size]
    table = tensor_table(spec)
    total = sum(2 * int(np.prod(s)) for _, s, _ in table)
    n = n_shards or spec.default_shards or max(2, -(-total // (4 * 10**9)))
    stamp = {"size": size, "seed": seed, "dialect": dialect, "n_shards": n, "total_size": total}
    if _is_complete(out, stamp):
        return out
    # only a checkpoint this generator made (or an empty folder) is ever replaced: OUT could be a
    # real download or anybody's data
    if out.is_file() or (out.is_dir() and any(out.iterdir()) and not (out / STAMP).is_file()):
        from convert.errors import ConversionError
        raise ConversionError(f"{out} exists and is not a synthetic checkpoint made by this tool: refusing to "
                              "replace it — choose another folder, or delete it first")

    part = out.absolute().with_name(f"{out.absolute().name}.part-{os.getpid()}")
    shutil.rmtree(part, ignore_errors=True)
    try:
        _build(part, spec, dialect, table, total, n, seed, stamp, progress)
    except BaseException:   # interrupted, disk full...: nothing half-written stays behind
        shutil.rmtree(part, ignore_errors=True)
        raise

    if _is_complete(out, stamp):  # a concurrent builder won the race; its result is identical
        shutil.rmtree(part)
        return out
    if out.exists():
        old = part.with_name(f"{out.absolute().name}.old-{os.getpid()}")
        out.rename(old)
        part.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        part.rename(out)
    _fsync_dir(part.parent)
    return out


def _build(part: Path, spec, dialect: str, table, total: int, n: int, seed: int, stamp: dict, progress: bool) -> None:
    part.mkdir(parents=True)
    config = build_config(spec, dialect)
    _write_json(part / "config.json", config)
    eos = config["text_config"]["eos_token_id"]
    if dialect == "release":
        from convert.synthetic import synth_release as rel
        _write_json(part / "generation_config.json", rel.release_generation_config(eos))
        build_tokenizer_files(part, not_special=rel.RELEASE_NOT_SPECIAL, template=rel.RELEASE_CHAT_TEMPLATE)
    else:
        _write_json(part / "generation_config.json", {
            "_from_model_config": True, "eos_token_id": eos, "pad_token_id": eos[0],
            "do_sample": False, "transformers_version": config["transformers_version"]})
        build_tokenizer_files(part)
    _write_json(part / "preprocessor_config.json", PREPROCESSOR_CONFIG)

    shards = _split_shards(table, n)
    names = [f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors" for k in range(len(shards))]
    prog = _Progress(total, progress)
    for fname, rows in zip(names, shards):
        _write_safetensors(part / fname, rows, seed, prog)
    prog.add(0, final=True)
    _write_json(part / "model.safetensors.index.json", {
        "metadata": {"total_size": total},
        "weight_map": {name: f for f, rows in zip(names, shards) for name, _, _ in rows}})
    _write_json(part / STAMP, stamp)  # written last: its presence means the rest is complete
    _fsync_dir(part)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m convert.synthetic.synth", description=__doc__.split("\n")[0])
    ap.add_argument("out_dir", metavar="OUT_DIR")
    ap.add_argument("--size", choices=sorted(SIZES), default="tiny")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dialect", choices=DIALECTS, default="v5")
    ap.add_argument("--shards", type=int, default=None, help="number of safetensors shards (min 1)")
    ap.add_argument("--quiet", action="store_true", help="no progress output")
    a = ap.parse_args(argv)
    t0 = time.monotonic()
    from convert.errors import ConversionError
    try:
        out = make_checkpoint(a.out_dir, a.size, a.seed, a.dialect, a.shards, progress=not a.quiet)
    except ConversionError as e:
        print(f"synth: error: {e}", file=sys.stderr)
        return 3
    if not a.quiet:
        print(f"synth: {out} ready in {time.monotonic() - t0:.1f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
