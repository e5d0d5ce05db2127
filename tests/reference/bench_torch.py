#!/usr/bin/env python3
"""PyTorch/transformers CPU baseline for the mbpo Qwen2-VL benchmarks (make bench).

Usage:
    python bench_torch.py --config {tiny_a,mid,2b} --model-out DIR --make-only
    python bench_torch.py --config {tiny_a,mid,2b} --model-out DIR --threads 2 [--iters N --warmup N]
                          [--backward --bwd-iters N --bwd-warmup N]
    python bench_torch.py --gemm-bench --threads 2 [--shapes NAME:M,K,N;...] [--gemm-time S]
    python bench_torch.py --report --sizes "tiny_a mid 2b" [--build build] [--table build/bench_table.md]

--make-only writes the model folder DIR (config.json + safetensors, what mbpo-bench --model loads)
and the exact input DIR/bench_input.safetensors (input_ids I64[S], labels I64[S], pixel_values
F32[P,1176], image_grid_thw I64[1,3]); the folder is kept when DIR/bench_meta.json says it was
made from the same config, seed and rules, so the 2B model (about a minute, 4.4 GB) is made once.
Without --make-only (DIR made first) the model is loaded from DIR with from_pretrained(dtype=
float32, attn_implementation="eager"), as mbpo-bench loads the same folder, and forward passes
(eval, no_grad) are timed, then with --backward forward+backward of the HF loss (labels =
input_ids, -100 on image_pad). Both print the mean target NLL (loss), and a `flops` line.

Sizes:
  tiny_a  same weights as tests/fixtures/tiny_a (seed 1001), input = fixture case "image" (S=15, P=24).
  mid     hidden 512 / 8 layers / vocab 4096, ViT depth 8 x 512 (seed 3001); one 224x224 seeded
          image (grid 1,16,16 -> 256 patches, 64 tokens) with 32 text tokens before and after
          <vision_start> pads <vision_end> (S=130).
  2b      the hub Qwen2-VL-2B-Instruct config (tests/configs/Qwen2-VL-2B-Instruct/config.json,
          tied embeddings) with random weights made by fullsize_random.py's build_and_save (its
          randomisation rules, token table N(0, 0.3^2), seed 5001), saved in bf16 with
          max_shard_size 2GB (shards + model.safetensors.index.json, as the hub ships them);
          loaded upcast to fp32 by both sides. Input: one 308 (H) x 392 (W) seeded image (grid
          1,22,28 -> 616 patches, 154 merged tokens) with 16 random text tokens before and 16
          after <vision_start> pads <vision_end>: S=188, P=616, 33 targets.

FLOP convention (the `flops` line, used for GFLOP/s; flop_count below): a Linear of M rows is
2*M*K*N (the patch embedding counts as a Linear of 1176 -> embed_dim, the merger as its two
Linears); attention is QK^T plus PV: 4*L^2*head_dim per head and layer (L = the image's patches,
one frame) for the vision tower, half of that (2*S^2*head_dim) for the causal text layers, the
useful work only on both sides (torch's eager text attention also computes the masked half; not
counted). The LM head is 2*rows*hidden*vocab with rows = S for torch (HF returns the logits of
every position) and rows = the N targets for mbpo (it computes the logits it needs). Norms,
activations, RoPE, softmax and the loss are not counted. forward+backward = 3x forward (the
backward of a product is two products of the same size: the input's gradient and the weight's).

--gemm-bench: torch.matmul fp32 on the same shapes and layouts as mbpo-bench --gemm-bench, same
thread count: forward out = inp @ W^T, dinp += dout @ W, dweight += dout^T @ inp.

--report: reads what make bench wrote under --build (bench_{gemm_mbpo,gemm_torch}.txt,
bench_{mbpo,torch}_<size>.txt, bench_rss_{mbpo,torch}_<size>.txt, bench_contention.txt) and prints
the tables, also written as Markdown to --table. Exits 1 when a result is missing, the two sides'
losses differ by more than 1e-3 relative, or the two sides disagree on the target count.
"""

import argparse
import hashlib
import json
import os
import re
import shutil
import statistics
import sys
import time
import types

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import refcommon as rc  # noqa: E402

