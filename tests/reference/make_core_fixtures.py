#!/usr/bin/env python3
"""Generate the "core" reference fixtures: greedy decoding and the image-information-gain (IIG) score.

Usage (from the repository root):
    /tmp/venv/bin/python tests/reference/make_core_fixtures.py [--out tests/fixtures/core]
                                                               [--family all|qwen2vl|qwen25vl]

Inputs (produced earlier by make_fixtures.py / make_fixtures25.py / make_image_fixtures.py):
    family qwen2vl:  tests/fixtures/tiny_a/model, tests/fixtures/tiny_a_tied/model   (tiny-A Qwen2-VL, fp32)
                     tests/fixtures/images/png_rgb_56x84.png    (56 high x 84 wide, RGB8; grid 1,4,6)
    family qwen25vl: tests/fixtures/tiny25_a/model, tests/fixtures/tiny25_a_tied/model (tiny25-A Qwen2.5-VL)
                     tests/fixtures/images/png_rgb_84x140.png   (84 high x 140 wide; grid 1,6,10, merge grid
                     3x5: with window_size 56 (2x2 merge units) six windows of 4,4,2,2,2,1 units)

Outputs (<out> = tests/fixtures/core):
    greedy_<variant>.safetensors   greedy generation (20 tokens) with and without an image
    iig_<variant>.safetensors      per-token log-probabilities of a response with the real image and with
                                   an all-black image, and their difference (IIG)
    meta.json / meta25.json        versions, seeds, tensor descriptions, consistency numbers (one per family;
                                   the Qwen2.5-VL family has its own file so that meta.json is unchanged)
variants: tiny_a, tiny25_a (untied lm_head), tiny_a_tied, tiny25_a_tied (lm_head shares embed_tokens)

Only the public transformers API is used (Qwen2VLForConditionalGeneration /
Qwen2_5_VLForConditionalGeneration .from_pretrained, generate, forward, Qwen2VLImageProcessor; for the
Qwen2.5-VL family also model.model.visual.get_window_index, recorded in meta25.json only).
CPU, float32, eager attention, one thread, deterministic algorithms.
Running the script twice gives byte-identical files.
"""

import argparse
import copy
import hashlib
import json
import os
import platform
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


IMG, VID, VS, VE = 1000, 1001, 1002, 1003
IM_END_STANDIN = 1023  # stands in for <|im_end|> at the end of the IIG response
VOCAB = 1024
TEXT_ID_LO, TEXT_ID_HI = 3, 900  # random text ids are drawn from [3, 900): avoids 0 (pad), 1 (bos), 2 (eos)
N_NEW = 20

# numpy.random.default_rng seeds
SEEDS = {
    "prompt_image_text_ids": 3101,  # 4 ids before the image block + 5 ids after it
    "prompt_text_only_ids": 3102,   # 10 ids
    "iig_response_ids": 3103,       # 7 ids (then 1023)
}
TORCH_SEED = 0  # torch.manual_seed before every forward/generate (no randomness is consumed: eval, greedy)

PROCESSOR_CONFIG = {
    "min_pixels": 3136,
    "max_pixels": 12845056,
    "patch_size": 14,
    "temporal_patch_size": 2,
    "merge_size": 2,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
}

def greedy_doc(f):
    H, W = f["size_hw"]
    n, g = f["n_patches"], f["grid"]
    return {
        "prompt_ids": f"I64[S] prompt with one image: 4 random text ids + [1002] + [1000]*{f['n_img_tokens']} + [1003] + "
        f"5 random text ids (S={f['n_img_tokens'] + 11})",
        "pixel_values": f"F32[{n},1176] Qwen2VLImageProcessor (slow) output for {os.path.basename(f['image_file'])} "
        "(identity resize)",
        "image_grid_thw": "I64[1,3] = [" + str(g).replace(" ", "") + "]",
        "generated": "I64[20] new tokens of model.generate(do_sample=False, max_new_tokens=min_new_tokens=20, "
        "eos_token_id=None, pad_token_id=0, use_cache=True) for prompt_ids + image",
        "step_logits": "F32[20,1024] raw logits (generate output_logits=True, before any logits processor) that "
        "produced generated[i]; argmax(step_logits[i]) == generated[i]",
        "full_logits": "F32[S+20,1024] logits of one plain forward (use_cache=False) over prompt_ids + generated with "
        "the image; full_logits[S-1+i] ~= step_logits[i]",
        "prompt_ids_text": "I64[10] text-only prompt (random ids, no vision ids)",
        "generated_text": "I64[20] greedy continuation of prompt_ids_text (no image), same generate settings",
        "step_logits_text": "F32[20,1024] raw per-step logits for generated_text",
    }


