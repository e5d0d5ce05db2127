#!/usr/bin/env python3
"""transformers side of the MBPO benchmark (issue 15, item 8); tests/cuda/mbpo_bench.sh runs both sides.

Usage:
    python3 tests/reference/mbpo_hf.py --device cuda                       # Qwen2-VL-2B, random weights, one GPU
    python3 tests/reference/mbpo_hf.py --device cpu --tiny --image-size 112 --new-tokens 16   # smoke test
    python3 tests/reference/mbpo_hf.py --make-data DIR [--model M]         # the same inputs as files, for mbpo
    python3 tests/reference/mbpo_hf.py --report WORK                       # mbpo_bench.sh's table

The MBPO step written the way a TRL GRPOTrainer user runs it on one GPU: Qwen2VLForConditionalGeneration
from --config (default tests/reference/configs/qwen2vl_2b.json; --model DIR: DIR/config.json and DIR's
tokenizer) with random weights drawn by qwen2vl_2b_random.randomise (seed 7001: the 2B weights are the ones
qwen2vl_2b_random.py saves), or with --load-weights DIR's weights (from_pretrained; mbpo_bench.sh does
this, so both sides start from the same model). bfloat16 parameters, gradients and AdamW moments (torch's
fused AdamW, no fp32 master copy: the leanest and fastest way to train in transformers, and the less
precise one; mbpo keeps fp32 master weights and moments), flash_attention_2 when flash_attn imports, else
sdpa; no gradient checkpointing, no torch.compile. --device cpu: float32, sdpa. --tiny shrinks the config
in-process (2 layers, hidden 64, 4 heads; ViT depth 2, width 64) and keeps the vocabulary.
Checked on the CPU (mbpo-synth's tiny model, fp32, transformers 4.57): the gradient norm of the loss over
the two offline pairs equals mbpo-train --mode offline's first step to 7 digits (1.284837 and 1.28483802).

Inputs (made by make_samples, the same for --make-data): --image-size^2 images of random coloured
rectangles and ellipses (448: grid 32x32 = 1024 patches -> 256 image tokens), through the transformers
processor (Qwen2VLProcessor: the torchvision image processor when it builds, the Qwen2-VL chat template from
tests/fixtures/tokenizer when the tokenizer has none); open questions "Describe ..." and yes/no questions
"Is there a <colour> <shape> ...? Answer yes or no." (about 30 text tokens with the template);
responses of --new-tokens tokens (words that are one token each, then <|im_end|>).

Measured (synchronised wall clock, median of --iters after --warmup), lines `hf <name> <value> <unit>`:
  step_s      one MBPO step (DESIGN.md 1, eq. 7) over --offline pairs + --online prompts:
              processor on the 4 prompts (prep_s); rollouts: model.generate on the online prompts with
              num_return_sequences=G (generate expands prompt and image G times before the prefill, the
              same work as TRL's repeated batch), do_sample, temperature 1, top_k 0, top_p 1,
              max_new_tokens = min_new_tokens = --new-tokens (a fixed token count), the vision tokens
              suppressed (mbpo_generate bans them too) (rollout_s); the
              yes/no verifier on the decoded text and the group advantages (verify_s); the reference
              log-probs from a frozen copy, no_grad (ref_s); the policy forward, the hybrid loss with the
              k3 KL (beta 0.04, rho = 1: one update per batch, the eps_c clip written out), backward,
              grad-norm clip 1.0, AdamW lr 1e-6 (train_s). The batch is TRL's layout: prompts left-padded,
              completions right-padded, one padded batch of 2*offline + G*online sequences, each with its
              own copy of its image (the vision tower runs once per sequence), logits only for the
              completion (logits_to_keep; 4.57's Qwen2-VL has none: all positions, then sliced),
              log-softmax row by row in fp32.
  rollout_tok_s   generated tokens / rollout_s
  rollout_mfu     2 * (LM matmul weights + lm_head) * generated tokens / rollout_s / peak
  train_mfu       3 * forward FLOPs / train_s / peak; forward FLOPs = sum over sequences of
                  2*W_lm*S + 2*L*d*S^2 (causal attention: QK^T and PV over S^2/2 pairs) + 2*d*V*C (head on the
                  C completion positions) + per image 2*W_vit*n + 4*depth*e*n^2 + 2*W_merger*n/4 (n patches),
                  over the real (unpadded) tokens; W = matmul weights, embedding lookups and norms not counted
  pgd_samples_min PGD at --pgd-iters K (20) per sample, batch 1: K x (forward + backward to pixel_values,
                  sign step, clip) then one generate of the rejected response (--new-tokens, sampled).
                  transformers' processor is not differentiable, so the step is taken on pixel_values: the
                  image mean/std per column give the [0,1] step alpha/std and the [0,1] box, the gradients of
                  the two temporal copies of a pixel are summed (both copies stay equal), so it is the PGD
                  of DESIGN.md 1 on the resized image; quantised to 8 bits before the generate, as mbpo does
                  with its PNG
  iig_samples_s   IIG of the chosen response for --iig-batch samples: the processor on 2*batch prompts
                  (real image, black image), one batched no_grad forward, logp sums; samples / time
  peak_mem_step, peak_mem_pgd, peak_mem_iig  torch.cuda.max_memory_allocated over the phase (GiB);
                  peak_res_* max_memory_reserved (what the process holds; compare with nvidia-smi)
"""

import argparse
import importlib.util
import inspect
import json
import math
import os
import random
import re
import statistics
import sys
import tempfile
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
from qwen2vl_2b_random import SEED as PARAM_SEED, randomise  # noqa: E402

