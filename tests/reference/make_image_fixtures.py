#!/usr/bin/env python3
"""Generate image-decoding / image-preprocessing reference fixtures for the mbpo Qwen2-VL C port.

Usage (from the repository root):
    /tmp/venv/bin/python tests/reference/make_image_fixtures.py --out tests/fixtures/images

Spec: docs/QWEN2VL.md section 1 (Qwen2VLImageProcessor: smart_resize, bicubic resize,
rescale, normalize, temporal duplication, patch flattening).

What it writes (deterministic: a rerun gives byte-identical files):
    <out>/<name>.<png|jpg|bmp|gif>     procedurally drawn test images, assorted formats and modes
    <out>/<name>.ref.safetensors       decoded  U8  [H, W, 3]    RGB array the processor resizes
                                       resized  U8  [H', W', 3]  after the processor's bicubic resize
                                       pixel_values F32 [N_p, 1176]
                                       grid_thw I64 [3]
    <out>/cases.json                   one object per image (file, format, mode, sizes, bounds, notes)
    <out>/smart_resize.json            (height, width, min_pixels, max_pixels) -> [H', W'] or "error"
    <out>/resize_cases.safetensors     sizes I64 [N, 4] (w, h, out_w, out_h); inputs / outputs U8, the
                                       random RGB images and Pillow's BICUBIC resizes, concatenated
    <out>/meta.json                    versions, seed, counts, processor configuration

The reference is the "slow" PIL/NumPy back-end of transformers 4.x (the class Qwen2VLImageProcessor
instantiated directly, i.e. use_fast=False). Only the public transformers / Pillow API is used. The
processor's own resize call is observed through a thin wrapper so that the stored `decoded` and
`resized` arrays are checked to be exactly what the processor consumed and produced, and
`pixel_values` is rebuilt here from `resized` (rescale, normalize, T=2, flattening of docs/QWEN2VL.md 1.4)
and required to match bit for bit.

Pillow cannot write interlaced (Adam7) PNGs nor 16-bit-per-channel RGB PNGs; those two files are
written by the small PNG encoder below (zlib + struct from the standard library) and are marked
"writer": "handmade-png" in cases.json. Set WRITE_HANDMADE_PNG = False to leave them out.
"""

import argparse
import io
import json
import math
import os
import platform
import struct
import sys
import warnings
import zlib

import numpy as np
import PIL
import safetensors
import torch
import transformers
from PIL import Image, features
from safetensors.numpy import save_file
from transformers.image_transforms import convert_to_rgb, resize
from transformers.image_utils import ChannelDimension, PILImageResampling
from transformers.models.qwen2_vl import image_processing_qwen2_vl as qip
from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor, smart_resize

SEED = 20250601
WRITE_HANDMADE_PNG = True

# /work/shared/configs/Qwen2-VL-2B-Instruct/preprocessor_config.json
BASE_CONFIG = {
    "min_pixels": 3136,
    "max_pixels": 12845056,
    "patch_size": 14,
    "temporal_patch_size": 2,
    "merge_size": 2,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
}
FACTOR = BASE_CONFIG["patch_size"] * BASE_CONFIG["merge_size"]  # 28

# --------------------------------------------------------------------------------------------
# procedural images
# --------------------------------------------------------------------------------------------


def case_rng(name):
    """Independent generator per case, so adding a case never changes the others."""
    return np.random.default_rng([SEED, zlib.crc32(name.encode("utf-8"))])


def glyph_bank(rng, n=24):
    """Random 7x5 binary 'glyphs' that look like letters (vertical/horizontal strokes)."""
    bank = []
    for _ in range(n):
        g = np.zeros((7, 5), dtype=bool)
        for _ in range(rng.integers(2, 5)):
            if rng.random() < 0.5:
                x = rng.integers(0, 5)
                y0, y1 = sorted(rng.integers(0, 8, size=2))
                g[y0:max(y1, y0 + 2), x] = True
            else:
                y = rng.integers(0, 7)
                x0, x1 = sorted(rng.integers(0, 6, size=2))
                g[y, x0:max(x1, x0 + 2)] = True
        bank.append(g)
    return bank


