"""Shared helpers for the Python reference scripts (make_fixtures.py, bench_torch.py).

Everything here is written for this project; it only *uses* the public transformers API
(Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLImageProcessor).
See docs/QWEN2VL.md section 9 for the spec of the tiny configurations.
"""

import json
import struct

import numpy as np
import torch
from torch import nn

# --------------------------------------------------------------------------------------------
# configurations
# --------------------------------------------------------------------------------------------

# docs/QWEN2VL.md 9.2 "tiny-A"
TINY_A = {
    "text": dict(
        vocab_size=1024,
        hidden_size=64,
        intermediate_size=176,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        rope_theta=1000000.0,
        mrope_section=[2, 3, 3],
        rms_norm_eps=1e-6,
        max_position_embeddings=512,
    ),
    "vision": dict(
        depth=2,
        embed_dim=64,
        num_heads=4,
        mlp_ratio=4,
        hidden_size=64,
        patch_size=14,
        temporal_patch_size=2,
        spatial_merge_size=2,
        in_channels=3,
        hidden_act="quick_gelu",
    ),
    "ids": dict(image_token_id=1000, video_token_id=1001, vision_start_token_id=1002, vision_end_token_id=1003),
}

# benchmark-sized configuration
MID = {
    "text": dict(
        vocab_size=4096,
        hidden_size=512,
        intermediate_size=1408,
        num_hidden_layers=8,
        num_attention_heads=8,
        num_key_value_heads=4,
        rope_theta=1000000.0,
        mrope_section=[8, 12, 12],
        rms_norm_eps=1e-6,
        max_position_embeddings=4096,
    ),
    "vision": dict(
        depth=8,
        embed_dim=512,
        num_heads=8,
        mlp_ratio=4,
        hidden_size=512,
        patch_size=14,
        temporal_patch_size=2,
        spatial_merge_size=2,
        in_channels=3,
        hidden_act="quick_gelu",
    ),
    "ids": dict(image_token_id=4000, video_token_id=4001, vision_start_token_id=4002, vision_end_token_id=4003),
}

CONFIGS = {"tiny_a": TINY_A, "mid": MID}


def build_config(spec, tie_word_embeddings, attn_implementation="eager"):
    """Build a Qwen2VLConfig from one of the dicts above.

    tie_word_embeddings is given both at top level and in the text config: transformers 4.x
    reads it from the text config (Qwen2VLConfig.__getattribute__ forwards to text_config),
    5.x from the top level.  bos/eos are set to 1/2 (defaults exceed the tiny vocab);
    pad_token_id is left unset (no padding_idx on the embedding).
    """
    from transformers import Qwen2VLConfig

    t = dict(spec["text"])
    mrope = t.pop("mrope_section")
    text_cfg = dict(
        t,
        rope_scaling={"type": "mrope", "mrope_section": list(mrope)},
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=tie_word_embeddings,
    )
    cfg = Qwen2VLConfig(
        text_config=text_cfg,
        vision_config=dict(spec["vision"]),
        tie_word_embeddings=tie_word_embeddings,
        bos_token_id=1,
        eos_token_id=2,
        attn_implementation=attn_implementation,
        **spec["ids"],
    )
    return cfg


def build_model(spec, tie_word_embeddings, seed):
    """Instantiate Qwen2VLForConditionalGeneration (fp32, eager, eval) and re-randomise it."""
    from transformers import Qwen2VLForConditionalGeneration

    cfg = build_config(spec, tie_word_embeddings)
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(cfg).to(torch.float32).eval()
    randomise_parameters(model, seed)
    embed = model.model.language_model.embed_tokens.weight
    if tie_word_embeddings:
        if model.lm_head.weight is not embed:
            model.tie_weights()
        assert model.lm_head.weight is embed, "tied variant: lm_head and embed_tokens do not share storage"
        assert model.lm_head.weight.data_ptr() == embed.data_ptr()
    else:
        assert model.lm_head.weight is not embed and model.lm_head.weight.data_ptr() != embed.data_ptr()
    return model


def _is_norm(module):
    return isinstance(module, nn.LayerNorm) or type(module).__name__.endswith("RMSNorm")


