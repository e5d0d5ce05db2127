#!/usr/bin/env python3
"""Interop: the files mbpo writes, used as they are by transformers, tokenizers, TRL,
LLaMA-Factory and EasyR1 (issue 12, item 4). Nothing mbpo writes is converted or edited.

From a fresh build (`make all`), in --work:
 1. a shapes world (build/mbpo-synth), mbpo-mine with demo/tiny-sft, mbpo-train (mode mbpo, a
    few steps) -> an mbpo checkpoint; mbpo-score on the world's test splits, and on copies of
    the test images resized by Pillow to sizes that are not multiples of 28 (so that the two
    image processors differ);
 2. tokenizers / AutoTokenizer (transformers 4.57 here, 5.x in LF_VENV) load every
    tokenizer.json mbpo wrote and encode/decode world texts and chats to mbpo's ids
    (build/mbpo-bench --encode);
 3. AutoProcessor + AutoModelForImageTextToText on the checkpoint: apply_chat_template +
    greedy generate on every test record give mbpo-score's responses and IIGs: the processor
    transformers picks for the folder vs --image-processor auto, use_fast=True vs fast, and
    use_fast=False vs slow;
 4. TRL DPOTrainer (2 steps) on export/trl_dpo.jsonl and GRPOTrainer (2 steps) on
    export/trl_grpo.jsonl from the checkpoint; the DPO result, as trainer.save_model +
    processor.save_pretrained write it, loads in build/mbpo-score with transformers' answers;
 5. LLaMA-Factory (LF_VENV, a subprocess): get_dataset on export/ (dataset_info.json, template
    qwen2_vl) gives mbpo's ids, and a 2-step `llamafactory-cli train` DPO runs;
 6. EasyR1's RLHFDataset (--easyr1 DIR holding verl/) on export/easyr1.jsonl gives mbpo's
    prompt ids with the vision tokens.
Each check prints `ok|FAIL  <what>  <numbers>`; the end is `N passed, N failed`, exit 1 on a failure.

The versions are pinned (PINS, LF_PINS) and printed first; another version is a failure.
The environments (CPU wheels are enough):
    python3 -m venv V && V/bin/pip install torch==2.15.0 torchvision==0.29.2 transformers==4.57.6 \\
        tokenizers==0.22.2 trl==1.16.0 datasets==5.0.1 accelerate==1.15.0 pillow==13.0.0 numpy==2.4.6 \\
        jinja2==3.1.6 safetensors==0.8.0 huggingface-hub==0.36.2 \\
        qwen-vl-utils==0.0.14 codetiming==1.4.0          # the last two: only EasyR1's dataset module imports them
    python3 -m venv L && L/bin/pip install llamafactory==0.9.5   # brings transformers 5.6.0 (LF_PINS)
    EasyR1: its source (verl/), e.g. git clone https://github.com/hiyouga/EasyR1 (not installed: it needs vllm and ray)

    V/bin/python tests/reference/interop.py --lf-venv L --easyr1 EASYR1 [--work build/interop]
    (or make interop VENV=V LF_VENV=L EASYR1=EASYR1); about 70 s on 2 cores, most of it LLaMA-Factory.
Without --lf-venv / --easyr1 those checks print SKIPPED.
"""
import argparse
import contextlib
import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import unicodedata

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PINS = {"torch": "2.15.0", "torchvision": "0.29.2", "transformers": "4.57.6", "tokenizers": "0.22.2", "trl": "1.16.0",
        "datasets": "5.0.1", "accelerate": "1.15.0", "pillow": "13.0.0", "numpy": "2.4.6", "jinja2": "3.1.6",
        "safetensors": "0.8.0", "huggingface-hub": "0.36.2"}
PINS_EASYR1 = {"qwen-vl-utils": "0.0.14", "codetiming": "1.4.0"}
LF_PINS = {"llamafactory": "0.9.5", "transformers": "5.6.0", "tokenizers": "0.22.2", "torch": "2.15.0",
           "torchvision": "0.29.2", "datasets": "4.0.0", "trl": "0.24.0", "accelerate": "1.11.0", "peft": "0.18.1",
           "pillow": "11.3.0", "numpy": "2.4.6", "jinja2": "3.1.6", "safetensors": "0.8.0", "huggingface-hub": "1.33.0"}
MAX_NEW = 32          # greedy response length, mbpo-score and generate alike
IIG_TOL = 5e-4        # |IIG(mbpo) - IIG(transformers)|, fp32; the other image processor is ~100x further off
RESIZED = [(97, 71), (130, 90), (61, 113), (150, 150), (45, 200), (111, 57), (88, 120), (70, 70)]   # (W, H)


def versions(names):
    from importlib.metadata import PackageNotFoundError, version
    out = {}
    for n in names:
        try:
            out[n] = version(n)
        except PackageNotFoundError:
            out[n] = None
    return out


# ---------------------------------------------------------------- parts run in LF_VENV (transformers 5.x)

def part_lf_versions(a):
    print(json.dumps(dict(versions(list(LF_PINS)), python=sys.version.split()[0])))


def part_tok5(a):
    """AutoTokenizer / AutoProcessor of transformers 5.x on the same items as the main process."""
    import transformers
    from transformers import AutoProcessor, AutoTokenizer
    transformers.logging.set_verbosity_error()
    spec = json.load(open(a.spec))
    out = {}
    for name, folder in spec["folders"].items():
        r = {}
        try:
            tok = AutoTokenizer.from_pretrained(folder)
            r["class"] = type(tok).__name__
            r["ids"] = [tok(t)["input_ids"] for t in spec["texts"]]
            r["decoded"] = [tok.decode(ids, skip_special_tokens=False) for ids in spec["mbpo_ids"]]
        except Exception as e:   # reported by the main process as a failure
            r["error"] = "%s: %s" % (type(e).__name__, str(e).strip().splitlines()[0] if str(e).strip() else "")
        out[name] = r
    try:
        proc = AutoProcessor.from_pretrained(spec["checkpoint"])
        out["rendered"] = [proc.apply_chat_template(m, add_generation_prompt=g) for m, g in spec["chats"]]
    except Exception as e:
        out["rendered_error"] = "%s: %s" % (type(e).__name__, str(e).strip().splitlines()[0])
    json.dump(out, open(a.result, "w"))


