"""The numerical reference: transformers' Glm4vForConditionalGeneration on CPU torch (tests only)."""
from __future__ import annotations

from functools import lru_cache

import numpy as np


@lru_cache(maxsize=4)
def hf_model(src: str):
    import torch
    from transformers import Glm4vForConditionalGeneration
    torch.manual_seed(0)
    return Glm4vForConditionalGeneration.from_pretrained(src, dtype=torch.float32).eval()


@lru_cache(maxsize=4)
def hf_tokenizer(src: str):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(src)


def chat_ids(src: str, messages: list[dict], enable_thinking: bool = False) -> list[int]:
    out = hf_tokenizer(src).apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                enable_thinking=enable_thinking)
    return list(out["input_ids"] if hasattr(out, "keys") else out)


def image_inputs(src: str, img: np.ndarray):
    from PIL import Image
    from transformers import AutoImageProcessor
    proc = AutoImageProcessor.from_pretrained(src)
    return proc(images=[Image.fromarray(img)], return_tensors="pt")


def expand_image_tokens(src: str, ids: list[int], grid_thw) -> list[int]:
    """Replace the single <|image|> with one token per merged patch, as the processor does."""
    cfg = hf_model(src).config
    t, h, w = (int(x) for x in grid_thw[0])
    n = t * h * w // cfg.vision_config.spatial_merge_size ** 2
    i = ids.index(cfg.image_token_id)
    return ids[:i] + [cfg.image_token_id] * n + ids[i + 1:]


def logits(src: str, ids: list[int], pixel_values=None, grid_thw=None) -> np.ndarray:
    import torch
    kw = {}
    if pixel_values is not None:
        # transformers 5 wants the image-token mask the (torchvision-only) processor would give
        mask = [1 if t == hf_model(src).config.image_token_id else 0 for t in ids]
        kw = {"pixel_values": pixel_values, "image_grid_thw": grid_thw,
              "mm_token_type_ids": torch.tensor([mask])}
    with torch.no_grad():
        return hf_model(src)(input_ids=torch.tensor([ids]), **kw).logits[0].float().numpy()


def image_embeddings(src: str, pixel_values, grid_thw) -> np.ndarray:
    import torch
    with torch.no_grad():
        feats = hf_model(src).model.get_image_features(pixel_values=pixel_values, image_grid_thw=grid_thw)
    feats = getattr(feats, "pooler_output", feats)
    return torch.cat(list(feats)).float().numpy() if isinstance(feats, (list, tuple)) else feats.float().numpy()


def greedy(src: str, ids: list[int], n: int, pixel_values=None, grid_thw=None) -> list[int]:
    """n greedy tokens, never stopping at EOS (we compare raw continuations)."""
    out = list(ids)
    for _ in range(n):
        out.append(int(np.argmax(logits(src, out, pixel_values, grid_thw)[-1])))
    return out[len(ids):]


def rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(np.asarray(b, np.float64)))
