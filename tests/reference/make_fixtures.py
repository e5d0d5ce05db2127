#!/usr/bin/env python3
"""Generate the HF-transformers reference fixtures for the mbpo Qwen2-VL C port.

Usage (from the repository root):
    /tmp/venv/bin/python tests/reference/make_fixtures.py --out tests/fixtures

Spec: docs/QWEN2VL.md section 9 (tiny config "tiny-A", reference-dump recipe).

Output layout:
    <out>/meta.json
    <out>/<variant>/model/{config.json, generation_config.json, model.safetensors}
    <out>/<variant>/case_<name>.safetensors        (one file per case)
variants: tiny_a (untied head), tiny_a_tied (lm_head shares embed_tokens)
cases:    image, two_images, text

Everything runs on CPU, float32, eager attention, a fixed thread count, deterministic algorithms.
A float64 re-run of each case adds `loss_f64` and `grad_f64.<final norm key>`.
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
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import refcommon as rc  # noqa: E402

MODEL_SEEDS = {"tiny_a": 1001, "tiny_a_tied": 1002}
IMAGE_SEEDS = {"A": 2001, "B": 2002}
TORCH_SEED = 0  # global torch seed set before every forward (no randomness is consumed in eval)

VARIANTS = [("tiny_a", False), ("tiny_a_tied", True)]

IMG = 1000
VS = 1002
VE = 1003

CASES = {
    "image": dict(
        description="one 56(H)x84(W) RGB8 image (grid 1,4,6 -> 24 patches, 6 merged tokens); "
        "S=17; labels -100 at positions 0-2 and at the six image_pad positions",
        input_ids=[5, 6, 7, VS] + [IMG] * 6 + [VE, 8, 9, 10, 11],
        n_ignore_prefix=3,
        images=[("A", 56, 84)],
    ),
    "two_images": dict(
        description="image A 56x84 (grid 1,4,6) then image B 84x56 (grid 1,6,4), 6 tokens each; S=29; "
        "labels -100 at positions 0-1 and at all image_pad positions",
        input_ids=[5, 6, VS] + [IMG] * 6 + [VE, 7, 8, VS] + [IMG] * 6 + [VE, 9, 10, 11, 12],
        n_ignore_prefix=2,
        images=[("A", 56, 84), ("B", 84, 56)],
    ),
    "text": dict(
        description="text only, S=16, no special/vision ids; labels -100 at position 0",
        input_ids=[5, 17, 300, 42, 999, 7, 123, 64, 2, 511, 77, 900, 3, 43, 250, 11],
        n_ignore_prefix=1,
        images=[],
    ),
}

TENSOR_DOC = {
    "input_ids": "I64[S] token ids",
    "labels": "I64[S] HF labels (unshifted; -100 = ignored); the loss uses labels[1:] vs logits[:-1]",
    "image.{k}": "U8[H,W,3] raw RGB8 input image k (before preprocessing)",
    "pixel_values": "F32[P,1176] Qwen2VLImageProcessor (slow/PIL, default settings) output, rows in "
    "2x2-merge-grouped order, columns (c, t, y, x)",
    "image_grid_thw": "I64[n_img,3] (t,h,w) patch grid per image",
    "position_ids": "I64[3,S] the M-RoPE (t,h,w) position ids the language model received in forward",
    "rope_deltas": "I64[1] rope delta returned by the model (max position + 1 - S)",
    "patch_embed": "F32[P,64] output of visual.patch_embed (Conv3d as matmul, no bias)",
    "vision_block.{i}": "F32[P,64] output (residual stream) of vision block i",
    "merger": "F32[P/4,64] output of the patch merger = image features inserted into the LM",
    "inputs_embeds": "F32[S,64] token embeddings with image features scattered in (input of decoder layer 0)",
    "decoder_layer.{i}": "F32[S,64] output (residual stream) of decoder layer i (before the final norm)",
    "final_norm": "F32[S,64] output of the LM final RMSNorm",
    "logits": "F32[S,vocab] lm_head output",
    "loss": "F32[1] HF loss with labels (mean CE over non-ignored shifted targets)",
    "grad.<key>": "F32 dloss/dparam for every parameter, <key> = tensor name in model/model.safetensors "
    "(tied variant: grad of the shared embedding includes the lm_head contribution). "
    "In the text case the vision parameters are not in the graph (HF grad None) and are omitted.",
    "grad.pixel_values": "F32[P,1176] dloss/dpixel_values",
    "grad.inputs_embeds": "F32[S,64] dloss/d(inputs_embeds)",
    "loss_f64": "F64[1] loss of the same model converted with .double(), cross-entropy computed in float64 "
    "by this script (HF's own loss upcasts logits with .float(), i.e. would round to fp32)",
    "grad_f64.<final norm key>": "F64[64] gradient of the LM final norm weight in the float64 run",
}


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def make_labels(ids, n_prefix):
    labels = list(ids)
    for i in range(n_prefix):
        labels[i] = -100
    for i, t in enumerate(ids):
        if t in (IMG, 1001):
            labels[i] = -100
    return labels


class Capture:
    """Forward hooks on the module tree of transformers >= 4.52 (model.model.visual / .language_model)."""

    def __init__(self, model):
        self.model = model
        self.store = {}
        self.calls = {}
        self.handles = []
        inner = model.model
        if not (hasattr(inner, "visual") and hasattr(inner, "language_model")):
            raise RuntimeError("unexpected module tree: model.model has no visual/language_model")
        vis = inner.visual
        lm = inner.language_model
        self.paths = {
            "patch_embed": "model.visual.patch_embed",
            "vision_block.{i}": "model.visual.blocks.{i}",
            "merger": "model.visual.merger",
            "inputs_embeds/position_ids": "model.language_model (forward pre-hook, kwargs)",
            "decoder_layer.{i}": "model.language_model.layers.{i}",
            "final_norm": "model.language_model.norm",
        }
        self._out(vis.patch_embed, "patch_embed")
        for i, blk in enumerate(vis.blocks):
            self._out(blk, f"vision_block.{i}")
        self._out(vis.merger, "merger")
        for i, layer in enumerate(lm.layers):
            self._out(layer, f"decoder_layer.{i}")
        self._out(lm.norm, "final_norm")
        self.handles.append(lm.register_forward_pre_hook(self._lm_pre, with_kwargs=True))

    def _out(self, module, name):
        def hook(_m, _inp, out):
            if isinstance(out, (tuple, list)):
                out = out[0]
            self.store[name] = out
            self.calls[name] = self.calls.get(name, 0) + 1

        self.handles.append(module.register_forward_hook(hook))

    def _lm_pre(self, _m, args, kwargs):
        emb = kwargs.get("inputs_embeds")
        pos = kwargs.get("position_ids")
        assert emb is not None and pos is not None, "language_model called without inputs_embeds/position_ids"
        if emb.requires_grad:
            emb.retain_grad()
        self.store["inputs_embeds"] = emb
        self.store["position_ids"] = pos
        self.calls["lm"] = self.calls.get("lm", 0) + 1

    def reset(self):
        self.store = {}
        self.calls = {}

    def remove(self):
        for h in self.handles:
            h.remove()


def run_forward(model, ids, labels, pixel_values, grid, with_labels=True):
    model.model.rope_deltas = None  # never reuse a cached delta
    kw = dict(
        input_ids=ids[None],
        attention_mask=torch.ones_like(ids)[None],
        use_cache=False,
    )
    if with_labels:
        kw["labels"] = labels[None]
    if pixel_values is not None:
        kw["pixel_values"] = pixel_values
        kw["image_grid_thw"] = grid
    return model(**kw)


def own_loss(logits, labels):
    """Shifted mean cross-entropy over targets != -100, in the dtype of logits."""
    return F.cross_entropy(logits[:-1], labels[1:], ignore_index=-100, reduction="mean")


def f32(t):
    return t.detach().to(torch.float32).contiguous().clone()


def float64_rerun(model, tied, ids, labels, pixel_values, grid, images, res, loss, layout, out, name, notes):
    """The float64 re-run of a case: adds loss_f64 and grad_f64.<final norm key> to out; returns its summary."""
    f64 = {}
    try:
        m64 = copy.deepcopy(model).double()
        m64.zero_grad(set_to_none=True)
        if tied:
            assert m64.lm_head.weight is m64.model.language_model.embed_tokens.weight
        pv64 = pixel_values.detach().double().requires_grad_(True) if images else None
        torch.manual_seed(TORCH_SEED)
        r64 = run_forward(m64, ids, labels, pv64, grid, with_labels=True)
        assert r64.logits.dtype == torch.float64, r64.logits.dtype
        hf_loss_f64_mode = float(r64.loss.detach())
        l64 = own_loss(r64.logits[0], labels)
        assert l64.dtype == torch.float64
        l64.backward()
        norm_mem = "model.language_model.norm.weight"
        norm_key = rc.memory_to_file_key(norm_mem, layout)
        gnorm = dict(m64.named_parameters())[norm_mem].grad
        out["loss_f64"] = l64.detach().reshape(1).clone()
        out[f"grad_f64.{norm_key}"] = gnorm.detach().clone().contiguous()
        f64 = dict(
            ok=True,
            loss_f64=float(l64.detach()),
            hf_loss_in_f64_mode=hf_loss_f64_mode,
            loss_f32=float(loss.detach()),
            max_abs_logit_diff_f32_vs_f64=float((r64.logits[0].detach() - res.logits[0].detach().double()).abs().max()),
            max_rel_grad_norm_diff=float(
                ((gnorm - out[f"grad.{norm_key}"].double()).abs().max() / gnorm.abs().max()).item()
            ),
        )
        del m64
    except Exception as e:  # pragma: no cover - recorded, not fatal
        f64 = dict(ok=False, error=repr(e))
        notes.append(f"{name}: float64 run failed: {e!r}")

    return f64


def run_case(model, layout, name, case, images, spec_ids, n_vis_blocks, n_layers, notes):
    ids = torch.tensor(case["input_ids"], dtype=torch.int64)
    labels = torch.tensor(make_labels(case["input_ids"], case["n_ignore_prefix"]), dtype=torch.int64)
    S = ids.numel()
    out = {"input_ids": ids.clone(), "labels": labels.clone()}

    pixel_values = grid = None
    if images:
        for k, im in enumerate(images):
            out[f"image.{k}"] = torch.from_numpy(np.ascontiguousarray(im)).clone()
        pixel_values, grid, _ = rc.preprocess_images(images)
        out["pixel_values"] = pixel_values.clone()
        out["image_grid_thw"] = grid.clone()
        for k, im in enumerate(images):
            H, W = im.shape[:2]
            assert grid[k].tolist() == [1, H // 14, W // 14], (grid[k], im.shape)
        pixel_values = pixel_values.clone().requires_grad_(True)

    # ---------------- float32 forward + backward ----------------
    cap = Capture(model)
    torch.manual_seed(TORCH_SEED)
    model.zero_grad(set_to_none=True)
    res = run_forward(model, ids, labels, pixel_values, grid)
    loss = res.loss
    assert torch.isfinite(loss), f"{name}: non-finite loss"
    loss.backward()
    st = cap.store
    cap.remove()

    if images:
        assert cap.calls.get("patch_embed") == 1 and cap.calls.get("merger") == 1, cap.calls
        out["patch_embed"] = f32(st["patch_embed"])
        for i in range(n_vis_blocks):
            out[f"vision_block.{i}"] = f32(st[f"vision_block.{i}"])
        out["merger"] = f32(st["merger"])
        assert out["merger"].shape == (pixel_values.shape[0] // 4, 64)
    else:
        assert "patch_embed" not in st
    assert cap.calls.get("lm") == 1

    pos = st["position_ids"]
    assert pos.shape == (3, 1, S), pos.shape
    out["position_ids"] = pos[:, 0, :].to(torch.int64).contiguous().clone()
    rd = res.rope_deltas
    out["rope_deltas"] = torch.as_tensor(rd).reshape(-1).to(torch.int64).clone()
    assert out["rope_deltas"].numel() == 1

    # position ids: HF captured == HF get_rope_index == independent re-implementation of docs/QWEN2VL.md 3.4
    exp_pos, exp_delta = rc.expected_rope_index(case["input_ids"], grid.tolist() if grid is not None else [], spec_ids)
    assert np.array_equal(out["position_ids"].numpy(), exp_pos), (name, out["position_ids"], exp_pos)
    assert int(out["rope_deltas"][0]) == exp_delta, (name, out["rope_deltas"], exp_delta)
    gri_pos, gri_delta = model.model.get_rope_index(ids[None], grid, None, torch.ones_like(ids)[None])
    assert torch.equal(gri_pos[:, 0, :].to(torch.int64), out["position_ids"])

    emb = st["inputs_embeds"]
    assert emb.shape == (1, S, 64)
    out["inputs_embeds"] = f32(emb[0])
    for i in range(n_layers):
        out[f"decoder_layer.{i}"] = f32(st[f"decoder_layer.{i}"][0])
    out["final_norm"] = f32(st["final_norm"][0])
    out["logits"] = f32(res.logits[0])
    out["loss"] = f32(loss.reshape(1))

    # consistency: HF loss == own shifted CE; image features really inserted
    ref = own_loss(res.logits[0].detach(), labels)
    assert torch.allclose(ref, loss.detach(), rtol=1e-6, atol=0), (ref, loss)
    if images:
        mask = ids == IMG
        assert torch.equal(out["inputs_embeds"][mask], out["merger"]), "image features not where expected"

    # ---------------- gradients ----------------
    grad_names = []
    none_grads = []
    for pname, p in model.named_parameters():
        key = rc.memory_to_file_key(pname, layout)
        if p.grad is None:
            none_grads.append(key)
            continue
        g = f32(p.grad)
        out[f"grad.{key}"] = g
        grad_names.append(key)
    if images:
        out["grad.pixel_values"] = f32(pixel_values.grad)
    assert emb.grad is not None
    out["grad.inputs_embeds"] = f32(emb.grad[0])

    # ---------------- float64 re-run ----------------
    f64 = float64_rerun(model, model.config.tie_word_embeddings, ids, labels, pixel_values, grid, images, res, loss,
                        layout, out, name, notes)

    info = dict(
        S=S,
        n_images=len(images),
        P=int(pixel_values.shape[0]) if images else 0,
        loss=float(loss.detach()),
        rope_deltas=int(out["rope_deltas"][0]),
        grad_keys_written=len(grad_names),
        grad_none_keys=none_grads,
        f64=f64,
    )
    return out, info, set(grad_names), set(none_grads)


def save_checked(model, mdir):
    """save_pretrained into mdir; the file must hold exactly the in-memory parameters, bit for bit.
    Returns the safetensors header, its sorted keys and their layout ("legacy" or "new")."""
    model.save_pretrained(mdir, safe_serialization=True)
    st_path = os.path.join(mdir, "model.safetensors")
    header = rc.read_safetensors_header(st_path)
    keys = sorted(header.keys())
    layout = rc.detect_layout(keys)
    assert layout in ("legacy", "new"), keys
    mem = {rc.memory_to_file_key(n, layout): p for n, p in model.named_parameters()}
    assert set(mem) == set(keys), (sorted(set(mem) ^ set(keys)))
    saved = load_file(st_path)
    for k in keys:
        assert torch.equal(saved[k], mem[k].detach()), k
    return header, keys, layout


def save_case(vdir, variant, cname, tensors, info, got, none, keys, ims):
    """Check a case's gradient coverage, write <vdir>/case_<cname>.safetensors and record the
    file (name, bytes, sha256, tensor shapes) in info."""
    # grad coverage: every key of model.safetensors (text case: vision keys have no grad)
    assert got | none == set(keys), sorted(set(keys) - (got | none))
    if ims:
        assert not none, none
    else:
        assert all(k.startswith("visual.") or k.startswith("model.visual.") for k in none), none
    for k in got:
        assert tensors[f"grad.{k}"].abs().max() > 0, f"{variant}/{cname}: zero grad for {k}"
    path = os.path.join(vdir, f"case_{cname}.safetensors")
    # one metadata key only: safetensors writes the metadata map in hash order (not reproducible)
    save_file(tensors, path, metadata={"fixture": f"{variant}/{cname}"})
    info["file"] = f"{variant}/case_{cname}.safetensors"
    info["bytes"] = os.path.getsize(path)
    info["sha256"] = sha256(path)
    info["tensors"] = {k: [str(v.dtype).replace("torch.", ""), list(v.shape)] for k, v in sorted(tensors.items())}


def versions():
    import PIL
    import safetensors
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "safetensors": safetensors.__version__,
        "pillow": PIL.__version__,
        "numpy": np.__version__,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output directory (e.g. tests/fixtures)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (fixed for reproducibility)")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    torch.set_default_dtype(torch.float32)
    os.makedirs(args.out, exist_ok=True)

    images = {k: rc.seeded_image(IMAGE_SEEDS[k], 56, 84) if k == "A" else rc.seeded_image(IMAGE_SEEDS[k], 84, 56)
              for k in IMAGE_SEEDS}
    _, _, proc = rc.preprocess_images([images["A"]])

    meta = {
        "generator": "tests/reference/make_fixtures.py",
        "spec": "docs/QWEN2VL.md section 9 (tiny-A)",
        "versions": versions(),
        "device": "cpu",
        "dtype": "float32 (plus a float64 re-run for loss_f64 / grad_f64.*)",
        "attn_implementation": "eager",
        "torch_threads": args.threads,
        "deterministic_algorithms": True,
        "seeds": {
            "model_randomisation": MODEL_SEEDS,
            "images_numpy_default_rng": IMAGE_SEEDS,
            "torch_manual_seed_before_forward": TORCH_SEED,
        },
        "randomisation": "weights N(0,1/fan_in) with fan_in=prod(shape[1:]); biases N(0,0.1^2); norm weights "
        "1+N(0,0.1^2); norm biases N(0,0.1^2); embeddings N(0,1); drawn with torch.Generator(seed) in "
        "named_parameters() order (tied parameters once)",
        "image_processor": {"class": type(proc).__name__, "use_fast": False, "config": proc.to_dict()},
        "images": {"A": "56(H)x84(W)x3 uint8, numpy.random.default_rng(2001).integers(0,256)",
                   "B": "84(H)x56(W)x3 uint8, numpy.random.default_rng(2002).integers(0,256)"},
        "cases": {k: {"description": v["description"], "input_ids": v["input_ids"],
                      "labels": make_labels(v["input_ids"], v["n_ignore_prefix"]),
                      "images": [i[0] for i in v["images"]]} for k, v in CASES.items()},
        "tensors": TENSOR_DOC,
        "forward_call": "model(input_ids=[1,S], attention_mask=ones, pixel_values, image_grid_thw, labels, "
        "use_cache=False); model.model.rope_deltas reset to None before each call",
        "float64_notes": [
            "model.double() on a deep copy; pixel_values cast to float64",
            "in transformers 4.57 the float64 path is not fully float64: the LM rotary cos/sin are computed in "
            "float32 then cast; vision RoPE is applied in float32 (q/k cast to float and back); eager softmax "
            "runs with dtype=float32; HF's loss does logits.float(). loss_f64 therefore uses this script's own "
            "float64 cross-entropy, and the remaining float32 steps limit its accuracy to ~1e-7 relative",
        ],
        "variants": {},
        "notes": [],
    }

    for variant, tied in VARIANTS:
        vdir = os.path.join(args.out, variant)
        mdir = os.path.join(vdir, "model")
        os.makedirs(mdir, exist_ok=True)
        model = rc.build_model(rc.TINY_A, tied, MODEL_SEEDS[variant])
        header, keys, layout = save_checked(model, mdir)
        if tied:
            assert "lm_head.weight" not in keys
        else:
            assert "lm_head.weight" in keys

        spec_ids = rc.TINY_A["ids"]
        vinfo = {
            "tie_word_embeddings": tied,
            "model_dir": f"{variant}/model",
            "safetensors_layout": layout,
            "safetensors_keys": {k: {"dtype": header[k]["dtype"], "shape": header[k]["shape"]} for k in keys},
            "n_parameters": int(sum(p.numel() for p in model.parameters())),
            "config": json.loads(model.config.to_json_string(use_diff=False)),
            "memory_to_file_key_example": {n: rc.memory_to_file_key(n, layout)
                                           for n, _ in list(model.named_parameters())[:2]},
            "hook_module_paths": None,
            "cases": {},
        }
        for cname, case in CASES.items():
            ims = [images[k] for (k, _h, _w) in case["images"]]
            notes = meta["notes"]
            tensors, info, got, none = run_case(model, layout, cname, case, ims, spec_ids,
                                                rc.TINY_A["vision"]["depth"],
                                                rc.TINY_A["text"]["num_hidden_layers"], notes)
            save_case(vdir, variant, cname, tensors, info, got, none, keys, ims)
            vinfo["cases"][cname] = info
            print(f"{variant:12s} {cname:10s} S={info['S']:3d} P={info['P']:3d} loss={info['loss']:.7f} "
                  f"loss_f64={info['f64'].get('loss_f64')} rope_delta={info['rope_deltas']} "
                  f"bytes={info['bytes']}")
        vinfo["hook_module_paths"] = {
            "patch_embed": "model.model.visual.patch_embed",
            "vision_block.{i}": "model.model.visual.blocks[i]",
            "merger": "model.model.visual.merger",
            "inputs_embeds, position_ids": "forward pre-hook (with_kwargs) on model.model.language_model",
            "decoder_layer.{i}": "model.model.language_model.layers[i] (output is a tuple, element 0)",
            "final_norm": "model.model.language_model.norm",
        }
        vinfo["model_files"] = {f: {"bytes": os.path.getsize(os.path.join(mdir, f)),
                                    "sha256": sha256(os.path.join(mdir, f))} for f in sorted(os.listdir(mdir))}
        meta["variants"][variant] = vinfo

    with open(os.path.join(args.out, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1, sort_keys=False)
        f.write("\n")
    total = 0
    for root, _d, files in os.walk(args.out):
        for fn in files:
            total += os.path.getsize(os.path.join(root, fn))
    print(f"total fixture bytes: {total}")


if __name__ == "__main__":
    main()
