#!/usr/bin/env python3
"""Round trip: a checkpoint written by build/mbpo-train loads in transformers and gives the
same logits as mbpo.

1. Builds a small world in --work: the tiny-A model of tests/fixtures/tiny_a/model with a
   byte-level tokenizer.json for its 1024 ids (the same construction as tests/test_runs.c),
   three images from tests/fixtures/images and a LLaVA-style data.jsonl.
2. Runs build/mbpo-mine and build/mbpo-train (mode mbpo, 4 steps, lr 1e-3) from the command
   line, so the weights have moved away from the fixture's.
3. Loads <work>/train/checkpoint-4 with Qwen2VLForConditionalGeneration.from_pretrained
   (fp32, eager) and with mbpo (build/mbpo-bench --dump-logits) on the same input: a
   sequence with the 56x84 fixture image, processed by transformers' processor.
4. Prints the largest absolute difference of the logits; exits 1 above --tol.

    /path/to/venv/bin/python tests/reference/roundtrip.py [--work build/roundtrip] [--tol 1e-4]
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
from transformers import Qwen2VLForConditionalGeneration
from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default=os.path.join(ROOT, "build", "roundtrip"))
    ap.add_argument("--tol", type=float, default=1e-4)
    a = ap.parse_args()
    shutil.rmtree(a.work, ignore_errors=True)
    model, images = os.path.join(a.work, "model"), os.path.join(a.work, "images")
    os.makedirs(model)
    os.makedirs(images)
    for f in ("config.json", "model.safetensors"):
        shutil.copy(os.path.join(ROOT, "tests/fixtures/tiny_a/model", f), model)
    write_tokenizer(os.path.join(model, "tokenizer.json"))
    for f in ("png_rgb_56x84.png", "png_rgb_112x56.png", "gif_single_80x60.gif"):
        shutil.copy(os.path.join(ROOT, "tests/fixtures/images", f), images)
    rows = [("a", "png_rgb_56x84.png", "<image>\nDescribe the picture.", "a red circle"),
            ("b", "png_rgb_112x56.png", "<image>\nWhat colour is the square?", "blue"),
            ("c", "gif_single_80x60.gif", "<image>\nWhat is in the corner?", "a small star"),
            ("d", "png_rgb_56x84.png", "<image>\nIs there a circle?", "No")]
    with open(os.path.join(a.work, "data.jsonl"), "w") as f:
        for i, img, q, ans in rows:
            f.write(json.dumps({"id": i, "image": img, "conversations": [{"from": "human", "value": q},
                                                                         {"from": "gpt", "value": ans}]}) + "\n")
    mined, train = os.path.join(a.work, "mined"), os.path.join(a.work, "train")
    run(["build/mbpo-mine", "--model", model, "--data", os.path.join(a.work, "data.jsonl"), "--image-root", images,
         "--out", mined, "--pgd-iters", "2", "--max-new-tokens", "6", "--quiet"])
    run(["build/mbpo-train", "--model", model, "--offline", os.path.join(mined, "offline.jsonl"), "--online",
         os.path.join(mined, "online.jsonl"), "--image-root", images, "--out", train, "--steps", "4", "--G", "2",
         "--batch", "2", "--max-new-tokens", "4", "--lr", "1e-3", "--quiet"])
    ckpt = os.path.join(train, "checkpoint-4")
    # the probe: text ids, the image's tokens, more text; pixel_values from transformers' processor
    proc = Qwen2VLImageProcessor(min_pixels=3136, max_pixels=12845056)
    enc = proc(images=[Image.open(os.path.join(images, "png_rgb_56x84.png"))], return_tensors="np")
    grid = enc["image_grid_thw"].astype(np.int64)
    n_img = int(grid.prod() // 4)
    ids = np.array([7, 300, 41, 1002] + [1000] * n_img + [1003, 55, 420, 999, 12, 1005], dtype=np.int64)
    labels = ids.copy()
    labels[ids == 1000] = -100
    probe = os.path.join(a.work, "probe_input.safetensors")
    save_file({"input_ids": ids, "labels": labels, "pixel_values": enc["pixel_values"].astype(np.float32),
               "image_grid_thw": grid}, probe)
    out = os.path.join(a.work, "mbpo_logits.safetensors")
    run(["build/mbpo-bench", "--model", ckpt, "--input", probe, "--iters", "1", "--warmup", "0", "--dump-logits", out])
    ours = load_file(out)["logits"]
    torch.set_num_threads(1)
    hf = Qwen2VLForConditionalGeneration.from_pretrained(ckpt, dtype=torch.float32, attn_implementation="eager").eval()
    with torch.no_grad():
        ref = hf(input_ids=torch.from_numpy(ids)[None], pixel_values=torch.from_numpy(enc["pixel_values"]),
                 image_grid_thw=torch.from_numpy(grid)).logits[0].numpy()
    base = Qwen2VLForConditionalGeneration.from_pretrained(model, dtype=torch.float32, attn_implementation="eager")
    moved = max(float((p1 - p0).detach().abs().max()) for p1, p0 in zip(hf.parameters(), base.parameters()))
    diff = float(np.abs(ours - ref).max())
    print(f"round trip: {ckpt} loads in transformers; weights moved by up to {moved:.3g} from the start; "
          f"logits ({ref.shape[0]} x {ref.shape[1]}, max |ref| {np.abs(ref).max():.3g}): max |mbpo - transformers| = {diff:.3e} "
          f"(tol {a.tol:g})")
    return 0 if diff <= a.tol and moved > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
