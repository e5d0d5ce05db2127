#!/usr/bin/env python3
"""Generate the HF-transformers reference fixtures for the mbpo Qwen2.5-VL C port.

Usage (from the repository root):
    /tmp/venv-trl/bin/python tests/reference/make_fixtures25.py --out tests/fixtures

Spec: docs/QWEN25VL.md section 8 (tiny config "tiny25-A") and section 3 (window attention); the dump recipe
and the tensor names are those of make_fixtures.py (Qwen2-VL), so a parity test can share its code.

Output layout:
    <out>/meta25.json
    <out>/<variant>/model/{config.json, generation_config.json, model.safetensors}
    <out>/<variant>/case_<name>.safetensors        (one file per case)
variants: tiny25_a (untied head), tiny25_a_tied (lm_head shares embed_tokens)
cases:    image, even, two_images, tall, text

Everything runs on CPU, float32, eager attention, a fixed thread count, deterministic algorithms.
A float64 re-run of each case adds `loss_f64` and `grad_f64.<final norm key>`.
"""

import argparse
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as mf  # noqa: E402  (helpers only: labels, forward call, loss, hashing, versions)
import refcommon as rc  # noqa: E402

SPEC = rc.TINY25_A
MODEL_SEEDS = {"tiny25_a": 1101, "tiny25_a_tied": 1102}
IMAGE_SEEDS = {"A": 2101, "B": 2102, "C": 2103}
IMAGE_SIZES = {"A": (84, 140), "B": (56, 112), "C": (140, 112)}  # (H, W), multiples of 28
TORCH_SEED = 0

VARIANTS = [("tiny25_a", False), ("tiny25_a_tied", True)]

IMG = SPEC["ids"]["image_token_id"]
VS = SPEC["ids"]["vision_start_token_id"]
VE = SPEC["ids"]["vision_end_token_id"]
E_VIT = SPEC["vision"]["hidden_size"]        # 48
H_LM = SPEC["text"]["hidden_size"]           # 64
WINDOW = SPEC["vision"]["window_size"]       # 56 -> 2x2 merge units per window

CASES = {
    "image": dict(
        description="image A 84(H)x140(W) (grid 1,6,10 -> 60 patches, merge grid 3x5, 15 tokens; windows of "
        "4,4,2,2,2,1 units: several partial windows); S=24; labels -100 at positions 0-2 and the image_pad "
        "positions",
        input_ids=[5, 6, 7, VS] + [IMG] * 15 + [VE, 8, 9, 10, 11],
        n_ignore_prefix=3,
        images=["A"],
    ),
    "even": dict(
        description="image B 56x112 (grid 1,4,8 -> 32 patches, merge grid 2x4, 8 tokens): a multiple of the "
        "window in both directions, HF pads a full extra row/column of empty windows (removed by "
        "unique_consecutive); S=16; labels -100 at positions 0-1 and the image_pad positions",
        input_ids=[5, 6, VS] + [IMG] * 8 + [VE, 7, 8, 9, 10],
        n_ignore_prefix=2,
        images=["B"],
    ),
    "two_images": dict(
        description="image A 84x140 (grid 1,6,10) then image B 56x112 (grid 1,4,8): the sequence of docs/QWEN25VL.md "
        "8.2, S=34; labels -100 at positions 0-2 and at all image_pad positions",
        input_ids=[5, 6, 7, VS] + [IMG] * 15 + [VE, 8, 9, VS] + [IMG] * 8 + [VE, 10, 11],
        n_ignore_prefix=3,
        images=["A", "B"],
    ),
    "tall": dict(
        description="image C 140(H)x112(W) (grid 1,10,8 -> 80 patches, merge grid 5x4, 20 tokens; 6 windows, the "
        "bottom row partial; gw=4 is a multiple of the window, so HF's raw window list has an empty window after "
        "each window row, i.e. in the middle of the list); S=26; labels -100 at position 0 and the image_pad "
        "positions",
        input_ids=[5, 6, VS] + [IMG] * 20 + [VE, 7, 8],
        n_ignore_prefix=1,
        images=["C"],
    ),
    "text": dict(
        description="text only, S=16, no special/vision ids; labels -100 at position 0 (same ids as tiny_a's text "
        "case)",
        input_ids=[5, 17, 300, 42, 999, 7, 123, 64, 2, 511, 77, 900, 3, 43, 250, 11],
        n_ignore_prefix=1,
        images=[],
    ),
}

