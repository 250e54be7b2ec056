"""What makes the ``release`` synthetic dialect look like the real GLM-4.6V-Flash download.

The other dialects (``v5``, ``v4``) were written with the converter's own assumptions; this one
follows public sources instead, so a converter that only works on our own checkpoints fails here:

- ``config.json`` in the dialect of the official Megatron->HF exporter (transformers'
  ``models/glm4v/convert_glm4v_mgt_weights_to_hf.py``): ``text_config.rope_scaling`` =
  ``{"rope_type": "default", "rope_theta": ..., "mrope_section": [...]}`` with **no** top-level
  ``rope_theta``; ``partial_rotary_factor`` at the top of ``text_config`` (where the exporter puts
  it); the multimodal token ids inside ``text_config`` and (as the Hub release also carries them,
  and transformers reads them there) at the top.
- ``<think>``, ``</think>``, ``<|begin_of_box|>``, ``<|end_of_box|>`` are added tokens **not**
  flagged special (the box markers show up in decoded text in other runtimes, so the release
  does not flag them).
- The GLM-4.6V family chat template (``RELEASE_CHAT_TEMPLATE`` below; provenance there).
- ``generation_config.json`` with the model card's sampling settings.

Only the stdlib is used (this ships with the product, like ``convert.synthetic.synth``).
"""
from __future__ import annotations

# Added tokens the release does not flag special (llama.cpp's converter still types the
# ``<|…|>``-shaped ones CONTROL; see convert/tokenizer_meta.py).
RELEASE_NOT_SPECIAL = frozenset({
    "<think>", "</think>", "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>",
    "<arg_key>", "<arg_value>", "</arg_key>", "</arg_value>", "<|begin_of_box|>", "<|end_of_box|>",
})

# The model card's published evaluation settings (LM Studio's preset matches); do_sample is
# what makes transformers (and our converter) treat them as the defaults rather than greedy.
RELEASE_SAMPLING = {"do_sample": True, "temperature": 0.8, "top_p": 0.6, "top_k": 2, "repetition_penalty": 1.1}

# The GLM-4.6V family chat template, stored verbatim (byte for byte, no trailing newline).
# Source: the GLM-OCR release of the same family (its tokenizer_config names the same
# ``Glm46VProcessor``), as published at
#   https://fast.hugflare.com/textagent/GLM-OCR-ONNX/raw/main/tokenizer_config.json ("chat_template")
# and quoted verbatim as ``_actualGlmOcrTemplate`` in a public Dart test of a llama.cpp binding.
# The GLM-4.6V-Flash ``chat_template.jinja`` file itself was not among the stored public sources;
# this is the family's template as released (multimodal tool responses, empty ``<think></think>``
# for earlier assistant turns, ``/nothink`` + ``<think></think>`` for the no-think form), which is
# what the issue asks the runtime to be tested against. It differs from GLM-4.1V-9B-Thinking's
# template (no ``enable_thinking`` at all), which the converter refuses.
RELEASE_CHAT_TEMPLATE = r"""[gMASK]<sop>
{%- if tools -%}
<|system|>
# Tools

You may call one or more functions to assist with the user query.

You are provided with function signatures within <tools></tools> XML tags:
<tools>
{% for tool in tools %}
{{ tool | tojson(ensure_ascii=False) }}
{% endfor %}
</tools>

For each function call, output the function name and arguments within the following XML format:
<tool_call>{function-name}
<arg_key>{arg-key-1}</arg_key>
<arg_value>{arg-value-1}</arg_value>
<arg_key>{arg-key-2}</arg_key>
<arg_value>{arg-value-2}</arg_value>
...
</tool_call>{%- endif -%}
{%- macro visible_text(content) -%}
    {%- if content is string -%}
        {{- content }}
    {%- elif content is iterable and content is not mapping -%}
        {%- for item in content -%}
            {%- if item is mapping and item.type == 'text' -%}
                {{- item.text }}
            {%- elif item is mapping and (item.type == 'image' or 'image' in item) -%}
                <|begin_of_image|><|image|><|end_of_image|>
            {%- elif item is mapping and (item.type == 'video' or 'video' in item) -%}
                <|begin_of_video|><|video|><|end_of_video|>
            {%- elif item is string -%}
                {{- item }}
            {%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{- content }}
    {%- endif -%}
{%- endmacro -%}
{%- set ns = namespace(last_user_index=-1) %}
{%- for m in messages %}
    {%- if m.role == 'user' %}
        {% set ns.last_user_index = loop.index0 -%}
    {%- endif %}
{%- endfor %}
{% for m in messages %}
{%- if m.role == 'user' -%}<|user|>
{% if m.content is string %}
{{ m.content }}
{%- else %}
{%- for item in m.content %}
{% if item.type == 'video' or 'video' in item %}
<|begin_of_video|><|video|><|end_of_video|>{% elif item.type == 'image' or 'image' in item %}
<|begin_of_image|><|image|><|end_of_image|>{% elif item.type == 'text' %}
{{ item.text }}
{%- endif %}
{%- endfor %}
{%- endif %}
{{- '/nothink' if (enable_thinking is defined and not enable_thinking and not visible_text(m.content).endswith("/nothink")) else '' -}}
{%- elif m.role == 'assistant' -%}
<|assistant|>
{%- set reasoning_content = '' %}
{%- set content = visible_text(m.content) %}
{%- if m.reasoning_content is string %}
    {%- set reasoning_content = m.reasoning_content %}
{%- else %}
    {%- if '</think>' in content %}
        {%- set reasoning_content = content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') %}
        {%- set content = content.split('</think>')[-1].lstrip('\n') %}
    {%- endif %}
{%- endif %}
{%- if loop.index0 > ns.last_user_index and reasoning_content -%}
{{ '\n<think>' + reasoning_content.strip() +  '</think>'}}
{%- else -%}
{{ '\n<think></think>' }}
{%- endif -%}
{%- if content.strip() -%}
{{ '\n' + content.strip() }}
{%- endif -%}
{% if m.tool_calls %}
{% for tc in m.tool_calls %}
{%- if tc.function %}
    {%- set tc = tc.function %}
{%- endif %}
{{ '\n<tool_call>' + tc.name }}
{% set _args = tc.arguments %}
{% for k, v in _args.items() %}
<arg_key>{{ k }}</arg_key>
<arg_value>{{ v | tojson(ensure_ascii=False) if v is not string else v }}</arg_value>
{% endfor %}
</tool_call>{% endfor %}
{% endif %}
{%- elif m.role == 'tool' -%}
{%- if m.content is string -%}
{%- if loop.first or (messages[loop.index0 - 1].role != "tool") %}
    {{- '<|observation|>' }}
{%- endif %}
{{- '\n<tool_response>\n' }}
{{- m.content }}
{{- '\n</tool_response>' }}
{% elif m.content is iterable and m.content is not mapping %}
{%- if loop.first or (messages[loop.index0 - 1].role != "tool") %}
{{- '<|observation|>' }}
{%- endif %}
{{- '\n<tool_response>\n' }}
{%- for tr in m.content -%}
  {%- if tr is mapping and tr.type is defined -%}
    {%- set t = tr.type | lower -%}
    {%- if t == 'text' and tr.text is defined -%}
{{ tr.text }}
    {%- elif t in ['image', 'image_url'] -%}
<|begin_of_image|><|image|><|end_of_image|>
    {%- elif t in ['video', 'video_url'] -%}
<|begin_of_video|><|video|><|end_of_video|>
    {%- else -%}
{{ tr | tojson(ensure_ascii=False) }}
    {%- endif -%}
  {%- else -%}
{{ tr.output if tr.output is defined else tr }}
  {%- endif -%}
{%- endfor -%}
{{- '\n</tool_response>' }}
{%- else -%}
<|observation|>{% for tr in m.content %}

<tool_response>
{{ tr.output if tr.output is defined else tr }}
</tool_response>{% endfor -%}
{% endif -%}
{%- elif m.role == 'system' -%}
<|system|>
{{ visible_text(m.content) }}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
<|assistant|>
{{'<think></think>\n' if (enable_thinking is defined and not enable_thinking) else ''}}
{%- endif -%}"""

