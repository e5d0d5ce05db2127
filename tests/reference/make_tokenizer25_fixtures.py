#!/usr/bin/env python3
"""Generate the Qwen2.5-VL tokenizer fixture (the 8 extra non-special added tokens).

Usage (from the repository root, after make_tokenizer_fixtures.py has made tests/fixtures/tokenizer):
    /tmp/venv-trl/bin/python tests/reference/make_tokenizer25_fixtures.py --out tests/fixtures/tokenizer25

Spec: docs/QWEN25VL.md section 6. Qwen2.5-VL uses the Qwen2 tokenizer of Qwen2-VL plus the added tokens
151657..151664 (<tool_call> ... <|file_sep|>) with special=false: they are split off whole before the BPE
like the special tokens, but decode(skip_special_tokens=True) keeps them.

Outputs (all in --out):
    tokenizer.json         = ../tokenizer/tokenizer.json + the 8 added tokens (special false, normalized
                             false), saved by `tokenizers`; everything else unchanged (checked)
    tokenizer_config.json  copy of the Qwen2.5-VL-7B-Instruct file (/work/shared/configs): 22 added tokens,
                           no padding_side key (right padding), model_max_length 131072
    chat_template.json     copy of ../tokenizer/chat_template.json (byte-identical to Qwen2.5-VL's)
    expected.json          encodings of strings around the new tokens, decodes of id lists, two chat
                           template renderings (tool call, fill-in-the-middle), metadata

Only the public APIs of `tokenizers` and `transformers` are used; the output is deterministic.
"""

import argparse
import hashlib
import json
import os
import platform
import shutil

import tokenizers
import transformers
from tokenizers import AddedToken, Tokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
BASE_DIR = os.path.join(REPO, "tests", "fixtures", "tokenizer")
CONFIG_DIR = "/work/shared/configs/Qwen2.5-VL-7B-Instruct"

FIRST_EXTRA = 151657
EXTRA = ["<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
         "<|repo_name|>", "<|file_sep|>"]

TEXTS = [
    "<tool_call>",
    "</tool_call>",
    "<tool_call></tool_call>",
    'Call it: <tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call> done.',
    "<|im_start|>assistant\n<tool_call>\n{\"name\": \"f\"}\n</tool_call><|im_end|>\n",
    "<|fim_prefix|>def add(a, b):\n<|fim_suffix|>\n    return c<|fim_middle|>",
    "<|repo_name|>mbpo\n<|file_sep|>mbpo.h\n#include <stdio.h>\n<|file_sep|>README.md\n# mbpo",
    "foo<|file_sep|>bar baz<|fim_pad|>qux",
    "x<|fim_pad|><|fim_pad|><|endoftext|>y<|fim_pad|>",
    "  <tool_call>  \n\t</tool_call>\n\n",
    "<|vision_start|><|image_pad|><|vision_end|><tool_call>What is this?</tool_call>",
    "e\u0301<tool_call>\u0301e</tool_call>\u00e9",
    "\u4e2d\u6587<|fim_middle|>\u6587\u672c<|repo_name|>\u65e5\u672c\u8a9e",
    "<tool_call <tool_call>> <TOOL_CALL> < tool_call> <tool_call/> <|fim_prefix| <|fim_prefix|>>",
    "<</tool_call>tool_call>",
    "</tool_call><tool_call><|fim_prefix|><|fim_middle|><|fim_suffix|><|fim_pad|><|repo_name|><|file_sep|>",
]