DATA_SEED = 7101
TOKENIZER_DIR = os.path.join(ROOT, "tests", "fixtures", "tokenizer")
DEFAULT_CONFIG = os.path.join(ROOT, "tests", "reference", "configs", "qwen2vl_2b.json")

# ------------------------------------------------------------------------------------------------
# configuration, FLOPs
# ------------------------------------------------------------------------------------------------


def tiny_config_file(path):
    """The config at path, shrunk (keeps the vocabulary and token ids): a temporary json file."""
    with open(path) as f:
        d = json.load(f)
    text = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_window_layers=2)
    for sec in (d, d.get("text_config")):
        if isinstance(sec, dict):
            sec.update(text)
            for rk in ("rope_scaling", "rope_parameters"):
                if isinstance(sec.get(rk), dict) and "mrope_section" in sec[rk]:
                    sec[rk]["mrope_section"] = [2, 3, 3]    # head size 16: 8 frequency slots
    d["vision_config"].update(depth=2, embed_dim=64, num_heads=4, hidden_size=64)
    fd, out = tempfile.mkstemp(suffix=".json", prefix="mbpo_hf_tiny_")
    with os.fdopen(fd, "w") as f:
        json.dump(d, f)
    return out


def load_config(path, tiny):
    from transformers import Qwen2VLConfig
    if not tiny:
        return Qwen2VLConfig.from_json_file(path)
    p = tiny_config_file(path)
    try:
        return Qwen2VLConfig.from_json_file(p)
    finally:
        os.unlink(p)


def dims(cfg):
    """The sizes the FLOP counts need, from a Qwen2VLConfig (4.x and 5.x)."""
    tc, vc = cfg.text_config, cfg.vision_config
    d, L, H = tc.hidden_size, tc.num_hidden_layers, tc.num_attention_heads
    kv = tc.num_key_value_heads
    hs = d // H
    e, m = vc.embed_dim, vc.spatial_merge_size
    pix = getattr(vc, "in_channels", getattr(vc, "in_chans", 3)) * vc.temporal_patch_size * vc.patch_size ** 2
    return dict(
        d=d, L=L, V=tc.vocab_size, dq=H * hs,
        w_lm=L * (2 * d * H * hs + 2 * d * kv * hs + 3 * d * tc.intermediate_size),
        e=e, depth=vc.depth, merge=m,
        w_vit=pix * e + vc.depth * (4 * e * e + 2 * e * int(e * vc.mlp_ratio)),
        w_merger=(e * m * m) ** 2 + e * m * m * vc.hidden_size,
    )


def fwd_flops(D, seq_lens, head_positions, image_patches):
    """Forward FLOPs of sequences (real lengths), the head on head_positions, and the images (patches each)."""
    f = 0.0
    for s in seq_lens:
        f += 2.0 * D["w_lm"] * s + 2.0 * D["L"] * D["dq"] * s * s
    f += 2.0 * D["d"] * D["V"] * head_positions
    for n in image_patches:
        f += 2.0 * D["w_vit"] * n + 4.0 * D["depth"] * D["e"] * n * n + 2.0 * D["w_merger"] * n / D["merge"] ** 2
    return f


def decode_params(D):
    return D["w_lm"] + D["d"] * D["V"]   # a decode step reads every LM matmul weight and the head


# ------------------------------------------------------------------------------------------------
# inputs
# ------------------------------------------------------------------------------------------------

WORDS = ("the a small large old new red blue green white black bright dark round square long short tall "
         "house tree car road river city street window door table chair book paper light water field sky "
         "cloud mountain garden wall floor room dog cat bird horse man woman child group people hand face "
         "side top left right front back near far next under above behind between inside outside along "
         "and with without on in at of to from by over is are was has have stands sits walks holds looks "
         "shows seems appears carries wears open closed empty full quiet busy clean wide narrow soft hard "
         "warm cold wet dry early late day night morning evening color shape line edge corner center part "
         "picture image scene view background surface pattern area space place point").split()
COLOURS = "red green blue yellow white black purple orange".split()
SHAPES = "circle square triangle star rectangle ellipse".split()