# docs/QWEN25VL.md 8.2, the two_images case
SPEC_TWO_IMAGES = dict(
    t=[0, 1, 2, 3] + [4] * 15 + [9, 10, 11, 12] + [13] * 8 + [17, 18, 19],
    h=[0, 1, 2, 3] + [4] * 5 + [5] * 5 + [6] * 5 + [9, 10, 11, 12] + [13] * 4 + [14] * 4 + [17, 18, 19],
    w=[0, 1, 2, 3] + list(range(4, 9)) * 3 + [9, 10, 11, 12] + list(range(13, 17)) * 2 + [17, 18, 19],
    rope_delta=-14,
    window_index=[0, 1, 5, 6, 2, 3, 7, 8, 4, 9, 10, 11, 12, 13, 14] + [15 + u for u in [0, 1, 4, 5, 2, 3, 6, 7]],
    cu_window=[0, 16, 32, 40, 48, 56, 60, 76, 92],
    cu_window_raw=[0, 16, 32, 40, 48, 56, 60, 76, 92, 92, 92, 92, 92],
    cu_full=[0, 60, 92],
)

# docs/QWEN25VL.md 3.5, worked examples with window_size 112 (vws 4); checked against HF's get_window_index
WORKED_112 = [
    dict(grids=[[1, 8, 12]],
         perm=[0, 1, 2, 3, 6, 7, 8, 9, 12, 13, 14, 15, 18, 19, 20, 21, 4, 5, 10, 11, 16, 17, 22, 23],
         cu_raw=[0, 64, 96, 96, 96], cu=[0, 64, 96], cu_full=[0, 96],
         inverse=[0, 1, 2, 3, 16, 17, 4, 5, 6, 7, 18, 19, 8, 9, 10, 11, 20, 21, 12, 13, 14, 15, 22, 23]),
    dict(grids=[[1, 16, 16]], cu_raw=[0, 64, 128, 128, 192, 256, 256, 256, 256, 256], cu=[0, 64, 128, 192, 256],
         cu_full=[0, 256]),
    dict(grids=[[1, 10, 14]],
         perm=[0, 1, 2, 3, 7, 8, 9, 10, 14, 15, 16, 17, 21, 22, 23, 24, 4, 5, 6, 11, 12, 13, 18, 19, 20,
               25, 26, 27, 28, 29, 30, 31, 32, 33, 34],
         cu=[0, 64, 112, 128, 140], cu_full=[0, 140]),
    dict(grids=[[1, 8, 12], [1, 4, 6]],
         perm=[0, 1, 2, 3, 6, 7, 8, 9, 12, 13, 14, 15, 18, 19, 20, 21, 4, 5, 10, 11, 16, 17, 22, 23,
               24, 25, 26, 27, 28, 29],
         cu=[0, 64, 96, 120], cu_full=[0, 96, 120]),
]

