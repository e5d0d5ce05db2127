#!/usr/bin/env python3
"""A hub-size Qwen2-VL / Qwen2.5-VL with random weights, run by transformers on the CPU in fp32:
the reference side of tests/test_fullsize.c.

Usage (CPU only):
    python3 tests/reference/fullsize_random.py --config <hub config.json> --out DIR [--seed N]
    ./build/test_fullsize DIR          (afterwards, not at the same time: each side holds an fp32 model)

Measured on 2 cores (transformers 4.57.6, torch 2.15.0): Qwen2-VL-2B 59 s, peak RSS 10.3 GB;
Qwen2.5-VL-3B 244 s (on a loaded machine), peak RSS 16.2 GB; DIR takes 2 bytes a parameter
(4.4 / 7.5 GB). The output is the same byte for byte from run to run (checked on a shrunken config).

Steps (each timed in meta.json; one model in memory at a time):
  1. build      Qwen2VLForConditionalGeneration or Qwen2_5_VLForConditionalGeneration (by the
                config's model_type) from the config, in bfloat16, without transformers' own init;
  2. randomise  every parameter (a tied head once) from one seeded CPU generator in
                named_parameters() order, as refcommon.randomise_parameters draws them (norm
                weights 1 + N(0, 0.1^2), biases and norm biases N(0, 0.1^2), matrices
                N(0, 1/fan_in)), except the token table: N(0, --embed-std^2), default 0.3 instead
                of 1, because with a tied head the logits are h . e and N(0, 1) rows would give a
                logit std of sqrt(H) (~45); 0.3 gives 0.3 sqrt(H) (11.7 for 2B, 13.6 for 3B).
                The fp32 draw is rounded to bfloat16 (nearest even), so the bf16 checkpoint holds
                exactly the weights both sides run;
  3. save       save_pretrained in bf16 with max_shard_size 2GB: several shards plus
                model.safetensors.index.json, as the hub ships them; a tied head writes no
                lm_head.weight (checked);
  4. reload     from_pretrained(DIR, dtype=float32, attn_implementation="eager") - the upcast is
                exact, and it proves transformers reads the folder it wrote;
  5. forward    fp32 eager on the CPU: logits of every position with the image and with the
                black image (IIG), then greedy generate from the prompt.

The input (one sequence, chat-shaped; token ids below 151643 are random, the weights being
random too):
    <|im_start|> user \\n  t*3  <|vision_start|> <|image_pad|>*28 <|vision_end|> t*6 <|im_end|> \\n
    <|im_start|> assistant \\n  | response: t*12 <|im_end|>
The image is 112 (H) x 196 (W) uniform-random RGB8 pixels (refcommon.seeded_image), processed by
the slow Qwen2VLImageProcessor (Pillow path, default settings): grid (1, 8, 14), 112 patches,
28 merged tokens (for Qwen2.5-VL a 4 x 7 merge grid: two windows of 4 x 4 and 4 x 3 units).
The black image is all-zero RGB of the same size through the same processor.

DIR/reference.safetensors:
    input_ids I64[S]               the whole sequence (prompt + response)
    target U8[S]                   1 on the response tokens and its closing <|im_end|> (what
                                   mbpo_chat_encode marks, so what mbpo's IIG sums over)
    prompt_len I64[1]              the generation prompt is input_ids[:prompt_len]
    image_rgb U8[112,196,3]        the raw image
    pixel_values F32[112,1176]     the processed image;  pixel_values_black F32[112,1176]
    image_grid_thw I64[1,3]
    logits F32[S,V]                fp32 logits of every position, with the image
    logsumexp F32[S]               of every row of logits (float64)
    logp F32[N], logp_black F32[N] log softmax(logits[t-1])[ids[t]] for the N targets t, with the
                                   image and with the black image
    iig_sum F64[1], iig_mean F64[1]  sum over the targets of logp - logp_black, and /N
                                   (mbpo_iig's definition: mbpo.h section 4)
    greedy I64[8]                  generate(do_sample=False, max_new_tokens=8) from the prompt,
                                   with no stop token and the four vision ids banned (mbpo_generate
                                   bans them; no eos, so both produce exactly 8 tokens)
    greedy_margin F32[8]           top-1 minus top-2 logit at each greedy step (a near-tie there
                                   would explain a mismatch)
    greedy_logits F32[8,V]         the raw logits of each step (before the ban): step 0 from the
                                   prompt, step k from the prompt + greedy[:k], so a decoder fed
                                   these tokens can be compared step by step
DIR/meta.json: versions, seeds, shapes, times, peak RSS.
"""