def draw_image(rng, size):
    from PIL import Image, ImageDraw
    img = Image.new("RGB", (size, size), tuple(rng.randrange(256) for _ in range(3)))
    dr = ImageDraw.Draw(img)
    for _ in range(rng.randint(3, 7)):
        x0, y0 = rng.randrange(size - 8), rng.randrange(size - 8)
        x1, y1 = x0 + rng.randint(8, size // 2), y0 + rng.randint(8, size // 2)
        box = (x0, y0, min(x1, size - 1), min(y1, size - 1))
        fill = tuple(rng.randrange(256) for _ in range(3))
        (dr.rectangle if rng.random() < 0.5 else dr.ellipse)(box, fill=fill)
    return img


def text_of(rng, words, n_tokens, tok):
    """Words until the text is n_tokens tokens (exactly, with one-token words)."""
    out = []
    while True:
        out.append(rng.choice(words))
        s = " ".join(out)
        if len(tok(s, add_special_tokens=False)["input_ids"]) >= n_tokens:
            return s


def make_samples(tok, n_open, n_pairs, n_online, size, resp_tokens, seed=DATA_SEED):
    """n_open open-ended samples (the first n_pairs with a rejected response) and n_online yes/no prompts.
    Every response is resp_tokens - 1 tokens of text (+ <|im_end|> = resp_tokens targets)."""
    rng, rng_on = random.Random(seed), random.Random(seed + 1)   # online prompts do not depend on n_open
    words = [w for w in WORDS if len(tok(" " + w, add_special_tokens=False)["input_ids"]) == 1
             and len(tok(w, add_special_tokens=False)["input_ids"]) == 1] or WORDS
    opens, online = [], []
    for i in range(n_open):
        q = "Describe what you see in this %s in detail." % rng.choice(["picture", "image", "photo"])
        s = dict(id="open%d" % i, file="open%d.png" % i, image=draw_image(rng, size), question=q,
                 chosen=text_of(rng, words, resp_tokens - 1, tok))
        if i < n_pairs:
            s["rejected"] = text_of(rng, words, resp_tokens - 1, tok)
        opens.append(s)
    for i in range(n_online):
        yes = rng_on.random() < 0.5
        q = "Is there a %s %s in this picture? Answer yes or no." % (rng_on.choice(COLOURS), rng_on.choice(SHAPES))
        online.append(dict(id="online%d" % i, file="online%d.png" % i, image=draw_image(rng_on, size), question=q,
                           answer="Yes" if yes else "No", label="Y" if yes else "N"))
    return opens, online


def load_tokenizer(tok_dir):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(tok_dir)
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = "<|endoftext|>"
    if not getattr(tok, "chat_template", None):
        with open(os.path.join(TOKENIZER_DIR, "chat_template.json")) as f:
            tok.chat_template = json.load(f)["chat_template"]
    return tok


def make_processor(tok):
    """Qwen2VLProcessor from its parts (4.57 needs a video processor; 5.x may not)."""
    import transformers as tf
    if int(tf.__version__.split(".")[0]) >= 5:
        ip = tf.Qwen2VLImageProcessor()   # 5.x: the torchvision one (the Fast name is deprecated)
    else:
        try:
            ip = tf.Qwen2VLImageProcessorFast()
        except Exception:   # no torchvision
            ip = tf.Qwen2VLImageProcessor()
    try:
        return tf.Qwen2VLProcessor(image_processor=ip, tokenizer=tok, chat_template=tok.chat_template)
    except (TypeError, ValueError):
        return tf.Qwen2VLProcessor(image_processor=ip, tokenizer=tok, video_processor=tf.Qwen2VLVideoProcessor(),
                                   chat_template=tok.chat_template)


def chat_text(proc, question):
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    return proc.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)


def encode_prompts(proc, questions, images, dev):
    enc = proc(text=[chat_text(proc, q) for q in questions], images=images, return_tensors="pt", padding=True)
    return {k: v.to(dev) for k, v in enc.items()}


def response_ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"] + [tok.convert_tokens_to_ids("<|im_end|>")]


def build_batch(enc, rows, pad_id, dev, pixel_values=None):
    """TRL's layout: rows = [(prompt index, completion ids)], prompts as encoded (left-padded), completions
    right-padded to the longest; each row takes its prompt's image patches. Returns (inputs, mask, C)."""
    idx = torch.tensor([r[0] for r in rows], device=dev)
    C = max(len(r[1]) for r in rows)
    comp = torch.full((len(rows), C), pad_id, dtype=torch.int64)
    cmask = torch.zeros((len(rows), C), dtype=torch.int64)
    for i, (_, c) in enumerate(rows):
        comp[i, :len(c)] = torch.tensor(c)
        cmask[i, :len(c)] = 1
    comp, cmask = comp.to(dev), cmask.to(dev)
    ids_p = enc["input_ids"]
    out = {}
    for k, v in enc.items():   # per-token tensors (input_ids, attention_mask, 5.x's mm_token_type_ids)
        if torch.is_tensor(v) and v.shape == ids_p.shape:
            tail = comp if k == "input_ids" else cmask if k == "attention_mask" else torch.zeros_like(comp, dtype=v.dtype)
            out[k] = torch.cat([v[idx], tail], 1)
    grid = enc["image_grid_thw"]
    offs = [0]
    for g in grid.tolist():
        offs.append(offs[-1] + g[0] * g[1] * g[2])
    pv = enc["pixel_values"] if pixel_values is None else pixel_values
    out["pixel_values"] = torch.cat([pv[offs[i]:offs[i + 1]] for i in idx.tolist()], 0)
    out["image_grid_thw"] = grid[idx]
    return out, cmask, C


def reset_rope(model):
    inner = getattr(model, "model", None)
    if inner is not None and hasattr(inner, "rope_deltas"):
        inner.rope_deltas = None   # computed again from this batch's input_ids


def keeps_logits(model):
    """Whether forward takes logits_to_keep (5.x; 4.57's Qwen2-VL computes every position's logits)."""
    return "logits_to_keep" in inspect.signature(type(model).forward).parameters


def token_logps(model, inputs, C):
    """(R, C) log-probs of the completion tokens: logits of the last C+1 positions only, fp32 per row."""
    reset_rope(model)
    kw = {"logits_to_keep": C + 1} if keeps_logits(model) else {}
    logits = model(**inputs, use_cache=False, **kw).logits[:, -(C + 1):-1]
    comp = inputs["input_ids"][:, -C:]
    rows = []
    for r in range(logits.shape[0]):
        lg = logits[r].float()
        rows.append(lg.gather(-1, comp[r][:, None])[:, 0] - torch.logsumexp(lg, -1))
    return torch.stack(rows)


def yes_no_correct(text, label):
    found = {w.lower() for w in re.findall(r"\b(yes|no)\b", text, re.I)}
    return 1.0 if found == ({"yes"} if label == "Y" else {"no"}) else 0.0


def group_adv(r):
    r = torch.tensor(r, dtype=torch.float32)
    return (r - r.mean()) / (r.std(unbiased=True) + 1e-4)