TENSOR_DOC = dict(mf.TENSOR_DOC)
TENSOR_DOC.update({
    "pixel_values": "F32[P,1176] Qwen2VLImageProcessor (slow/PIL, default settings; Qwen2.5-VL uses the same class "
    "and numbers) output, rows in 2x2-merge-grouped RASTER order, columns (c, t, y, x)",
    "patch_embed": "F32[P,48] output of visual.patch_embed (Conv3d as matmul, no bias), RASTER order (rows as "
    "pixel_values)",
    "patch_embed_window": "F32[P,48] the patch_embed rows permuted into window order: row 4j+m = patch_embed row "
    "4*window_index[j]+m (m=0..3); taken from a forward pre-hook on visual.blocks[0] (its hidden_states input)",
    "window_index": "I64[P/4] visual.get_window_index(image_grid_thw)[0]: merge unit (raster numbering, offset by "
    "the units of earlier images) placed at window position j",
    "cu_window_seqlens": "I64[n_windows+1] window segment offsets in patch rows (window order), HF's raw list "
    "after torch.unique_consecutive = the cu_seqlens the windowed blocks receive (empty windows removed)",
    "cu_seqlens": "I64[n_frames+1] full per-image/frame offsets in patch rows = the cu_seqlens the "
    "fullatt_block_indexes blocks receive",
    "vision_block.{i}": "F32[P,48] output (residual stream) of vision block i, in WINDOW order (row 4j+m belongs "
    "to merge unit window_index[j]); blocks in fullatt_block_indexes use cu_seqlens, the others cu_window_seqlens",
    "merger": "F32[P/4,64] output of the patch merger (visual.merger hook), in WINDOW order (row j = merge unit "
    "window_index[j]); merger[argsort(window_index)] = the image features inserted into the LM (raster order)",
    "grad.<key>": "F32 dloss/dparam for every parameter, <key> = tensor name in model/model.safetensors "
    "(tied variant: grad of the shared embedding includes the lm_head contribution). "
    "In the text case the vision parameters are not in the graph (HF grad None) and are omitted.",
})


class Capture25(mf.Capture):
    """make_fixtures.Capture plus pre-hooks on the vision blocks (block inputs and their cu_seqlens)."""

    def __init__(self, model):
        super().__init__(model)
        for i, blk in enumerate(model.model.visual.blocks):
            self.handles.append(blk.register_forward_pre_hook(self._blk_pre(i), with_kwargs=True))

    def _blk_pre(self, i):
        def hook(_m, args, kwargs):
            hs = args[0] if args else kwargs["hidden_states"]
            cu = kwargs["cu_seqlens"] if "cu_seqlens" in kwargs else args[1]
            self.store[f"block_in.{i}"] = hs
            self.store[f"block_cu.{i}"] = cu.detach().clone()
            self.calls[f"block_in.{i}"] = self.calls.get(f"block_in.{i}", 0) + 1

        return hook


def hf_window(visual, grids):
    wi, cu_raw = visual.get_window_index(torch.tensor(grids, dtype=torch.int64))
    cu = torch.unique_consecutive(torch.tensor(cu_raw, dtype=torch.int64))
    return wi.to(torch.int64).tolist(), [int(x) for x in cu_raw], cu.tolist()


def check_worked_examples(window_checks):
    """docs/QWEN25VL.md 3.5: HF's get_window_index for window_size 112 == the spec's numbers == expected_window_index."""
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionTransformerPretrainedModel

    spec112 = dict(SPEC, vision=dict(SPEC["vision"], window_size=112))
    cfg = rc.build_config25(spec112, False)
    vis = Qwen2_5_VisionTransformerPretrainedModel._from_config(cfg.vision_config)
    for ex in WORKED_112:
        perm, cu_raw, cu = hf_window(vis, ex["grids"])
        mine = rc.expected_window_index(ex["grids"], 112)
        assert (perm, cu) == (mine[0], mine[1]), (ex["grids"], perm, cu, mine)
        assert mine[2] == ex["cu_full"], (ex["grids"], mine[2])
        assert cu == ex["cu"], (ex["grids"], cu)
        if "perm" in ex:
            assert perm == ex["perm"], (ex["grids"], perm)
        if "cu_raw" in ex:
            assert cu_raw == ex["cu_raw"], (ex["grids"], cu_raw)
        if "inverse" in ex:
            assert np.argsort(np.array(perm)).tolist() == ex["inverse"]
        window_checks.append(dict(window_size=112, grids=ex["grids"], hf_equals_spec_and_reimplementation=True,
                                  window_index=perm, cu_window_raw=cu_raw, cu_window=cu, cu_full=mine[2]))
        print(f"window check ws=112 grids={ex['grids']}: cu_raw={cu_raw} -> cu={cu} OK")
    del vis