def part_lf_load(a):
    """LLaMA-Factory's own loader on mbpo's export folder, as `llamafactory-cli train` would call it."""
    from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_tokenizer
    args = dict(stage="dpo", do_train=True, model_name_or_path=a.model, dataset="mbpo_offline", dataset_dir=a.export,
                template="qwen2_vl", cutoff_len=1024, output_dir=os.path.join(a.work, "lf-load"), overwrite_cache=True,
                report_to="none", per_device_train_batch_size=1, finetuning_type="full")
    model_args, data_args, training_args, finetuning_args, _ = get_train_args(args)
    tm = load_tokenizer(model_args)
    template = get_template_and_fix_tokenizer(tm["tokenizer"], data_args)
    ds = get_dataset(template, model_args, data_args, training_args, stage="rm", **tm)["train_dataset"]
    json.dump({"columns": ds.column_names, "chosen": [list(map(int, r["chosen_input_ids"])) for r in ds],
               "rejected": [list(map(int, r["rejected_input_ids"])) for r in ds],
               "chosen_labels": [list(map(int, r["chosen_labels"])) for r in ds],
               "images": [r["images"] for r in ds]}, open(a.result, "w"))


def part_gen5(a):
    """Greedy responses and IIGs of transformers 5.x on a model folder (LLaMA-Factory's output)."""
    import torch
    import transformers
    from transformers import AutoModelForImageTextToText, AutoProcessor
    transformers.logging.set_verbosity_error()
    torch.set_num_threads(1)
    spec = json.load(open(a.spec))
    proc = AutoProcessor.from_pretrained(a.model)
    model = AutoModelForImageTextToText.from_pretrained(a.model, dtype=torch.float32).eval()
    tests = read_jsonl(spec["tests"])
    json.dump({"processor": type(proc.image_processor).__name__, "responses": generate_all(model, proc, tests, spec["images"]),
               "iig": iig_all(model, proc, tests, spec["images"])}, open(a.result, "w"))


def part_easyr1(a):
    """EasyR1's own dataset class, from its source (not installed), on mbpo's easyr1.jsonl."""
    sys.path.insert(0, os.path.abspath(a.easyr1))
    import transformers
    from transformers import AutoProcessor
    from verl.utils.dataset import RLHFDataset
    transformers.logging.set_verbosity_error()
    proc = AutoProcessor.from_pretrained(a.model)
    ds = RLHFDataset(data_path=os.path.join(a.export, "easyr1.jsonl"), tokenizer=proc.tokenizer, processor=proc,
                     prompt_key="problem", answer_key="answer", image_key="images", image_dir=None, max_prompt_length=512,
                     filter_overlong_prompts=True, filter_overlong_prompts_workers=1)
    ex = ds[0]
    json.dump({"rows": len(ds), "ids": [int(t) for t, m in zip(ex["input_ids"], ex["attention_mask"]) if m],
               "ground_truth": ex["ground_truth"], "images": ex["multi_modal_data"]["images"]}, open(a.result, "w"))


# ---------------------------------------------------------------- the main process (transformers 4.57)

class Checks:
    def __init__(self):
        self.passed = self.failed = 0

    def __call__(self, ok, what, numbers=""):
        print("%-4s  %s  %s" % ("ok" if ok else "FAIL", what, numbers), flush=True)
        if ok:
            self.passed += 1
        else:
            self.failed += 1
        return ok

    def guard(self, what, fn):
        """Run one step; an exception is a failure of that step, reported in one line."""
        try:
            return fn()
        except Exception as e:
            msg = [l.strip() for l in str(e).strip().splitlines() if l.strip()]
            self(False, what, "%s: %s" % (type(e).__name__, msg[0][:300] if msg else ""))
            return None


@contextlib.contextmanager
def quiet(log):
    """A trainer's prints and progress bars go to a log file, not between the check lines."""
    with open(log, "w") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
        yield


# the Python subprocesses (LF_VENV, EasyR1) run torch on one thread too; mbpo's drivers keep their OpenMP default
PY_ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")


def run(cmd, log, env=None, check=True):
    t0 = time.time()
    with open(log, "w") as f:
        r = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, env=env)
    if check and r.returncode:
        tail = open(log).read().strip().splitlines()[-3:]
        raise RuntimeError("%s exited %d (%s): %s" % (os.path.basename(cmd[0]), r.returncode, log, " | ".join(tail)))
    return r.returncode, time.time() - t0


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def write_jsonl(path, rows):
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def content_parts(question, n_images):
    """The user message as structured content, by mbpo's placement rule: the images where the
    question's <image> markers are (one newline after a marker dropped), else first."""
    if "<image>" not in question:
        return [{"type": "image"}] * n_images + [{"type": "text", "text": question}]
    parts, rest = [], question
    while "<image>" in rest:
        before, rest = rest.split("<image>", 1)
        if before:
            parts.append({"type": "text", "text": before})
        parts.append({"type": "image"})
        if rest.startswith("\n"):
            rest = rest[1:]
    if rest:
        parts.append({"type": "text", "text": rest})
    return parts


def chat_messages(question, n_images, response=None):
    m = [{"role": "user", "content": content_parts(question, n_images)}]
    if response is not None:
        m.append({"role": "assistant", "content": [{"type": "text", "text": response}]})
    return m


