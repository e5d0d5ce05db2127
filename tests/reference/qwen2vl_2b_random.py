#!/usr/bin/env python3
"""Qwen2-VL-2B at full size with random weights: the transformers side of test_cuda's "2b" check.

Usage (on a machine with a GPU, torch and transformers 5.x):
    python3 tests/reference/qwen2vl_2b_random.py --config tests/reference/configs/qwen2vl_2b.json --out DIR

Builds Qwen2VLForConditionalGeneration from the config (the hub config.json of
Qwen/Qwen2-VL-2B-Instruct, copied into tests/reference/configs), on the GPU in bfloat16 with
attn_implementation="sdpa", re-draws every parameter from a seeded generator with the rules of
refcommon.randomise_parameters (norm weights 1 + N(0, 0.1^2), biases and norm biases
N(0, 0.1^2), matrices N(0, 1/fan_in), the token table N(0, 1)), and writes to DIR:

    config.json + model*.safetensors   save_pretrained (bf16; tied head: embed_tokens only)
    parity_input.safetensors           input_ids I64[S], image_grid_thw I64[1,3],
                                       pixel_values F32[256,1176] (bf16-representable values),
                                       logits F32[S,V] (transformers' bf16 logits, widened)
    meta.json                          versions, seeds, device, shapes

The input is one sequence: 20 random text tokens, <|vision_start|>, 64 <|image_pad|> (one
224x224 image, grid 1x16x16 patches -> 64 merged tokens), <|vision_end|>, 20 random text tokens
(S = 106). pixel_values are N(0, 1) rounded to bf16 (transformers casts them to the vision
tower's dtype; mbpo's bf16 upload gives the same values). Then build/cuda/test_cuda 2b --2b DIR
compares mbpo's logits with these.
"""

import argparse
import json
import os
import time

import torch
from safetensors.torch import save_file

SEED = 7001          # parameters
INPUT_SEED = 7002    # tokens and pixels


def randomise(model, seed):
    """Every (deduplicated) parameter from one CUDA generator, in named_parameters() order."""
    gen = torch.Generator(device=next(model.parameters()).device)
    gen.manual_seed(seed)
    modules = dict(model.named_modules())
    with torch.no_grad():
        for name, p in model.named_parameters():   # a tied head appears once
            mod_name, _, leaf = name.rpartition(".")
            mod = modules[mod_name]
            noise = torch.randn(tuple(p.shape), generator=gen, device=p.device, dtype=torch.float32)
            is_norm = isinstance(mod, torch.nn.LayerNorm) or type(mod).__name__.endswith("RMSNorm")
            if isinstance(mod, torch.nn.Embedding):
                val = noise
            elif is_norm:
                val = 1.0 + 0.1 * noise if leaf == "weight" else 0.1 * noise
            elif leaf == "bias":
                val = 0.1 * noise
            else:
                fan_in = 1
                for d in p.shape[1:]:
                    fan_in *= int(d)
                val = noise * (1.0 / fan_in) ** 0.5
            p.copy_(val.to(p.dtype))


def build_model(config_path, seed, device="cuda"):
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    cfg = Qwen2VLConfig.from_json_file(config_path)
    with torch.device(device):
        model = Qwen2VLForConditionalGeneration._from_config(cfg, dtype=torch.bfloat16, attn_implementation="sdpa")
    model.eval()
    embed = model.model.language_model.embed_tokens
    if cfg.tie_word_embeddings and model.lm_head.weight.data_ptr() != embed.weight.data_ptr():
        model.lm_head.weight = embed.weight   # tie by hand if this version did not
    randomise(model, seed)
    if cfg.tie_word_embeddings:
        assert model.lm_head.weight.data_ptr() == embed.weight.data_ptr(), "head not tied"
    return model, cfg


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="Qwen2-VL config.json (tests/reference/configs/qwen2vl_2b.json)")
    ap.add_argument("--out", required=True, help="output folder")
    args = ap.parse_args()
    t0 = time.time()
    torch.backends.cuda.matmul.allow_tf32 = False
    model, cfg = build_model(args.config, SEED)
    tc, vc = cfg.text_config, cfg.vision_config
    os.makedirs(args.out, exist_ok=True)
    model.save_pretrained(args.out, safe_serialization=True)
    t_saved = time.time()

    gen = torch.Generator(device="cpu")
    gen.manual_seed(INPUT_SEED)
    text = torch.randint(0, 151643, (40,), generator=gen).tolist()   # below every special id
    grid = torch.tensor([[1, 16, 16]], dtype=torch.int64)
    n_img = int(grid.prod()) // (vc.spatial_merge_size ** 2)
    ids = text[:20] + [cfg.vision_start_token_id] + [cfg.image_token_id] * n_img + [cfg.vision_end_token_id] + text[20:]
    pix = vc.in_channels * vc.temporal_patch_size * vc.patch_size * vc.patch_size
    pv = torch.randn((int(grid.prod()), pix), generator=gen).to(torch.bfloat16).to(torch.float32)
    input_ids = torch.tensor(ids, dtype=torch.int64)
    mm = (input_ids == cfg.image_token_id).to(torch.int32)
    with torch.no_grad():
        out = model(input_ids=input_ids[None].cuda(), attention_mask=torch.ones_like(input_ids)[None].cuda(),
                    pixel_values=pv.cuda(), image_grid_thw=grid.cuda(), mm_token_type_ids=mm[None].cuda(), use_cache=False)
    logits = out.logits[0].float().cpu().contiguous()
    assert logits.shape == (len(ids), tc.vocab_size), logits.shape
    assert torch.isfinite(logits).all(), "non-finite logits"
    save_file({"input_ids": input_ids, "image_grid_thw": grid, "pixel_values": pv.contiguous(), "logits": logits},
              os.path.join(args.out, "parity_input.safetensors"), metadata={"generator": "qwen2vl_2b_random.py"})
    import transformers
    meta = {
        "generator": "tests/reference/qwen2vl_2b_random.py",
        "config": os.path.abspath(args.config),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "cuda": torch.version.cuda},
        "device": torch.cuda.get_device_name(0),
        "dtype": "bfloat16", "attn_implementation": "sdpa",
        "seeds": {"parameters": SEED, "input": INPUT_SEED},
        "randomisation": "norm weights 1+N(0,0.1^2); biases, norm biases N(0,0.1^2); matrices N(0,1/fan_in); "
                         "embeddings N(0,1); one torch.Generator on the GPU in named_parameters() order",
        "n_params": sum(p.numel() for p in model.parameters()),
        "tokens": len(ids), "image_grid_thw": grid.tolist()[0], "patches": int(grid.prod()),
        "logits_abs_max": float(logits.abs().max()), "logits_std": float(logits.std()),
    }
    with open(os.path.join(args.out, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print(f"qwen2vl_2b_random: {meta['n_params']} parameters, {len(ids)} tokens, {int(grid.prod())} patches; "
          f"built+saved {t_saved - t0:.1f} s, total {time.time() - t0:.1f} s; logits std {meta['logits_std']:.3f} "
          f"-> {args.out}", flush=True)


if __name__ == "__main__":
    main()