def run_case(model, layout, name, case, images, notes, window_checks):
    ids = torch.tensor(case["input_ids"], dtype=torch.int64)
    labels = torch.tensor(mf.make_labels(case["input_ids"], case["n_ignore_prefix"]), dtype=torch.int64)
    S = ids.numel()
    out = {"input_ids": ids.clone(), "labels": labels.clone()}
    visual = model.model.visual
    depth = SPEC["vision"]["depth"]
    full_blocks = SPEC["vision"]["fullatt_block_indexes"]

    pixel_values = grid = None
    wi = None
    if images:
        for k, im in enumerate(images):
            out[f"image.{k}"] = torch.from_numpy(np.ascontiguousarray(im)).clone()
        pixel_values, grid, _ = rc.preprocess_images(images)
        out["pixel_values"] = pixel_values.clone()
        out["image_grid_thw"] = grid.clone()
        for k, im in enumerate(images):
            H, W = im.shape[:2]
            assert grid[k].tolist() == [1, H // 14, W // 14], (grid[k], im.shape)
        grids = grid.tolist()
        perm, cu_raw, cu = hf_window(visual, grids)
        mine = rc.expected_window_index(grids, WINDOW)
        assert perm == mine[0] and cu == mine[1], (name, perm, cu, mine)
        wi = torch.tensor(perm, dtype=torch.int64)
        out["window_index"] = wi.clone()
        out["cu_window_seqlens"] = torch.tensor(cu, dtype=torch.int64)
        out["cu_seqlens"] = torch.tensor(mine[2], dtype=torch.int64)
        chk = dict(window_size=WINDOW, grids=grids, hf_equals_spec_and_reimplementation=True,
                   window_index=perm, cu_window_raw=cu_raw, cu_window=cu, cu_full=mine[2])
        if chk not in window_checks:
            window_checks.append(chk)
        print(f"window check ws={WINDOW} grids={grids}: perm={perm} cu_raw={cu_raw} -> cu={cu} full={mine[2]} OK")
        pixel_values = pixel_values.clone().requires_grad_(True)

    # ---------------- float32 forward + backward ----------------
    cap = Capture25(model)
    torch.manual_seed(TORCH_SEED)
    model.zero_grad(set_to_none=True)
    res = mf.run_forward(model, ids, labels, pixel_values, grid)
    loss = res.loss
    assert torch.isfinite(loss), f"{name}: non-finite loss"
    loss.backward()
    st = cap.store
    cap.remove()

    P = int(pixel_values.shape[0]) if images else 0
    if images:
        assert cap.calls.get("patch_embed") == 1 and cap.calls.get("merger") == 1, cap.calls
        out["patch_embed"] = mf.f32(st["patch_embed"])
        assert out["patch_embed"].shape == (P, E_VIT)
        out["patch_embed_window"] = mf.f32(st["block_in.0"])
        permuted = out["patch_embed"].reshape(P // 4, 4, E_VIT)[wi].reshape(P, E_VIT)
        assert torch.equal(out["patch_embed_window"], permuted), f"{name}: block 0 input != patch_embed[window_index]"
        for i in range(depth):
            out[f"vision_block.{i}"] = mf.f32(st[f"vision_block.{i}"])
            assert out[f"vision_block.{i}"].shape == (P, E_VIT)
            want = out["cu_seqlens"] if i in full_blocks else out["cu_window_seqlens"]
            got = st[f"block_cu.{i}"].to(torch.int64)
            assert torch.equal(got, want), (name, i, got, want)
            if i > 0:  # block i receives block i-1's output
                assert torch.equal(mf.f32(st[f"block_in.{i}"]), out[f"vision_block.{i - 1}"])
        out["merger"] = mf.f32(st["merger"])
        assert out["merger"].shape == (P // 4, H_LM)
    else:
        assert "patch_embed" not in st
    assert cap.calls.get("lm") == 1

    pos = st["position_ids"]
    assert pos.shape == (3, 1, S), pos.shape
    out["position_ids"] = pos[:, 0, :].to(torch.int64).contiguous().clone()
    out["rope_deltas"] = torch.as_tensor(res.rope_deltas).reshape(-1).to(torch.int64).clone()
    assert out["rope_deltas"].numel() == 1

    exp_pos, exp_delta = rc.expected_rope_index(case["input_ids"], grid.tolist() if grid is not None else [],
                                                SPEC["ids"])
    assert np.array_equal(out["position_ids"].numpy(), exp_pos), (name, out["position_ids"], exp_pos)
    assert int(out["rope_deltas"][0]) == exp_delta, (name, out["rope_deltas"], exp_delta)
    gri_pos, _ = model.model.get_rope_index(ids[None], grid, None, torch.ones_like(ids)[None])
    assert torch.equal(gri_pos[:, 0, :].to(torch.int64), out["position_ids"])
    if name == "two_images":
        sp = SPEC_TWO_IMAGES
        assert S == 34
        assert out["position_ids"].tolist() == [sp["t"], sp["h"], sp["w"]], out["position_ids"]
        assert int(out["rope_deltas"][0]) == sp["rope_delta"]
        assert out["window_index"].tolist() == sp["window_index"]
        assert out["cu_window_seqlens"].tolist() == sp["cu_window"]
        assert out["cu_seqlens"].tolist() == sp["cu_full"]
        assert cu_raw == sp["cu_window_raw"], cu_raw
        print("two_images: positions, rope_delta -14, window_index, cu_window, cu_full == docs/QWEN25VL.md 8.2")

    emb = st["inputs_embeds"]
    assert emb.shape == (1, S, H_LM)
    out["inputs_embeds"] = mf.f32(emb[0])
    for i in range(SPEC["text"]["num_hidden_layers"]):
        out[f"decoder_layer.{i}"] = mf.f32(st[f"decoder_layer.{i}"][0])
    out["final_norm"] = mf.f32(st["final_norm"][0])
    out["logits"] = mf.f32(res.logits[0])
    out["loss"] = mf.f32(loss.reshape(1))

    ref = mf.own_loss(res.logits[0].detach(), labels)
    assert torch.allclose(ref, loss.detach(), rtol=1e-6, atol=0), (ref, loss)
    if images:
        mask = ids == IMG
        raster = out["merger"][torch.argsort(wi)]
        assert torch.equal(out["inputs_embeds"][mask], raster), f"{name}: merger[argsort(window_index)] != image rows"
        if not torch.equal(wi, torch.arange(P // 4)):
            assert not torch.equal(out["inputs_embeds"][mask], out["merger"])  # the permutation is visible

    # ---------------- gradients ----------------
    grad_names, none_grads = [], []
    for pname, p in model.named_parameters():
        key = rc.memory_to_file_key(pname, layout)
        if p.grad is None:
            none_grads.append(key)
            continue
        out[f"grad.{key}"] = mf.f32(p.grad)
        grad_names.append(key)
    if images:
        out["grad.pixel_values"] = mf.f32(pixel_values.grad)
    assert emb.grad is not None
    out["grad.inputs_embeds"] = mf.f32(emb.grad[0])

    # ---------------- float64 re-run ----------------
    f64 = mf.float64_rerun(model, model.config.text_config.tie_word_embeddings, ids, labels, pixel_values, grid, images, res,
                           loss, layout, out, name, notes)

    info = dict(
        S=S,
        n_images=len(images),
        P=P,
        grids=grid.tolist() if grid is not None else [],
        loss=float(loss.detach()),
        rope_deltas=int(out["rope_deltas"][0]),
        window_index=out["window_index"].tolist() if images else None,
        cu_window_seqlens=out["cu_window_seqlens"].tolist() if images else None,
        cu_seqlens=out["cu_seqlens"].tolist() if images else None,
        logits_std=float(res.logits.detach().std()),
        grad_keys_written=len(grad_names),
        grad_none_keys=none_grads,
        f64=f64,
    )
    return out, info, set(grad_names), set(none_grads)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output directory (e.g. tests/fixtures)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (fixed for reproducibility)")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    torch.set_default_dtype(torch.float32)
    os.makedirs(args.out, exist_ok=True)

    images = {k: rc.seeded_image(IMAGE_SEEDS[k], *IMAGE_SIZES[k]) for k in IMAGE_SEEDS}
    _, _, proc = rc.preprocess_images([images["A"]])

    window_checks = []
    check_worked_examples(window_checks)

    meta = {
        "generator": "tests/reference/make_fixtures25.py",
        "spec": "docs/QWEN25VL.md section 8 (tiny25-A), section 3 (window attention)",
        "versions": mf.versions(),
        "device": "cpu",
        "dtype": "float32 (plus a float64 re-run for loss_f64 / grad_f64.*)",
        "attn_implementation": "eager",
        "torch_threads": args.threads,
        "deterministic_algorithms": True,
        "model_class": "Qwen2_5_VLForConditionalGeneration",
        "config_spec": SPEC,
        "seeds": {
            "model_randomisation": MODEL_SEEDS,
            "images_numpy_default_rng": IMAGE_SEEDS,
            "torch_manual_seed_before_forward": TORCH_SEED,
        },
        "randomisation": "refcommon.randomise_parameters25: weights N(0,1/fan_in) with fan_in=prod(shape[1:]); "
        "biases N(0,0.1^2); norm weights (all RMSNorm here: vision norm1/norm2/ln_q and the LM norms) "
        "1+N(0,0.1^2); token embedding %s*N(0,1) (NOT N(0,1) as in the Qwen2-VL fixtures: O(1) logits, "
        "docs/QWEN25VL.md 8.2; drawn N(0,1) from the same stream then multiplied by %s in float32); drawn with "
        "torch.Generator(seed) in named_parameters() order (tied parameters once)" % (rc.EMBED_STD25, rc.EMBED_STD25),
        "embedding_std": rc.EMBED_STD25,
        "image_processor": {"class": type(proc).__name__, "use_fast": False, "config": proc.to_dict()},
        "images": {k: "%d(H)x%d(W)x3 uint8, numpy.random.default_rng(%d).integers(0,256)"
                   % (IMAGE_SIZES[k][0], IMAGE_SIZES[k][1], IMAGE_SEEDS[k]) for k in IMAGE_SEEDS},
        "cases": {k: {"description": v["description"], "input_ids": v["input_ids"],
                      "labels": mf.make_labels(v["input_ids"], v["n_ignore_prefix"]),
                      "images": v["images"]} for k, v in CASES.items()},
        "tensors": TENSOR_DOC,
        "window_order": "HF permutes the patch rows (and the rotary angle rows) by merge unit into window order "
        "before vision block 0; vision_block.* and merger are in window order, patch_embed and pixel_values "
        "in raster order; inputs_embeds image rows = merger[argsort(window_index)]",
        "window_checks": window_checks,
        "forward_call": "model(input_ids=[1,S], attention_mask=ones, pixel_values, image_grid_thw, labels, "
        "use_cache=False); model.model.rope_deltas reset to None before each call",
        "float64_notes": [
            "model.double() on a deep copy; pixel_values cast to float64",
            "in transformers 4.57 the float64 path is not fully float64: every RMSNorm (Qwen2RMSNorm: the LM norms "
            "and, new in Qwen2.5-VL, the vision norm1/norm2/ln_q) normalises in float32 and casts back; the LM "
            "rotary cos/sin are computed in float32 then cast; vision RoPE is applied in float32 (q/k cast to "
            "float and back); eager softmax runs with dtype=float32; HF's loss does logits.float(). loss_f64 "
            "therefore uses this script's own float64 cross-entropy, and the remaining float32 steps limit its "
            "accuracy to ~1e-7 relative",
        ],
        "variants": {},
        "notes": [],
    }

    total = 0
    for variant, tied in VARIANTS:
        vdir = os.path.join(args.out, variant)
        mdir = os.path.join(vdir, "model")
        os.makedirs(mdir, exist_ok=True)
        model, rules = rc.build_model25(SPEC, tied, MODEL_SEEDS[variant])
        assert model.model.visual.config._attn_implementation == "eager"
        assert model.model.language_model.config._attn_implementation == "eager"
        header, keys, layout = mf.save_checked(model, mdir)
        assert ("lm_head.weight" in keys) == (not tied), keys
        with open(os.path.join(mdir, "config.json")) as f:
            saved_cfg = json.load(f)
        assert saved_cfg["model_type"] == "qwen2_5_vl"
        assert saved_cfg["text_config"].get("tie_word_embeddings", False) == tied
        # reload: same tie state, same parameters
        from transformers import Qwen2_5_VLForConditionalGeneration
        reloaded = Qwen2_5_VLForConditionalGeneration.from_pretrained(mdir, attn_implementation="eager")
        assert (reloaded.lm_head.weight is reloaded.model.language_model.embed_tokens.weight) == tied
        mem_params = dict(model.named_parameters())
        for n, p in reloaded.named_parameters():
            assert torch.equal(p.detach(), mem_params[n].detach()), n
        del reloaded

        vinfo = {
            "tie_word_embeddings": tied,
            "model_dir": f"{variant}/model",
            "safetensors_layout": layout,
            "safetensors_keys": {k: {"dtype": header[k]["dtype"], "shape": header[k]["shape"]} for k in keys},
            "n_parameters": int(sum(p.numel() for p in model.parameters())),
            "n_tensors": len(keys),
            "randomisation_rules": {rc.memory_to_file_key(n, layout): r for n, r in rules.items()},
            "config": json.loads(model.config.to_json_string(use_diff=False)),
            "hook_module_paths": {
                "patch_embed": "model.model.visual.patch_embed",
                "patch_embed_window": "forward pre-hook (with_kwargs) on model.model.visual.blocks[0], hidden_states",
                "vision_block.{i}": "model.model.visual.blocks[i] (block cu_seqlens checked via pre-hook kwargs)",
                "merger": "model.model.visual.merger",
                "inputs_embeds, position_ids": "forward pre-hook (with_kwargs) on model.model.language_model",
                "decoder_layer.{i}": "model.model.language_model.layers[i] (output is a tuple, element 0)",
                "final_norm": "model.model.language_model.norm",
            },
            "cases": {},
        }
        print(f"{variant}: {vinfo['n_parameters']} parameters, {len(keys)} tensors, layout {layout}, tied={tied}")
        for cname, case in CASES.items():
            ims = [images[k] for k in case["images"]]
            tensors, info, got, none = run_case(model, layout, cname, case, ims, meta["notes"], window_checks)
            mf.save_case(vdir, variant, cname, tensors, info, got, none, keys, ims)
            vinfo["cases"][cname] = info
            total += info["bytes"]
            print(f"{variant:14s} {cname:10s} S={info['S']:3d} P={info['P']:3d} loss={info['loss']:.7f} "
                  f"loss_f64={info['f64'].get('loss_f64')} rope_delta={info['rope_deltas']} "
                  f"logit_std={info['logits_std']:.4f} bytes={info['bytes']}")
        vinfo["model_files"] = {f: {"bytes": os.path.getsize(os.path.join(mdir, f)),
                                    "sha256": mf.sha256(os.path.join(mdir, f))} for f in sorted(os.listdir(mdir))}
        total += sum(v["bytes"] for v in vinfo["model_files"].values())
        meta["variants"][variant] = vinfo
        del model

    meta["total_bytes_excluding_meta"] = total
    with open(os.path.join(args.out, "meta25.json"), "w") as f:
        json.dump(meta, f, indent=1, sort_keys=False)
        f.write("\n")
    print(f"total fixture bytes (without meta25.json): {total}")


if __name__ == "__main__":
    main()
