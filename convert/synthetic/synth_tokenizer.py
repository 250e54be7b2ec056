"""The synthetic checkpoint's tokenizer: a small byte-level BPE trained on nameplate text, the GLM
special tokens, and the GLM-4.6V style chat template, written as the release's tokenizer files.

The vocabulary is trained here, from a fixed corpus, so the checkpoint is reproducible offline; the
pre-tokenizer regex is llama.cpp's own, so the GGUF and the HF tokenizer split text identically.
Only the stdlib is used (this ships with the product, like ``convert.synthetic.synth``).
"""
from __future__ import annotations

import functools
import heapq
import re
from collections import Counter
from pathlib import Path

from convert.synthetic.lab_files import write_json
from runtime.common.files import atomic_write_bytes

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
    write_json(out_dir / "tokenizer.json", tokenizer)
    write_json(out_dir / "tokenizer_config.json", config)
    write_json(out_dir / "special_tokens_map.json", smap)
    atomic_write_bytes(out_dir / "chat_template.jinja", template.encode())
    return {"vocab_size_used": len(vocab) + len(SPECIAL_TOKENS), "special_ids": ids}