def draw_image(rng, h, w):
    """Natural-ish float RGB image in [0, 255]: gradients, blobs, hard-edged shapes, text strokes,
    thin lines and noise (so that resampling sees both smooth areas and sharp transitions)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    u, v = xx / max(w - 1, 1), yy / max(h - 1, 1)
    c0, c1 = rng.uniform(20, 235, size=(2, 3))
    ang = rng.uniform(0, 2 * math.pi)
    t = np.clip(0.5 + (u - 0.5) * math.cos(ang) + (v - 0.5) * math.sin(ang), 0, 1)[..., None]
    img = c0 * (1 - t) + c1 * t
    # soft radial blob
    cy, cx = rng.uniform(0, 1, size=2)
    r = rng.uniform(0.2, 0.6)
    blob = np.exp(-((u - cx) ** 2 + (v - cy) ** 2) / (2 * r * r))[..., None]
    img = img * (1 - 0.6 * blob) + rng.uniform(0, 255, size=3) * 0.6 * blob
    # low-frequency texture
    fy, fx = rng.uniform(1, 4, size=2)
    img += 18 * np.sin(2 * math.pi * (fx * u + fy * v) + rng.uniform(0, 6))[..., None]
    # hard-edged shapes
    for _ in range(rng.integers(3, 7)):
        col = rng.uniform(0, 255, size=3)
        kind = rng.integers(0, 3)
        if kind == 0:  # disc
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
            rad = rng.uniform(0.05, 0.3) * min(h, w)
            m = (yy - cy) ** 2 + (xx - cx) ** 2 <= rad * rad
        elif kind == 1:  # rectangle
            y0, x0 = rng.integers(0, h), rng.integers(0, w)
            m = (yy >= y0) & (yy < y0 + rng.integers(3, max(4, h // 2))) & (xx >= x0) & (xx < x0 + rng.integers(3, max(4, w // 2)))
        else:  # triangle (half-plane intersection)
            pts = rng.uniform(0, 1, size=(3, 2)) * [h, w]
            m = np.ones((h, w), dtype=bool)
            area = (pts[1, 1] - pts[0, 1]) * (pts[2, 0] - pts[0, 0]) - (pts[1, 0] - pts[0, 0]) * (pts[2, 1] - pts[0, 1])
            sgn = 1.0 if area >= 0 else -1.0
            for i in range(3):
                a, b = pts[i], pts[(i + 1) % 3]
                m &= sgn * ((b[1] - a[1]) * (yy - a[0]) - (b[0] - a[0]) * (xx - a[1])) >= 0
        img[m] = col
    # text-like strokes: a few lines of glyphs
    bank = glyph_bank(rng)
    for _ in range(rng.integers(1, 4)):
        if h < 9 or w < 8:
            break
        y = rng.integers(0, h - 7)
        x = rng.integers(0, max(1, w // 3))
        ink = rng.uniform(0, 60, size=3) if img[y:y + 7].mean() > 110 else rng.uniform(200, 255, size=3)
        while x + 5 <= w and rng.random() < 0.93:
            g = bank[rng.integers(0, len(bank))]
            img[y:y + 7, x:x + 5][g] = ink
            x += 6 + (rng.integers(0, 6) if rng.random() < 0.15 else 0)
    # thin lines (1 px, arbitrary slope)
    for _ in range(rng.integers(1, 4)):
        y0, x0, y1, x1 = rng.uniform(0, 1, size=4) * [h, w, h, w]
        n = int(max(abs(y1 - y0), abs(x1 - x0))) + 1
        ys = np.clip(np.round(np.linspace(y0, y1, n)).astype(int), 0, h - 1)
        xs = np.clip(np.round(np.linspace(x0, x1, n)).astype(int), 0, w - 1)
        img[ys, xs] = rng.uniform(0, 255, size=3)
    # sensor-like noise
    img += rng.normal(0, rng.uniform(2, 8), size=img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def draw_alpha(rng, h, w):
    """Alpha plane: gradient, a fully transparent disc, a fully opaque band, noise."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    a = 255 * np.clip(xx / max(w - 1, 1) * 0.8 + rng.uniform(0, 0.3), 0, 1)
    cy, cx, rad = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w, 0.25 * min(h, w)
    a[(yy - cy) ** 2 + (xx - cx) ** 2 <= rad * rad] = 0
    a[: max(2, h // 8)] = 255
    a[:, : max(2, w // 10)] = 0
    a += rng.normal(0, 3, size=a.shape) * ((a > 0) & (a < 255))
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def to_gray(rgb):
    return np.clip(np.rint(rgb.astype(np.float64) @ [0.299, 0.587, 0.114]), 0, 255).astype(np.uint8)


def quantize(rgb, colors):
    """Palette image via Pillow's median cut, no dithering (deterministic)."""
    return Image.fromarray(rgb, "RGB").quantize(colors=colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)


# --------------------------------------------------------------------------------------------
# minimal PNG writer for what Pillow cannot write (Adam7 interlace, 16-bit RGB)
# --------------------------------------------------------------------------------------------

ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]


def _png_chunk(tag, data):
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def _filter_rows(rows, bpp, first_filter):
    """rows: list of uint8 byte rows of one (sub)image. Filter types cycle 0..4 so that a decoder
    meets None, Sub, Up, Average and Paeth."""
    out = bytearray()
    prev = None
    for i, row in enumerate(rows):
        cur = row.astype(np.int32)
        up = prev if prev is not None else np.zeros_like(cur)
        left = np.concatenate([np.zeros(bpp, np.int32), cur[:-bpp]])
        ul = np.concatenate([np.zeros(bpp, np.int32), up[:-bpp]])
        ft = (first_filter + i) % 5
        if ft == 0:
            res = cur
        elif ft == 1:
            res = cur - left
        elif ft == 2:
            res = cur - up
        elif ft == 3:
            res = cur - (left + up) // 2
        else:
            p = left + up - ul
            pa, pb, pc = np.abs(p - left), np.abs(p - up), np.abs(p - ul)
            pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, ul))
            res = cur - pred
        out.append(ft)
        out += (res & 0xFF).astype(np.uint8).tobytes()
        prev = cur
    return bytes(out)


def write_png_handmade(path, arr, interlace):
    """arr: [H, W, 3] uint8 (8-bit RGB) or uint16 (16-bit RGB, stored big-endian)."""
    h, w, c = arr.shape
    assert c == 3
    depth = 16 if arr.dtype == np.uint16 else 8
    bpp = c * depth // 8
    raw = arr.astype(">u2").view(np.uint8).reshape(h, w * bpp) if depth == 16 else arr.reshape(h, w * bpp)
    if not interlace:
        data = _filter_rows([raw[y] for y in range(h)], bpp, 0)
    else:
        data = b""
        for p, (x0, y0, dx, dy) in enumerate(ADAM7):
            sub = arr[y0::dy, x0::dx]
            if sub.shape[0] == 0 or sub.shape[1] == 0:
                continue  # empty pass: no rows, no filter bytes
            sh, sw = sub.shape[:2]
            sraw = sub.astype(">u2").view(np.uint8).reshape(sh, sw * bpp) if depth == 16 else sub.reshape(sh, sw * bpp)
            data += _filter_rows([sraw[y] for y in range(sh)], bpp, p)
    ihdr = struct.pack(">IIBBBBB", w, h, depth, 2, 0, 0, 1 if interlace else 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(_png_chunk(b"IHDR", ihdr))
        f.write(_png_chunk(b"IDAT", zlib.compress(data, 9)))
        f.write(_png_chunk(b"IEND", b""))
    # the encoder is checked against Pillow's decoder (which keeps the high byte of 16-bit samples)
    with Image.open(path) as im:
        assert im.mode == "RGB" and im.size == (w, h), path
        assert np.array_equal(np.asarray(im), (arr >> 8).astype(np.uint8) if depth == 16 else arr), path


# --------------------------------------------------------------------------------------------
# test-image catalogue
# --------------------------------------------------------------------------------------------

SMALL_MAX = 28 * 28 * 20  # 15680: hits the max_pixels branch with small tensors
SMALLER_MAX = 28 * 28 * 12  # 9408


def build_images(out):
    """Writes every image file; returns a list of case dicts (without the processor results)."""
    cases = []

    def add(name, ext, fmt, writer_note, note, min_pixels=None, max_pixels=None, stb_may_differ=False, writer="pillow"):
        cases.append(dict(
            file=f"{name}.{ext}", name=name, format=fmt, note=(writer_note + " " + note).strip(),
            min_pixels=min_pixels if min_pixels is not None else BASE_CONFIG["min_pixels"],
            max_pixels=max_pixels if max_pixels is not None else BASE_CONFIG["max_pixels"],
            lossy=(fmt == "jpeg"), stb_may_differ=stb_may_differ, writer=writer,
        ))
        return os.path.join(out, f"{name}.{ext}")

    def rgb(name, h, w):
        return draw_image(case_rng(name), h, w)

    # ---------------- PNG ----------------
    for name, h, w, note in [
        ("png_rgb_56x84", 56, 84, "exact multiples of 28: resize is the identity"),
        ("png_rgb_112x56", 112, 56, "exact multiples of 28: resize is the identity"),
        ("png_rgb_84x140", 84, 140, "exact multiples of 28: resize is the identity"),
        ("png_rgb_42x70", 42, 70, "half-to-even: 42/28=1.5->2, 70/28=2.5->2, resized 56x56"),
        ("png_rgb_99x131", 99, 131, "rounding branch, both sides change"),
        ("png_rgb_28x30", 28, 30, "below min_pixels: upscaled by the min_pixels branch"),
        ("png_rgb_30x400", 30, 400, "very elongated (wide), ratio 13.3"),
        ("png_rgb_300x30", 300, 30, "very elongated (tall), ratio 10"),
    ]:
        Image.fromarray(rgb(name, h, w), "RGB").save(add(name, "png", "png", "PNG RGB 8-bit.", note))

    name = "png_rgb_160x240_maxpix"
    Image.fromarray(rgb(name, 160, 240), "RGB").save(
        add(name, "png", "png", "PNG RGB 8-bit.", f"max_pixels={SMALL_MAX}: downscaled by the max_pixels branch",
            max_pixels=SMALL_MAX))

    name = "png_rgba_70x98"
    a = draw_alpha(case_rng(name + "/alpha"), 70, 98)
    px = np.dstack([rgb(name, 70, 98), a])
    assert (px[..., 3] == 0).any() and (px[a == 0, :3] != 0).any()
    Image.fromarray(px, "RGBA").save(add(
        name, "png", "png", "PNG RGBA 8-bit.",
        "varying alpha incl. alpha=0 pixels with nonzero RGB; convert('RGB') drops alpha (no compositing), "
        "stb_image with 3 components also drops alpha"))

    name = "png_l_64x80"
    Image.fromarray(to_gray(rgb(name, 64, 80)), "L").save(add(name, "png", "png", "PNG gray 8-bit.", "L -> RGB replicates the gray value"))

    name = "png_la_50x60"
    la = np.dstack([to_gray(rgb(name, 50, 60)), draw_alpha(case_rng(name + "/alpha"), 50, 60)])
    Image.fromarray(la, "LA").save(add(name, "png", "png", "PNG gray+alpha 8-bit.", "LA -> RGB replicates L and drops alpha"))

    name = "png_p_84x84"
    quantize(rgb(name, 84, 84), 64).save(add(name, "png", "png", "PNG palette (64 colours), no tRNS.", "identity resize"))

    name = "png_ptrns_60x72"
    p = quantize(rgb(name, 60, 72), 32)
    idx = np.asarray(p).copy()
    idx[10:30, 12:40] = 0  # make sure the fully transparent entry is used
    p = Image.fromarray(idx, "P")
    p.putpalette(quantize(rgb(name, 60, 72), 32).getpalette())
    trns = bytes([0, 40, 90, 140, 200, 250])  # entries 6.. are opaque (tRNS shorter than palette)
    p.save(add(name, "png", "png", "PNG palette with tRNS (per-entry alpha, entry 0 alpha=0).",
               "convert('RGB') takes the palette colour and ignores tRNS; stb_image (3 comp.) should agree"),
           transparency=trns)

    name = "png_1bit_45x33"
    bw = to_gray(rgb(name, 45, 33)) > 128
    Image.fromarray(bw).convert("1").save(add(name, "png", "png", "PNG 1-bit gray.", "mode '1' -> RGB gives 0 or 255"))

    name = "png_gray16_72x56"
    g16 = to_gray(rgb(name, 72, 56)).astype(np.uint16) * 257
    g16 = np.clip(g16.astype(np.int64) + case_rng(name + "/lsb").integers(-300, 300, size=g16.shape), 0, 65535).astype(np.uint16)
    g16[:8, :8] = np.arange(64, dtype=np.uint16).reshape(8, 8) * 4  # a corner of small values (<= 252)
    Image.fromarray(g16).save(add(
        name, "png", "png", "PNG gray 16-bit (opens as mode 'I;16').",
        "Pillow converts I;16 -> RGB by CLAMPING each 16-bit value to 255 (not by taking the high byte), so nearly "
        "the whole image becomes 255; stb_image (stbi_load) keeps the high byte (v>>8): the two decoders disagree",
        stb_may_differ=True))

    if WRITE_HANDMADE_PNG:
        name = "png_rgb16_48x66"
        base = rgb(name, 48, 66).astype(np.uint16) * 257
        lsb = case_rng(name + "/lsb").integers(-200, 200, size=base.shape)
        arr16 = np.clip(base.astype(np.int64) + lsb, 0, 65535).astype(np.uint16)
        write_png_handmade(add(name, "png", "png", "PNG RGB 16-bit (Pillow cannot write it; handmade encoder, filters 0-4 cycled).",
                               "Pillow reads it as mode 'RGB' keeping the high byte of each sample; stb_image also keeps v>>8",
                               writer="handmade-png"), arr16, interlace=False)
        name = "png_adam7_57x61"
        write_png_handmade(add(name, "png", "png", "PNG RGB 8-bit Adam7 interlaced (Pillow cannot write it; handmade encoder).",
                               "odd size so that several passes are partial", writer="handmade-png"),
                           rgb(name, 57, 61), interlace=True)

    # ---------------- JPEG ----------------
    name = "jpeg_rgb_q90_72x96"
    Image.fromarray(rgb(name, 72, 96), "RGB").save(add(name, "jpg", "jpeg", "JPEG baseline q90 (Pillow default 4:2:0).",
                                                        "lossy: compare decoders with a tolerance"), quality=90)
    name = "jpeg_rgb_progressive_70x100"
    Image.fromarray(rgb(name, 70, 100), "RGB").save(add(name, "jpg", "jpeg", "JPEG progressive q85.", "lossy"),
                                                     quality=85, progressive=True)
    name = "jpeg_gray_64x96"
    Image.fromarray(to_gray(rgb(name, 64, 96)), "L").save(add(name, "jpg", "jpeg", "JPEG grayscale (1 component) q90.", "lossy"),
                                                          quality=90)
    name = "jpeg_420_57x93"
    Image.fromarray(rgb(name, 57, 93), "RGB").save(add(name, "jpg", "jpeg", "JPEG 4:2:0 q90, odd size (H=57, W=93).",
                                                       "lossy; chroma upsampling differs between decoders"),
                                                   quality=90, subsampling=2)
    name = "jpeg_444_93x57"
    Image.fromarray(rgb(name, 93, 57), "RGB").save(add(name, "jpg", "jpeg", "JPEG 4:4:4 q90, odd size (H=93, W=57).", "lossy"),
                                                   quality=90, subsampling=0)
    name = "jpeg_rgb_30x45"
    Image.fromarray(rgb(name, 30, 45), "RGB").save(add(name, "jpg", "jpeg", "JPEG q90.", "below min_pixels: min_pixels branch; lossy"),
                                                   quality=90)
    name = "jpeg_rgb_180x240_maxpix"
    Image.fromarray(rgb(name, 180, 240), "RGB").save(add(name, "jpg", "jpeg", "JPEG q90.",
                                                         f"max_pixels={SMALLER_MAX}: max_pixels branch (height/beta/28 evaluates to exactly 3.0); lossy",
                                                         max_pixels=SMALLER_MAX), quality=90)
    name = "jpeg_rgb_q75_50x40_minpix"
    Image.fromarray(rgb(name, 50, 40), "RGB").save(add(name, "jpg", "jpeg", "JPEG q75.",
                                                       "min_pixels=4704 (custom): min_pixels branch upscales; lossy",
                                                       min_pixels=28 * 28 * 6), quality=75)

    # ---------------- BMP ----------------
    name = "bmp_rgb24_70x50"
    Image.fromarray(rgb(name, 70, 50), "RGB").save(add(name, "bmp", "bmp", "BMP 24-bit, bottom-up rows, 2-byte row padding.", ""))
    name = "bmp_p8_63x77"
    quantize(rgb(name, 63, 77), 200).save(add(name, "bmp", "bmp", "BMP 8-bit palette (200 colours), row padding.", ""))

    # ---------------- GIF ----------------
    name = "gif_single_80x60"
    quantize(rgb(name, 80, 60), 128).save(add(name, "gif", "gif", "GIF single frame, 128 colours, no transparency.", ""))

    name = "gif_anim3_56x84"
    frames = [quantize(rgb(f"{name}/{i}", 56, 84), 64) for i in range(3)]
    frames[0].save(add(name, "gif", "gif", "GIF animated, 3 frames, no transparency.",
                       "only the first frame counts (Image.open gives frame 0)"),
                   save_all=True, append_images=frames[1:], duration=100, loop=0)

    name = "gif_transparent_64x64"
    p = quantize(rgb(name, 64, 64), 31)
    pal = p.getpalette()[: 31 * 3] + [250, 20, 160]  # index 31: the transparent one, with a vivid colour
    idx = np.asarray(p).copy()
    idx[20:44, 8:56] = 31
    p = Image.fromarray(idx, "P")
    p.putpalette(pal)
    p.save(add(name, "gif", "gif", "GIF single frame with a transparent index whose palette colour is 250,20,160 (Pillow's GIF writer "
               "renumbers the palette: the index in the file is cases.json 'transparency').",
               "Pillow convert('RGB') returns the palette colour of the transparent index; stb_image leaves "
               "transparent pixels of the first frame at 0 (RGB 0,0,0 with 3 components): decoders disagree there",
               stb_may_differ=True), transparency=31)

    # ---------------- decoder edge cases (where stb_image alone differs from Pillow) ----------------
    name = "png_la16_56x70"
    r = case_rng(name)
    la = np.stack([r.integers(0, 65536, (56, 70)), r.integers(0, 65536, (56, 70))], -1).astype(">u2")
    ihdr = struct.pack(">IIBBBBB", 70, 56, 16, 4, 0, 0, 0)   # 16-bit gray + alpha
    raw = b"".join(b"\x00" + la[y].tobytes() for y in range(56))
    with open(add(name, "png", "png", "PNG 16-bit gray+alpha (handmade writer).",
                  "Pillow opens it as RGBA keeping the high byte; not the I;16 clamp", writer="handmade-png"), "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(raw, 9)) + _png_chunk(b"IEND", b""))

    name = "png_p_shortpal_60x56"
    r = case_rng(name)
    p = Image.fromarray(r.integers(0, 16, (60, 56), dtype=np.uint8), "P")
    p.putpalette([int(v) for v in r.integers(0, 256, 8 * 3)])   # 8 colours; indices 8..15 lie past the palette
    p.save(add(name, "png", "png", "PNG palette of 8 entries with indices up to 15.",
               "Pillow shows indices past the palette as black; stb_image reads uninitialised palette memory there",
               stb_may_differ=True), optimize=False)

    for name, trans in (("gif_smallframe_56x84", None), ("gif_smallframe_t_56x84", 3)):
        r = case_rng(name)
        im = Image.fromarray(r.integers(0, 16, (30, 50), dtype=np.uint8), "P")
        im.putpalette([int(v) for v in r.integers(0, 256, 768)])
        buf = io.BytesIO()
        im.save(buf, "GIF", **({"transparency": trans} if trans is not None else {}))
        b = bytearray(buf.getvalue())
        b[6:8] = struct.pack("<H", 84); b[8:10] = struct.pack("<H", 56); b[11] = 5   # canvas 84x56, background 5
        i = b.index(b"\x2c", 13 + (3 * (2 << (b[10] & 7)) if b[10] & 0x80 else 0))
        b[i + 1:i + 3] = struct.pack("<H", 9); b[i + 3:i + 5] = struct.pack("<H", 7)  # the frame at (9, 7)
        with open(add(name, "gif", "gif", "GIF whose first frame (50x30 at 9,7) is smaller than its canvas (84x56), "
                      "background index 5" + (", transparent index 3." if trans is not None else "."),
                      "Pillow fills the canvas outside the frame with the transparent index's colour, else palette "
                      "entry 0; stb_image paints the background index (in BGR order)", stb_may_differ=True), "wb") as f:
            f.write(bytes(b))
    return cases


# --------------------------------------------------------------------------------------------
# processor reference
# --------------------------------------------------------------------------------------------


class ResizeSpy:
    """Wraps the `resize` the Qwen2-VL slow processor module calls, recording its input and output."""

    def __init__(self):
        self.calls = []
        self.orig = qip.resize

    def __call__(self, image, *args, **kwargs):
        res = self.orig(image, *args, **kwargs)
        self.calls.append((np.array(image, copy=True), np.array(res, copy=True), kwargs.get("size", args[0] if args else None)))
        return res

    def __enter__(self):
        qip.resize = self
        return self

    def __exit__(self, *exc):
        qip.resize = self.orig


def make_processor(min_pixels, max_pixels):
    cfg = dict(BASE_CONFIG, min_pixels=min_pixels, max_pixels=max_pixels)
    return Qwen2VLImageProcessor(
        do_resize=True, resample=PILImageResampling.BICUBIC, do_rescale=True, rescale_factor=1 / 255,
        do_normalize=True, do_convert_rgb=True, **cfg)


def flatten_patches(resized, mean, std, ps=14, tps=2, ms=2):
    """Rescale + normalize + temporal duplication + flattening, written from docs/QWEN2VL.md 1.3/1.4
    (index formulas, not the processor's reshape)."""
    v = (resized.astype(np.float64) * (1 / 255)).astype(np.float32)
    v = (v - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)  # float32 arithmetic
    chw = np.ascontiguousarray(v.transpose(2, 0, 1))  # [3, H', W']
    frames = np.stack([chw] * tps)  # [T=2, 3, H', W'] (last frame repeated)
    gh, gw = resized.shape[0] // ps, resized.shape[1] // ps
    n = gh * gw
    r = np.arange(n)
    q, mx = np.divmod(r, 2)
    q, my = np.divmod(q, 2)
    q, bw = np.divmod(q, gw // ms)
    t, bh = np.divmod(q, gh // ms)
    prow, pcol = bh * ms + my, bw * ms + mx
    k = np.arange(3 * tps * ps * ps)
    c, rem = np.divmod(k, tps * ps * ps)
    tau, rem = np.divmod(rem, ps * ps)
    y, x = np.divmod(rem, ps)
    fr = (t[:, None] * tps + tau[None, :])
    return frames[fr, c[None, :], prow[:, None] * ps + y[None, :], pcol[:, None] * ps + x[None, :]], (1, gh, gw)


def run_case(out, case):
    path = os.path.join(out, case["file"])
    with Image.open(path) as im:
        im.load()
        case["mode"] = im.mode
        case["width"], case["height"] = im.size
        case["n_frames"] = getattr(im, "n_frames", 1)
        trns = im.info.get("transparency")
        case["transparency"] = list(trns) if isinstance(trns, bytes) else trns  # palette index, tRNS alphas or None
        # (a) the two candidate RGB conversions must agree: transformers' convert_to_rgb and plain convert("RGB")
        decoded = np.asarray(convert_to_rgb(im)).copy()
        plain = np.asarray(im.convert("RGB"))
        assert decoded.dtype == np.uint8 and decoded.shape == (im.size[1], im.size[0], 3), case["file"]
        assert np.array_equal(decoded, plain), case["file"]
        proc = make_processor(case["min_pixels"], case["max_pixels"])
        with ResizeSpy() as spy:
            outp = proc(images=im, return_tensors="np")
    pv = outp["pixel_values"]
    thw = np.asarray(outp["image_grid_thw"], dtype=np.int64).reshape(-1)
    assert pv.dtype == np.float32 and pv.shape[1] == 1176, case["file"]

    hh, ww = smart_resize(case["height"], case["width"], factor=FACTOR,
                          min_pixels=case["min_pixels"], max_pixels=case["max_pixels"])
    resized = resize(decoded, (hh, ww), resample=PILImageResampling.BICUBIC,
                     input_data_format=ChannelDimension.LAST)
    assert resized.dtype == np.uint8 and resized.shape == (hh, ww, 3), case["file"]

    # (b) the processor resized exactly `decoded` and produced exactly `resized`
    assert len(spy.calls) == 1, case["file"]
    spy_in, spy_out, spy_size = spy.calls[0]
    assert tuple(spy_size) == (hh, ww), (case["file"], spy_size)
    assert spy_in.dtype == np.uint8 and np.array_equal(spy_in, decoded), case["file"]
    assert spy_out.dtype == np.uint8 and np.array_equal(spy_out, resized), case["file"]

    # (c) pixel_values rebuilt from `resized` must match bit for bit
    mine, mthw = flatten_patches(resized, BASE_CONFIG["image_mean"], BASE_CONFIG["image_std"])
    assert tuple(thw) == mthw, (case["file"], thw, mthw)
    assert mine.dtype == np.float32 and mine.shape == pv.shape, case["file"]
    bitwise = bool(np.array_equal(mine.view(np.uint32), pv.view(np.uint32)))
    assert bitwise, (case["file"], float(np.abs(mine - pv).max()))

    identity = (hh, ww) == (case["height"], case["width"])
    if identity:
        assert np.array_equal(resized, decoded), case["file"]

    save_file({
        "decoded": np.ascontiguousarray(decoded),
        "resized": np.ascontiguousarray(resized),
        "pixel_values": np.ascontiguousarray(pv),
        "grid_thw": np.ascontiguousarray(thw),
    }, os.path.join(out, case["name"] + ".ref.safetensors"))

    return {
        "file": case["file"], "format": case["format"], "mode": case["mode"],
        "width": case["width"], "height": case["height"],
        "min_pixels": case["min_pixels"], "max_pixels": case["max_pixels"],
        "resized_height": hh, "resized_width": ww, "identity_resize": identity,
        "grid_thw": [int(v) for v in thw], "n_patches": int(pv.shape[0]),
        "lossy": case["lossy"], "n_frames": case["n_frames"], "transparency": case["transparency"],
        "stb_may_differ": case["stb_may_differ"], "writer": case["writer"],
        "pixel_values_bitwise_from_resized": bitwise,
        "reference": case["name"] + ".ref.safetensors",
        "note": case["note"],
    }


# --------------------------------------------------------------------------------------------
# smart_resize table
# --------------------------------------------------------------------------------------------

M_OLD, M_HUB = 28 * 28 * 1280, 28 * 28 * 16384  # 1003520, 12845056
MIN0 = 56 * 56


def smart_resize_cases():
    rows = []  # (tag, h, w, min, max)
    for h, w in [(480, 640), (1080, 1920), (375, 500), (224, 224), (2048, 2048), (28, 28), (56, 84), (42, 70)]:
        for mx in (M_OLD, M_HUB):
            rows.append(("worked_example", h, w, MIN0, mx))
    # half-to-even ties: sides 28*(k+0.5) = 28k+14
    for k in range(1, 41):
        rows.append(("tie", 28 * k + 14, 28 * (k + 1) + 14, MIN0, M_HUB))
    for k in (2, 3, 4, 5, 10, 35, 36):
        rows.append(("tie", 28 * k + 14, 28 * k + 14, MIN0, M_OLD))
    rows.append(("tie_at_max", 3598, 3584, MIN0, M_HUB))  # 128.5 -> 128: stays inside the bound
    rows.append(("tie_at_max", 3626, 3584, MIN0, M_HUB))  # 129.5 -> 130: max branch
    # bounds hit exactly (no branch) and just over
    rows += [("bound", 56, 56, MIN0, M_HUB), ("bound", 3584, 3584, MIN0, M_HUB), ("bound", 3585, 3584, MIN0, M_HUB),
             ("bound", 1120, 896, MIN0, M_OLD), ("bound", 1134, 896, MIN0, M_OLD), ("bound", 1148, 896, MIN0, M_OLD),
             ("bound", 55, 56, MIN0, M_HUB), ("bound", 42, 56, MIN0, M_HUB), ("bound", 41, 56, MIN0, M_HUB)]
    # aspect ratio around the 200 limit
    rows += [("aspect", 28, 5600, MIN0, M_HUB), ("aspect", 5600, 28, MIN0, M_HUB), ("aspect", 28, 5601, MIN0, M_HUB),
             ("aspect", 5601, 28, MIN0, M_HUB), ("aspect", 30, 6001, MIN0, M_HUB), ("aspect", 29, 5800, MIN0, M_HUB),
             ("aspect", 29, 5801, MIN0, M_HUB), ("aspect", 10, 2500, MIN0, M_HUB), ("aspect", 1, 201, MIN0, M_HUB),
             ("aspect", 1, 200, MIN0, M_HUB), ("aspect", 50, 10001, MIN0, M_OLD), ("aspect", 100, 20000, MIN0, M_OLD)]
    # sides below 28 (transformers 4.57.6 has no such check: recorded as it behaves)
    rows += [("tiny", h, w, MIN0, M_HUB) for h, w in
             [(27, 27), (27, 100), (100, 27), (20, 20), (14, 14), (14, 56), (1, 1), (1, 28), (10, 28), (13, 13), (27, 28)]]
    rows += [("tiny", 27, 27, MIN0, 500), ("tiny", 20, 300, MIN0, 784)]
    # max_pixels branch with the max(28, .) clamp
    rows += [("clamp", 28, 5000, MIN0, SMALL_MAX), ("clamp", 5000, 28, MIN0, SMALL_MAX), ("clamp", 30, 4000, MIN0, 3136),
             ("clamp", 40, 7000, MIN0, M_OLD // 100), ("clamp", 100, 19000, MIN0, 20000)]
    # custom bounds
    rows += [("custom", 200, 300, MIN0, SMALL_MAX), ("custom", 180, 240, MIN0, SMALLER_MAX), ("custom", 80, 60, 12544, M_HUB),
             ("custom", 400, 400, 50000, 10000), ("custom", 1000, 1000, 3136, 3136), ("custom", 640, 480, 200704, M_OLD),
             ("custom", 99, 131, MIN0, 784 * 4), ("custom", 33, 33, 784 * 64, M_HUB)]
    # random sizes 28..5000 (log-uniform), assorted bounds
    rng = np.random.default_rng([SEED, 7])
    maxes = [M_OLD, M_HUB, SMALL_MAX, SMALLER_MAX, 28 * 28 * 256, 28 * 28 * 4096]
    mins = [MIN0, MIN0, MIN0, 28 * 28 * 4, 28 * 28 * 64]
    for i in range(150):
        h, w = (int(v) for v in np.rint(np.exp(rng.uniform(math.log(28), math.log(5000), size=2))))
        rows.append(("random", h, w, mins[int(rng.integers(len(mins)))] if i % 3 == 0 else MIN0,
                     maxes[i % len(maxes)] if i % 2 == 0 else (M_HUB if i % 4 == 1 else M_OLD)))
    table = []
    for tag, h, w, mn, mx in rows:
        e = {"tag": tag, "height": h, "width": w, "min_pixels": mn, "max_pixels": mx}
        try:
            rh, rw = smart_resize(h, w, factor=FACTOR, min_pixels=mn, max_pixels=mx)
            e["result"] = [int(rh), int(rw)]
        except ValueError as ex:
            e["result"] = "error"
            e["message"] = str(ex)
        table.append(e)
    return table


# --------------------------------------------------------------------------------------------


def resize_cases(out, n=240):
    """Pillow BICUBIC on random RGB images of random sizes (1..64 each side), both directions, both
    axes: every branch of the resampler, including Pillow 13's choice of pass order."""
    rng = np.random.default_rng([SEED, zlib.crc32(b"resize_cases")])
    sizes, ins, outs = [], [], []
    for i in range(n):
        w, h, ow, oh = (int(v) for v in rng.integers(1, 65, 4))
        if i % 8 == 0:
            ow = w      # one axis unchanged
        if i % 8 == 1:
            oh = h
        a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        r = np.asarray(Image.fromarray(a).resize((ow, oh), Image.BICUBIC))
        sizes.append([w, h, ow, oh])
        ins.append(a.ravel())
        outs.append(r.ravel())
    save_file({"sizes": np.asarray(sizes, dtype=np.int64), "inputs": np.concatenate(ins),
               "outputs": np.concatenate(outs)}, os.path.join(out, "resize_cases.safetensors"))
    return n


def dump_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, ensure_ascii=False)
        f.write("\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "images"))
    args = ap.parse_args()
    out = args.out
    os.makedirs(out, exist_ok=True)
    # Pillow warns when a P image with byte transparency is converted to RGB; that is the behaviour recorded.
    warnings.filterwarnings("ignore", message="Palette images with Transparency expressed in bytes")

    specs = build_images(out)
    cases = [run_case(out, c) for c in specs]
    dump_json(os.path.join(out, "cases.json"), cases)

    table = smart_resize_cases()
    dump_json(os.path.join(out, "smart_resize.json"), table)
    n_resize = resize_cases(out)

    proc = make_processor(BASE_CONFIG["min_pixels"], BASE_CONFIG["max_pixels"])
    meta = {
        "generator": "tests/reference/make_image_fixtures.py",
        "spec": "docs/QWEN2VL.md section 1 (image preprocessing)",
        "versions": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "pillow": PIL.__version__,
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "safetensors": safetensors.__version__,
            "libjpeg": features.version("jpg"),
            "libjpeg_turbo": bool(features.check_feature("libjpeg_turbo")),
            "zlib": features.version("zlib"),
        },
        "seed": SEED,
        "per_case_rng": "numpy.random.default_rng([seed, zlib.crc32(case name)])",
        "counts": {
            "images": len(cases),
            "by_format": {f: sum(c["format"] == f for c in cases) for f in ("png", "jpeg", "bmp", "gif")},
            "identity_resize": sum(c["identity_resize"] for c in cases),
            "smart_resize_rows": len(table),
            "smart_resize_errors": sum(e["result"] == "error" for e in table),
            "random_resizes": n_resize,
        },
        "image_processor": {
            "class": "Qwen2VLImageProcessor (slow, PIL/NumPy back-end; use_fast=False)",
            "min_pixels": proc.min_pixels, "max_pixels": proc.max_pixels,
            "patch_size": proc.patch_size, "temporal_patch_size": proc.temporal_patch_size, "merge_size": proc.merge_size,
            "resample": int(proc.resample), "rescale_factor": proc.rescale_factor,
            "image_mean": list(proc.image_mean), "image_std": list(proc.image_std),
            "do_convert_rgb": proc.do_convert_rgb,
            "per_case_overrides": "min_pixels / max_pixels in cases.json",
        },
        "rgb_conversion": (
            "transformers.image_transforms.convert_to_rgb: returns the PIL image unchanged if mode == 'RGB', "
            "otherwise image.convert('RGB') (Pillow). No alpha compositing: RGBA/LA drop alpha, P/PA use the "
            "palette colour and ignore tRNS / transparency index, '1' -> 0/255, L -> replicated, "
            "I;16 -> each value clamped to 255. `decoded` is exactly the array the processor resized."),
        "checks": (
            "decoded == convert_to_rgb(img) == img.convert('RGB'); the processor's resize call (observed) received "
            "`decoded` and returned `resized`; pixel_values rebuilt from `resized` (float64 x 1/255 -> float32, "
            "(v-mean)/std in float32, T=2, docs/QWEN2VL.md 1.4 index order) equal the processor's bit for bit"),
        "files": {
            "<name>.ref.safetensors": {"decoded": "U8 [H,W,3]", "resized": "U8 [H',W',3]",
                                       "pixel_values": "F32 [N_p,1176]", "grid_thw": "I64 [3]"},
        },
    }
    dump_json(os.path.join(out, "meta.json"), meta)
    total = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
    print(f"{len(cases)} images, {len(table)} smart_resize rows, {total} bytes in {out}")


if __name__ == "__main__":
    sys.exit(main())