# The keys the exporter writes into text_config / vision_config (everything else is dropped so
# that nothing of our own dialects leaks in: no model_type there, no top-level rope_theta).
_EXPORTER_TEXT_KEYS = (
    "attention_bias", "attention_dropout", "pad_token_id", "eos_token_id", "image_start_token_id",
    "image_end_token_id", "video_start_token_id", "video_end_token_id", "image_token_id", "video_token_id",
    "hidden_act", "hidden_size", "initializer_range", "intermediate_size", "max_position_embeddings",
    "num_attention_heads", "num_hidden_layers", "num_key_value_heads", "rms_norm_eps", "use_cache", "vocab_size",
)
_EXPORTER_VISION_KEYS = (
    "hidden_size", "depth", "num_heads", "attention_bias", "intermediate_size", "hidden_act",
    "initializer_range", "image_size", "patch_size", "out_hidden_size", "rms_norm_eps",
    "spatial_merge_size", "temporal_patch_size",
)
_TOKEN_ID_KEYS = ("image_start_token_id", "image_end_token_id", "video_start_token_id", "video_end_token_id",
                  "image_token_id", "video_token_id")


def release_config(base: dict, rope_theta: float, partial_rotary: float, mrope: list[int]) -> dict:
    """The exporter's config.json built from a v5-dialect ``base`` (same sizes and token ids)."""
    tc, vc = base["text_config"], base["vision_config"]
    text = {k: tc[k] for k in _EXPORTER_TEXT_KEYS if k in tc}
    text.update({k: base[k] for k in _TOKEN_ID_KEYS})
    text.update(tie_word_embeddings=False, torch_dtype="bfloat16", transformers_version="4.57.1",
                partial_rotary_factor=partial_rotary,
                rope_scaling={"rope_type": "default", "rope_theta": rope_theta, "mrope_section": list(mrope)})
    vision = {k: vc[k] for k in _EXPORTER_VISION_KEYS if k in vc}
    vision["hidden_dropout_prob"] = 0.0
    return {"architectures": ["Glm4vForConditionalGeneration"], "model_type": "glm4v",
            "text_config": text, "vision_config": vision, **{k: base[k] for k in _TOKEN_ID_KEYS},
            "transformers_version": "4.57.1"}


def release_generation_config(eos: list[int]) -> dict:
    return {"eos_token_id": list(eos), "pad_token_id": eos[0], **RELEASE_SAMPLING,
            "transformers_version": "4.57.1"}
