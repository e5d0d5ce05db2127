"""Tokenizer encoding speed of HF `tokenizers` (Rust), single thread, side by side with mbpo.

Writes the benchmark text (English prose from Python's own documentation, pydoc_data.topics,
plus the parity corpus of tests/fixtures/tokenizer/cases.jsonl) to --text-out, then times
encoding it the way build/mbpo-bench --tokenizer does: the whole text as one string, or line
by line (encode_batch, so Python's loop is not what is measured), warm cache, best protocol
shared: `warmup` untimed passes, then the mean of `iters` timed passes.

    python tests/reference/bench_tokenizer.py --tokenizer tests/fixtures/tokenizer/tokenizer.json \
        --text-out build/bench_text.txt [--lines]
"""
import argparse
import json
import os
import time

os.environ["RAYON_NUM_THREADS"] = "1"           # tokenizers' thread pool: one thread
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import pydoc_data.topics  # noqa: E402
import tokenizers  # noqa: E402


def bench_text(cases_path):
    parts = [pydoc_data.topics.topics[k] for k in sorted(pydoc_data.topics.topics)]
    with open(cases_path, encoding="utf-8") as f:
        parts += [json.loads(line)["text"] for line in f]
    return "\n".join(p.replace("\r", "") for p in parts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--text-out", required=True)
    ap.add_argument("--cases", default="tests/fixtures/tokenizer/cases.jsonl")
    ap.add_argument("--lines", action="store_true")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    a = ap.parse_args()
    text = bench_text(a.cases)
    data = text.encode("utf-8")
    with open(a.text_out, "wb") as f:
        f.write(data)
    tok = tokenizers.Tokenizer.from_file(a.tokenizer)
    lines = text.split("\n") if a.lines else None
    for i in range(a.warmup + a.iters):
        if i == a.warmup:
            t0 = time.perf_counter()
        if lines is not None:
            encs = tok.encode_batch(lines, add_special_tokens=False)
            ids = [i for e in encs for i in e.ids]
        else:
            ids = tok.encode(text, add_special_tokens=False).ids
    dt = (time.perf_counter() - t0) / a.iters
    checksum = 0
    for i in ids:
        checksum = (checksum * 31 + i) & 0xFFFFFFFFFFFFFFFF
    print("hf tokenizers %s (%s): %.2f MB, %d strings, %d ids, %.4f s/iter, %.2f MB/s (ids checksum %016x)" % (
        tokenizers.__version__, "lines" if a.lines else "whole", len(data) / 1e6, len(lines) if lines else 1,
        len(ids), dt, len(data) / 1e6 / dt, checksum))


if __name__ == "__main__":
    main()