def iig_doc(f):
    H, W = f["size_hw"]
    n, g = f["n_patches"], f["grid"]
    return {
        "ids": "I64[T] prompt_ids (as in greedy_*, with the image) + 7 random text ids + [1023] (<|im_end|> stand-in); "
        f"T={f['n_img_tokens'] + 19}",
        "target": "U8[T] 1 exactly on the 8 response positions t (we score log p(ids[t] | ids[<t]), i.e. "
        "log_softmax(logits[t-1])[ids[t]]); 0 elsewhere",
        "pixel_values": f"F32[{n},1176] processor output of the real image (same as greedy_*.pixel_values)",
        "pixel_values_black": f"F32[{n},1176] processor output of an all-zero {H}x{W} RGB PIL image (same grid)",
        "image_grid_thw": ("I64[1,3] = [" + str(g).replace(" ", "") + "]") + " (used for both images)",
        "logp": "F32[8] log_softmax(logits[t-1])[ids[t]] over the target positions (in order), real image; "
        "float32 forward (use_cache=False), float32 log_softmax",
        "logp_black": "F32[8] the same with pixel_values_black (same ids, same grid)",
        "iig_sum": "F64[1] sum(logp) - sum(logp_black), the float32 values summed in float64",
        "iig_mean": "F64[1] iig_sum / 8",
    }


# One entry per model family; the qwen2vl entry reproduces the original fixtures (and meta.json) byte for byte.
FAMILIES = {
    "qwen2vl": {
        "variants": ["tiny_a", "tiny_a_tied"],
        "model_class": "Qwen2VLForConditionalGeneration",
        "image_file": "tests/fixtures/images/png_rgb_56x84.png",
        "size_hw": [56, 84],
        "grid": [1, 4, 6],
        "n_patches": 24,
        "n_img_tokens": 6,
        "meta": "meta.json",
    },
    "qwen25vl": {
        "variants": ["tiny25_a", "tiny25_a_tied"],
        "model_class": "Qwen2_5_VLForConditionalGeneration",
        "image_file": "tests/fixtures/images/png_rgb_84x140.png",
        "size_hw": [84, 140],
        "grid": [1, 6, 10],
        "n_patches": 60,
        "n_img_tokens": 15,
        "meta": "meta25.json",
    },
}


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def versions():
    import PIL
    import safetensors
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "numpy": np.__version__,
        "safetensors": safetensors.__version__,
        "pillow": PIL.__version__,
    }


# --------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------


def random_text_ids(rng, n):
    return [int(x) for x in rng.integers(TEXT_ID_LO, TEXT_ID_HI, size=n)]


def make_processor():
    from transformers import Qwen2VLImageProcessor

    return Qwen2VLImageProcessor(do_resize=True, do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
                                 do_convert_rgb=True, **PROCESSOR_CONFIG)


def process(proc, pil_image):
    out = proc(images=pil_image, return_tensors="np")
    pv = np.ascontiguousarray(out["pixel_values"], dtype=np.float32)
    grid = np.ascontiguousarray(np.asarray(out["image_grid_thw"], dtype=np.int64).reshape(1, 3))
    return pv, grid


def load_images(f):
    from PIL import Image

    path = os.path.join(ROOT, f["image_file"])
    H, W = f["size_hw"]
    n = f["n_patches"]
    with Image.open(path) as im:
        im.load()
        real = im.convert("RGB") if im.mode != "RGB" else im.copy()
    assert real.size == (W, H), real.size  # PIL size is (width, height)
    black = Image.new("RGB", real.size, (0, 0, 0))
    assert not np.asarray(black).any()
    proc = make_processor()
    pv, grid = process(proc, real)
    pvb, gridb = process(proc, black)
    assert pv.shape == (n, 1176) and pvb.shape == (n, 1176), (pv.shape, pvb.shape)
    assert grid.tolist() == [f["grid"]] and gridb.tolist() == [f["grid"]], (grid, gridb)
    # cross-check against the image-pipeline fixture made by make_image_fixtures.py, when present
    ref_path = os.path.join(ROOT, f["image_file"][:-len(".png")] + ".ref.safetensors")
    ref_check = None
    if os.path.exists(ref_path):
        from safetensors.numpy import load_file

        ref = load_file(ref_path)
        ref_check = bool(np.array_equal(ref["pixel_values"].view(np.uint32), pv.view(np.uint32)))
        assert ref_check, f"pixel_values differ from {os.path.relpath(ref_path, ROOT)}"
    return pv, pvb, grid, proc, ref_check