MODEL_SEEDS = {"tiny_a": 1001, "mid": 3001, "2b": 5001}
SIZES = ("tiny_a", "mid", "2b")
HUB_2B = os.path.join(HERE, "..", "configs", "Qwen2-VL-2B-Instruct", "config.json")
TEXT_SEED_2B, IMAGE_SEED_2B = 5002, 5003
IMAGE_2B = (308, 392)   # H, W: multiples of 28, so the processor does not resize: grid (1, 22, 28)
TEXT_2B = 16            # random text tokens before and after the image
EMBED_STD_2B = 0.3      # fullsize_random.py's default token-table std
MAKER_VERSION = 1       # bump when the making of a folder changes, so cached folders are remade
GEMM_DEFAULT_SHAPES = ("text.q_o:188,1536,1536;text.k_v:188,1536,256;text.gate_up:188,1536,8960;"
                       "text.down:188,8960,1536;vision.qkv:616,1280,3840;vision.proj:616,1280,1280;"
                       "vision.fc1:616,1280,5120;vision.fc2:616,5120,1280")   # as mbpo-bench's default
LOSS_RTOL = 1e-3


# ------------------------------------------------------------------ the model folders

def spec_ids(config_name):
    if config_name == "2b":
        with open(HUB_2B) as f:
            c = json.load(f)
        return {k: c[k] for k in ("image_token_id", "vision_start_token_id", "vision_end_token_id")}
    return rc.CONFIGS[config_name]["ids"]


