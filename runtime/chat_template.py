"""Render prompts from the chat template embedded in the text GGUF (GLM-4.6V style).

The template marks an image as ``<|begin_of_image|><|image|><|end_of_image|>``; mtmd adds the
begin/end tokens itself around the image embeddings, so that span becomes mtmd's media marker.
"""
from __future__ import annotations

from functools import lru_cache

import jinja2.sandbox

IMAGE_SPAN = "<|begin_of_image|><|image|><|end_of_image|>"


@lru_cache(maxsize=8)
def _compile(source: str):
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise
    return env.from_string(source)


def _raise(msg: str):
    raise jinja2.exceptions.TemplateError(msg)


def render(template: str, messages: list[dict], *, enable_thinking: bool, marker: str,
           add_generation_prompt: bool = True) -> str:
    text = _compile(template).render(messages=messages, add_generation_prompt=add_generation_prompt,
                                     enable_thinking=enable_thinking)
    # the marker typed as text would be taken for a second image and the whole request refused:
    # a word joiner after its first character keeps it text (and near-verbatim for the model)
    text = text.replace(marker, marker[:1] + "\u2060" + marker[1:])
    return text.replace(IMAGE_SPAN, marker)
