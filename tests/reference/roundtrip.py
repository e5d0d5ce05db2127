#!/usr/bin/env python3
"""Round trip: a checkpoint written by build/mbpo-train loads in transformers and gives the
same logits as mbpo, for each model family mbpo trains.

For each model (--models; default all of MODELS: the Qwen2-VL tiny-A, the Qwen2.5-VL tiny25-A
and its tied-head variant):
1. Builds a small world in --work/<model>: the fixture model of tests/fixtures/<model>/model
   with a byte-level tokenizer.json for its 1024 ids (the same construction as
   tests/test_runs.c), three images from tests/fixtures/images and a LLaVA-style data.jsonl.
   The Qwen2.5-VL worlds use the 84x140 fixture image (grid 1,6,10: six windows of the
   window_size 56 ViT) in place of the 56x84 one, so training and the probe cross windows.
2. Runs build/mbpo-mine and build/mbpo-train (mode mbpo, 4 steps, lr 1e-3) from the command
   line, so the weights have moved away from the fixture's.
3. Loads <work>/<model>/train/checkpoint-4 with the model's transformers class
   (Qwen2VLForConditionalGeneration / Qwen2_5_VLForConditionalGeneration .from_pretrained, fp32,
   eager) and with mbpo (build/mbpo-bench --dump-logits) on the same input: a sequence with
   the model's probe image, processed by transformers' processor. For the Qwen2.5-VL models it
   also checks the checkpoint's head: tied <=> no lm_head.weight, and transformers ties it.
4. Prints the largest absolute difference of the logits per model; exits 1 if any is above
   --tol (or the weights did not move, or a check fails).

    /path/to/venv/bin/python tests/reference/roundtrip.py [--work build/roundtrip] [--tol 1e-4]
                                                          [--models tiny_a,tiny25_a,tiny25_a_tied]
"""
import argparse
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import torch
from PIL import Image
from safetensors.numpy import load_file, save_file
import transformers
from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

QUESTIONS = [("a", "<image>\nDescribe the picture.", "a red circle"),
             ("b", "<image>\nWhat colour is the square?", "blue"),
             ("c", "<image>\nWhat is in the corner?", "a small star"),
             ("d", "<image>\nIs there a circle?", "No")]
# model -> transformers class, tie state, the images of rows a-d (the first is also the probe's)
MODELS = {
    "tiny_a": dict(cls="Qwen2VLForConditionalGeneration", tied=False,
                   images=["png_rgb_56x84.png", "png_rgb_112x56.png", "gif_single_80x60.gif", "png_rgb_56x84.png"]),
    "tiny25_a": dict(cls="Qwen2_5_VLForConditionalGeneration", tied=False,
                     images=["png_rgb_84x140.png", "png_rgb_112x56.png", "gif_single_80x60.gif", "png_rgb_84x140.png"]),
    "tiny25_a_tied": dict(cls="Qwen2_5_VLForConditionalGeneration", tied=True,
                          images=["png_rgb_84x140.png", "png_rgb_112x56.png", "gif_single_80x60.gif",
                                  "png_rgb_84x140.png"]),
}


def byte_char(b):
    printable = lambda i: 0x21 <= i <= 0x7E or 0xA1 <= i <= 0xAC or i >= 0xAE
    if printable(b):
        return chr(b)
    return chr(256 + sum(1 for i in range(b) if not printable(i)))


def write_tokenizer(path):
    letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    specials = ["<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>", "<|im_start|>", "<|im_end|>",
                "<|endoftext|>"] + ["<|filler_%d|>" % k for k in range(7, 24)]
    vocab = {byte_char(b): b for b in range(256)}
    merges = []
    for k in range(744):
        a, b = letters[k // 52], letters[k % 52]
        vocab[a + b] = 256 + k
        merges.append(a + " " + b)
    pattern = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
               r"\s*[\r\n]+|\s+(?!\S)|\s+")
    tok = {
        "added_tokens": [{"id": 1000 + k, "content": c, "special": True, "normalized": False, "lstrip": False,
                          "rstrip": False, "single_word": False} for k, c in enumerate(specials)],
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}]},
        "decoder": {"type": "ByteLevel"},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "vocab": vocab, "merges": merges},
    }
    with open(path, "w", encoding="utf-8") as f:
        json.dump(tok, f)


