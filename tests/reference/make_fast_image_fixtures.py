#!/usr/bin/env python3
"""Generate reference fixtures for the *fast* Qwen2-VL image processor (Qwen2VLImageProcessorFast).

Usage (from the repository root, after make_image_fixtures.py has written the slow fixtures):
    /tmp/venv/bin/python tests/reference/make_fast_image_fixtures.py --out tests/fixtures/images

transformers has two back-ends for Qwen2-VL images: the slow Qwen2VLImageProcessor (Pillow
bicubic of the uint8 image, rescale and normalise in numpy; make_image_fixtures.py) and the fast
Qwen2VLImageProcessorFast (torchvision resize of the uint8 tensor, then a fused rescale +
normalise in torch), which AutoImageProcessor / AutoProcessor load by default for a checkpoint whose
preprocessor_config.json says "Qwen2VLImageProcessor" (transformers 4.57, torchvision installed).

What it writes (deterministic: a rerun on the same machine gives byte-identical files):
    <out>/fast_<name>.png               a few extra images (sizes the slow set lacks: one axis
                                        unchanged, 1-pixel rows/columns, strong down/upscaling)
    <out>/<name>.fast.safetensors       resized      U8  [H', W', 3]  after torchvision's resize
                                        grid_thw     I64 [3]
                                        decoded      U8  [H, W, 3]    RGB array the processor resizes
                                                     (extra images only; the others have it in
                                                     <name>.ref.safetensors, checked equal here)
                                        pixel_values F32 [N_p, 1176]  the fast processor's output
                                                     (only the images in FULL_PIXEL_VALUES; for the
                                                     others see pixel_table)
                                        for every image of cases.json and every extra image
    <out>/fast_pixel_table.safetensors  pixel_table  F32 [3, 256]     the fast processor's pixel value
                                        for each channel and code value (a 56x56 image holding every
                                        code value in every channel, identity resize). Every image's
                                        pixel_values are checked here to be exactly
                                        pixel_table[c, resized[y, x, c]] in the Qwen2-VL patch order,
                                        so the table and `resized` pin down all of them bit for bit
                                        without storing 4 MB of floats
    <out>/fast_cases.json               one object per image: file, sizes, bounds, and how far the
                                        slow processor's output is (resized values that differ,
                                        max |diff| of resized and of pixel_values)
    <out>/resize_cases_fast.safetensors sizes I64 [N, 4] (w, h, out_w, out_h); inputs / outputs U8:
                                        random RGB images and torchvision's BICUBIC (antialias)
                                        resizes of them, concatenated
    <out>/processor_selection.json      preprocessor_config.json texts and what AutoImageProcessor
                                        builds from each (use_fast unset, False, True): class, bounds
    <out>/fast_meta.json                versions, CPU kernel, counts, processor configuration, checks

Only the public transformers / torchvision API is used. The processor's own resize call is observed
through a wrapper on the instance, so `decoded` and `resized` are exactly what it consumed and
produced; pixel_values is rebuilt here from `resized` with the fused formula
    (float32(u8) - float32(mean) * float32(1/rescale)) / (float32(std) * float32(1/rescale))
and required to match the processor bit for bit.

Output sizes of the random resizes are >= 2: torch's generic (non-AVX2) uint8 kernel mishandles an
output width of 1 (it repeats the first row), so such a case would depend on the machine; Qwen2-VL
never resizes to fewer than 28 pixels.
"""

import argparse
import json
import os
import platform
import sys
import warnings
import zlib

import numpy as np
import PIL
import safetensors
import torch
import torchvision
import transformers
from PIL import Image
from safetensors.numpy import save_file
from torchvision.transforms.v2 import functional as F
from transformers.image_transforms import convert_to_rgb
from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor, smart_resize
from transformers.models.qwen2_vl.image_processing_qwen2_vl_fast import Qwen2VLImageProcessorFast

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_image_fixtures import BASE_CONFIG, FACTOR, SEED, case_rng, draw_image, dump_json  # noqa: E402

# Extra images: (name, height, width, max_pixels, note). The slow set (cases.json) already has
# identity resizes, both-axes changes, min/max_pixels branches and elongated images.
# Images whose whole pixel_values array is stored (identity, up- and downscale, one axis, JPEG,
# palette with tRNS, Pillow's vertical-first order): a direct check besides the table.
FULL_PIXEL_VALUES = {"png_rgb_56x84", "png_rgb_42x70", "png_rgb_28x30", "jpeg_444_93x57", "png_ptrns_60x72",
                     "fast_rgb_56x95", "fast_rgb_9x13", "fast_rgb_255x31"}