import argparse
import gc
import json
import os
import resource
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import refcommon as rc  # noqa: E402

SEED = 8001            # parameters
INPUT_SEED = 8002      # text tokens
IMAGE_SEED = 8003      # the image's pixels
IMAGE_H, IMAGE_W = 112, 196
N_NEW = 8              # greedy tokens

# Qwen2 tokenizer ids: <|im_start|>, <|im_end|>, "\n", "user", "assistant"
IM_START, IM_END, NEWLINE, USER, ASSISTANT = 151644, 151645, 198, 872, 77091


def peak_rss_gb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024   # Linux: KiB


def model_class(model_type):
    import transformers
    if model_type == "qwen2_vl":
        return transformers.Qwen2VLConfig, transformers.Qwen2VLForConditionalGeneration
    if model_type == "qwen2_5_vl":
        return transformers.Qwen2_5_VLConfig, transformers.Qwen2_5_VLForConditionalGeneration
    raise SystemExit(f"fullsize_random.py: config model_type '{model_type}' is neither qwen2_vl nor qwen2_5_vl")


def randomise(model, seed, embed_std):
    """refcommon.randomise_parameters' draws (same generator, order and rules), token table N(0, embed_std^2)."""
    gen = torch.Generator(device="cpu")
    gen.manual_seed(seed)
    modules = dict(model.named_modules())
    with torch.no_grad():
        for name, p in model.named_parameters():   # a tied head appears once
            mod_name, _, leaf = name.rpartition(".")
            mod = modules[mod_name]
            noise = torch.randn(tuple(p.shape), generator=gen, dtype=torch.float32)
            if isinstance(mod, torch.nn.Embedding):
                noise.mul_(embed_std)
            elif rc._is_norm(mod):
                if leaf == "weight":
                    noise.mul_(0.1).add_(1.0)
                else:
                    noise.mul_(0.1)
            elif leaf == "bias":
                noise.mul_(0.1)
            else:
                noise.mul_((1.0 / int(np.prod(p.shape[1:]))) ** 0.5)
            p.copy_(noise.to(p.dtype))   # round to nearest even
            del noise


def build_and_save(args, cfg_cls, model_cls, times):
    from transformers.modeling_utils import no_init_weights

    cfg = cfg_cls.from_json_file(args.config)
    t = time.time()
    with no_init_weights():   # every parameter is drawn below; skip transformers' own init
        model = model_cls._from_config(cfg, dtype=torch.bfloat16, attn_implementation="eager")
    model.eval()
    tied = bool(cfg.get_text_config().tie_word_embeddings)
    embed = model.model.language_model.embed_tokens.weight
    if tied and model.lm_head.weight.data_ptr() != embed.data_ptr():
        model.tie_weights()
    assert (model.lm_head.weight.data_ptr() == embed.data_ptr()) == tied, "tie state differs from the config"
    times["build_s"] = time.time() - t

    t = time.time()
    randomise(model, args.seed, args.embed_std)
    times["randomise_s"] = time.time() - t
    n_params = sum(p.numel() for p in model.parameters())

    t = time.time()
    model.save_pretrained(args.out, safe_serialization=True, max_shard_size=args.max_shard_size)
    times["save_s"] = time.time() - t
    with open(os.path.join(args.out, "model.safetensors.index.json")) as f:
        weight_map = json.load(f)["weight_map"]
    shards = sorted(set(weight_map.values()))
    assert len(shards) >= 2, f"expected at least 2 shards, got {shards}"
    assert ("lm_head.weight" in weight_map) == (not tied), \
        f"tied={tied} but lm_head.weight {'present' if 'lm_head.weight' in weight_map else 'absent'} in the index"
    info = {"model_type": cfg.model_type, "tied": tied, "n_params": n_params, "n_tensors": len(weight_map),
            "shards": shards, "layout": rc.detect_layout(list(weight_map))}
    del model, embed
    gc.collect()
    return info