def build_input(config_name):
    ids_cfg = spec_ids(config_name)
    img_id, vs, ve = ids_cfg["image_token_id"], ids_cfg["vision_start_token_id"], ids_cfg["vision_end_token_id"]
    if config_name == "tiny_a":
        image = rc.seeded_image(2001, 56, 84)  # fixture image A
        before, after = [5, 6, 7], [8, 9, 10, 11]
    elif config_name == "mid":
        image = rc.seeded_image(4001, 224, 224)
        rng = np.random.default_rng(4002)
        text = rng.integers(3, 3990, size=64).tolist()  # < 4000: no special ids
        before, after = text[:32], text[32:]
    else:
        image = rc.seeded_image(IMAGE_SEED_2B, *IMAGE_2B)
        rng = np.random.default_rng(TEXT_SEED_2B)
        text = rng.integers(0, 151643, size=2 * TEXT_2B).tolist()  # below every special id
        before, after = text[:TEXT_2B], text[TEXT_2B:]
    pixel_values, grid, _ = rc.preprocess_images([image])
    if config_name == "2b":
        assert grid.tolist() == [[1, IMAGE_2B[0] // 14, IMAGE_2B[1] // 14]], grid
    n_tok = int(grid[0].prod()) // 4
    ids = before + [vs] + [img_id] * n_tok + [ve] + after
    labels = [-100 if t == img_id else t for t in ids]
    return (torch.tensor(ids, dtype=torch.int64), torch.tensor(labels, dtype=torch.int64),
            pixel_values.contiguous(), grid.contiguous())


def folder_meta(config_name):
    """What a folder is made from; a folder whose bench_meta.json says the same is reused."""
    if config_name == "2b":
        with open(HUB_2B, "rb") as f:
            source = hashlib.sha256(f.read()).hexdigest()
        rules = {"maker": "fullsize_random.build_and_save", "embed_std": EMBED_STD_2B, "dtype": "bfloat16",
                 "max_shard_size": "2GB", "tied": "as the hub config"}
    else:
        source = hashlib.sha256(json.dumps(rc.CONFIGS[config_name], sort_keys=True).encode()).hexdigest()
        rules = {"maker": "refcommon.build_model", "dtype": "float32", "tied": False}
    return {"generator": "tests/reference/bench_torch.py", "version": MAKER_VERSION, "size": config_name,
            "config_sha256": source, "seed": MODEL_SEEDS[config_name], "rules": rules}


def folder_complete(out):
    """config.json and every weight file it names are there."""
    if not os.path.isfile(os.path.join(out, "config.json")):
        return False
    index = os.path.join(out, "model.safetensors.index.json")
    if os.path.isfile(index):
        with open(index) as f:
            shards = set(json.load(f)["weight_map"].values())
        return all(os.path.isfile(os.path.join(out, s)) for s in shards)
    return os.path.isfile(os.path.join(out, "model.safetensors"))


def make_folder(config_name, out):
    meta = folder_meta(config_name)
    meta_path = os.path.join(out, "bench_meta.json")
    cached = False
    if os.path.isfile(meta_path) and folder_complete(out):
        with open(meta_path) as f:
            old = json.load(f)
        cached = {k: old.get(k) for k in meta} == meta
    t = time.time()
    if not cached:
        if os.path.isdir(out):   # whatever an older or interrupted run left there goes
            shutil.rmtree(out)
        os.makedirs(out)
        if config_name == "2b":
            import fullsize_random as fr
            with open(HUB_2B) as f:
                model_type = json.load(f)["model_type"]
            cfg_cls, model_cls = fr.model_class(model_type)
            ns = types.SimpleNamespace(config=HUB_2B, out=out, seed=MODEL_SEEDS["2b"], embed_std=EMBED_STD_2B,
                                       max_shard_size="2GB")
            times = {}
            info = fr.build_and_save(ns, cfg_cls, model_cls, times)
            meta["made"] = {"n_params": info["n_params"], "shards": info["shards"], "tied": info["tied"],
                            "times_s": {k: round(v, 1) for k, v in times.items()}}
        else:
            model = rc.build_model(rc.CONFIGS[config_name], tie_word_embeddings=False, seed=MODEL_SEEDS[config_name])
            model.save_pretrained(out, safe_serialization=True)
            del model
    ids, labels, pv, grid = build_input(config_name)   # cheap: always rewritten
    from safetensors.torch import save_file
    save_file({"input_ids": ids, "labels": labels, "pixel_values": pv, "image_grid_thw": grid},
              os.path.join(out, "bench_input.safetensors"), metadata={"bench": config_name})
    if not cached:   # last: an interrupted making is never taken for a finished one
        with open(meta_path, "w") as f:
            json.dump(meta, f, indent=1)
    print(f"bench_torch: {config_name} model folder {out}: " +
          ("kept (same config, seed and rules)" if cached else f"made in {time.time() - t:.1f} s") +
          f"; input {ids.numel()} tokens, {pv.shape[0]} patches", flush=True)


def load_folder(out):
    with open(os.path.join(out, "config.json")) as f:
        model_type = json.load(f)["model_type"]
    import transformers
    cls = {"qwen2_vl": transformers.Qwen2VLForConditionalGeneration}.get(model_type)
    if cls is None:
        raise SystemExit(f"bench_torch: {out}: model_type {model_type} is not qwen2_vl")
    try:
        model = cls.from_pretrained(out, dtype=torch.float32, attn_implementation="eager")
    except TypeError:   # transformers before `dtype` (torch_dtype)
        model = cls.from_pretrained(out, torch_dtype=torch.float32, attn_implementation="eager")
    model.eval()
    assert all(p.dtype == torch.float32 for p in model.parameters())
    return model


# ------------------------------------------------------------------ FLOPs

def flop_count(cfg, S, grid, n_targets, pix):
    """Forward FLOPs by the convention in the module docstring: a dict of the parts, and the
    totals of each side (torch: head over S rows; mbpo: over the n_targets rows)."""
    t, v = cfg.get_text_config(), cfg.vision_config
    H, I, L = t.hidden_size, t.intermediate_size, t.num_hidden_layers
    hd = getattr(t, "head_dim", None) or H // t.num_attention_heads
    QD, KD, V = t.num_attention_heads * hd, t.num_key_value_heads * hd, t.vocab_size
    E, F = v.embed_dim, int(v.embed_dim * v.mlp_ratio)
    mm, Hout = v.spatial_merge_size ** 2, v.hidden_size
    frames = [(int(g[0]), int(g[1]) * int(g[2])) for g in grid.tolist()]
    P = sum(nt * hw for nt, hw in frames)
    parts = {
        "vision_gemm": 2 * P * pix * E + v.depth * 2 * P * (3 * E * E + E * E + 2 * E * F)
                       + (P // mm) * 2 * (mm * E * mm * E + mm * E * Hout),
        "vision_attn": v.depth * sum(nt * 4 * hw * hw * E for nt, hw in frames),
        "text_gemm": L * 2 * S * (H * QD + 2 * H * KD + QD * H + 3 * H * I),
        "text_attn": L * 2 * S * S * QD,
        "head_torch": 2 * S * H * V,
        "head_mbpo": 2 * n_targets * H * V,
    }
    body = parts["vision_gemm"] + parts["vision_attn"] + parts["text_gemm"] + parts["text_attn"]
    return parts, body + parts["head_torch"], body + parts["head_mbpo"]


# ------------------------------------------------------------------ timing

def memory_gib():
    """(RSS now, peak RSS) of this process in GiB, from /proc/self/status (None where absent)."""
    got = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    got[line.split(":")[0]] = int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return got.get("VmRSS"), got.get("VmHWM")


def print_memory(stage):
    now, peak = memory_gib()
    if now is not None:
        print(f"bench_torch: memory {stage}: RSS {now:.2f} GiB, peak {peak:.2f} GiB", flush=True)


def bench_model(args):
    torch.set_num_threads(args.threads)
    if not os.path.isfile(os.path.join(args.model_out, "bench_meta.json")):
        raise SystemExit(f"bench_torch: {args.model_out} has no bench_meta.json: run with --make-only first")
    t = time.time()
    model = load_folder(args.model_out)
    t_load = time.time() - t
    cfg = model.config
    from safetensors.torch import load_file
    inp = load_file(os.path.join(args.model_out, "bench_input.safetensors"))
    ids, labels, pv, grid = inp["input_ids"], inp["labels"], inp["pixel_values"], inp["image_grid_thw"]
    S, P = ids.numel(), pv.shape[0]
    n_targets = int((labels[1:] != -100).sum())   # mbpo's targets: s > 0 and labels[s] != -100
    am = torch.ones_like(ids)[None]
    import transformers
    print(f"bench_torch: {args.config} from {args.model_out} (loaded in {t_load:.1f} s), "
          f"{sum(p.numel() for p in model.parameters())} parameters, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, transformers {transformers.__version__}" +
          "".join(f", {k}={os.environ[k]}" for k in sorted(os.environ) if k.startswith("MALLOC_")), flush=True)
    print_memory("after the load")
    parts, f_torch, f_mbpo = flop_count(cfg, S, grid, n_targets, pv.shape[1])
    print(f"flops {args.config}: {S} tokens, {P} patches, {n_targets} targets; forward GFLOP torch {f_torch / 1e9:.3f} "
          f"mbpo {f_mbpo / 1e9:.3f} (" + ", ".join(f"{k} {x / 1e9:.3f}" for k, x in parts.items()) +
          "); fwd+bwd = 3 x forward", flush=True)

    def run(with_labels):
        if hasattr(model, "model") and hasattr(model.model, "rope_deltas"):
            model.model.rope_deltas = None   # the position ids of this input, not a cached generation's
        return model(input_ids=ids[None], attention_mask=am, pixel_values=pv, image_grid_thw=grid,
                     labels=labels[None] if with_labels else None, use_cache=False)

    with torch.no_grad():
        for _ in range(args.warmup):
            run(False)
        t0 = time.perf_counter()
        for _ in range(args.iters):
            logits = run(False).logits
        dt = (time.perf_counter() - t0) / args.iters
    assert logits.shape == (1, S, cfg.get_text_config().vocab_size)
    # HF's loss (shifted, -100 ignored, mean), from the last timed forward's logits, outside the timing
    loss = torch.nn.functional.cross_entropy(logits[0, :-1].float(), labels[1:], ignore_index=-100)
    del logits
    print_memory("after the forward")
    print(f"torch forward {args.config}: {S} tokens, {P} patches, {dt * 1e3:.3f} ms/iter, {S / dt:.1f} tokens/s "
          f"(loss {float(loss):.6f})", flush=True)

    if args.backward:
        def fwd_bwd():
            model.zero_grad(set_to_none=True)
            out = run(True)
            out.loss.backward()
            return out.loss.detach()

        bwd_iters = args.bwd_iters or args.iters
        bwd_warmup = args.warmup if args.bwd_warmup is None else args.bwd_warmup
        for _ in range(bwd_warmup):
            fwd_bwd()
        t0 = time.perf_counter()
        for _ in range(bwd_iters):
            loss = fwd_bwd()
        dt = (time.perf_counter() - t0) / bwd_iters
        print(f"torch fwd+bwd {args.config}: {S} tokens, {P} patches, {dt * 1e3:.3f} ms/iter, "
              f"{S / dt:.1f} tokens/s (loss {float(loss):.6f})", flush=True)
        print_memory("after forward + backward")


def parse_shapes(text):
    shapes = []
    for i, item in enumerate(x for x in text.split(";") if x):
        name, _, dims = item.rpartition(":")
        m, k, n = (int(x) for x in dims.split(","))
        shapes.append((name or f"shape{i + 1}", m, k, n))
    return shapes


def gemm_bench(args):
    torch.set_num_threads(args.threads)
    print(f"torch gemm: {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"{'MKL' if torch.backends.mkl.is_available() else 'no MKL'}, "
          f"{'oneDNN' if torch.backends.mkldnn.is_available() else 'no oneDNN'}", flush=True)
    gen = torch.Generator().manual_seed(1000)
    with torch.no_grad():
        for name, M, K, N in parse_shapes(args.shapes):
            inp = torch.rand(M, K, generator=gen) * 2 - 1
            w = torch.rand(N, K, generator=gen) * 2 - 1
            dout = torch.rand(M, N, generator=gen) * 2 - 1
            out, dinp, dw = torch.empty(M, N), torch.zeros(M, K), torch.zeros(N, K)
            calls = {"forward": lambda: torch.mm(inp, w.t(), out=out),
                     "dinp": lambda: dinp.addmm_(dout, w),
                     "dweight": lambda: dw.addmm_(dout.t(), inp)}
            flop = 2.0 * M * K * N
            for layout, call in calls.items():
                call()   # warm-up
                times, total = [], 0.0
                while len(times) < 64 and (len(times) < 3 or total < args.gemm_time):
                    t0 = time.perf_counter()
                    call()
                    times.append(time.perf_counter() - t0)
                    total += times[-1]
                dt = statistics.median(times)
                print(f"torch gemm {name} {layout} {M}x{K}x{N}: {dt * 1e3:.3f} ms, {flop / dt / 1e9:.1f} GFLOP/s",
                      flush=True)


# ------------------------------------------------------------------ the report

class Missing(Exception):
    pass


def read(path):
    if not os.path.isfile(path):
        raise Missing(f"{path} is missing")
    with open(path) as f:
        return f.read()


def grab(pattern, text, what):
    m = re.search(pattern, text, re.M)
    if not m:
        raise Missing(f"no {what}")
    return m


def time_v(path):
    """(peak RSS GiB, CPU %) from GNU time's `-f "%M %P"` file, (None, None) where there is none."""
    if not os.path.isfile(path):
        return None, None
    lines = [x for x in read(path).split("\n") if x.strip()]
    m = re.fullmatch(r"(\d+) (\d+)%", lines[-1].strip()) if lines else None
    if not m:
        return None, None
    return int(m.group(1)) / 1024 / 1024, int(m.group(2))   # %M is in KiB


def cpu_model():
    name, ids = None, {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                elif line.split(":")[0].strip() in ("cpu family", "model") and ":" in line:
                    ids[line.split(":")[0].strip()] = line.split(":", 1)[1].strip()
                elif not line.strip() and name:
                    break
            if name:
                # a VM's name may say only the vendor and line ("AMD EPYC"): family and model say which
                return name + (f", family {ids['cpu family']} model {ids['model']}" if len(ids) == 2 else "")
    except OSError:
        pass
    return "unknown CPU"


def md_table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return out


def gemm_gflops(side, text, name, layout, dims, what):
    """GFLOP/s of one product in a --gemm-bench output (mbpo-bench's or this script's)."""
    m = grab(rf"^{side} gemm {re.escape(name)} {layout} {dims}: ([0-9.]+) ms, ([0-9.]+) GFLOP/s", text,
             f"{what} for {name} {layout}")
    return float(m.group(2))


def report(args):
    errors, lines = [], []
    b = args.build
    num = r"([0-9.]+)"
    peak = None
    threads = "?"
    versions = ""
    # GEMM
    gemm_rows = []
    try:
        gm, gt = read(os.path.join(b, "bench_gemm_mbpo.txt")), read(os.path.join(b, "bench_gemm_torch.txt"))
        pm = grab(r"^mbpo fma peak: (.*), (\d+) threads: " + num + " GFLOP/s", gm, "FMA peak line")
        peak, isa, threads = float(pm.group(3)), pm.group(1).split(",")[0], pm.group(2)
        _, gcpu_m = time_v(os.path.join(b, "bench_rss_gemm_mbpo.txt"))
        _, gcpu_t = time_v(os.path.join(b, "bench_rss_gemm_torch.txt"))
        # the same shapes on one thread, of the one-thread peak (make bench BENCH_GEMM_1T=1), when run
        gm1 = gt1 = None
        p1m, p1t = os.path.join(b, "bench_gemm_mbpo_1t.txt"), os.path.join(b, "bench_gemm_torch_1t.txt")
        if os.path.isfile(p1m) and os.path.isfile(p1t):
            try:
                gm1, gt1 = read(p1m), read(p1t)
                peak1 = float(grab(r"^mbpo fma peak: .*, 1 threads: " + num + " GFLOP/s", gm1,
                                   "1-thread FMA peak line").group(1))
            except Missing as e:
                errors.append(f"GEMM benchmark on 1 thread: {e}")
                gm1 = gt1 = None
        for m in re.finditer(r"^mbpo gemm (\S+) (\S+) (\S+): " + num + " ms, " + num + " GFLOP/s", gm, re.M):
            name, layout, dims, g_m = m.group(1), m.group(2), m.group(3), float(m.group(5))
            g_t = gemm_gflops("torch", gt, name, layout, dims, "torch gemm line")
            row = [name, dims.replace("x", " x "), layout, f"{g_m:.1f}", f"{100 * g_m / peak:.0f}%",
                   f"{g_t:.1f}", f"{100 * g_t / peak:.0f}%", f"{g_m / g_t:.2f}"]
            if gm1 is not None:
                try:
                    one = [gemm_gflops(side, text, name, layout, dims, f"1-thread {side} gemm line")
                           for side, text in (("mbpo", gm1), ("torch", gt1))]
                    row.append(f"{100 * one[0] / peak1:.0f}% / {100 * one[1] / peak1:.0f}%")
                except Missing as e:   # the 1-thread column goes, the 2-thread table stays
                    errors.append(f"GEMM benchmark on 1 thread: {e}")
                    gm1 = gt1 = None
                    for r in gemm_rows:
                        del r[8:]
            gemm_rows.append(row)
        if not gemm_rows:
            raise Missing("no mbpo gemm lines")
    except Missing as e:
        errors.append(f"GEMM benchmark: {e}")
    # model sizes
    rows, env_notes = [], []
    for size in args.sizes.split():
        try:
            tm, tt = read(os.path.join(b, f"bench_mbpo_{size}.txt")), read(os.path.join(b, f"bench_torch_{size}.txt"))
            fl = grab(rf"^flops {size}: (\d+) tokens, (\d+) patches, (\d+) targets; forward GFLOP torch {num} mbpo {num}",
                      tt, f"flops line for {size}")
            S, P, N, f_t, f_m = int(fl.group(1)), int(fl.group(2)), int(fl.group(3)), float(fl.group(4)), float(fl.group(5))
            hm = grab(r"^mbpo-bench: .* (\d+) tokens, (\d+) patches, (\d+) targets, (\d+) threads", tm, f"mbpo header for {size}")
            if (int(hm.group(1)), int(hm.group(2)), int(hm.group(3))) != (S, P, N):
                errors.append(f"{size}: mbpo runs {hm.group(1)} tokens, {hm.group(2)} patches, {hm.group(3)} targets, "
                              f"the FLOP count assumed {S}, {P}, {N}")
            th = grab(r"^bench_torch: .* (\d+) threads, torch (\S+), transformers ([^\s,]+)(.*)$", tt, f"torch header for {size}")
            if th.group(4).strip(", "):
                env_notes.append(f"{size}: both sides ran with {th.group(4).strip(', ')}")
            if th.group(1) != hm.group(4):
                errors.append(f"{size}: mbpo ran {hm.group(4)} threads, torch {th.group(1)}")
            threads = hm.group(4)
            versions = f"torch {th.group(2)}, transformers {th.group(3)}"
            r_m, c_m = time_v(os.path.join(b, f"bench_rss_mbpo_{size}.txt"))
            r_t, c_t = time_v(os.path.join(b, f"bench_rss_torch_{size}.txt"))
            for kind, mult in (("forward", 1), ("fwd+bwd", 3)):
                mm = grab(rf"^mbpo {re.escape(kind)}: .* {num} ms/iter, .*\(loss ([-0-9.naninf]+)\)", tm, f"mbpo {kind} for {size}")
                mt = grab(rf"^torch {re.escape(kind)} {size}: .* {num} ms/iter, .*\(loss ([-0-9.naninf]+)\)", tt,
                          f"torch {kind} for {size}")
                ms_m, ms_t, l_m, l_t = float(mm.group(1)), float(mt.group(1)), float(mm.group(2)), float(mt.group(2))
                rel = abs(l_m - l_t) / max(abs(l_t), 1e-12)
                if not rel <= LOSS_RTOL:
                    errors.append(f"{size} {kind}: loss mbpo {l_m:.6f} vs torch {l_t:.6f}: {rel:.2e} relative > {LOSS_RTOL:g}")
                g_m, g_t = mult * f_m / (ms_m / 1e3), mult * f_t / (ms_t / 1e3)
                rows.append([size, S, P, kind, f"{ms_m:.1f}", f"{ms_t:.1f}", f"**{ms_t / ms_m:.2f}**",
                             f"{g_m:.1f}", f"{g_t:.1f}",
                             f"{100 * g_m / peak:.0f}% / {100 * g_t / peak:.0f}%" if peak else "-",
                             f"{l_m:.6f} / {l_t:.6f}",
                             f"{r_m:.2f} / {r_t:.2f}" if r_m is not None and r_t is not None else "-",
                             f"{c_m} / {c_t}" if c_m is not None and c_t is not None else "-"])
        except Missing as e:
            errors.append(f"{size}: {e}")
    # contention
    cont_rows = []
    cpath = os.path.join(b, "bench_contention.txt")
    if os.path.isfile(cpath) and not args.no_contention:
        for m in re.finditer(r"^contention (\S+) (forward|fwd\+bwd): alone " + num + r" ms/iter, with load " + num +
                             r" ms/iter, slowdown " + num + "x", read(cpath), re.M):
            cont_rows.append([m.group(1), m.group(2), m.group(3), m.group(4), f"**{float(m.group(5)):.2f}x**"])
        loads = re.findall(r"^contention load (\S+): (.*)$", read(cpath), re.M)

    wait = os.environ.get("OMP_WAIT_POLICY", "unset")
    head = (f"CPU: {cpu_model()} ({os.cpu_count()} CPUs online), {threads} threads (OMP_NUM_THREADS / "
            f"torch.set_num_threads), OMP_WAIT_POLICY {wait}; {versions}; fp32"
            + (f"; FMA peak {peak:.1f} GFLOP/s ({isa}, all threads, measured by mbpo-bench --gemm-bench)" if peak else ""))
    lines.append(head)
    lines.append("")
    lines += md_table(["size", "tokens", "patches", "pass", "mbpo ms/iter", "torch ms/iter", "torch / mbpo",
                       "mbpo GFLOP/s", "torch GFLOP/s", "% of FMA peak (mbpo / torch)", "loss (mbpo / torch)",
                       "peak RSS GiB (mbpo / torch)", "CPU % (mbpo / torch)"], rows)
    lines.append("")
    lines.append("torch / mbpo > 1: mbpo is faster. GFLOP/s = FLOPs / time: GEMMs 2MKN, attention QK^T + PV "
                 "(vision 4 L^2 d per head and layer, causal text half of it), the LM head over every position for "
                 "torch and over the targets only for mbpo; forward + backward = 3 x forward "
                 "(tests/reference/bench_torch.py). % of FMA peak: of the peak above. Peak RSS and CPU % (user + system "
                 "time / wall time, GNU time): each side's whole process (load, forward, forward + backward), the two "
                 "sides one after the other; CPU % well under 100 x threads means the side waited (serial parts, idle "
                 "OpenMP threads, or another job on the machine)." +
                 (" " + "; ".join(env_notes) + " (Makefile BENCH_2B_ENV: glibc's heap otherwise fragments under torch's "
                  "2B backward)." if env_notes else ""))
    if gemm_rows:
        lines.append("")
        lines += md_table(["GEMM", "M x K x N", "layout", "mbpo GFLOP/s", "mbpo % peak", "torch GFLOP/s",
                           "torch % peak", "mbpo / torch"]
                          + (["1 thread: % of its peak (mbpo / torch)"] if len(gemm_rows[0]) > 8 else []), gemm_rows)
        lines.append("")
        lines.append("Layouts of a Linear (M rows, K in, N out): forward out = inp . W^T; dinp += dout . W; "
                     "dweight += dout^T . inp (mbpo-bench --gemm-bench: mbpo__gemm; bench_torch.py --gemm-bench: "
                     "torch.mm / addmm_, fp32). Median of the timed calls." +
                     (f" The last column: the same products on one thread (mbpo-bench and bench_torch.py, "
                      f"OMP_NUM_THREADS=1 / --threads 1), of the one-thread FMA peak, {peak1:.1f} GFLOP/s."
                      if len(gemm_rows[0]) > 8 else "") +
                     (f" CPU % of the two runs (mbpo / torch): {gcpu_m} / {gcpu_t}." if gcpu_m is not None and gcpu_t is not None
                      else ""))
    if cont_rows:
        lines.append("")
        lines += md_table(["competing load", "pass", "alone ms/iter", "with load ms/iter", "slowdown"], cont_rows)
        lines.append("")
        lines.append("Contention: mbpo-bench on the mid model alone, then while another 2-thread process runs "
                     "(tests/bench/contention.sh" + "".join(f"; {name}: {desc}" for name, desc in loads) +
                     "); the issue's target is <= 2.5x.")
    text = "\n".join(lines) + "\n"
    print("\n==== make bench: results\n")
    print(text)
    if args.table:
        with open(args.table, "w") as f:
            f.write(text)
        print(f"bench_torch: the table is in {args.table}")
    if errors:
        for e in errors:
            print(f"bench_torch: FAIL: {e}", file=sys.stderr)
        sys.exit(1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", choices=SIZES)
    ap.add_argument("--model-out", help="the model folder (+ bench_input.safetensors)")
    ap.add_argument("--make-only", action="store_true", help="make (or keep) the model folder and input, then exit")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--backward", action="store_true", help="also time forward+backward of the HF loss")
    ap.add_argument("--bwd-iters", type=int, default=None, help="timed forward+backward iterations (default --iters)")
    ap.add_argument("--bwd-warmup", type=int, default=None, help="untimed forward+backward iterations (default --warmup)")
    ap.add_argument("--gemm-bench", action="store_true", help="torch.matmul on --shapes in the three layouts")
    ap.add_argument("--shapes", default=GEMM_DEFAULT_SHAPES, help="[NAME:]M,K,N;... (as mbpo-bench --shapes)")
    ap.add_argument("--gemm-time", type=float, default=0.3, help="seconds each product is repeated for (>= 3 times)")
    ap.add_argument("--report", action="store_true", help="the tables from make bench's result files")
    ap.add_argument("--sizes", default=" ".join(SIZES), help="--report: the sizes that ran")
    ap.add_argument("--build", default="build", help="--report: the folder of the result files")
    ap.add_argument("--table", default=None, help="--report: also write the Markdown here")
    ap.add_argument("--no-contention", action="store_true", help="--report: leave out bench_contention.txt")
    args = ap.parse_args()
    if args.report:
        return report(args)
    if args.gemm_bench:
        return gemm_bench(args)
    if not args.config or not args.model_out:
        ap.error("--config and --model-out are required (or --gemm-bench, --report)")
    if args.make_only:
        torch.set_num_threads(args.threads)
        return make_folder(args.config, args.model_out)
    return bench_model(args)


if __name__ == "__main__":
    main()