EXTRA = [
    ("fast_rgb_56x95", 56, 95, None, "height unchanged: torchvision runs the horizontal pass only"),
    ("fast_rgb_101x84", 101, 84, None, "width unchanged: vertical pass only"),
    ("fast_rgb_1x200", 1, 200, None, "one row: min_pixels branch upscales it to 28 rows (vertical taps from 1 row)"),
    ("fast_rgb_150x1", 150, 1, None, "one column: upscaled to 28 columns"),
    ("fast_rgb_9x13", 9, 13, None, "tiny: upscaled about 5x by the min_pixels branch"),
    ("fast_rgb_310x190", 310, 190, 28 * 28 * 4, "downscaled about 4x by the max_pixels branch (wide taps)"),
    ("fast_rgb_97x53", 97, 53, None, "odd sizes, both axes change, non-square"),
    ("fast_rgb_255x31", 255, 31, 28 * 28 * 8, "tall, both axes shrink, vertical much more than horizontal"),
]


def patch_order(hwc, ps=14, tps=2, ms=2):
    """[H, W, 3] -> [N_p, 3 * tps * ps * ps] in Qwen2-VL's patch order (the frame repeated tps
    times): rows are merge blocks in raster order, the ms x ms patches of a block in raster order;
    columns are (channel, frame, row, column) inside the patch."""
    chw = np.ascontiguousarray(np.asarray(hwc).transpose(2, 0, 1))
    h, w = chw.shape[1:]
    gh, gw = h // ps, w // ps
    frames = np.stack([chw] * tps)  # [T, C, H, W]
    p = frames.reshape(1, tps, 3, gh // ms, ms, ps, gw // ms, ms, ps)
    p = p.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)  # grid_h, grid_w, merge_h, merge_w, C, T, ph, pw
    return np.ascontiguousarray(p.reshape(gh * gw, 3 * tps * ps * ps))