def hybrid_loss(lp, ref, old, mask, adv, weight, beta, clip_eps=0.2):
    """eq. 7 per token: -[min(rho A, clip(rho) A) - beta KL], k3 KL; mean over each response, weighted."""
    ratio = torch.exp(lp - old)
    a = adv[:, None]
    pg = torch.minimum(ratio * a, torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * a)
    d = ref - lp
    kl = torch.exp(d) - d - 1
    per_tok = -(pg - beta * kl)
    m = mask.to(lp.dtype)
    per_seq = (per_tok * m).sum(1) / m.sum(1).clamp(min=1)
    return (per_seq * weight).sum(), ((kl * m).sum() / m.sum()).item()


# ------------------------------------------------------------------------------------------------
# the benchmark
# ------------------------------------------------------------------------------------------------


class Clock:
    def __init__(self, dev):
        self.dev = dev

    def __call__(self):
        if self.dev == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter()


def make_model(cfg, dtype, attn, dev, load_dir=None):
    """Random weights (qwen2vl_2b_random's rules and seed), or load_dir's checkpoint (from_pretrained)."""
    from transformers import Qwen2VLForConditionalGeneration
    if load_dir:
        try:
            model = Qwen2VLForConditionalGeneration.from_pretrained(load_dir, dtype=dtype, attn_implementation=attn)
        except TypeError:
            model = Qwen2VLForConditionalGeneration.from_pretrained(load_dir, torch_dtype=dtype, attn_implementation=attn)
        return model.to(dev).eval()
    with torch.device(dev):
        model = Qwen2VLForConditionalGeneration._from_config(cfg, dtype=dtype, attn_implementation=attn)
    model.eval()
    embed = model.get_input_embeddings()
    if cfg.tie_word_embeddings and model.lm_head.weight.data_ptr() != embed.weight.data_ptr():
        model.lm_head.weight = embed.weight
    randomise(model, PARAM_SEED)
    return model


def say(name, value, unit, fmt="%.4g"):
    print(("hf %s " + fmt + " %s") % (name, value, unit), flush=True)


def mem_phase_start(dev):
    if dev == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def mem_phase_end(dev, name):
    if dev == "cuda":
        say("peak_mem_" + name, torch.cuda.max_memory_allocated() / 2 ** 30, "GiB", "%.2f")
        say("peak_res_" + name, torch.cuda.max_memory_reserved() / 2 ** 30, "GiB", "%.2f")


