#!/usr/bin/env python3
"""PyTorch/transformers CPU baseline for the mbpo Qwen2-VL benchmarks.

Usage:
    python bench_torch.py --config {tiny_a,mid} --threads 2 --iters N --model-out DIR [--backward]

Builds a seeded random Qwen2VLForConditionalGeneration of the named config (fp32, eager attention,
untied head), saves it with save_pretrained(DIR) so the C benchmark can load the same weights,
writes the exact input to DIR/bench_input.safetensors (input_ids I64[S], labels I64[S],
pixel_values F32[P,1176], image_grid_thw I64[1,3]), then times forward passes (eval, no_grad)
and, with --backward, forward+backward of the HF loss (labels = input_ids, -100 on image_pad).

tiny_a: same weights as tests/fixtures/tiny_a (seed 1001), input = fixture case "image" (S=15, P=24).
mid:    hidden 512 / 8 layers / vocab 4096, ViT depth 8 x 512; one 224x224 seeded image
        (grid 1,16,16 -> 256 patches, 64 tokens) with 32 text tokens before and after
        <vision_start> pads <vision_end> (S=130).
"""

import argparse
import os
import sys
import time

import numpy as np
import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import refcommon as rc  # noqa: E402

MODEL_SEEDS = {"tiny_a": 1001, "mid": 3001}


def build_input(config_name):
    spec = rc.CONFIGS[config_name]
    ids_cfg = spec["ids"]
    img_id, vs, ve = ids_cfg["image_token_id"], ids_cfg["vision_start_token_id"], ids_cfg["vision_end_token_id"]
    if config_name == "tiny_a":
        image = rc.seeded_image(2001, 56, 84)  # fixture image A
        before, after = [5, 6, 7], [8, 9, 10, 11]
    else:
        image = rc.seeded_image(4001, 224, 224)
        rng = np.random.default_rng(4002)
        text = rng.integers(3, 3990, size=64).tolist()  # < 4000: no special ids
        before, after = text[:32], text[32:]
    pixel_values, grid, _ = rc.preprocess_images([image])
    n_tok = int(grid[0].prod()) // 4
    ids = before + [vs] + [img_id] * n_tok + [ve] + after
    labels = [-100 if t == img_id else t for t in ids]
    return (torch.tensor(ids, dtype=torch.int64), torch.tensor(labels, dtype=torch.int64),
            pixel_values.contiguous(), grid.contiguous())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", choices=sorted(rc.CONFIGS), required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--model-out", required=True, help="directory for save_pretrained + bench_input.safetensors")
    ap.add_argument("--backward", action="store_true", help="also time forward+backward of the HF loss")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    spec = rc.CONFIGS[args.config]
    model = rc.build_model(spec, tie_word_embeddings=False, seed=MODEL_SEEDS[args.config])
    model.eval()
    os.makedirs(args.model_out, exist_ok=True)
    model.save_pretrained(args.model_out, safe_serialization=True)

    ids, labels, pv, grid = build_input(args.config)
    save_file({"input_ids": ids, "labels": labels, "pixel_values": pv, "image_grid_thw": grid},
              os.path.join(args.model_out, "bench_input.safetensors"),
              metadata={"bench": args.config})
    S, P = ids.numel(), pv.shape[0]
    am = torch.ones_like(ids)[None]

    def fwd():
        model.model.rope_deltas = None
        return model(input_ids=ids[None], attention_mask=am, pixel_values=pv, image_grid_thw=grid,
                     use_cache=False).logits

    with torch.no_grad():
        for _ in range(args.warmup):
            fwd()
        t0 = time.perf_counter()
        for _ in range(args.iters):
            logits = fwd()
        dt = (time.perf_counter() - t0) / args.iters
    assert logits.shape == (1, S, spec["text"]["vocab_size"])
    print(f"torch forward {args.config}: {S} tokens, {P} patches, {dt * 1e3:.3f} ms/iter, {S / dt:.1f} tokens/s",
          flush=True)

    if args.backward:
        def fwd_bwd():
            model.zero_grad(set_to_none=True)
            model.model.rope_deltas = None
            out = model(input_ids=ids[None], attention_mask=am, pixel_values=pv, image_grid_thw=grid,
                        labels=labels[None], use_cache=False)
            out.loss.backward()
            return out.loss

        for _ in range(args.warmup):
            fwd_bwd()
        t0 = time.perf_counter()
        for _ in range(args.iters):
            loss = fwd_bwd()
        dt = (time.perf_counter() - t0) / args.iters
        print(f"torch fwd+bwd {args.config}: {S} tokens, {P} patches, {dt * 1e3:.3f} ms/iter, "
              f"{S / dt:.1f} tokens/s (loss {float(loss.detach()):.6f})", flush=True)


if __name__ == "__main__":
    main()