def expand_pads(text, tokens_per_image):
    """The processor's own step: each <|image_pad|> becomes the image's number of tokens."""
    pieces = text.split("<|image_pad|>")
    assert len(pieces) == len(tokens_per_image) + 1, "image count"
    out = pieces[0]
    for k, n in enumerate(tokens_per_image):
        out += "<|image_pad|>" * n + pieces[k + 1]
    return out


def mbpo_encode(items, work, tok_path, tag):
    """build/mbpo-bench --encode: mbpo's ids and their decoding for each item."""
    src = os.path.join(work, "encode_%s.jsonl" % tag)
    write_jsonl(src, [it["mbpo"] for it in items])
    r = subprocess.run([os.path.join(ROOT, "build/mbpo-bench"), "--tokenizer", tok_path, "--encode", src],
                       capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError("mbpo-bench --encode: " + r.stderr.strip())
    ids, dec = [], []
    for line in r.stdout.splitlines():
        a, b = line.split("\t")
        ids.append([int(x) for x in a.split()] if a else [])
        dec.append(bytes.fromhex(b).decode("utf-8"))
    assert len(ids) == len(items)
    return ids, dec


def generate_all(model, proc, records, image_root):
    """apply_chat_template(add_generation_prompt=True) + greedy generate, one record at a time."""
    import torch
    from PIL import Image
    out = []
    for r in records:
        q = r["conversations"][0]["value"]
        text = proc.apply_chat_template(chat_messages(q, 1), add_generation_prompt=True)
        img = Image.open(os.path.join(image_root, r["image"]))
        inp = proc(text=[text], images=[img], return_tensors="pt")
        with torch.no_grad():
            ids = model.generate(**inp, max_new_tokens=MAX_NEW, do_sample=False)
        out.append(proc.batch_decode(ids[:, inp["input_ids"].shape[1]:], skip_special_tokens=True)[0])
    return out


def iig_all(model, proc, records, image_root):
    """mbpo-score's "iig" of each record's reference answer, from transformers' forward:
    log p(answer, <|im_end|> | question, image) - the same with a black image of the resized
    size (the processor's own grid says which)."""
    import torch
    from PIL import Image
    out = []
    for r in records:
        q, ans = r["conversations"][0]["value"], r["conversations"][1]["value"]
        img = Image.open(os.path.join(image_root, r["image"]))
        prompt = proc.apply_chat_template(chat_messages(q, 1), add_generation_prompt=True)
        full = proc.apply_chat_template(chat_messages(q, 1, ans))
        n0 = proc(text=[prompt], images=[img], return_tensors="pt")["input_ids"].shape[1]
        sums = []
        for im in (img, None):
            if im is None:
                _, gh, gw = [int(x) for x in inp["image_grid_thw"][0]]
                im = Image.new("RGB", (gw * 14, gh * 14))
            inp = proc(text=[full], images=[im], return_tensors="pt")
            ids = inp["input_ids"][0]
            assert ids[-2] == proc.tokenizer.convert_tokens_to_ids("<|im_end|>")
            with torch.no_grad():
                logp = torch.log_softmax(model(**inp).logits[0].double(), -1)
            sums.append(sum(float(logp[t - 1, ids[t]]) for t in range(n0, len(ids) - 1)))
        out.append(sums[0] - sums[1])
    return out


def iig_diff(mbpo_rows, hf):
    mine = [r["iig"] for r in mbpo_rows if "iig" in r and "summary" not in r]
    assert len(mine) == len(hf)
    return max(abs(a - b) for a, b in zip(mine, hf))


def compare_responses(mbpo_rows, hf):
    mine = [r["response"] for r in mbpo_rows if "response" in r]
    same = sum(a == b for a, b in zip(mine, hf))
    first = next(((i, a, b) for i, (a, b) in enumerate(zip(mine, hf)) if a != b), None)
    return same, len(mine), len(hf), first


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default=os.path.join(ROOT, "build", "interop"))
    ap.add_argument("--lf-venv", default=None, help="a venv with llamafactory 0.9.5 (transformers 5.x)")
    ap.add_argument("--easyr1", default=None, help="a checkout of hiyouga/EasyR1 (the folder holding verl/)")
    ap.add_argument("--part", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--spec", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--result", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--model", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--export", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.part:
        return {"lf-versions": part_lf_versions, "tok5": part_tok5, "lf-load": part_lf_load,
                "easyr1": part_easyr1, "gen5": part_gen5}[a.part](a) or 0

    t_start = time.time()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import warnings
    warnings.filterwarnings("ignore")
    import torch
    import transformers
    transformers.logging.set_verbosity_error()
    check = Checks()

    # ---- versions
    v = versions(list(PINS) + (list(PINS_EASYR1) if a.easyr1 else []))
    print("python %s; VENV %s" % (sys.version.split()[0], sys.prefix))
    print("VENV:    " + ", ".join("%s %s" % (k, v[k]) for k in v))
    pins = dict(PINS, **(PINS_EASYR1 if a.easyr1 else {}))
    bad = ["%s %s (pinned %s)" % (k, v[k], pins[k]) for k in pins if v[k] != pins[k]]
    if any(v[k] is None for k in ("torch", "transformers", "tokenizers", "trl", "datasets")):
        print("FAIL  VENV %s lacks %s (see the top of %s for the pip line)" % (
            sys.prefix, ", ".join(k for k in PINS if v[k] is None), os.path.relpath(__file__, ROOT)))
        return 1
    lf_python = os.path.join(a.lf_venv, "bin", "python") if a.lf_venv else None
    if lf_python:
        lv = json.loads(subprocess.run([lf_python, __file__, "--part", "lf-versions"], capture_output=True, text=True,
                                       check=True).stdout)
        print("LF_VENV: " + ", ".join("%s %s" % (k, lv[k]) for k in lv) + " (%s)" % a.lf_venv)
        if lv["llamafactory"] is None:
            print("FAIL  LF_VENV %s has no llamafactory" % a.lf_venv)
            return 1
        bad += ["LF_VENV %s %s (pinned %s)" % (k, lv[k], LF_PINS[k]) for k in LF_PINS if lv[k] != LF_PINS[k]]
    if a.easyr1:
        ds_py = os.path.join(a.easyr1, "verl", "utils", "dataset.py")
        init = os.path.join(a.easyr1, "verl", "__init__.py")
        ver = next((l.split("=")[1].strip().strip('"') for l in open(init) if l.startswith("__version__")), "?") \
            if os.path.exists(init) else "?"
        git = subprocess.run(["git", "-C", a.easyr1, "rev-parse", "HEAD"], capture_output=True, text=True)
        print("EasyR1:  %s, verl %s, %s, verl/utils/dataset.py sha256 %s" % (
            a.easyr1, ver, "commit " + git.stdout.strip() if git.returncode == 0 else "not a git checkout",
            hashlib.sha256(open(ds_py, "rb").read()).hexdigest()[:16] if os.path.exists(ds_py) else "(missing)"))
    mbpo_version = subprocess.run([os.path.join(ROOT, "build/mbpo-score"), "--version"], capture_output=True,
                                  text=True).stdout.strip()
    print("mbpo:    " + mbpo_version)
    # one thread: the models are tiny, and on a busy 2-core machine two torch threads can run 30x slower
    torch.set_num_threads(1)
    check(not bad, "versions are the pinned ones", "; ".join(bad) if bad else "%d packages" % len(pins))

    # ---- 1. world -> mine -> train -> score
    W = os.path.abspath(a.work)
    shutil.rmtree(W, ignore_errors=True)
    os.makedirs(W)
    world, images = os.path.join(W, "world"), os.path.join(W, "world", "images")
    mined, train = os.path.join(W, "mined"), os.path.join(W, "train")
    export = os.path.join(mined, "export")
    synth_model = os.path.join(W, "synth-model")
    b = lambda name: os.path.join(ROOT, "build", name)
    steps = 3
    ckpt = os.path.join(train, "checkpoint-%d" % steps)
    try:   # nothing below can run without these
        t0 = time.time()
        run([b("mbpo-synth"), "--out", world, "--train", "16", "--test", "8", "--seed", "5"], os.path.join(W, "synth.log"))
        run([b("mbpo-synth"), "--model-out", synth_model, "--seed", "5"], os.path.join(W, "synth-model.log"))
        run([b("mbpo-mine"), "--model", os.path.join(ROOT, "demo/tiny-sft"), "--data", os.path.join(world, "train.jsonl"),
             "--image-root", images, "--out", mined, "--top-k", "4", "--pgd-iters", "2", "--max-new-tokens", "16", "--quiet"],
            os.path.join(W, "mine.log"))
        run([b("mbpo-train"), "--model", os.path.join(ROOT, "demo/tiny-sft"), "--offline", os.path.join(mined, "offline.jsonl"),
             "--online", os.path.join(mined, "online.jsonl"), "--image-root", images, "--out", train, "--mode", "mbpo",
             "--steps", str(steps), "--lr", "5e-5", "--batch", "2", "--G", "2", "--max-new-tokens", "8", "--quiet"],
            os.path.join(W, "train.log"))
        # the test splits, and the test_counter images resized to sizes that are not multiples of 28
        from PIL import Image
        tests = read_jsonl(os.path.join(world, "test_counter.jsonl")) + read_jsonl(os.path.join(world, "test_prior.jsonl"))
        n_world_tests = len(tests)
        os.makedirs(os.path.join(images, "resized"))
        resized, seen = [], {}
        for r in read_jsonl(os.path.join(world, "test_counter.jsonl")):
            if r["image"] not in seen:
                k = len(seen)
                seen[r["image"]] = "resized/%06d.png" % k
                Image.open(os.path.join(images, r["image"])).convert("RGB").resize(RESIZED[k % len(RESIZED)],
                                                                                    Image.BICUBIC).save(
                    os.path.join(images, seen[r["image"]]))
            resized.append(dict(r, id="resized-" + r["id"], image=seen[r["image"]]))
        tests += resized
        test_file = os.path.join(W, "tests.jsonl")
        write_jsonl(test_file, tests)
        scores = {}
        for proc_name in ("auto", "fast", "slow"):
            out = os.path.join(W, "score_%s.jsonl" % proc_name)
            run([b("mbpo-score"), "--model", ckpt, "--data", test_file, "--image-root", images, "--out", out,
                 "--max-new-tokens", str(MAX_NEW), "--image-processor", proc_name, "--quiet"], out + ".log")
            scores[proc_name] = read_jsonl(out)
        n_pairs, n_prompts = len(read_jsonl(os.path.join(mined, "offline.jsonl"))), len(read_jsonl(os.path.join(mined, "online.jsonl")))
        exported = sorted(os.path.basename(p) for p in glob.glob(os.path.join(export, "*")))
        check(os.path.isdir(ckpt) and len(scores["auto"]) == len(tests) + 1,
              "mbpo: synth -> mine -> train -> score",
              "%d pairs, %d prompts, export/ = %s; %s; %d test records (%d world + %d resized) in %.1f s" % (
                  n_pairs, n_prompts, " ".join(exported), os.path.relpath(ckpt, W), len(tests), n_world_tests,
                  len(resized), time.time() - t0))
    except Exception as e:
        check(False, "mbpo: synth -> mine -> train -> score", "%s: %s" % (type(e).__name__, e))
        print("%d passed, %d failed" % (check.passed, check.failed))
        return 1

    # ---- 2. tokenizers
    from tokenizers import Tokenizer
    from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoProcessor, AutoTokenizer
    proc = AutoProcessor.from_pretrained(ckpt)
    world_rows = read_jsonl(os.path.join(world, "train.jsonl")) + tests
    offline = read_jsonl(os.path.join(mined, "offline.jsonl"))
    texts = []
    for r in world_rows:
        texts += [c["value"] for c in r["conversations"]]
    texts += [r["response"] for r in scores["auto"] if "response" in r]
    for r in offline:
        texts += [v for k, v in r.items() if k in ("chosen", "rejected") and isinstance(v, str)]
    texts += ["  two  spaces and a tab\tand\r\nCRLF  ", "Is there a red circle?<|im_end|>", "cafe\u0301 na\u00efve 123 4567",
              "<|vision_start|><|image_pad|><|vision_end|>x", "", " ", "A. red\nB. blue\n\n(C) green"]
    texts = list(dict.fromkeys(texts))
    chats = []   # (question, response or None): every question of the world, bare and with its answer
    for r in world_rows:
        q, ans = r["conversations"][0]["value"], r["conversations"][1]["value"]
        chats += [(q, None), (q, ans)]
    chats = list(dict.fromkeys(chats))
    n_img = 9   # an 84x84 world image: a 6x6 patch grid, merged 2x2
    items = [{"mbpo": t, "text": t} for t in texts]
    for q, resp in chats:
        m = chat_messages(q, 1, resp)
        rendered = expand_pads(proc.apply_chat_template(m, add_generation_prompt=resp is None), [n_img])
        mb = {"question": q, "image_tokens": [n_img]}
        if resp is not None:
            mb["response"] = resp
        items.append({"mbpo": mb, "text": rendered, "messages": m, "gen": resp is None})
    n_text, n_chat = len(texts), len(chats)
    folders = {"demo/tiny-sft": os.path.join(ROOT, "demo/tiny-sft"), "checkpoint": ckpt, "synth --model-out": synth_model}
    mbpo_ids = {}
    for name, folder in folders.items():
        ids, dec = mbpo_encode(items, W, os.path.join(folder, "tokenizer.json"), name.replace("/", "_").replace(" ", "_"))
        mbpo_ids[name] = ids
        want = [unicodedata.normalize("NFC", it["text"]) for it in items]
        ok_dec = sum(d == w for d, w in zip(dec, want))
        check(ok_dec == len(items), "mbpo renders and decodes its chat as HF's template (%s)" % name,
              "mbpo decode(mbpo ids) = text (NFC) for %d/%d (%d texts, %d chats vs processor.apply_chat_template)" % (
                  ok_dec, len(items), n_text, n_chat))

    def tok_check(label, name, enc, dec):
        ids = mbpo_ids[name]
        e = sum(enc(it["text"]) == i for it, i in zip(items, ids))
        want = [unicodedata.normalize("NFC", it["text"]) for it in items]
        d = sum(dec(i) == w for i, w in zip(ids, want))
        bad = next((it["text"] for it, i in zip(items, ids) if enc(it["text"]) != i), None)
        check(e == len(items) and d == len(items), "%s loads %s" % (label, name),
              "encode = mbpo %d/%d, decode(mbpo ids) = text %d/%d%s" % (
                  e, len(items), d, len(items), "" if bad is None else "; first mismatch %r" % bad[:60]))

    for name, folder in folders.items():
        def one(name=name, folder=folder):
            t = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
            tok_check("tokenizers %s Tokenizer.from_file" % v["tokenizers"], name, lambda s: t.encode(s).ids,
                      lambda i: t.decode(i, skip_special_tokens=False))
            at = AutoTokenizer.from_pretrained(folder)
            tok_check("AutoTokenizer %s (%s)" % (v["transformers"], type(at).__name__), name,
                      lambda s: at(s)["input_ids"], lambda i: at.decode(i, skip_special_tokens=False))
        check.guard("tokenizers / AutoTokenizer %s load %s" % (v["transformers"], name), one)
    if lf_python:
        def tok5():
            spec = os.path.join(W, "tok5_spec.json")
            res = os.path.join(W, "tok5_result.json")
            json.dump({"folders": folders, "texts": [it["text"] for it in items], "mbpo_ids": mbpo_ids["checkpoint"],
                       "checkpoint": ckpt, "chats": [(it["messages"], it["gen"]) for it in items if "messages" in it]},
                      open(spec, "w"))
            run([lf_python, __file__, "--part", "tok5", "--spec", spec, "--result", res], os.path.join(W, "tok5.log"), env=PY_ENV)
            r = json.load(open(res))
            want = [unicodedata.normalize("NFC", it["text"]) for it in items]
            for name in folders:
                x = r[name]
                if "error" in x:
                    check(False, "AutoTokenizer %s loads %s" % (lv["transformers"], name), x["error"])
                    continue
                e = sum(a == b for a, b in zip(x["ids"], mbpo_ids[name]))
                d = sum(a == b for a, b in zip(x["decoded"], want)) if name == "checkpoint" else len(items)
                check(e == len(items) and d == len(items), "AutoTokenizer %s (%s) loads %s" % (
                    lv["transformers"], x["class"], name), "encode = mbpo %d/%d%s" % (
                    e, len(items), ", decode(mbpo ids) = text %d/%d" % (d, len(items)) if name == "checkpoint" else ""))
            chat_texts = [it["text"] for it in items if "messages" in it]
            if "rendered_error" in r:
                check(False, "processor.apply_chat_template %s on the checkpoint" % lv["transformers"], r["rendered_error"])
            else:
                same = sum(expand_pads(s, [n_img]) == t for s, t in zip(r["rendered"], chat_texts))
                check(same == len(chat_texts), "processor.apply_chat_template %s renders as %s (checkpoint)" % (
                    lv["transformers"], v["transformers"]), "%d/%d chats" % (same, len(chat_texts)))
        check.guard("transformers %s tokenizers (LF_VENV)" % (lv["transformers"]), tok5)

    if not lf_python:
        print("SKIPPED  transformers 5.x tokenizers and chat template: no --lf-venv (LF_VENV=) given")

    # ---- 3. generate on the checkpoint vs mbpo-score, both image processors
    model = AutoModelForImageTextToText.from_pretrained(ckpt, dtype=torch.float32).eval()
    slow_ip = AutoImageProcessor.from_pretrained(ckpt, use_fast=False)
    proc_slow = AutoProcessor.from_pretrained(ckpt)
    proc_slow.image_processor = slow_ip   # AutoProcessor(use_fast=False) itself: see below
    proc_fast = AutoProcessor.from_pretrained(ckpt)
    proc_fast.image_processor = AutoImageProcessor.from_pretrained(ckpt, use_fast=True)
    # "default": what transformers picks for the folder by itself (mbpo's auto must pick the same)
    procs = {"default": proc, "fast": proc_fast, "slow": proc_slow}
    hf, hf_iig = {}, {}
    for tag, p in procs.items():
        t1 = time.time()
        hf[tag] = check.guard("generate with the %s image processor" % tag, lambda p=p: generate_all(model, p, tests, images))
        hf_iig[tag] = check.guard("IIG with the %s image processor" % tag, lambda p=p: iig_all(model, p, tests, images))
        print("      transformers, %s processor (%s): %d greedy responses and IIGs in %.1f s" % (
            tag, type(p.image_processor).__name__, len(tests), time.time() - t1))
    for mb, tag, other in (("auto", "default", "fast" if "Fast" not in type(proc.image_processor).__name__ else "slow"),
                           ("fast", "fast", "slow"), ("slow", "slow", "fast")):
        if hf[tag] is None or hf_iig[tag] is None:
            continue
        rows = scores[mb]
        same, n_m, n_h, first = compare_responses(rows, hf[tag])
        per = [sum(x == y for x, y in zip([r["response"] for r in rows[:-1]][lo:hi], hf[tag][lo:hi]))
               for lo, hi in ((0, n_world_tests), (n_world_tests, len(tests)))]
        d = iig_diff(rows, hf_iig[tag])
        d_other = iig_diff(rows[n_world_tests:], hf_iig[other][n_world_tests:]) if hf_iig[other] else float("nan")
        p = procs[tag]
        check(same == n_m == n_h == len(tests) and d <= IIG_TOL,
              "mbpo-score --image-processor %s = transformers %s %s" % (mb, v["transformers"], type(p.image_processor).__name__),
              "responses %d/%d (world %d/%d, resized %d/%d); IIG max |diff| %.1e (tol %.0e; %.1e on the resized images "
              "against the %s processor)%s" % (
                  same, len(tests), per[0], n_world_tests, per[1], len(resized), d, IIG_TOL, d_other, other,
                  "" if first is None else "; first differs at %d: mbpo %r, transformers %r" % first))
    def use_fast_false():
        # transformers 4.57's warning says to pass use_fast=False for the slow image processor; that
        # flag also selects the slow Qwen2Tokenizer, which reads vocab.json + merges.txt, not tokenizer.json
        what = "AutoProcessor.from_pretrained(checkpoint, use_fast=False)"
        files = [f for f in ("vocab.json", "merges.txt") if os.path.exists(os.path.join(ckpt, f))]
        try:
            p = AutoProcessor.from_pretrained(ckpt, use_fast=False)
        except Exception as e:
            msg = [l.strip() for l in str(e).splitlines() if l.strip()]
            check(False, what, "%s \"%s\": the slow Qwen2Tokenizer that use_fast=False also picks needs vocab.json + merges.txt; "
                  "the checkpoint has %s" % (type(e).__name__, msg[0][:60] if msg else "", " + ".join(files) or "neither"))
            return
        check(type(p.image_processor).__name__ == "Qwen2VLImageProcessor", what,
              "%s, %s" % (type(p.image_processor).__name__, type(p.tokenizer).__name__))
    check.guard("AutoProcessor.from_pretrained(checkpoint, use_fast=False)", use_fast_false)

    # ---- 4. TRL
    import trl
    from datasets import load_dataset
    trl_out = os.path.join(W, "trl-dpo")

    def dpo():
        t1 = time.time()
        with quiet(os.path.join(W, "trl_dpo_data.log")):
            ds = load_dataset("json", data_files=os.path.join(export, "trl_dpo.jsonl"), split="train")
        m = AutoModelForImageTextToText.from_pretrained(ckpt, dtype=torch.float32)
        p = AutoProcessor.from_pretrained(ckpt)
        args = trl.DPOConfig(output_dir=trl_out, max_steps=2, per_device_train_batch_size=2, learning_rate=5e-5,
                             report_to="none", bf16=False, fp16=False, logging_steps=1, save_strategy="no",
                             use_cpu=True, dataloader_num_workers=0, seed=5)
        tr = trl.DPOTrainer(model=m, args=args, train_dataset=ds, processing_class=p)
        with quiet(os.path.join(W, "trl_dpo.log")):
            res = tr.train()
        losses = [h["loss"] for h in tr.state.log_history if "loss" in h]
        tr.save_model(trl_out)
        p.save_pretrained(trl_out)
        check(res.global_step == 2 and len(losses) == 2, "TRL %s DPOTrainer on export/trl_dpo.jsonl" % trl.__version__,
              "%d rows, %d steps, loss %s, %.1f s; saved with save_model + processor.save_pretrained: %s" % (
                  len(ds), res.global_step, " ".join("%.5f" % x for x in losses), time.time() - t1,
                  " ".join(sorted(os.listdir(trl_out)))))
        return True
    dpo_ok = check.guard("TRL DPOTrainer on export/trl_dpo.jsonl", dpo)

    def grpo():
        t1 = time.time()
        with quiet(os.path.join(W, "trl_grpo_data.log")):
            ds = load_dataset("json", data_files=os.path.join(export, "trl_grpo.jsonl"), split="train")
        rewards = []

        def closed_reward(prompts, completions, answer, kind, label, **kw):
            out = []
            for c, k, l in zip(completions, kind, label):
                t = c[0]["content"].strip().lower()
                out.append(float(t.startswith("yes" if l == "Y" else "no")) if k == "yesno" else float(t[:1].upper() == l))
            rewards.extend(out)
            return out
        m = AutoModelForImageTextToText.from_pretrained(ckpt, dtype=torch.float32)
        p = AutoProcessor.from_pretrained(ckpt)
        args = trl.GRPOConfig(output_dir=os.path.join(W, "trl-grpo"), max_steps=2, per_device_train_batch_size=2,
                              num_generations=2, max_completion_length=8, learning_rate=5e-5, report_to="none",
                              bf16=False, fp16=False, logging_steps=1, save_strategy="no", use_cpu=True,
                              dataloader_num_workers=0, seed=5)
        tr = trl.GRPOTrainer(model=m, reward_funcs=closed_reward, args=args, train_dataset=ds, processing_class=p)
        with quiet(os.path.join(W, "trl_grpo.log")):
            res = tr.train()
        logged = [h.get("reward") for h in tr.state.log_history if "reward" in h]
        check(res.global_step == 2 and len(rewards) >= 4, "TRL %s GRPOTrainer on export/trl_grpo.jsonl" % trl.__version__,
              "%d rows, %d steps, %d completions scored from answer/kind/label, mean reward per step %s, %.1f s" % (
                  len(ds), res.global_step, len(rewards), " ".join("%.2f" % x for x in logged), time.time() - t1))
    check.guard("TRL GRPOTrainer on export/trl_grpo.jsonl", grpo)

    def trl_in_mbpo():
        cfg = json.load(open(os.path.join(trl_out, "config.json")))
        pre = json.load(open(os.path.join(trl_out, "preprocessor_config.json")))
        out = os.path.join(W, "score_trl.jsonl")
        rc, _ = run([b("mbpo-score"), "--model", trl_out, "--data", test_file, "--image-root", images, "--out", out,
                     "--max-new-tokens", str(MAX_NEW), "--quiet"], out + ".log", check=False)
        log = open(out + ".log").read().strip()
        if rc:
            check(False, "mbpo-score loads TRL's saved model (transformers %s save format)" % v["transformers"],
                  "exit %d: %s" % (rc, log.splitlines()[-1] if log else ""))
            return
        m = AutoModelForImageTextToText.from_pretrained(trl_out, dtype=torch.float32).eval()
        p = AutoProcessor.from_pretrained(trl_out)
        base = AutoModelForImageTextToText.from_pretrained(ckpt, dtype=torch.float32)
        moved = max(float((x - y).abs().max()) for x, y in zip(m.parameters(), base.parameters()))
        hf_trl = generate_all(m, p, tests, images)
        rows = read_jsonl(out)
        same, n_m, n_h, first = compare_responses(rows, hf_trl)
        d = iig_diff(rows, iig_all(m, p, tests, images))
        check(same == n_m == len(tests) and d <= IIG_TOL, "mbpo-score loads TRL's saved model = transformers %s %s" % (
              v["transformers"], type(p.image_processor).__name__),
              "exit 0, responses %d/%d, IIG max |diff| %.1e; weights moved up to %.3g by DPO; saved config: rope_scaling %s, text_config %s; "
              "preprocessor %s%s%s" % (
                  same, len(tests), d, moved, json.dumps(cfg.get("rope_scaling")), "yes" if "text_config" in cfg else "no",
                  pre.get("image_processor_type"), " with size %s" % json.dumps(pre["size"]) if "size" in pre else "",
                  "" if first is None else "; first differs at %d: mbpo %r, transformers %r" % first))
    if dpo_ok:
        check.guard("mbpo-score loads TRL's saved model", trl_in_mbpo)

    # ---- 5. LLaMA-Factory
    offline_rows = read_jsonl(os.path.join(export, "llamafactory_dpo.jsonl"))
    if not lf_python:
        print("SKIPPED  LLaMA-Factory: no --lf-venv (LF_VENV=) given")
    else:
        def lf_load():
            res = os.path.join(W, "lf_load.json")
            run([lf_python, __file__, "--part", "lf-load", "--model", ckpt, "--export", export, "--work", W, "--result", res],
                os.path.join(W, "lf_load.log"), env=PY_ENV)
            r = json.load(open(res))
            # mbpo's ids for the same pairs: the question, the image's tokens, the response and <|im_end|>\n
            its = []
            for row in offline_rows:
                q = row["conversations"][0]["value"]
                its += [{"mbpo": {"question": q, "image_tokens": [n_img], "response": row["chosen"]["value"]}},
                        {"mbpo": {"question": q, "image_tokens": [n_img], "response": row["rejected"]["value"]}}]
            ids, _ = mbpo_encode(its, W, os.path.join(ckpt, "tokenizer.json"), "lf")
            pad = proc.tokenizer.convert_tokens_to_ids("<|image_pad|>")
            same_c = sum(x == y for x, y in zip(r["chosen"], ids[0::2]))
            same_r = sum(x == y for x, y in zip(r["rejected"], ids[1::2]))
            pads = sorted(set(x.count(pad) for x in r["chosen"]))
            first = next(((k, proc.tokenizer.decode(x[-12:]), proc.tokenizer.decode(y[-12:]))
                          for k, (x, y) in enumerate(zip(r["chosen"], ids[0::2])) if x != y), None)
            check(len(r["chosen"]) == len(offline_rows) and same_c == same_r == len(offline_rows),
                  "LLaMA-Factory %s get_dataset(template qwen2_vl) on export/dataset_info.json" % lv["llamafactory"],
                  "%d/%d rows; chosen ids = mbpo %d/%d, rejected %d/%d; image pads per row %s%s" % (
                      len(r["chosen"]), len(offline_rows), same_c, len(offline_rows), same_r, len(offline_rows), pads,
                      "" if first is None else "; first differs at %d: LF ...%r, mbpo ...%r" % first))
        check.guard("LLaMA-Factory get_dataset on export/", lf_load)

        def lf_train():
            out = os.path.join(W, "lf-dpo")
            cfg = {"model_name_or_path": ckpt, "stage": "dpo", "do_train": True, "finetuning_type": "full", "pref_beta": 0.1,
                   "pref_loss": "sigmoid", "dataset": "mbpo_offline", "dataset_dir": export, "template": "qwen2_vl",
                   "cutoff_len": 512, "overwrite_cache": True, "preprocessing_num_workers": 1, "output_dir": out,
                   "logging_steps": 1, "save_strategy": "no", "report_to": "none", "per_device_train_batch_size": 2,
                   "gradient_accumulation_steps": 1, "learning_rate": 5e-5, "max_steps": 2, "bf16": False, "use_cpu": True,
                   "seed": 5}
            yml = os.path.join(W, "lf_dpo.yaml")
            with open(yml, "w") as f:   # JSON is YAML
                json.dump(cfg, f, indent=1)
            t1 = time.time()
            env = dict(PY_ENV, CUDA_VISIBLE_DEVICES="")
            rc, _ = run([os.path.join(a.lf_venv, "bin", "llamafactory-cli"), "train", yml], os.path.join(W, "lf_train.log"),
                        env=env, check=False)
            logs = read_jsonl(os.path.join(out, "trainer_log.jsonl")) if os.path.exists(os.path.join(out, "trainer_log.jsonl")) else []
            losses = [x["loss"] for x in logs if "loss" in x]
            tail = open(os.path.join(W, "lf_train.log")).read().strip().splitlines()
            check(rc == 0 and len(losses) == 2, "llamafactory-cli train (stage dpo, 2 steps, CPU) on export/",
                  "exit %d, loss %s, %.1f s%s" % (rc, " ".join("%.5f" % x for x in losses), time.time() - t1,
                                                  "" if rc == 0 else "; " + (tail[-1] if tail else "")))
        check.guard("llamafactory-cli train on export/", lf_train)

        def lf_in_mbpo():
            lf_out = os.path.join(W, "lf-dpo")
            out = os.path.join(W, "score_lf.jsonl")
            rc, _ = run([b("mbpo-score"), "--model", lf_out, "--data", test_file, "--image-root", images, "--out", out,
                         "--max-new-tokens", str(MAX_NEW), "--quiet"], out + ".log", check=False)
            log = open(out + ".log").read().strip()
            if rc:
                check(False, "mbpo-score loads LLaMA-Factory's saved model (transformers %s save format)" % lv["transformers"],
                      "exit %d: %s" % (rc, log.splitlines()[-1] if log else ""))
                return
            spec, res = os.path.join(W, "gen5_spec.json"), os.path.join(W, "gen5.json")
            json.dump({"tests": test_file, "images": images}, open(spec, "w"))
            run([lf_python, __file__, "--part", "gen5", "--model", lf_out, "--spec", spec, "--result", res],
                os.path.join(W, "gen5.log"), env=PY_ENV)
            r = json.load(open(res))
            rows = read_jsonl(out)
            same, n_m, n_h, first = compare_responses(rows, r["responses"])
            d = iig_diff(rows, r["iig"])
            d_res = iig_diff(rows[n_world_tests:], r["iig"][n_world_tests:])
            files = sorted(f for f in os.listdir(lf_out) if f.endswith(".json") or f.endswith(".jinja"))
            check(same == n_m == len(tests) and d <= IIG_TOL, "mbpo-score loads LLaMA-Factory's saved model = transformers %s %s" % (
                  lv["transformers"], r["processor"]),
                  "exit 0, responses %d/%d, IIG max |diff| %.1e (resized images %.1e); folder: %s%s" % (
                      same, len(tests), d, d_res, " ".join(files),
                      "" if first is None else "; first differs at %d: mbpo %r, transformers %r" % first))
        check.guard("mbpo-score loads LLaMA-Factory's saved model", lf_in_mbpo)

    # ---- 6. EasyR1
    if not a.easyr1:
        print("SKIPPED  EasyR1: no --easyr1 (EASYR1=) given (a checkout of hiyouga/EasyR1, the folder holding verl/)")
    else:
        def easyr1():
            res = os.path.join(W, "easyr1.json")
            # a fresh process: RLHFDataset's filter forks (datasets num_proc) and must not inherit torch's threads
            run([sys.executable, __file__, "--part", "easyr1", "--easyr1", a.easyr1, "--model", ckpt, "--export", export,
                 "--result", res], os.path.join(W, "easyr1.log"), env=PY_ENV)
            r = json.load(open(res))
            rows = read_jsonl(os.path.join(export, "easyr1.jsonl"))
            ids, _ = mbpo_encode([{"mbpo": {"question": rows[0]["problem"], "image_tokens": [n_img]}}], W,
                                 os.path.join(ckpt, "tokenizer.json"), "easyr1")
            got = r["ids"]
            pad = proc.tokenizer.convert_tokens_to_ids("<|image_pad|>")
            check(r["rows"] == len(rows) and got.count(pad) == n_img and got == ids[0] and r["ground_truth"] == rows[0]["answer"],
                  "EasyR1 RLHFDataset on export/easyr1.jsonl",
                  "%d/%d rows; ds[0]: %d tokens, %d image pads, prompt ids = mbpo's: %s, ground_truth %r, images %s" % (
                      r["rows"], len(rows), len(got), got.count(pad), "yes" if got == ids[0] else "NO",
                      r["ground_truth"], r["images"]))
        check.guard("EasyR1 RLHFDataset on export/easyr1.jsonl", easyr1)

    print("%d passed, %d failed (%.0f s)" % (check.passed, check.failed, time.time() - t_start))
    return 1 if check.failed else 0


if __name__ == "__main__":
    sys.exit(main())