def randomise_parameters(model, seed):
    """Re-draw every (deduplicated) parameter from a private generator, in named_parameters() order.

    weights  ~ N(0, 1/fan_in), fan_in = prod(shape[1:])  (Conv3d [64,3,2,14,14] -> 1176)
    biases   ~ N(0, 0.1^2)
    norm w   ~ 1 + N(0, 0.1^2), norm b ~ N(0, 0.1^2)
    embedding~ N(0, 1)
    Returns a dict name -> rule (for the metadata).
    """
    gen = torch.Generator(device="cpu")
    gen.manual_seed(seed)
    modules = dict(model.named_modules())
    rules = {}
    with torch.no_grad():
        for name, p in model.named_parameters():  # tied parameters appear once
            mod_name, _, leaf = name.rpartition(".")
            mod = modules[mod_name]
            noise = torch.randn(tuple(p.shape), generator=gen, dtype=torch.float32)
            if isinstance(mod, nn.Embedding):
                val, rule = noise, "N(0,1)"
            elif _is_norm(mod):
                if leaf == "weight":
                    val, rule = 1.0 + 0.1 * noise, "1+N(0,0.1^2)"
                else:
                    val, rule = 0.1 * noise, "N(0,0.1^2)"
            elif leaf == "bias":
                val, rule = 0.1 * noise, "N(0,0.1^2)"
            else:
                fan_in = int(np.prod(p.shape[1:]))
                val, rule = noise * (1.0 / fan_in) ** 0.5, f"N(0,1/{fan_in})"
            p.copy_(val.to(p.dtype))
            rules[name] = rule
    return rules


# --------------------------------------------------------------------------------------------
# safetensors header / key layout
# --------------------------------------------------------------------------------------------


def read_safetensors_header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n).decode("utf-8"))
    header.pop("__metadata__", None)
    return header


def detect_layout(keys):
    if any(k.startswith("model.language_model.") or k.startswith("model.visual.") for k in keys):
        return "new"
    if any(k.startswith("visual.") for k in keys) or any(k.startswith("model.layers.") for k in keys):
        return "legacy"
    return "unknown"


def memory_to_file_key(name, layout):
    """In-memory parameter name (4.52+ module tree) -> key as written in the file."""
    if layout == "legacy":
        if name.startswith("model.visual."):
            return "visual." + name[len("model.visual."):]
        if name.startswith("model.language_model."):
            return "model." + name[len("model.language_model."):]
    return name


# --------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------


def seeded_image(seed, height, width):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def preprocess_images(images):
    """Run the slow (PIL/numpy) Qwen2VLImageProcessor with its default settings."""
    from PIL import Image
    from transformers import Qwen2VLImageProcessor

    proc = Qwen2VLImageProcessor()  # slow class == use_fast=False
    pil = [Image.fromarray(np.ascontiguousarray(im)) for im in images]
    assert all(im.mode == "RGB" for im in pil)
    out = proc(images=pil, return_tensors="pt")
    return out["pixel_values"].to(torch.float32).contiguous(), out["image_grid_thw"].to(torch.int64), proc