def run(cmd):
    print("+ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def round_trip(name, spec, work, tol):
    """One model: world, mine, train, compare. Returns (ok, summary line)."""
    cls = getattr(transformers, spec["cls"])
    shutil.rmtree(work, ignore_errors=True)
    model, images = os.path.join(work, "model"), os.path.join(work, "images")
    os.makedirs(model)
    os.makedirs(images)
    for f in ("config.json", "model.safetensors"):
        shutil.copy(os.path.join(ROOT, "tests/fixtures", name, "model", f), model)
    write_tokenizer(os.path.join(model, "tokenizer.json"))
    for f in sorted(set(spec["images"])):
        shutil.copy(os.path.join(ROOT, "tests/fixtures/images", f), images)
    with open(os.path.join(work, "data.jsonl"), "w") as f:
        for (i, q, ans), img in zip(QUESTIONS, spec["images"]):
            f.write(json.dumps({"id": i, "image": img, "conversations": [{"from": "human", "value": q},
                                                                         {"from": "gpt", "value": ans}]}) + "\n")
    mined, train = os.path.join(work, "mined"), os.path.join(work, "train")
    run(["build/mbpo-mine", "--model", model, "--data", os.path.join(work, "data.jsonl"), "--image-root", images,
         "--out", mined, "--pgd-iters", "2", "--max-new-tokens", "6", "--quiet"])
    run(["build/mbpo-train", "--model", model, "--offline", os.path.join(mined, "offline.jsonl"), "--online",
         os.path.join(mined, "online.jsonl"), "--image-root", images, "--out", train, "--steps", "4", "--G", "2",
         "--batch", "2", "--max-new-tokens", "4", "--lr", "1e-3", "--quiet"])
    ckpt = os.path.join(train, "checkpoint-4")
    # the probe: text ids, the image's tokens, more text; pixel_values from transformers' processor
    proc = Qwen2VLImageProcessor(min_pixels=3136, max_pixels=12845056)
    enc = proc(images=[Image.open(os.path.join(images, spec["images"][0]))], return_tensors="np")
    grid = enc["image_grid_thw"].astype(np.int64)
    n_img = int(grid.prod() // 4)
    ids = np.array([7, 300, 41, 1002] + [1000] * n_img + [1003, 55, 420, 999, 12, 1005], dtype=np.int64)
    labels = ids.copy()
    labels[ids == 1000] = -100
    probe = os.path.join(work, "probe_input.safetensors")
    save_file({"input_ids": ids, "labels": labels, "pixel_values": enc["pixel_values"].astype(np.float32),
               "image_grid_thw": grid}, probe)
    out = os.path.join(work, "mbpo_logits.safetensors")
    run(["build/mbpo-bench", "--model", ckpt, "--input", probe, "--iters", "1", "--warmup", "0", "--dump-logits", out])
    ours = load_file(out)["logits"]
    hf = cls.from_pretrained(ckpt, dtype=torch.float32, attn_implementation="eager").eval()
    with torch.no_grad():
        ref = hf(input_ids=torch.from_numpy(ids)[None], pixel_values=torch.from_numpy(enc["pixel_values"]),
                 image_grid_thw=torch.from_numpy(grid)).logits[0].numpy()
    base = cls.from_pretrained(model, dtype=torch.float32, attn_implementation="eager")
    moved = max(float((p1 - p0).detach().abs().max()) for p1, p0 in zip(hf.parameters(), base.parameters()))
    diff = float(np.abs(ours - ref).max())
    ok = diff <= tol and moved > 0
    extra = ""
    if spec["cls"] == "Qwen2_5_VLForConditionalGeneration":
        with open(os.path.join(ckpt, "config.json")) as f:
            cfg = json.load(f)
        keys = set()
        for fn in os.listdir(ckpt):
            if fn.startswith("model") and fn.endswith(".safetensors"):   # not optimizer.safetensors
                keys |= set(load_file(os.path.join(ckpt, fn)).keys())
        has_head = any(k.endswith("lm_head.weight") for k in keys)
        hf_tied = hf.lm_head.weight.data_ptr() == hf.get_input_embeddings().weight.data_ptr()
        _wi, cu = hf.model.visual.get_window_index(torch.from_numpy(grid))
        n_windows = len(torch.unique_consecutive(torch.as_tensor(cu))) - 1
        checks = cfg.get("model_type") == "qwen2_5_vl" and has_head == (not spec["tied"]) and hf_tied == spec["tied"]
        ok = ok and checks and n_windows >= 3
        extra = (f"; model_type {cfg.get('model_type')}, {len(keys)} tensors, lm_head.weight "
                 f"{'present' if has_head else 'absent'}, transformers {'ties' if hf_tied else 'does not tie'} the head "
                 f"({'as expected' if checks else 'WRONG'}); probe image grid {grid[0].tolist()} over {n_windows} windows")
    line = (f"round trip {name}: {ckpt} loads in transformers ({spec['cls']}); weights moved by up to {moved:.3g} from "
            f"the start; logits ({ref.shape[0]} x {ref.shape[1]}, max |ref| {np.abs(ref).max():.3g}): "
            f"max |mbpo - transformers| = {diff:.3e} (tol {tol:g}){extra}")
    print(line, flush=True)
    return ok, line


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default=os.path.join(ROOT, "build", "roundtrip"))
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated, from: " + ", ".join(MODELS))
    a = ap.parse_args()
    names = [n for n in a.models.split(",") if n]
    for n in names:
        if n not in MODELS:
            ap.error(f"unknown model {n!r} (known: {', '.join(MODELS)})")
    torch.set_num_threads(1)
    shutil.rmtree(a.work, ignore_errors=True)
    results = [round_trip(n, MODELS[n], os.path.join(a.work, n), a.tol) for n in names]
    print(f"round trip: {sum(ok for ok, _ in results)} of {len(results)} models ok")
    for ok, line in results:
        if not ok:
            print("FAILED: " + line)
    return 0 if all(ok for ok, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