def fused_pixels(resized, mean, std, rescale):
    """The fast processor's arithmetic, written out: float32 code values, mean/std folded with the
    rescale factor in float32, then the Qwen2-VL patch order (same as the slow processor's)."""
    k = np.float32(1.0 / rescale)
    m = (np.asarray(mean, np.float32) * k).astype(np.float32)
    s = (np.asarray(std, np.float32) * k).astype(np.float32)
    v = ((resized.astype(np.float32) - m) / s).astype(np.float32)
    return patch_order(v), (1, resized.shape[0] // 14, resized.shape[1] // 14)


def make_fast(min_pixels, max_pixels):
    # size passed explicitly: Qwen2VLImageProcessorFast.__init__ writes min/max_pixels into the
    # class-level default `size` dict when none is given (shared by later instances)
    cfg = dict(BASE_CONFIG, min_pixels=min_pixels, max_pixels=max_pixels)
    return Qwen2VLImageProcessorFast(size={"shortest_edge": min_pixels, "longest_edge": max_pixels},
                                     do_resize=True, resample=3, do_rescale=True, rescale_factor=1 / 255,
                                     do_normalize=True, do_convert_rgb=True, **cfg)


def make_slow(min_pixels, max_pixels):
    cfg = dict(BASE_CONFIG, min_pixels=min_pixels, max_pixels=max_pixels)
    return Qwen2VLImageProcessor(do_resize=True, resample=3, do_rescale=True, rescale_factor=1 / 255,
                                 do_normalize=True, do_convert_rgb=True, **cfg)


def run_case(out, file, name, min_pixels, max_pixels, note, table):
    path = os.path.join(out, file)
    proc = make_fast(min_pixels, max_pixels)
    calls = []
    orig = proc.resize

    def spy(image, size, interpolation=None, **kw):
        res = orig(image=image, size=size, interpolation=interpolation, **kw)
        calls.append((image.clone(), res.clone(), (size.height, size.width), interpolation))
        return res

    proc.resize = spy
    with Image.open(path) as im:
        im.load()
        decoded = np.asarray(convert_to_rgb(im)).copy()
        outp = proc(images=im, return_tensors="pt")
        # input_data_format: the slow processor guesses the channel axis of a 1-row image wrongly
        slow = make_slow(min_pixels, max_pixels)(images=im, return_tensors="np", input_data_format="channels_last")
    pv = outp["pixel_values"].numpy()
    thw = outp["image_grid_thw"].numpy().astype(np.int64).reshape(-1)
    h, w = decoded.shape[:2]
    hh, ww = smart_resize(h, w, factor=FACTOR, min_pixels=min_pixels, max_pixels=max_pixels)

    # (a) the processor resized exactly `decoded` (CHW uint8), with BICUBIC, to (hh, ww)
    assert len(calls) == 1, file
    img_in, img_out, size, interp = calls[0]
    assert size == (hh, ww) and interp == F.InterpolationMode.BICUBIC, (file, size, interp)
    assert img_in.dtype == torch.uint8 and img_out.dtype == torch.uint8, file
    assert np.array_equal(img_in.reshape(3, h, w).permute(1, 2, 0).numpy(), decoded), file
    resized = np.ascontiguousarray(img_out.reshape(3, hh, ww).permute(1, 2, 0).numpy())
    # ... and that is torchvision's public resize of the same tensor
    direct = F.resize(torch.from_numpy(decoded).permute(2, 0, 1).contiguous(), [hh, ww],
                      interpolation=F.InterpolationMode.BICUBIC, antialias=True)
    assert np.array_equal(direct.permute(1, 2, 0).numpy(), resized), file

    # (b) pixel_values rebuilt from `resized` with the fused formula: bit for bit
    mine, mthw = fused_pixels(resized, BASE_CONFIG["image_mean"], BASE_CONFIG["image_std"], 1 / 255)
    assert tuple(thw) == mthw and mine.shape == pv.shape and pv.dtype == np.float32, file
    assert np.array_equal(mine.view(np.uint32), pv.view(np.uint32)), (file, float(np.abs(mine - pv).max()))

    # slow vs fast, for the record
    spv = slow["pixel_values"]
    assert spv.shape == pv.shape, file
    slow_resized = np.asarray(Image.fromarray(decoded).resize((ww, hh), Image.BICUBIC)) if (hh, ww) != (h, w) else decoded
    d_res = np.abs(slow_resized.astype(np.int64) - resized.astype(np.int64))

    # (c) ... and so does the code-value table, in the patch order
    from_table = table[patch_order(np.broadcast_to(np.arange(3), resized.shape)), patch_order(resized)]
    assert np.array_equal(from_table.view(np.uint32), pv.view(np.uint32)), file
    tensors = {"resized": resized, "grid_thw": np.ascontiguousarray(thw)}
    ref = os.path.join(out, name + ".ref.safetensors")
    if os.path.exists(ref):
        with safetensors.safe_open(ref, "np") as f:
            assert np.array_equal(f.get_tensor("decoded"), decoded), file
    else:
        tensors["decoded"] = np.ascontiguousarray(decoded)
    if name in FULL_PIXEL_VALUES:
        tensors["pixel_values"] = np.ascontiguousarray(pv)
    save_file(tensors, os.path.join(out, name + ".fast.safetensors"))
    return {
        "file": file, "width": w, "height": h, "min_pixels": min_pixels, "max_pixels": max_pixels,
        "resized_height": hh, "resized_width": ww, "identity_resize": (hh, ww) == (h, w),
        "grid_thw": [int(v) for v in thw], "n_patches": int(pv.shape[0]),
        "reference": name + ".fast.safetensors", "full_pixel_values": name in FULL_PIXEL_VALUES,
        "slow_resized_values_differing": int((d_res != 0).sum()),
        "slow_resized_max_abs_diff": int(d_res.max()),
        "slow_pixel_values_max_abs_diff": float(np.abs(spv.astype(np.float64) - pv).max()),
        "note": note,
    }


def pixel_table(out):
    """The fast processor's output for every code value: a 56x56 image whose channel c holds the
    code values in a per-channel order (each value 12 or 13 times), identity resize."""
    idx = np.arange(56 * 56)
    img = np.stack([(idx * m + a) % 256 for m, a in ((1, 0), (7, 3), (101, 17))], axis=-1).astype(np.uint8).reshape(56, 56, 3)
    pv = make_fast(BASE_CONFIG["min_pixels"], BASE_CONFIG["max_pixels"])(
        images=Image.fromarray(img), return_tensors="pt")["pixel_values"].numpy()
    codes = patch_order(img)
    chans = patch_order(np.broadcast_to(np.arange(3, dtype=np.uint8), img.shape))
    table = np.zeros((3, 256), np.float32)
    for ch in range(3):
        for v in range(256):
            vals = pv[(chans == ch) & (codes == v)]
            assert vals.size > 0 and np.all(vals.view(np.uint32) == vals[0].view(np.uint32)), (ch, v)
            table[ch, v] = vals[0]
    save_file({"pixel_table": table}, os.path.join(out, "fast_pixel_table.safetensors"))
    return table


def resize_cases(out, n=160):
    """torchvision BICUBIC (antialias) on random uint8 RGB images, sizes 1..40 in, 2..40 out."""
    rng = np.random.default_rng([SEED, zlib.crc32(b"resize_cases_fast")])
    sizes, ins, outs = [], [], []
    for i in range(n):
        w, h = (int(v) for v in rng.integers(1, 41, 2))
        ow, oh = (int(v) for v in rng.integers(2, 41, 2))
        if i % 8 == 0:
            ow = max(w, 2)
        if i % 8 == 1:
            oh = max(h, 2)
        a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        if i % 4 == 3:
            a = (a // 128) * 255  # hard edges: overshoot and clamping
        r = F.resize(torch.from_numpy(a).permute(2, 0, 1).contiguous(), [oh, ow],
                     interpolation=F.InterpolationMode.BICUBIC, antialias=True)
        sizes.append([w, h, ow, oh])
        ins.append(a.ravel())
        outs.append(r.permute(1, 2, 0).contiguous().numpy().ravel())
    save_file({"sizes": np.asarray(sizes, dtype=np.int64), "inputs": np.concatenate(ins),
               "outputs": np.concatenate(outs)}, os.path.join(out, "resize_cases_fast.safetensors"))
    return n


# preprocessor_config.json texts for the selection rule. "model_config": a config.json with
# model_type qwen2_vl beside it (needed when the file names no type).
HUB = dict(BASE_CONFIG)
SELECTION = [
    ("hub Qwen2-VL-2B-Instruct file", dict(HUB, image_processor_type="Qwen2VLImageProcessor", processor_class="Qwen2VLProcessor"), False),
    ("saved by the fast class", dict(HUB, image_processor_type="Qwen2VLImageProcessorFast"), False),
    ("no image_processor_type", dict(HUB), True),
    ("a use_fast key is not read", dict(HUB, image_processor_type="Qwen2VLImageProcessor", use_fast=False), False),
    ("a use_fast key is not read, no type", dict(HUB, use_fast=True), True),
    ("size only", {"size": {"shortest_edge": 6272, "longest_edge": 50176}, "image_processor_type": "Qwen2VLImageProcessor"}, False),
    ("size only, no type", {"size": {"shortest_edge": 6272, "longest_edge": 50176}}, True),
    ("size and min_pixels", {"size": {"shortest_edge": 6272, "longest_edge": 50176}, "min_pixels": 12544,
                             "image_processor_type": "Qwen2VLImageProcessorFast"}, False),
    ("size and both bounds", {"size": {"shortest_edge": 6272, "longest_edge": 50176}, "min_pixels": 12544,
                              "max_pixels": 200704, "image_processor_type": "Qwen2VLImageProcessor"}, False),
    ("max_pixels only", {"max_pixels": 401408, "image_processor_type": "Qwen2VLImageProcessor"}, False),
    ("type only", {"image_processor_type": "Qwen2VLImageProcessor"}, False),
]


def selection_cases(out):
    """What AutoImageProcessor.from_pretrained(folder) builds (use_fast unset, False, True)."""
    import tempfile
    from transformers import AutoImageProcessor
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()
    rows = []
    for note, cfg, model_config in SELECTION:
        text = json.dumps(cfg, indent=1) + "\n"
        row = {"note": note, "text": text, "model_config": model_config}
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "preprocessor_config.json"), "w", encoding="utf-8") as f:
                f.write(text)
            if model_config:
                with open(os.path.join(d, "config.json"), "w", encoding="utf-8") as f:
                    json.dump({"model_type": "qwen2_vl"}, f)
            for key, kw in (("auto", {}), ("slow", {"use_fast": False}), ("fast", {"use_fast": True})):
                # Qwen2VLImageProcessorFast.__init__ writes min/max_pixels into its class-level
                # default `size` when a file has no "size": restore it, as in a fresh process
                saved = dict(Qwen2VLImageProcessorFast.size)
                try:
                    p = AutoImageProcessor.from_pretrained(d, **kw)
                finally:
                    Qwen2VLImageProcessorFast.size.clear()
                    Qwen2VLImageProcessorFast.size.update(saved)
                row[key] = {"class": type(p).__name__, "fast": type(p).__name__.endswith("Fast"),
                            "min_pixels": int(p.size["shortest_edge"]), "max_pixels": int(p.size["longest_edge"])}
        rows.append(row)
    dump_json(os.path.join(out, "processor_selection.json"), rows)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "images"))
    out = ap.parse_args().out
    warnings.filterwarnings("ignore", message="Palette images with Transparency expressed in bytes")
    with open(os.path.join(out, "cases.json"), encoding="utf-8") as f:
        slow_cases = json.load(f)

    table = pixel_table(out)
    cases = []
    for c in slow_cases:
        name = c["file"].rsplit(".", 1)[0]
        cases.append(run_case(out, c["file"], name, c["min_pixels"], c["max_pixels"], c["note"], table))
    for name, h, w, mx, note in EXTRA:
        Image.fromarray(draw_image(case_rng(name), h, w), "RGB").save(os.path.join(out, name + ".png"))
        cases.append(run_case(out, name + ".png", name, BASE_CONFIG["min_pixels"],
                              mx if mx is not None else BASE_CONFIG["max_pixels"], "PNG RGB 8-bit. " + note, table))
    dump_json(os.path.join(out, "fast_cases.json"), cases)
    n_resize = resize_cases(out)
    selection = selection_cases(out)

    proc = make_fast(BASE_CONFIG["min_pixels"], BASE_CONFIG["max_pixels"])
    meta = {
        "generator": "tests/reference/make_fast_image_fixtures.py",
        "versions": {
            "python": platform.python_version(), "numpy": np.__version__, "pillow": PIL.__version__,
            "transformers": transformers.__version__, "torch": torch.__version__,
            "torchvision": torchvision.__version__, "safetensors": safetensors.__version__,
        },
        "torch_cpu_kernel": torch.backends.cpu.get_cpu_capability(),
        "seed": SEED,
        "counts": {
            "images": len(cases), "from_cases_json": len(slow_cases), "extra": len(EXTRA),
            "identity_resize": sum(c["identity_resize"] for c in cases), "random_resizes": n_resize,
            "selection_cases": len(selection),
        },
        "selection": (
            "processor_selection.json: AutoImageProcessor.from_pretrained(folder) with use_fast unset / False / True "
            "(torchvision installed); class built and its min/max pixels (size shortest_edge / longest_edge)"),
        "slow_vs_fast": {
            "images_with_differing_resized_values": sum(c["slow_resized_values_differing"] > 0 for c in cases),
            "resized_values_differing": sum(c["slow_resized_values_differing"] for c in cases),
            "resized_values_total": sum(c["resized_height"] * c["resized_width"] * 3 for c in cases),
            "resized_max_abs_diff": max(c["slow_resized_max_abs_diff"] for c in cases),
            "pixel_values_max_abs_diff": max(c["slow_pixel_values_max_abs_diff"] for c in cases),
            "pixel_values_max_abs_diff_identity_resize":
                max([c["slow_pixel_values_max_abs_diff"] for c in cases if c["identity_resize"]] or [0.0]),
        },
        "image_processor": {
            "class": "Qwen2VLImageProcessorFast (torchvision back-end, CPU; use_fast=True)",
            "min_pixels": BASE_CONFIG["min_pixels"], "max_pixels": BASE_CONFIG["max_pixels"],
            "patch_size": proc.patch_size, "temporal_patch_size": proc.temporal_patch_size,
            "merge_size": proc.merge_size, "resample": 3, "rescale_factor": proc.rescale_factor,
            "image_mean": list(proc.image_mean), "image_std": list(proc.image_std),
            "per_case_overrides": "min_pixels / max_pixels in fast_cases.json",
        },
        "checks": (
            "the processor's resize call (observed) received `decoded` as a CHW uint8 tensor and returned `resized` "
            "(uint8), equal to torchvision.transforms.v2.functional.resize(BICUBIC, antialias=True) of it; "
            "pixel_values rebuilt from `resized` as (float32(u8) - float32(mean)*255f) / (float32(std)*255f), "
            "T=2, Qwen2-VL patch order, equal the processor's bit for bit"),
    }
    dump_json(os.path.join(out, "fast_meta.json"), meta)
    print(f"{len(cases)} images ({len(EXTRA)} extra), {n_resize} random resizes; slow vs fast: "
          f"{meta['slow_vs_fast']['resized_values_differing']} of {meta['slow_vs_fast']['resized_values_total']} resized "
          f"values differ (max {meta['slow_vs_fast']['resized_max_abs_diff']}), pixel_values max |diff| "
          f"{meta['slow_vs_fast']['pixel_values_max_abs_diff']:.3g}")


if __name__ == "__main__":
    sys.exit(main())