def sha256_file(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def build_tokenizer_json(base_path, out_path):
    tok = Tokenizer.from_file(base_path)
    n_before = tok.get_vocab_size(with_added_tokens=True)
    assert n_before == FIRST_EXTRA, n_before
    added = tok.add_tokens([AddedToken(c, single_word=False, lstrip=False, rstrip=False, normalized=False,
                                       special=False) for c in EXTRA])
    assert added == len(EXTRA), added
    tok.save(out_path)

    base = json.load(open(base_path, encoding="utf-8"))
    new = json.load(open(out_path, encoding="utf-8"))
    want = [{"id": FIRST_EXTRA + i, "content": c, "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": False} for i, c in enumerate(EXTRA)]
    assert new["added_tokens"] == base["added_tokens"] + want, new["added_tokens"][-9:]
    assert {k: v for k, v in new.items() if k != "added_tokens"} == \
           {k: v for k, v in base.items() if k != "added_tokens"}, "tokenizer.json differs outside added_tokens"
    # textual check: the re-saved file is the old one with the 8 entries spliced in at the end of
    # added_tokens (same formatting, same order of everything else)
    base_txt = open(base_path, encoding="utf-8").read()
    new_txt = open(out_path, encoding="utf-8").read()
    end_mark = "\n  ],\n  \"normalizer\""
    b_end, n_end = base_txt.index(end_mark), new_txt.index(end_mark)
    assert new_txt[:b_end] == base_txt[:b_end], "tokenizer.json: text before the new added tokens changed"
    assert new_txt[n_end:] == base_txt[b_end:], "tokenizer.json: text after added_tokens changed"
    assert json.loads("[" + new_txt[b_end:n_end].lstrip(",") + "]") == want
    return Tokenizer.from_file(out_path)


def check_config(cfg_path, template):
    cfg = json.load(open(cfg_path, encoding="utf-8"))
    dec = cfg["added_tokens_decoder"]
    assert len(dec) == 22, len(dec)
    for i, c in enumerate(EXTRA):
        e = dec[str(FIRST_EXTRA + i)]
        assert e["content"] == c and e["special"] is False and e["normalized"] is False, e
    assert all(dec[str(i)]["special"] for i in range(151643, FIRST_EXTRA))
    assert "padding_side" not in cfg
    assert cfg["model_max_length"] == 131072
    assert cfg["add_bos_token"] is False and cfg["bos_token"] is None
    assert cfg["eos_token"] == "<|im_end|>" and cfg["pad_token"] == "<|endoftext|>"
    assert cfg["split_special_tokens"] is False
    assert cfg["chat_template"] == template
    return cfg


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(REPO, "tests", "fixtures", "tokenizer25"))
    ap.add_argument("--base", default=BASE_DIR, help="the Qwen2-VL tokenizer fixture folder")
    args = ap.parse_args()
    out = args.out
    os.makedirs(out, exist_ok=True)

    # ---- files ------------------------------------------------------------------------------------
    tok = build_tokenizer_json(os.path.join(args.base, "tokenizer.json"), os.path.join(out, "tokenizer.json"))
    base_tok = Tokenizer.from_file(os.path.join(args.base, "tokenizer.json"))
    shutil.copyfile(os.path.join(CONFIG_DIR, "tokenizer_config.json"), os.path.join(out, "tokenizer_config.json"))
    shutil.copyfile(os.path.join(args.base, "chat_template.json"), os.path.join(out, "chat_template.json"))
    assert sha256_file(os.path.join(out, "chat_template.json")) == \
        sha256_file(os.path.join(CONFIG_DIR, "chat_template.json")), "chat template differs from Qwen2.5-VL's"
    with open(os.path.join(out, "chat_template.json"), encoding="utf-8") as f:
        template = json.load(f)["chat_template"]
    check_config(os.path.join(out, "tokenizer_config.json"), template)

    from transformers import AutoTokenizer
    hf = AutoTokenizer.from_pretrained(out)
    assert hf.is_fast
    assert hf.padding_side == "right", hf.padding_side
    assert len(hf) == FIRST_EXTRA + len(EXTRA), len(hf)
    for i, c in enumerate(EXTRA):
        assert hf.convert_tokens_to_ids(c) == FIRST_EXTRA + i
        assert FIRST_EXTRA + i not in hf.all_special_ids

    # ---- encodings ----------------------------------------------------------------------------------
    cases = []
    for text in TEXTS:
        enc = tok.encode(text, add_special_tokens=False)
        ids = enc.ids
        hf_ids = hf(text, add_special_tokens=False)["input_ids"]
        assert hf_ids == ids, (text, hf_ids, ids)
        dec = tok.decode(ids, skip_special_tokens=False)
        dec_skip = tok.decode(ids, skip_special_tokens=True)
        assert hf.decode(ids, skip_special_tokens=False) == dec
        assert hf.decode(ids, skip_special_tokens=True) == dec_skip
        cases.append({"text": text, "ids": ids, "tokens": enc.tokens, "offsets": [list(o) for o in enc.offsets],
                      "decoded": dec, "decoded_skip": dec_skip,
                      "ids_qwen2vl": base_tok.encode(text, add_special_tokens=False).ids})

    # ---- decodes ------------------------------------------------------------------------------------
    hello = tok.encode("Hello world", add_special_tokens=False).ids
    id_lists = [
        [FIRST_EXTRA + i for i in range(len(EXTRA))],
        list(range(151643, FIRST_EXTRA + len(EXTRA))),
        [151644, 77091, 198, 151657, 198, 151658, 151645, 198],
        [151643, 151657, 151643, 151658, 151643],
        hello + [151664] + hello + [151662, 151662] + [151655] * 3 + hello,
        [151659] + hello + [151661] + hello + [151660],
        [151663],
        [151652, 151655, 151653, 151657] + hello + [151658, 151645],
    ]
    decodes = []
    for ids in id_lists:
        d = tok.decode(ids, skip_special_tokens=False)
        ds = tok.decode(ids, skip_special_tokens=True)
        assert hf.decode(ids, skip_special_tokens=False) == d and hf.decode(ids, skip_special_tokens=True) == ds
        decodes.append({"ids": ids, "decoded": d, "decoded_skip": ds})

    # ---- chat template: a tool call in an assistant turn, an image in the user turn ----------------------
    chats = []
    conversations = [
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is the weather there?"}]},
         {"role": "assistant", "content": '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n'
                                          '</tool_call>'}],
        [{"role": "system", "content": "Complete the code."},
         {"role": "user", "content": "<|fim_prefix|>int f(void) {<|fim_suffix|>}<|fim_middle|>"}],
    ]
    for messages in conversations:
        rendered = hf.apply_chat_template(messages, chat_template=template, tokenize=False,
                                          add_generation_prompt=messages[-1]["role"] != "assistant")
        ids = tok.encode(rendered, add_special_tokens=False).ids
        assert hf(rendered, add_special_tokens=False)["input_ids"] == ids
        chats.append({"messages": messages, "add_generation_prompt": messages[-1]["role"] != "assistant",
                      "rendered": rendered, "ids": ids})

    expected = {
        "generator": "tests/reference/make_tokenizer25_fixtures.py",
        "spec": "docs/QWEN25VL.md section 6",
        "versions": {"python": platform.python_version(), "tokenizers": tokenizers.__version__,
                     "transformers": transformers.__version__},
        "sources": {
            "tokenizer.json": "tests/fixtures/tokenizer/tokenizer.json (sha256 %s) + 8 added tokens, saved by "
                              "tokenizers; identical outside added_tokens (checked, also textually)"
                              % sha256_file(os.path.join(args.base, "tokenizer.json")),
            "tokenizer_config.json": CONFIG_DIR + "/tokenizer_config.json (copy)",
            "chat_template.json": "tests/fixtures/tokenizer/chat_template.json (copy, == Qwen2.5-VL's)",
        },
        "sha256": {n: sha256_file(os.path.join(out, n))
                   for n in ("tokenizer.json", "tokenizer_config.json", "chat_template.json")},
        "extra_added_tokens": {str(FIRST_EXTRA + i): c for i, c in enumerate(EXTRA)},
        "hf_tokenizer": {"class": type(hf).__name__, "padding_side": hf.padding_side,
                         "model_max_length": hf.model_max_length, "len": len(hf),
                         "all_special_ids": sorted(hf.all_special_ids),
                         "eos_token_id": hf.eos_token_id, "pad_token_id": hf.pad_token_id,
                         "bos_token_id": hf.bos_token_id},
        "conventions": "ids/tokens/offsets = tokenizers.Tokenizer.encode(text, add_special_tokens=False) "
                       "(== transformers AutoTokenizer(text, add_special_tokens=False) input_ids, checked); "
                       "offsets are character offsets [start,end); decoded/decoded_skip = decode(ids, "
                       "skip_special_tokens=False/True) (tokenizers == transformers, checked); ids_qwen2vl = "
                       "the same text with the Qwen2-VL tokenizer (no extra added tokens) for contrast",
        "cases": cases,
        "decode_cases": decodes,
        "chat_cases": chats,
    }
    with open(os.path.join(out, "expected.json"), "w", encoding="utf-8", newline="\n") as f:
        json.dump(expected, f, ensure_ascii=True, indent=1, sort_keys=False)
        f.write("\n")

    for c in cases:
        print(ascii(c["text"])[:70], "->", c["ids"][:16], "..." if len(c["ids"]) > 16 else "")
    for d in decodes:
        print(d["ids"][:12], "skip ->", ascii(d["decoded_skip"])[:60])
    for n, h in expected["sha256"].items():
        print(n, os.path.getsize(os.path.join(out, n)), h)


if __name__ == "__main__":
    main()