# --------------------------------------------------------------------------------------------
# model calls
# --------------------------------------------------------------------------------------------


def load_model(variant, f):
    import transformers

    mdir = os.path.join(ROOT, "tests/fixtures", variant, "model")
    model = getattr(transformers, f["model_class"]).from_pretrained(
        mdir, torch_dtype=torch.float32, attn_implementation="eager").eval()
    assert type(model).__name__ == f["model_class"], type(model).__name__
    assert model.config.get_text_config().vocab_size == VOCAB
    tied = bool(model.config.tie_word_embeddings)
    embed = model.get_input_embeddings().weight
    assert (model.lm_head.weight.data_ptr() == embed.data_ptr()) == tied, (variant, tied)
    assert tied == variant.endswith("_tied"), variant
    return model, mdir


def forward_logits(model, ids, pv=None, grid=None):
    """One plain forward without cache over all positions -> logits [S, vocab] (dtype of the model)."""
    model.model.rope_deltas = None  # never reuse a cached rope delta
    kw = dict(input_ids=torch.as_tensor(ids, dtype=torch.int64)[None],
              attention_mask=torch.ones(1, len(ids), dtype=torch.int64), use_cache=False)
    if pv is not None:
        kw["pixel_values"] = pv
        kw["image_grid_thw"] = torch.as_tensor(grid, dtype=torch.int64)
    torch.manual_seed(TORCH_SEED)
    with torch.no_grad():
        out = model(**kw)
    return out.logits[0]


def greedy(model, ids, pv=None, grid=None):
    from transformers import GenerationConfig

    gc = GenerationConfig(
        do_sample=False, num_beams=1, max_new_tokens=N_NEW, min_new_tokens=N_NEW,
        eos_token_id=None, pad_token_id=0, bos_token_id=None, use_cache=True,
        output_logits=True, return_dict_in_generate=True,
    )
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    model.model.rope_deltas = None
    kw = dict(input_ids=torch.as_tensor(ids, dtype=torch.int64)[None],
              attention_mask=torch.ones(1, len(ids), dtype=torch.int64))
    if pv is not None:
        kw["pixel_values"] = torch.from_numpy(pv)
        kw["image_grid_thw"] = torch.from_numpy(grid)
    torch.manual_seed(TORCH_SEED)
    with torch.no_grad():
        out = model.generate(**kw, generation_config=gc)
    seq = out.sequences[0]
    S = len(ids)
    assert seq.shape[0] == S + N_NEW, (seq.shape, S)
    assert seq[:S].tolist() == list(ids)
    new = seq[S:].to(torch.int64).numpy().copy()
    assert len(out.logits) == N_NEW, len(out.logits)
    step = torch.stack([l[0] for l in out.logits]).to(torch.float32).numpy().copy()
    assert step.shape == (N_NEW, VOCAB)
    return new, step


def check_argmax(step, new, label):
    am = step.argmax(axis=1)
    ok = bool(np.array_equal(am, new))
    # margin between the best and second-best logit per step (a tiny margin would make the test fragile)
    srt = np.sort(step, axis=1)
    margin = float((srt[:, -1] - srt[:, -2]).min())
    assert ok, (label, am.tolist(), new.tolist())
    return ok, margin


def pick_prompt(model_list, pv, grid, n_img_tokens):
    """The image prompt; its seed is fixed, but make sure no model generates a vision id (would make the
    no-cache re-forward ill-defined).  Returns ids and the seed actually used."""
    seed = SEEDS["prompt_image_text_ids"]
    for attempt in range(50):
        rng = np.random.default_rng(seed + attempt)
        pre, post = random_text_ids(rng, 4), random_text_ids(rng, 5)
        ids = pre + [VS] + [IMG] * n_img_tokens + [VE] + post
        ok = True
        for m in model_list:
            new, _ = greedy(m, ids, pv, grid)
            if any(int(t) in (IMG, VID, VS, VE) for t in new):
                ok = False
                break
        if ok:
            return ids, seed + attempt
    raise RuntimeError("no prompt without generated vision ids found")


