#!/usr/bin/env python3
"""transformers side of the GPU model benchmark (mbpo's side: build/cuda/mbpo-bench --gpu-bench).

Usage (on the GPU machine):
    python3 tests/reference/bench_hf.py --config tests/reference/configs/qwen2vl_2b.json

Qwen2-VL-2B from the config, random weights (the rules of qwen2vl_2b_random.py), bfloat16,
attn_implementation="sdpa", on one GPU. The batch is what mbpo-bench packs, padded as
transformers needs: 8 sequences of equal length (so the padding is empty and transformers
does no wasted work), each `--text-tokens` random text tokens around one 448x448 image
(grid 1x32x32 = 1024 patches -> 256 image tokens): text/2, <vs>, 256 pads, <ve>, text/2.
Targets: the text tokens after the first (labels -100 on the image and its markers).

Timed (CUDA-synchronised wall clock per iteration, median of --iters after --warmup):
    forward       loss of the targets, no_grad                      tokens/s = B*S / time
    fwd_bwd       the same with grad, loss.backward() (parameter grads, bf16 as transformers keeps them)
    pgd           one PGD iteration: parameters requires_grad=False, pixel_values (fp32 leaf)
                  requires_grad=True, forward + backward to pixel_values only
    decode        one step at G=8 with a KV cache: prefill the first sequence once (logits of the
                  last position only), repeat its cache 8 times, then --decode-steps steps of
                  8 tokens; the median step
    peak memory   torch.cuda.max_memory_allocated over each phase (weights included)
Prints machine-readable lines `hf <name> <value> <unit>`.
"""

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qwen2vl_2b_random import build_model  # noqa: E402


def timed(fn, warmup, iters):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("--seqs", type=int, default=8)
    ap.add_argument("--grid", type=int, default=32, help="patches per image side (32: 448x448, 256 tokens)")
    ap.add_argument("--text-tokens", dest="text", type=int, default=200, help="text tokens per sequence")
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--decode-steps", type=int, default=20)
    ap.add_argument("--G", type=int, default=8)
    args = ap.parse_args()

    torch.backends.cuda.matmul.allow_tf32 = False
    model, cfg = build_model(args.config, 7001)
    tc, vc = cfg.text_config, cfg.vision_config
    dev = "cuda"
    B, g = args.seqs, args.grid
    merge = vc.spatial_merge_size
    n_img = g * g // (merge * merge)
    pix = vc.in_channels * vc.temporal_patch_size * vc.patch_size * vc.patch_size
    gen = torch.Generator(device="cpu")
    gen.manual_seed(8001)
    rows, labels = [], []
    for _ in range(B):
        t = torch.randint(0, 151643, (args.text,), generator=gen).tolist()
        h = args.text // 2
        ids = t[:h] + [cfg.vision_start_token_id] + [cfg.image_token_id] * n_img + [cfg.vision_end_token_id] + t[h:]
        lab = [x if x < 151643 else -100 for x in ids]
        rows.append(ids)
        labels.append(lab)
    input_ids = torch.tensor(rows, dtype=torch.int64, device=dev)
    labels = torch.tensor(labels, dtype=torch.int64, device=dev)
    am = torch.ones_like(input_ids)
    mm = (input_ids == cfg.image_token_id).to(torch.int32)
    grid = torch.tensor([[1, g, g]] * B, dtype=torch.int64, device=dev)
    pv = torch.randn((B * g * g, pix), generator=gen).to(dev)
    S = input_ids.shape[1]
    T = B * S
    n_params = sum(p.numel() for p in model.parameters())
    print(f"bench_hf: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, {n_params} parameters, "
          f"{B} x {S} tokens ({T}), {B * g * g} patches, sdpa bf16", flush=True)
    print(f"hf tokens {T} tokens")
    print(f"hf patches {B * g * g} patches")

    def fwd(pixels=pv):
        model.model.rope_deltas = None
        return model(input_ids=input_ids, attention_mask=am, pixel_values=pixels, image_grid_thw=grid,
                     mm_token_type_ids=mm, labels=labels, use_cache=False).loss

    # forward
    torch.cuda.reset_peak_memory_stats()
    with torch.no_grad():
        dt = timed(fwd, args.warmup, args.iters)
    print(f"hf forward_ms {dt * 1e3:.2f} ms")
    print(f"hf forward_tok_s {T / dt:.1f} tok/s")
    print(f"hf peak_mem_forward {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB", flush=True)

    # forward + backward (parameter gradients)
    def fwd_bwd():
        model.zero_grad(set_to_none=True)
        fwd().backward()

    torch.cuda.reset_peak_memory_stats()
    dt = timed(fwd_bwd, args.warmup, args.iters)
    print(f"hf fwd_bwd_ms {dt * 1e3:.2f} ms")
    print(f"hf fwd_bwd_tok_s {T / dt:.1f} tok/s")
    print(f"hf peak_mem_fwd_bwd {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB", flush=True)
    model.zero_grad(set_to_none=True)

    # one PGD iteration: the gradient of the loss w.r.t. pixel_values only
    for p in model.parameters():
        p.requires_grad_(False)
    x = pv.clone().requires_grad_(True)

    def pgd():
        x.grad = None
        fwd(x).backward()

    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    dt = timed(pgd, args.warmup, args.iters)
    assert x.grad is not None and torch.isfinite(x.grad).all()
    print(f"hf pgd_ms {dt * 1e3:.2f} ms")
    print(f"hf peak_mem_pgd {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB", flush=True)
    del x

    # decode at G: prefill one prompt (the first sequence), repeat the cache, step
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    G = args.G
    with torch.no_grad():
        model.model.rope_deltas = None
        t0 = time.perf_counter()
        out = model(input_ids=input_ids[:1], attention_mask=am[:1], pixel_values=pv[: g * g], image_grid_thw=grid[:1],
                    mm_token_type_ids=mm[:1], use_cache=True, logits_to_keep=1)
        torch.cuda.synchronize()
        t_prefill = time.perf_counter() - t0
        pkv = out.past_key_values
        pkv.batch_repeat_interleave(G)
        tok = torch.full((G, 1), 1000, dtype=torch.int64, device=dev)
        steps = []
        for i in range(args.warmup + args.decode_steps):
            tok = tok + torch.arange(G, device=dev)[:, None] + i   # different tokens per continuation
            t0 = time.perf_counter()
            out = model(input_ids=tok, past_key_values=pkv, use_cache=True)
            nxt = out.logits[:, -1].float()
            torch.cuda.synchronize()
            if i >= args.warmup:
                steps.append(time.perf_counter() - t0)
            pkv = out.past_key_values
            assert torch.isfinite(nxt).all()
    dt = statistics.median(steps)
    print(f"hf prefill_ms {t_prefill * 1e3:.2f} ms")
    print(f"hf decode_step_ms {dt * 1e3:.3f} ms")
    print(f"hf decode_tok_s {G / dt:.1f} tok/s")
    print(f"hf peak_mem_decode {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB", flush=True)


if __name__ == "__main__":
    main()