def bench(args):
    import transformers
    transformers.logging.set_verbosity_error()
    dev = args.device
    clock = Clock(dev)
    if dev == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
    else:
        torch.set_num_threads(args.threads or torch.get_num_threads())
    dtype = torch.bfloat16 if dev == "cuda" else torch.float32
    attn = "sdpa"
    if dev == "cuda" and not args.sdpa and importlib.util.find_spec("flash_attn") is not None:
        attn = "flash_attention_2"
    cfg_path = os.path.join(args.model, "config.json") if args.model else args.config
    cfg = load_config(cfg_path, args.tiny)
    tok = load_tokenizer(args.model or args.tokenizer)
    proc = make_processor(tok)
    D = dims(cfg)
    torch.manual_seed(args.seed)
    load_dir = args.model if args.load_weights and args.model else None
    model = make_model(cfg, dtype, attn, dev, load_dir)
    n_params = sum(p.numel() for p in model.parameters())
    pad_id = tok.pad_token_id
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    eos_ids = [im_end, tok.convert_tokens_to_ids("<|endoftext|>")]
    G, NEW, beta = args.G, args.new_tokens, 0.04
    n_open = max(args.offline, args.iig_batch, args.pgd_samples + 1)
    opens, online = make_samples(tok, n_open, args.offline, args.online, args.image_size, NEW)
    devname = torch.cuda.get_device_name(0) if dev == "cuda" else "cpu (%d threads)" % torch.get_num_threads()
    print(f"mbpo_hf: {devname}, torch {torch.__version__}, transformers {transformers.__version__}, {attn}, "
          f"{str(dtype).replace('torch.', '')}, {n_params} parameters, image processor {type(proc.image_processor).__name__}",
          flush=True)
    print(f"hf info torch {torch.__version__}")
    print(f"hf info transformers {transformers.__version__}")
    print(f"hf info attn {attn}")
    print(f"hf info weights {'from ' + load_dir if load_dir else 'random (qwen2vl_2b_random.randomise, seed %d)' % PARAM_SEED}")
    print(f"hf info dtype {str(dtype).replace('torch.', '')}")
    print(f"hf info device {devname.replace(' ', '_')}")
    print("hf info rollouts generate(num_return_sequences=G)")
    print(f"hf info logits_to_keep {'yes' if keeps_logits(model) else 'no (every position, then sliced)'}")
    say("params", n_params, "params", "%d")
    phases = set(args.phases.split(","))
    gen_kw = dict(do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=NEW, min_new_tokens=NEW,
                  pad_token_id=pad_id, eos_token_id=eos_ids,
                  # as mbpo_generate: a response never holds the vision tokens (a sampled <|image_pad|> would
                  # break the next forward: more image tokens than image features)
                  suppress_tokens=[cfg.image_token_id, cfg.video_token_id, cfg.vision_start_token_id,
                                   cfg.vision_end_token_id])

    # -------------------------------------------------------------- one MBPO step
    if "step" in phases:
        ref = make_model(cfg, dtype, attn, dev, load_dir)   # the frozen reference: the same start weights
        for p in ref.parameters():
            p.requires_grad_(False)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-6, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                                **({"fused": True} if dev == "cuda" else {"foreach": True}))
        pairs, prompts = opens[:args.offline], online
        B = len(pairs) + len(prompts)
        off_resp = [(response_ids(tok, s["chosen"]), response_ids(tok, s["rejected"])) for s in pairs]
        parts = {k: [] for k in ("step", "prep", "rollout", "verify", "ref", "train")}
        stats = {}

        def one_step():
            t0 = clock()
            items = pairs + prompts
            enc_all = encode_prompts(proc, [s["question"] for s in items], [s["image"] for s in items], dev)
            enc_on = encode_prompts(proc, [s["question"] for s in prompts], [s["image"] for s in prompts], dev)
            t1 = clock()
            reset_rope(model)
            with torch.no_grad():
                out = model.generate(**enc_on, num_return_sequences=G, **gen_kw)
            comps = out[:, enc_on["input_ids"].shape[1]:]
            t2 = clock()
            rows, adv, weight = [], [], []
            for i, (cw, cl) in enumerate(off_resp):
                rows += [(i, cw), (i, cl)]
                adv += group_adv([2.0, 0.0]).tolist()
                weight += [1.0 / (B * 2)] * 2
            texts = tok.batch_decode(comps, skip_special_tokens=True)
            rewards = []
            n_gen = 0
            for j, s in enumerate(prompts):
                r = []
                for k in range(G):
                    c = comps[j * G + k].tolist()
                    n = next((t + 1 for t, x in enumerate(c) if x in eos_ids), len(c))   # through the first stop
                    n_gen += n
                    rows.append((len(pairs) + j, c[:n]))
                    r.append(yes_no_correct(texts[j * G + k], s["label"]))
                rewards += r
                adv += group_adv(r).tolist()
                weight += [1.0 / (B * G)] * G
            inputs, cmask, C = build_batch(enc_all, rows, pad_id, dev)
            adv_t = torch.tensor(adv, device=dev)
            w_t = torch.tensor(weight, device=dev)
            t3 = clock()
            with torch.no_grad():
                lref = token_logps(ref, inputs, C)
            t4 = clock()
            lp = token_logps(model, inputs, C)
            loss, kl = hybrid_loss(lp, lref, lp.detach(), cmask, adv_t, w_t, beta)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            t5 = clock()
            for k, v in (("step", t5 - t0), ("prep", t1 - t0), ("rollout", t2 - t1), ("verify", t3 - t2),
                         ("ref", t4 - t3), ("train", t5 - t4)):
                parts[k].append(v)
            am = inputs["attention_mask"]
            stats.update(gen=n_gen, seqs=len(rows), trained=int(cmask.sum()), padded=int(am.numel()),
                         real=int(am.sum()), seq_lens=am.sum(1).tolist(), patches=int(inputs["pixel_values"].shape[0]),
                         images=[int(g.prod()) for g in inputs["image_grid_thw"]], reward=sum(rewards) / len(rewards),
                         loss=loss.item(), kl=kl)

        mem_phase_start(dev)
        for it in range(args.warmup + args.iters):
            one_step()
            print(f"mbpo_hf: step {it + 1}/{args.warmup + args.iters}{' (warmup)' if it < args.warmup else ''} "
                  f"{parts['step'][-1]:.3f} s: rollout {parts['rollout'][-1]:.3f} ref {parts['ref'][-1]:.3f} "
                  f"train {parts['train'][-1]:.3f}; loss {stats['loss']:.5f} kl {stats['kl']:.5f} reward {stats['reward']:.3f}",
                  flush=True)
            if it < args.warmup:
                for v in parts.values():
                    v.pop()
        med = {k: statistics.median(v) for k, v in parts.items()}
        for k in ("step", "prep", "rollout", "verify", "ref", "train"):
            say(k + "_s", med[k], "s")
        say("rollout_tokens", stats["gen"], "tokens", "%d")
        say("train_seqs", stats["seqs"], "seqs", "%d")
        say("train_tokens", stats["trained"], "tokens", "%d")     # completion (target) tokens
        say("batch_tokens", stats["real"], "tokens", "%d")        # real tokens of the padded batch
        say("batch_padded", stats["padded"], "tokens", "%d")
        say("batch_patches", stats["patches"], "patches", "%d")
        say("rollout_tok_s", stats["gen"] / med["rollout"], "tok/s", "%.1f")
        f_train = 3 * fwd_flops(D, stats["seq_lens"], stats["trained"], stats["images"])
        say("train_flops", f_train, "FLOP", "%.4e")
        if dev == "cuda":
            peak = args.peak_tflops * 1e12
            say("rollout_mfu", 100 * 2 * decode_params(D) * stats["gen"] / med["rollout"] / peak, "%", "%.2f")
            say("train_mfu", 100 * f_train / med["train"] / peak, "%", "%.2f")
            say("ref_mfu", 100 * f_train / 3 / med["ref"] / peak, "%", "%.2f")
        mem_phase_end(dev, "step")
        del ref, opt
        model.zero_grad(set_to_none=True)

    # -------------------------------------------------------------- PGD mining
    for p in model.parameters():
        p.requires_grad_(False)
    if "pgd" in phases:
        ipr = proc.image_processor
        mean = torch.tensor(ipr.image_mean, dtype=torch.float32, device=dev)
        std = torch.tensor(ipr.image_std, dtype=torch.float32, device=dev)
        T, ps = ipr.temporal_patch_size, ipr.patch_size
        # pixel_values columns are (channel, temporal copy, row, col) of a patch
        col_mean = mean.repeat_interleave(T * ps * ps)
        col_std = std.repeat_interleave(T * ps * ps)
        lo, hi = (0 - col_mean) / col_std, (1 - col_mean) / col_std
        alpha = (args.pgd_step / 255.0) / col_std
        eps = (args.pgd_eps / 255.0) / col_std
        times = []

        def pgd_sample(s):
            t0 = clock()
            enc = encode_prompts(proc, [s["question"]], [s["image"]], dev)
            inputs, cmask, C = build_batch(enc, [(0, response_ids(tok, s["chosen"]))], pad_id, dev)
            x0 = inputs["pixel_values"].float()
            x = x0.clone()
            for _ in range(args.pgd_iters):
                x.requires_grad_(True)
                lp = (token_logps(model, dict(inputs, pixel_values=x), C) * cmask).sum()
                g, = torch.autograd.grad(lp, x)
                g = g.view(g.shape[0], 3, T, ps * ps).sum(2, keepdim=True).expand(-1, -1, T, -1).reshape(x.shape)
                x = x.detach() - alpha * g.sign()   # lower logp(y_w | q, x)
                if args.pgd_eps > 0:
                    x = torch.maximum(torch.minimum(x, x0 + eps), x0 - eps)
                x = torch.maximum(torch.minimum(x, hi), lo)
            u = torch.round((x * col_std + col_mean) * 255) / 255   # the 8-bit image mbpo saves
            x = (u - col_mean) / col_std
            reset_rope(model)
            with torch.no_grad():
                out = model.generate(**dict(enc, pixel_values=x), num_return_sequences=1, **gen_kw)
            text = tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
            times.append(clock() - t0)
            return text

        mem_phase_start(dev)
        for i in range(1 + args.pgd_samples):   # the first is the warmup
            pgd_sample(opens[i])
        t = statistics.median(times[1:])
        say("pgd_sample_s", t, "s")
        say("pgd_samples_min", 60.0 / t, "samples/min", "%.2f")
        mem_phase_end(dev, "pgd")

    # -------------------------------------------------------------- IIG
    if "iig" in phases:
        from PIL import Image
        nb = args.iig_batch
        batch = opens[:nb]
        black = Image.new("RGB", batch[0]["image"].size)
        times = []
        mem_phase_start(dev)
        for it in range(args.warmup + args.iters):
            t0 = clock()
            qs = [s["question"] for s in batch]
            enc = encode_prompts(proc, qs + qs, [s["image"] for s in batch] + [black] * nb, dev)
            resp = [response_ids(tok, s["chosen"]) for s in batch]
            inputs, cmask, C = build_batch(enc, [(i, resp[i % nb]) for i in range(2 * nb)], pad_id, dev)
            with torch.no_grad():
                s = (token_logps(model, inputs, C) * cmask).sum(1)
            iig = (s[:nb] - s[nb:]).tolist()
            t1 = clock()
            if it >= args.warmup:
                times.append(t1 - t0)
        assert all(math.isfinite(v) for v in iig), iig
        t = statistics.median(times)
        say("iig_batch_s", t, "s")
        say("iig_samples_s", nb / t, "samples/s", "%.2f")
        mem_phase_end(dev, "iig")