def pick_text_prompt(model_list):
    seed = SEEDS["prompt_text_only_ids"]
    for attempt in range(50):
        rng = np.random.default_rng(seed + attempt)
        ids = random_text_ids(rng, 10)
        ok = True
        for m in model_list:
            new, _ = greedy(m, ids)
            if any(int(t) in (IMG, VID, VS, VE) for t in new):
                ok = False
                break
        if ok:
            return ids, seed + attempt
    raise RuntimeError("no text prompt without generated vision ids found")


def target_logp(logits, ids, target):
    """log_softmax(logits[t-1])[ids[t]] for each t with target[t] == 1 (in the dtype of logits)."""
    lsm = torch.log_softmax(logits, dim=-1)
    pos = [t for t in range(len(ids)) if target[t]]
    assert pos and pos[0] >= 1
    return torch.stack([lsm[t - 1, ids[t]] for t in pos])


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------


def window_info(model, grid):
    """Qwen2.5-VL only: HF's window permutation of the merge units and its de-duplicated window boundaries
    (patch rows) for this grid, recorded in the meta file so a reader can see how many windows the image spans."""
    wi, cu = model.model.visual.get_window_index(torch.as_tensor(grid, dtype=torch.int64))
    cu = torch.unique_consecutive(torch.as_tensor(cu, dtype=torch.int64)).tolist()
    return {"window_size": int(model.config.vision_config.window_size),
            "window_index (merge units, window order)": [int(x) for x in wi.tolist()],
            "cu_window_seqlens (patch rows, after unique_consecutive)": [int(x) for x in cu],
            "n_windows": len(cu) - 1,
            "fullatt_block_indexes": list(model.config.vision_config.fullatt_block_indexes)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(ROOT, "tests/fixtures/core"), help="output directory")
    ap.add_argument("--family", default="all", choices=["all"] + list(FAMILIES), help="which fixtures to write")
    args = ap.parse_args()

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.set_default_dtype(torch.float32)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    os.makedirs(args.out, exist_ok=True)
    for name, fam in FAMILIES.items():
        if args.family in ("all", name):
            make_family(fam, args.out)
    total = sum(os.path.getsize(os.path.join(args.out, fn)) for fn in os.listdir(args.out))
    print(f"total bytes in {os.path.relpath(args.out, ROOT)}: {total}")


