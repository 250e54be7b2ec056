"""Render prompts from the chat template embedded in the text GGUF (GLM-4.6V style).

The Jinja environment has the features Hugging Face's ``apply_chat_template`` gives templates
(loop controls, ``tojson`` with ``ensure_ascii``/``indent``, ``strftime_now``,
``raise_exception``, the ``{% generation %}`` block), so a release template renders here exactly
as in transformers.

The template marks an image as ``<|begin_of_image|><|image|><|end_of_image|>``; mtmd adds the
begin/end tokens itself around the image embeddings, so that span becomes mtmd's media marker.
"""
from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache

import jinja2.ext
import jinja2.nodes
import jinja2.sandbox

IMAGE_SPAN = "<|begin_of_image|><|image|><|end_of_image|>"


class _GenerationBlock(jinja2.ext.Extension):
    """``{% generation %}…{% endgeneration %}``: transformers uses it to mark assistant tokens for
    training masks; for rendering it is its body, unchanged."""
    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller):
        return caller()


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    # transformers' filter: Jinja's own escapes HTML characters and has no ensure_ascii
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _raise(msg: str):
    raise jinja2.exceptions.TemplateError(msg)


@lru_cache(maxsize=8)
def _compile(source: str):
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationBlock, jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(source)


def render(template: str, messages: list[dict], *, enable_thinking: bool, marker: str,
           add_generation_prompt: bool = True) -> str:
    text = _compile(template).render(messages=messages, add_generation_prompt=add_generation_prompt,
                                     enable_thinking=enable_thinking)
    # the marker typed as text would be taken for a second image and the whole request refused:
    # a word joiner after its first character keeps it text (and near-verbatim for the model)
    text = text.replace(marker, marker[:1] + "\u2060" + marker[1:])
    return text.replace(IMAGE_SPAN, marker)