# ------------------------------------------------------------------------------------------------
# --make-data: the same inputs as files, in mbpo's formats
# ------------------------------------------------------------------------------------------------


def make_data(args):
    out = args.make_data
    tok = load_tokenizer(args.model or args.tokenizer)
    proc = make_processor(tok)
    n_open = max(args.offline, args.mine_samples)
    opens, online = make_samples(tok, n_open, args.offline, args.online, args.image_size, args.new_tokens)
    os.makedirs(os.path.join(out, "images"), exist_ok=True)
    for s in opens + online:
        s["image"].save(os.path.join(out, "images", s["file"]))

    def prompt_tokens(s):
        return int(proc(text=[chat_text(proc, s["question"])], images=[s["image"]], return_tensors="pt")["input_ids"].shape[1])

    def n_resp(text):
        return len(response_ids(tok, text))

    meta = dict(generator="tests/reference/mbpo_hf.py --make-data", seed=DATA_SEED, image_size=args.image_size,
                new_tokens=args.new_tokens, offline=[], online=[], mine=[])
    with open(os.path.join(out, "offline.jsonl"), "w") as f:
        for s in opens[:args.offline]:
            f.write(json.dumps(dict(id=s["id"], image=s["file"], question="<image>\n" + s["question"], chosen=s["chosen"],
                                    rejected=s["rejected"])) + "\n")
            meta["offline"].append(dict(prompt_tokens=prompt_tokens(s), chosen_tokens=n_resp(s["chosen"]),
                                        rejected_tokens=n_resp(s["rejected"])))
    with open(os.path.join(out, "online.jsonl"), "w") as f:
        for s in online:
            f.write(json.dumps(dict(id=s["id"], image=s["file"], question="<image>\n" + s["question"], answer=s["answer"],
                                    kind="yesno", label=s["label"])) + "\n")
            meta["online"].append(dict(prompt_tokens=prompt_tokens(s)))
    with open(os.path.join(out, "mine.jsonl"), "w") as f:   # LLaVA-style, open-ended: mbpo-mine's IIG and PGD
        for s in opens[:args.mine_samples]:
            f.write(json.dumps({"id": s["id"], "image": s["file"], "conversations": [
                {"from": "human", "value": "<image>\n" + s["question"]}, {"from": "gpt", "value": s["chosen"]}]}) + "\n")
            meta["mine"].append(dict(prompt_tokens=prompt_tokens(s), chosen_tokens=n_resp(s["chosen"])))
    g = opens[0]["image"].size[0] // 14
    meta["patches_per_image"] = g * g
    with open(os.path.join(out, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print(f"mbpo_hf: data in {out}: {args.offline} pairs, {args.online} yes/no prompts, {args.mine_samples} mining samples, "
          f"{args.image_size}x{args.image_size} images ({g * g} patches), prompts {meta['offline'][0]['prompt_tokens']} tokens, "
          f"responses {meta['offline'][0]['chosen_tokens']} tokens", flush=True)


# ------------------------------------------------------------------------------------------------
# --report: mbpo_bench.sh's table (mbpo's numbers from its files, transformers' from hf.log)
# ------------------------------------------------------------------------------------------------


def report(args):
    W = args.report

    def read(name):
        p = os.path.join(W, name)
        return open(p, errors="replace").read() if os.path.exists(p) else ""

    hf, info = {}, {}
    for line in read("hf.log").splitlines():
        m = re.match(r"^hf (\S+) (\S+)", line)
        if m and m.group(1) == "info":
            k, _, v = line[len("hf info "):].partition(" ")
            info[k] = v
        elif m:
            try:
                hf[m.group(1)] = float(m.group(2))
            except ValueError:
                pass
    meta = json.loads(read("data/meta.json") or "{}")
    cfg_path = os.path.join(W, "model", "config.json")
    D = dims(load_config(cfg_path, False)) if os.path.exists(cfg_path) else None
    mb = {}

    # mbpo-train: metrics.jsonl, the first step left out (plans, cuBLAS heuristics)
    steps = []
    for line in read("train/metrics.jsonl").splitlines():
        try:
            steps.append(json.loads(line))
        except ValueError:
            pass
    timed = steps[1:] if len(steps) > 1 else steps

    def med(key, fn=None):
        v = [fn(s) if fn else s.get(key) for s in timed]
        v = [x for x in v if isinstance(x, (int, float)) and x is not None]
        return statistics.median(v) if v else None

    mb["step_s"] = med(None, lambda s: s["tokens"] / s["tokens_per_s"] if s.get("tokens_per_s") else None)
    for k_out, k_in in (("rollout_s", "time_rollout_s"), ("rollout_tokens", "rollout_tokens"), ("ref_s", "time_ref_s"),
                        ("train_s", "time_update_s"), ("train_tokens", "tokens")):
        mb[k_out] = med(k_in)
    if mb["rollout_s"] and mb["rollout_tokens"]:
        mb["rollout_tok_s"] = mb["rollout_tokens"] / mb["rollout_s"]
    mb["steps_timed"] = len(timed)

    # mbpo-mine: the timing line, else the last progress lines (their rate includes the first sample)
    mine = read("mine.log")
    m = re.search(r"mine: timing iig_samples (\d+) iig_s (\S+) pairs (\d+) pairs_s (\S+)", mine)
    src = "-"
    if m:
        n_i, t_i, n_p, t_p = int(m.group(1)), float(m.group(2)), int(m.group(3)), float(m.group(4))
        mb["iig_samples_s"] = n_i / t_i if t_i > 0 else None
        mb["pgd_samples_min"] = 60 * n_p / t_p if t_p > 0 else None
        src = "timing line"
    else:
        r_i = re.findall(r"mine: IIG (\d+)/(\d+), (\S+)/s", mine)
        r_p = re.findall(r"mine: pairs (\d+)/(\d+), (\S+)/s", mine)
        if r_i:
            mb["iig_samples_s"] = float(r_i[-1][2])
        if r_p:
            mb["pgd_samples_min"] = 60 * float(r_p[-1][2])
        if r_i or r_p:
            src = "progress lines"

    # peak memory: nvidia-smi memory.used (MiB) while each program ran, less the first sample
    def peak(name):
        v = [float(x) for x in re.findall(r"^\s*(\d+(?:\.\d+)?)\s*$", read(name), re.M)]
        return (max(v) - v[0]) / 1024 if len(v) > 1 else None
    mb["peak_mem_step"] = peak("mem_train.txt")
    mb["peak_mem_mine"] = peak("mem_mine.txt")

    peak_flops = args.peak_tflops * 1e12
    if D and meta and mb.get("train_s"):
        # mbpo's batch: packed (no padding); a pair's two responses and a prompt's G rollouts share one image pass
        G = args.G
        lens, heads, imgs = [], 0, []
        for o in meta["offline"]:
            lens += [o["prompt_tokens"] + o["chosen_tokens"], o["prompt_tokens"] + o["rejected_tokens"]]
            heads += o["chosen_tokens"] + o["rejected_tokens"]
            imgs.append(meta["patches_per_image"])
        per = (mb["rollout_tokens"] or G * len(meta["online"]) * meta["new_tokens"]) / (G * max(1, len(meta["online"])))
        for o in meta["online"]:
            lens += [o["prompt_tokens"] + per] * G
            heads += per * G
            imgs.append(meta["patches_per_image"])
        mb["train_flops"] = 3 * fwd_flops(D, lens, heads, imgs)
        mb["train_mfu"] = 100 * mb["train_flops"] / mb["train_s"] / peak_flops
    if D and mb.get("rollout_s") and mb.get("rollout_tokens"):
        mb["rollout_mfu"] = 100 * 2 * decode_params(D) * mb["rollout_tokens"] / mb["rollout_s"] / peak_flops
        if meta:   # mbpo decodes each prompt's G continuations together: n_online x new_tokens weight reads
            bound = len(meta["online"]) * meta["new_tokens"] * 2 * decode_params(D) / (args.peak_gbs * 1e9)
            mb["rollout_bound_s"] = bound
            mb["rollout_vs_bound"] = mb["rollout_s"] / bound
    for k, v in mb.items():   # both sides' numbers in one log, for device.sh's `mbpo|hf <name> <value>` parser
        print(f"mbpo {k} {'-' if v is None else '%.6g' % v}")
    for k, v in hf.items():
        print(f"hf {k} {v:.6g}")

    def f(v, fmt="%.2f"):
        return "-" if v is None else fmt % v

    print()
    print("=" * 104)
    print(f"MBPO step benchmark: mbpo vs transformers {info.get('transformers', '?')} ({info.get('attn', '?')}); peak {args.peak_tflops:g} TFLOP/s, "
          f"{args.peak_gbs:g} GB/s; mbpo-mine rates from the {src}")
    print("-" * 104)
    print(f"  {'':<30}{'mbpo':>12}{'transformers':>14}{'mbpo gain':>10}   target")
    rows = [   # name, mbpo, hf, higher is better, target ratio
        ("MBPO step s", mb.get("step_s"), hf.get("step_s"), False, 3),
        ("  rollout s", mb.get("rollout_s"), hf.get("rollout_s"), False, None),
        ("  reference logp s", mb.get("ref_s"), hf.get("ref_s"), False, None),
        ("  update s (fwd+bwd+AdamW)", mb.get("train_s"), hf.get("train_s"), False, None),
        ("rollout tok/s", mb.get("rollout_tok_s"), hf.get("rollout_tok_s"), True, 3),
        ("PGD samples/min (K=20)", mb.get("pgd_samples_min"), hf.get("pgd_samples_min"), True, 3),
        ("IIG samples/s", mb.get("iig_samples_s"), hf.get("iig_samples_s"), True, 3),
        ("peak mem step GiB", mb.get("peak_mem_step"), hf.get("peak_res_step"), False, 3),
        ("peak mem mining GiB", mb.get("peak_mem_mine"),
         max([v for v in (hf.get("peak_res_pgd"), hf.get("peak_res_iig")) if v is not None], default=None), False, 3),
    ]
    for name, a, b, up, tgt in rows:
        r = None if a is None or b is None or a == 0 or b == 0 else (a / b if up else b / a)
        t = ""
        if tgt:
            t = f">= {tgt}x: " + ("MET" if r is not None and r >= tgt else "not met" if r is not None else "no number")
        print(f"  {name:<30}{f(a):>12}{f(b):>14}{f(r):>10}   {t}")
    print(f"  {'rollout MFU %':<30}{f(mb.get('rollout_mfu')):>12}{f(hf.get('rollout_mfu')):>14}")
    tm = mb.get("train_mfu")
    print(f"  {'update MFU %':<30}{f(tm):>12}{f(hf.get('train_mfu')):>14}{'':>10}   >= 45%: "
          + ("MET" if tm is not None and tm >= 45 else "not met" if tm is not None else "no number"))
    rb = mb.get("rollout_vs_bound")
    print(f"  {'rollout / weight streaming':<30}{f(rb):>12}{'':>14}{'':>10}   <= 1.5x: "
          + ("MET" if rb is not None and rb <= 1.5 else "not met" if rb is not None else "no number"))
    print(f"  tokens: mbpo rollouts {f(mb.get('rollout_tokens'), '%.0f')}, targets {f(mb.get('train_tokens'), '%.0f')} "
          f"({mb['steps_timed']} steps timed); hf rollouts {f(hf.get('rollout_tokens'), '%.0f')}, targets "
          f"{f(hf.get('train_tokens'), '%.0f')}, batch {f(hf.get('batch_tokens'), '%.0f')} real of "
          f"{f(hf.get('batch_padded'), '%.0f')}, {f(hf.get('batch_patches'), '%.0f')} patches")
    print("  memory: mbpo = nvidia-smi memory.used over the run less before it; transformers = max_memory_reserved")
    print("  update MFU: each side's own work (mbpo: one vision pass per image of a group; transformers: one per sequence);")
    print("  a mined pair in mbpo also writes and reads its PNG and scores the rejected IIG; rollout / bound includes prefill")
    print("=" * 104)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=DEFAULT_CONFIG, help="Qwen2-VL config.json (default: the 2B)")
    ap.add_argument("--model", help="a model folder: its config.json and tokenizer (weights are drawn at random)")
    ap.add_argument("--load-weights", action="store_true", help="with --model: load its weights (from_pretrained)")
    ap.add_argument("--tokenizer", default=TOKENIZER_DIR, help="tokenizer folder, without --model")
    ap.add_argument("--tiny", action="store_true", help="shrink the config (2 layers, hidden 64, ViT depth 2 width 64)")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    ap.add_argument("--sdpa", action="store_true", help="sdpa even when flash_attn is installed")
    ap.add_argument("--image-size", type=int, default=448)
    ap.add_argument("--new-tokens", type=int, default=128, help="response and rollout length")
    ap.add_argument("--G", type=int, default=8)
    ap.add_argument("--offline", type=int, default=2, help="offline pairs per step")
    ap.add_argument("--online", type=int, default=2, help="online prompts per step")
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--pgd-iters", type=int, default=20)
    ap.add_argument("--pgd-step", type=float, default=4.0, help="1/255 units")
    ap.add_argument("--pgd-eps", type=float, default=0.0, help="1/255 units, 0 = no ball")
    ap.add_argument("--pgd-samples", type=int, default=2, help="timed PGD samples (after one warmup sample)")
    ap.add_argument("--iig-batch", type=int, default=8)
    ap.add_argument("--phases", default="step,pgd,iig")
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak (H100/H200 SXM: 989)")
    ap.add_argument("--peak-gbs", type=float, default=4800.0, help="HBM bandwidth for --report (H200: 4800)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--make-data", metavar="DIR", help="write the inputs in mbpo's formats to DIR, then exit")
    ap.add_argument("--mine-samples", type=int, default=8, help="with --make-data: open-ended samples of mine.jsonl")
    ap.add_argument("--report", metavar="WORK", help="print mbpo_bench.sh's table from WORK, then exit")
    args = ap.parse_args()
    if args.make_data:
        make_data(args)
    elif args.report:
        report(args)
    else:
        bench(args)


if __name__ == "__main__":
    main()