def make_family(fam, out_dir):
    from safetensors.numpy import save_file

    pv, pvb, grid, proc, ref_check = load_images(fam)
    models = {v: load_model(v, fam) for v in fam["variants"]}

    prompt_ids, prompt_seed = pick_prompt([m for m, _ in models.values()], pv, grid, fam["n_img_tokens"])
    text_ids, text_seed = pick_text_prompt([m for m, _ in models.values()])
    rng = np.random.default_rng(SEEDS["iig_response_ids"])
    response = random_text_ids(rng, 7) + [IM_END_STANDIN]
    S = len(prompt_ids)
    assert S == fam["n_img_tokens"] + 11
    iig_ids = prompt_ids + response
    T = len(iig_ids)
    target = np.zeros(T, dtype=np.uint8)
    target[S:] = 1
    assert int(target.sum()) == 8
    H, W = fam["size_hw"]
    ref_name = os.path.basename(fam["image_file"])[:-len(".png")] + ".ref.safetensors"

    meta = {
        "generator": "tests/reference/make_core_fixtures.py",
        "versions": versions(),
        "device": "cpu",
        "dtype": "float32 (plus a float64 re-computation of the IIG numbers, recorded here only)",
        "attn_implementation": "eager",
        "torch_threads": 1,
        "deterministic_algorithms": True,
        "seeds": {
            "numpy_default_rng": dict(SEEDS),
            "used_prompt_image_text_ids": prompt_seed,
            "used_prompt_text_only_ids": text_seed,
            "torch_manual_seed_before_every_call": TORCH_SEED,
            "note": "prompt seeds are tried from the listed value upward until no variant generates a vision id "
                    "(1000-1003); 'used_*' is the seed that was taken",
        },
        "random_text_ids": f"numpy.random.default_rng(seed).integers({TEXT_ID_LO}, {TEXT_ID_HI})",
        "models": {v: os.path.relpath(d, ROOT) for v, (_m, d) in models.items()},
        "image": {
            "file": fam["image_file"],
            "size_hw": [H, W],
            "black": f"PIL.Image.new('RGB', ({W}, {H}), (0, 0, 0)) through the same processor",
            "processor": {"class": type(proc).__name__, "use_fast": False, "config": dict(PROCESSOR_CONFIG),
                          "do_convert_rgb": True},
            f"pixel_values_bitwise_equal_to_images/{ref_name}": ref_check,
        },
        "ids": {
            "prompt_ids": prompt_ids,
            "prompt_ids_text": text_ids,
            "iig_ids": iig_ids,
            "iig_target_positions": [int(t) for t in np.nonzero(target)[0]],
            "special": {"image_token_id": IMG, "video_token_id": VID, "vision_start_token_id": VS,
                        "vision_end_token_id": VE, "im_end_standin": IM_END_STANDIN},
        },
        "generate_call": "model.generate(input_ids[1,S], attention_mask=ones, [pixel_values, image_grid_thw], "
                         "generation_config=GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=20, "
                         "min_new_tokens=20, eos_token_id=None, pad_token_id=0, use_cache=True, "
                         "output_logits=True, return_dict_in_generate=True)); model.generation_config.eos_token_id="
                         "None, pad_token_id=0; model.model.rope_deltas reset to None before each call",
        "forward_call": "model(input_ids[1,S], attention_mask=ones, [pixel_values, image_grid_thw], use_cache=False)",
        "files": {},
        "tensors": {"greedy_<variant>.safetensors": greedy_doc(fam), "iig_<variant>.safetensors": iig_doc(fam)},
        "consistency": {},
    }
    if fam["model_class"] != "Qwen2VLForConditionalGeneration":
        # keys only the newer families have (meta.json of the Qwen2-VL family stays as it was)
        meta["model_class"] = fam["model_class"]
        meta["image"]["windows"] = window_info(next(iter(models.values()))[0], grid)

    for variant, (model, _mdir) in models.items():
        cons = {}
        # ---------------- greedy ----------------
        gen, step = greedy(model, prompt_ids, pv, grid)
        ok, margin = check_argmax(step, gen, f"{variant}/image")
        full = forward_logits(model, prompt_ids + [int(t) for t in gen], torch.from_numpy(pv), grid)
        full = full.to(torch.float32).numpy().copy()
        assert full.shape == (S + N_NEW, VOCAB)
        d_step_full = float(np.abs(full[S - 1:S - 1 + N_NEW] - step).max())
        assert d_step_full < 1e-4, (variant, d_step_full)
        assert np.array_equal(full[S - 1:S - 1 + N_NEW].argmax(1), gen)
        # the first step (prefill) must also agree with a plain forward over the prompt alone
        pf = forward_logits(model, prompt_ids, torch.from_numpy(pv), grid).numpy()
        d_prefill = float(np.abs(pf[-1] - step[0]).max())

        gen_t, step_t = greedy(model, text_ids)
        ok_t, margin_t = check_argmax(step_t, gen_t, f"{variant}/text")
        full_t = forward_logits(model, text_ids + [int(t) for t in gen_t]).numpy()
        St = len(text_ids)
        d_step_full_t = float(np.abs(full_t[St - 1:St - 1 + N_NEW] - step_t).max())
        assert d_step_full_t < 1e-4, (variant, d_step_full_t)

        greedy_tensors = {
            "prompt_ids": np.asarray(prompt_ids, dtype=np.int64),
            "pixel_values": pv,
            "image_grid_thw": grid,
            "generated": gen.astype(np.int64),
            "step_logits": step.astype(np.float32),
            "full_logits": full.astype(np.float32),
            "prompt_ids_text": np.asarray(text_ids, dtype=np.int64),
            "generated_text": gen_t.astype(np.int64),
            "step_logits_text": step_t.astype(np.float32),
        }
        cons["greedy"] = {
            "generated": [int(t) for t in gen],
            "generated_text": [int(t) for t in gen_t],
            "argmax_step_logits_equals_generated": ok,
            "argmax_step_logits_text_equals_generated_text": ok_t,
            "min_top1_top2_margin": margin,
            "min_top1_top2_margin_text": margin_t,
            "max_abs_diff_full_logits[S-1+i]_vs_step_logits[i]": d_step_full,
            "max_abs_diff_prompt_only_forward_last_vs_step_logits[0]": d_prefill,
            "max_abs_diff_text_full_forward_vs_step_logits_text (not stored)": d_step_full_t,
        }

        # ---------------- IIG ----------------
        lg = forward_logits(model, iig_ids, torch.from_numpy(pv), grid).to(torch.float32)
        lgb = forward_logits(model, iig_ids, torch.from_numpy(pvb), grid).to(torch.float32)
        logp = target_logp(lg, iig_ids, target).numpy().astype(np.float32)
        logp_b = target_logp(lgb, iig_ids, target).numpy().astype(np.float32)
        iig_sum = float(logp.astype(np.float64).sum() - logp_b.astype(np.float64).sum())
        iig_mean = iig_sum / 8.0
        # the first S positions of the IIG forward are the greedy prompt: must match full_logits there
        d_iig_prefix = float(np.abs(lg[:S].numpy() - full[:S]).max())

        # float64 re-computation (recorded in meta only)
        f64 = {}
        try:
            m64 = copy.deepcopy(model).double()
            l64 = forward_logits(m64, iig_ids, torch.from_numpy(pv).double(), grid)
            l64b = forward_logits(m64, iig_ids, torch.from_numpy(pvb).double(), grid)
            assert l64.dtype == torch.float64
            lp64 = target_logp(l64, iig_ids, target).numpy()
            lp64b = target_logp(l64b, iig_ids, target).numpy()
            s64 = float(lp64.sum() - lp64b.sum())
            f64 = {
                "ok": True,
                "logp_f64": [float(x) for x in lp64],
                "logp_black_f64": [float(x) for x in lp64b],
                "iig_sum_f64": s64,
                "iig_mean_f64": s64 / 8.0,
                "max_abs_diff_logp_f32_vs_f64": float(np.abs(lp64 - logp.astype(np.float64)).max()),
                "max_abs_diff_logp_black_f32_vs_f64": float(np.abs(lp64b - logp_b.astype(np.float64)).max()),
                "abs_diff_iig_sum_f32_vs_f64": abs(s64 - iig_sum),
                "note": "model.double() on a deep copy; transformers 4.57 still runs a few steps in float32 "
                        "(rotary cos/sin, vision RoPE, eager softmax), so this is float64 up to ~1e-7 relative",
            }
            del m64
        except Exception as e:  # pragma: no cover - recorded, not fatal
            f64 = {"ok": False, "error": repr(e)}

        iig_tensors = {
            "ids": np.asarray(iig_ids, dtype=np.int64),
            "target": target,
            "pixel_values": pv,
            "pixel_values_black": pvb,
            "image_grid_thw": grid,
            "logp": logp,
            "logp_black": logp_b,
            "iig_sum": np.asarray([iig_sum], dtype=np.float64),
            "iig_mean": np.asarray([iig_mean], dtype=np.float64),
        }
        cons["iig"] = {
            "logp": [float(x) for x in logp],
            "logp_black": [float(x) for x in logp_b],
            "iig_sum": iig_sum,
            "iig_mean": iig_mean,
            "max_abs_diff_iig_forward_prefix_vs_greedy_full_logits_prefix": d_iig_prefix,
            "float64": f64,
        }

        for kind, tensors in (("greedy", greedy_tensors), ("iig", iig_tensors)):
            tensors = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
            fname = f"{kind}_{variant}.safetensors"
            path = os.path.join(out_dir, fname)
            # a single metadata key: safetensors may write the metadata map in hash order
            save_file(tensors, path, metadata={"fixture": f"core/{kind}_{variant}"})
            meta["files"][fname] = {
                "bytes": os.path.getsize(path),
                "sha256": sha256(path),
                "tensors": {k: [str(v.dtype), list(v.shape)] for k, v in sorted(tensors.items())},
            }
        meta["consistency"][variant] = cons
        print(f"{variant:12s} generated={cons['greedy']['generated']}")
        print(f"{'':12s} generated_text={cons['greedy']['generated_text']}")
        print(f"{'':12s} step-vs-full max|d|={d_step_full:.3e} (text {d_step_full_t:.3e}) prefill {d_prefill:.3e} "
              f"argmax ok={ok}/{ok_t} min margin={min(margin, margin_t):.4f}")
        print(f"{'':12s} iig_sum={iig_sum:.7f} iig_mean={iig_mean:.7f} f64 diff={f64.get('abs_diff_iig_sum_f32_vs_f64')}")

    with open(os.path.join(out_dir, fam["meta"]), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