def expected_rope_index(ids, grids, spec_ids, merge=2):
    """Independent re-implementation of docs/QWEN2VL.md 3.4 (images only), returns ([3,S] int64, delta)."""
    S = len(ids)
    pos = np.zeros((3, S), dtype=np.int64)
    p = 0
    s = 0
    g = 0
    while s < S:
        if ids[s] == spec_ids["image_token_id"]:
            t, h, w = (int(x) for x in grids[g])
            g += 1
            gh, gw = h // merge, w // merge
            n = t * gh * gw
            for k in range(n):
                pos[0, s + k] = p + k // (gh * gw)
                pos[1, s + k] = p + (k // gw) % gh
                pos[2, s + k] = p + k % gw
            p += max(t, gh, gw)
            s += n
        else:
            pos[:, s] = p
            p += 1
            s += 1
    return pos, p - S


# ============================================================================================
# Qwen2.5-VL (docs/QWEN25VL.md section 8).  Appended only: nothing above depends on it, so the
# Qwen2-VL fixtures of make_fixtures.py are unchanged.
# ============================================================================================

# docs/QWEN25VL.md 8.1 "tiny25-A": ViT width 48 != LM width 64, 3 vision heads (hd 16), SwiGLU 72,
# window_size 56 -> 2x2 merge units per window, blocks W F W F.
TINY25_A = {
    "text": dict(
        vocab_size=1024,
        hidden_size=64,
        intermediate_size=176,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        hidden_act="silu",
        rope_theta=1000000.0,
        mrope_section=[2, 3, 3],
        rms_norm_eps=1e-6,
        max_position_embeddings=512,
        use_sliding_window=False,
    ),
    "vision": dict(
        depth=4,
        hidden_size=48,
        intermediate_size=72,
        num_heads=3,
        hidden_act="silu",
        in_channels=3,
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
        window_size=56,
        fullatt_block_indexes=[1, 3],
        out_hidden_size=64,
        tokens_per_second=2,
    ),
    "ids": dict(image_token_id=1000, video_token_id=1001, vision_start_token_id=1002, vision_end_token_id=1003),
}

# embedding std of the Qwen2.5 fixtures (docs/QWEN25VL.md 8.2: N(0,1) with a tied head gives logit std ~8)
EMBED_STD25 = 0.3


def build_config25(spec, tie_word_embeddings, attn_implementation="eager"):
    """Qwen2_5_VLConfig from a dict like TINY25_A.

    4.57.6 ties iff text_config.tie_word_embeddings (the top-level argument is shadowed by the text
    config, docs/QWEN25VL.md 1.4), so the flag goes into both places.
    """
    from transformers import Qwen2_5_VLConfig

    t = dict(spec["text"])
    mrope = t.pop("mrope_section")
    text_cfg = dict(
        t,
        rope_scaling={"type": "mrope", "mrope_section": list(mrope)},
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=tie_word_embeddings,
    )
    return Qwen2_5_VLConfig(
        text_config=text_cfg,
        vision_config=dict(spec["vision"]),
        tie_word_embeddings=tie_word_embeddings,
        bos_token_id=1,
        eos_token_id=2,
        attn_implementation=attn_implementation,
        **spec["ids"],
    )


def randomise_parameters25(model, seed, embed_std=EMBED_STD25):
    """randomise_parameters, then the token embedding scaled to N(0, embed_std^2).

    The same generator stream as randomise_parameters (the embedding is drawn N(0,1) and multiplied
    in float32), so only the embedding rows differ from what randomise_parameters alone would give.
    """
    rules = randomise_parameters(model, seed)
    modules = dict(model.named_modules())
    with torch.no_grad():
        for name, p in model.named_parameters():
            mod_name, _, _leaf = name.rpartition(".")
            if isinstance(modules[mod_name], nn.Embedding):
                p.mul_(embed_std)
                rules[name] = f"{embed_std}*N(0,1)"
    return rules


def build_model25(spec, tie_word_embeddings, seed, embed_std=EMBED_STD25):
    """Qwen2_5_VLForConditionalGeneration (fp32, eager, eval), re-randomised; returns (model, rules)."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    cfg = build_config25(spec, tie_word_embeddings)
    assert bool(cfg.text_config.tie_word_embeddings) == tie_word_embeddings
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(cfg).to(torch.float32).eval()
    rules = randomise_parameters25(model, seed, embed_std)
    embed = model.model.language_model.embed_tokens.weight
    if tie_word_embeddings:
        assert model.lm_head.weight is embed, "tied variant: lm_head and embed_tokens do not share storage"
        assert model.lm_head.weight.data_ptr() == embed.data_ptr()
    else:
        assert model.lm_head.weight is not embed and model.lm_head.weight.data_ptr() != embed.data_ptr()
    return model, rules


def expected_window_index(grids, window_size, patch_size=14, merge=2):
    """Independent window permutation of docs/QWEN25VL.md 3.4 (empty windows skipped).

    Returns (perm over merge units, cu_window in patch rows, cu_full in patch rows) as int lists.
    """
    vws = window_size // merge // patch_size
    perm, cu, cu_full = [], [0], [0]
    base = 0
    for t, h, w in grids:
        gh, gw = h // merge, w // merge
        for tau in range(t):
            for wr in range(-(-gh // vws)):
                for wc in range(-(-gw // vws)):
                    n = 0
                    for r in range(vws):
                        for c in range(vws):
                            bh, bw = wr * vws + r, wc * vws + c
                            if bh < gh and bw < gw:
                                perm.append(base + tau * gh * gw + bh * gw + bw)
                                n += 1
                    assert n > 0
                    cu.append(cu[-1] + merge * merge * n)
            cu_full.append(cu_full[-1] + h * w)
        base += t * gh * gw
    return perm, cu, cu_full