def response_logp(logits, ids, target):
    """log softmax(logits[t-1])[ids[t]] for every target t (float64 reductions)."""
    lse = torch.logsumexp(logits.double(), dim=-1)
    idx = torch.nonzero(target).flatten()
    lp = logits[idx - 1, ids[idx]].double() - lse[idx - 1]
    return lp, lse


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="a hub config.json (model_type qwen2_vl or qwen2_5_vl)")
    ap.add_argument("--out", required=True, help="output folder (the model folder test_fullsize loads)")
    ap.add_argument("--seed", type=int, default=SEED, help=f"parameter seed (default {SEED})")
    ap.add_argument("--embed-std", type=float, default=0.3, help="std of the token table (default 0.3)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    ap.add_argument("--max-shard-size", default="2GB", help="save_pretrained's max_shard_size (default 2GB; "
                    "smaller for a shrunken config, which must still give two shards)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    t_all = time.time()
    times = {}
    os.makedirs(args.out, exist_ok=True)
    with open(args.config) as f:
        model_type = json.load(f).get("model_type")
    cfg_cls, model_cls = model_class(model_type)

    info = build_and_save(args, cfg_cls, model_cls, times)
    rss_build = peak_rss_gb()

    # ------------------------------------------------------------------ inputs
    t = time.time()
    cfg = cfg_cls.from_pretrained(args.out)
    vc = cfg.vision_config
    gen = torch.Generator(device="cpu")
    gen.manual_seed(INPUT_SEED)
    rand = torch.randint(0, 151643, (3 + 6 + 12,), generator=gen).tolist()   # below every special id
    rgb = rc.seeded_image(IMAGE_SEED, IMAGE_H, IMAGE_W)
    pv, grid, _ = rc.preprocess_images([rgb])
    pv_black, grid_black, _ = rc.preprocess_images([np.zeros_like(rgb)])
    assert grid.tolist() == [[1, 8, 14]] and grid_black.tolist() == grid.tolist(), (grid, grid_black)
    n_img = int(grid.prod()) // (vc.spatial_merge_size ** 2)
    prompt = ([IM_START, USER, NEWLINE] + rand[:3] + [cfg.vision_start_token_id] + [cfg.image_token_id] * n_img +
              [cfg.vision_end_token_id] + rand[3:9] + [IM_END, NEWLINE, IM_START, ASSISTANT, NEWLINE])
    response = rand[9:] + [IM_END]
    ids = torch.tensor(prompt + response, dtype=torch.int64)
    S = len(ids)
    target = torch.zeros(S, dtype=torch.uint8)
    target[len(prompt):] = 1
    times["inputs_s"] = time.time() - t

    # ------------------------------------------------------------------ fp32 model
    t = time.time()
    model = model_cls.from_pretrained(args.out, dtype=torch.float32, attn_implementation="eager").eval()
    assert all(p.dtype == torch.float32 for p in model.parameters())
    times["reload_fp32_s"] = time.time() - t

    def forward(pixel_values):
        with torch.no_grad():
            out = model(input_ids=ids[None], attention_mask=torch.ones_like(ids)[None], pixel_values=pixel_values,
                        image_grid_thw=grid, use_cache=False)
        return out.logits[0].float().contiguous()

    t = time.time()
    logits = forward(pv)
    times["forward_s"] = time.time() - t
    assert logits.shape == (S, cfg.get_text_config().vocab_size) and torch.isfinite(logits).all()
    logp, lse = response_logp(logits, ids, target)

    t = time.time()
    logits_black = forward(pv_black)
    times["forward_black_s"] = time.time() - t
    logp_black, _ = response_logp(logits_black, ids, target)
    del logits_black
    iig_sum = float((logp - logp_black).sum())
    iig_mean = iig_sum / int(target.sum())

    # greedy: no stop token, the vision ids banned (as mbpo_generate does)
    t = time.time()
    from transformers import GenerationConfig
    gc_greedy = GenerationConfig(do_sample=False, max_new_tokens=N_NEW, eos_token_id=None, pad_token_id=151643,
                                 bad_words_ids=[[cfg.image_token_id], [cfg.video_token_id],
                                                [cfg.vision_start_token_id], [cfg.vision_end_token_id]])
    model.generation_config = gc_greedy
    p_ids = ids[: len(prompt)][None]
    with torch.no_grad():
        g = model.generate(input_ids=p_ids, attention_mask=torch.ones_like(p_ids), pixel_values=pv,
                           image_grid_thw=grid, generation_config=gc_greedy, output_scores=True,
                           output_logits=True, return_dict_in_generate=True)
    greedy = g.sequences[0, len(prompt):].contiguous()
    assert greedy.numel() == N_NEW, f"generate made {greedy.numel()} tokens, not {N_NEW}"
    margin = []
    for s in g.scores:
        top = torch.topk(s[0].float(), 2).values
        margin.append(float(top[0] - top[1]))
    greedy_logits = torch.stack([x[0].float() for x in g.logits]).contiguous()   # raw, before the ban
    assert greedy_logits.shape == (N_NEW, logits.shape[1])
    times["generate_s"] = time.time() - t
    del model, g
    gc.collect()

    from safetensors.torch import save_file
    tensors = {
        "input_ids": ids, "target": target, "prompt_len": torch.tensor([len(prompt)], dtype=torch.int64),
        "image_rgb": torch.from_numpy(np.ascontiguousarray(rgb)), "pixel_values": pv.contiguous(),
        "pixel_values_black": pv_black.contiguous(), "image_grid_thw": grid.contiguous(),
        "logits": logits, "logsumexp": lse.float(), "logp": logp.float(), "logp_black": logp_black.float(),
        "iig_sum": torch.tensor([iig_sum], dtype=torch.float64), "iig_mean": torch.tensor([iig_mean], dtype=torch.float64),
        "greedy": greedy.to(torch.int64), "greedy_margin": torch.tensor(margin, dtype=torch.float32),
        "greedy_logits": greedy_logits,
    }
    save_file(tensors, os.path.join(args.out, "reference.safetensors"), metadata={"generator": "fullsize_random.py"})

    import PIL
    import safetensors
    import transformers
    times["total_s"] = time.time() - t_all
    meta = {
        "generator": "tests/reference/fullsize_random.py",
        "config": os.path.abspath(args.config),
        "versions": {"python": sys.version.split()[0], "torch": torch.__version__, "transformers": transformers.__version__,
                     "safetensors": safetensors.__version__, "numpy": np.__version__, "pillow": PIL.__version__},
        "device": "cpu", "threads": args.threads, "dtype": "float32 (weights bf16-representable)",
        "attn_implementation": "eager",
        "seeds": {"parameters": args.seed, "input": INPUT_SEED, "image": IMAGE_SEED},
        "randomisation": f"norm weights 1+N(0,0.1^2); biases, norm biases N(0,0.1^2); matrices N(0,1/fan_in); "
                         f"token table N(0,{args.embed_std}^2); one CPU torch.Generator in named_parameters() order; "
                         "rounded to bf16",
        **info,
        "tokens": S, "prompt_len": len(prompt), "targets": int(target.sum()), "image_grid_thw": grid.tolist()[0],
        "patches": int(grid.prod()),
        "logits_abs_max": float(logits.abs().max()), "logits_std": float(logits.std()),
        "iig_sum": iig_sum, "iig_mean": iig_mean, "greedy": greedy.tolist(), "greedy_margin": margin,
        "times_s": {k: round(v, 2) for k, v in times.items()},
        "peak_rss_gb": {"build_randomise_save": round(rss_build, 2), "total": round(peak_rss_gb(), 2)},
    }
    with open(os.path.join(args.out, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print(f"fullsize_random: {model_type}, {info['n_params']} parameters ({'tied' if info['tied'] else 'untied'}), "
          f"{len(info['shards'])} shards; {S} tokens, {int(grid.prod())} patches, {int(target.sum())} targets; "
          f"logits std {meta['logits_std']:.3f} max |.| {meta['logits_abs_max']:.2f}; IIG sum {iig_sum:.4f} mean {iig_mean:.4f}; "
          f"greedy {greedy.tolist()} (min margin {min(margin):.3f})", flush=True)
    print("fullsize_random: times " + ", ".join(f"{k} {v:.1f}" for k, v in times.items()) +
          f"; peak RSS {peak_rss_gb():.2f} GB -> {args.out}", flush=True)


if __name__ == "__main__":
    main()
