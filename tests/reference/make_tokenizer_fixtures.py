#!/usr/bin/env python3
"""Generate the tokenizer fixtures for the mbpo Qwen2-VL C port.

Usage (from the repository root):
    /tmp/venv/bin/python tests/reference/make_tokenizer_fixtures.py --out tests/fixtures/tokenizer

Spec: docs/QWEN2VL.md sections 5 (chat template, special tokens), 7 (tokenizer) and 9 step 12.

The Qwen2 byte-level BPE vocabulary is rebuilt from `qwen.tiktoken`, which Alibaba ships in the
Apache-2.0 `dashscope` 2.0.2 wheel on PyPI (151,643 base64 byte strings with their ranks = ids).
The merges are recovered from the ranks: for a token of rank r, byte-pair-merging its bytes with only
the pairs of rank < r leaves exactly two parts, and that pair is merge number r - 256. The
`tokenizers` library then assembles and saves tokenizer.json (NFC normaliser, the Qwen2 split regex,
byte-level mapping, 14 special tokens 151643..151656).

Outputs (all in --out):
    tokenizer.json, tokenizer_config.json, chat_template.json, SOURCE.md, meta.json
    cases.jsonl                  {"text", "ids", "decoded", "decoded_skip"}       encode + decode
    decode_cases.jsonl           {"ids", "decoded", "decoded_skip"}               decode only
    chat_cases.jsonl             {"system", "question", "image_tokens", "response",
                                  "ids", "target", "rendered"}                    chat template
    unicode_version_cases.jsonl  like cases.jsonl plus "note": strings on which the result depends
                                 on the Unicode version of the tables (see meta.json)

Everything is deterministic: fixed seeds, sorted output, no timestamps or temporary paths.
Only the public APIs of `tokenizers` and `transformers` are used.
"""

import argparse
import base64
import hashlib
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import unicodedata
import zipfile

import tokenizers
import transformers
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
CONFIG_DIR = "/work/shared/configs/Qwen2-VL-2B-Instruct"

DASHSCOPE_REQ = "dashscope==2.0.2"
TIKTOKEN_MEMBER = "dashscope/resources/qwen.tiktoken"
TIKTOKEN_SHA256 = "b2b1b8dfb5cc5f024bafc373121c6aba3f66f9a5a0269e243470a1de16a33186"

N_REGULAR = 151643
SPECIALS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
]
N_TOTAL = N_REGULAR + len(SPECIALS)  # 151657
SPLIT_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")

KNOWN_IDS = [
    ("Hello world", [9707, 1879]),
    (" Hello world", [21927, 1879]),
    ("\n", [198]),
    ("You are a helpful assistant.", [2610, 525, 264, 10950, 17847, 13]),
    ("user", [872]),
    ("assistant", [77091]),
    ("system", [8948]),
]

IMAGE_PAD = "<|image_pad|>"
PLACEHOLDER = "<image>"


def sha256_bytes(b):
    return hashlib.sha256(b).hexdigest()


def sha256_file(path):
    with open(path, "rb") as f:
        return sha256_bytes(f.read())


# =============================================================================================
# 1. tokenizer.json
# =============================================================================================

def fetch_tiktoken(local_path):
    """Return (bytes of qwen.tiktoken, sha256 of the wheel or None)."""
    if local_path:
        with open(local_path, "rb") as f:
            data = f.read()
        wheel_sha = None
    else:
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run([sys.executable, "-m", "pip", "download", DASHSCOPE_REQ, "--no-deps",
                            "--only-binary=:all:", "-d", tmp, "-q"], check=True)
            wheels = [n for n in os.listdir(tmp) if n.endswith(".whl")]
            if len(wheels) != 1:
                raise SystemExit(f"expected one wheel from pip download, got {wheels}")
            wheel = os.path.join(tmp, wheels[0])
            wheel_sha = sha256_file(wheel)
            with zipfile.ZipFile(wheel) as z:
                data = z.read(TIKTOKEN_MEMBER)
    got = sha256_bytes(data)
    if got != TIKTOKEN_SHA256:
        raise SystemExit(f"qwen.tiktoken sha256 mismatch: {got} != {TIKTOKEN_SHA256}")
    return data, wheel_sha


def byte_to_char_table():
    """GPT-2 style reversible byte -> printable code point map (docs/QWEN2VL.md 7, step 4)."""
    keep = list(range(0x21, 0x7F)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    table = {b: chr(b) for b in keep}
    nxt = 0x100
    for b in range(256):
        if b not in table:
            table[b] = chr(nxt)
            nxt += 1
    return [table[b] for b in range(256)]


def parse_tiktoken(data):
    ranks = {}
    for line in data.splitlines():
        if not line.strip():
            continue
        tok_b64, rank = line.split()
        ranks[base64.b64decode(tok_b64)] = int(rank)
    if sorted(ranks.values()) != list(range(N_REGULAR)):
        raise SystemExit("qwen.tiktoken ranks are not exactly 0..151642")
    return ranks


def recover_merges(ranks):
    """Merge list in rank order: merge i produces the token of rank 256 + i."""
    by_rank = sorted(ranks.items(), key=lambda kv: kv[1])
    merges = []
    for tok, r in by_rank:
        if len(tok) == 1:
            if r >= 256:
                raise SystemExit("single byte with rank >= 256")
            continue
        parts = [tok[i:i + 1] for i in range(len(tok))]
        while len(parts) > 2:
            best_rank, best_i = None, -1
            for i in range(len(parts) - 1):
                pr = ranks.get(parts[i] + parts[i + 1])
                if pr is not None and pr < r and (best_rank is None or pr < best_rank):
                    best_rank, best_i = pr, i
            if best_rank is None:
                break
            parts[best_i:best_i + 2] = [parts[best_i] + parts[best_i + 1]]
        if len(parts) != 2 or ranks.get(parts[0] + parts[1]) != r:
            raise SystemExit(f"cannot recover the merge of rank {r}")
        if r != 256 + len(merges):
            raise SystemExit(f"rank {r}: merges are not contiguous")
        merges.append((parts[0], parts[1]))
    return merges


def build_tokenizer(ranks):
    b2c = byte_to_char_table()

    def enc(b):
        return "".join(b2c[x] for x in b)

    vocab = {enc(t): r for t, r in ranks.items()}
    merges = [(enc(a), enc(b)) for a, b in recover_merges(ranks)]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, dropout=None, unk_token=None,
                               continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False,
                               byte_fallback=False, ignore_merges=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tok.add_special_tokens([AddedToken(s, single_word=False, lstrip=False, rstrip=False,
                                       normalized=False, special=True) for s in SPECIALS])
    # The Python constructor of decoders.ByteLevel takes no options, so it serialises as
    # true/true/true; the published Qwen2 tokenizer.json files have false/false/false. Decoding does
    # not read them; set them to the published values.
    j = json.loads(tok.to_str())
    j["decoder"] = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
    return Tokenizer.from_str(json.dumps(j, ensure_ascii=False)), len(merges)


def check_tokenizer(tok, path):
    j = json.load(open(path, encoding="utf-8"))
    added = j["added_tokens"]
    assert [a["id"] for a in added] == list(range(N_REGULAR, N_TOTAL)), "special ids"
    assert [a["content"] for a in added] == SPECIALS, "special contents"
    assert all(a["special"] and not a["normalized"] and not a["lstrip"] and not a["rstrip"]
               and not a["single_word"] for a in added), "special flags"
    assert tok.get_vocab_size(with_added_tokens=True) == N_TOTAL
    for text, want in KNOWN_IDS:
        got = tok.encode(text, add_special_tokens=False).ids
        assert got == want, f"{text!r}: {got} != {want}"
    # every regular token must come out of the BPE as itself (checks the recovered merges)
    bare = Tokenizer(models.BPE(vocab=j["model"]["vocab"],
                                merges=[tuple(m) if isinstance(m, list) else tuple(m.split(" "))
                                        for m in j["model"]["merges"]]))
    vocab = j["model"]["vocab"]
    keys = sorted(vocab, key=vocab.get)
    got = [e.ids for e in bare.encode_batch(keys, add_special_tokens=False)]
    bad = [k for k, g in zip(keys, got) if g != [vocab[k]]]
    assert not bad, f"{len(bad)} vocab entries do not encode to themselves, e.g. {bad[:5]}"


# =============================================================================================
# 2. encode corpus
# =============================================================================================

WORDS = ("the a of and to in is that it was for on are with as his they at be this from have or by "
         "one had not but what all were when we there can an your which their said if do will each "
         "about how up out them then she many some so these would other into has more her two like him "
         "see time could no make than first been its who now people my made over did down only way find "
         "use may water long little very after words called just where most know image photo picture "
         "color red blue green yellow black white cat dog car tree house person table chair street sky "
         "Hello World Python JSON HTTP USA NASA iPhone McDonald eBay OpenAI").split()

CHINESE = ["你好，世界", "这是一张图片。", "图片中有一只猫坐在桌子上。", "请描述这张图片的内容。",
           "天空是蓝色的，草地是绿色的。", "图中有几个人？", "答：三个人。", "我爱北京天安门",
           "机器学习和深度学习", "这个标志上写的是什么字？", "左上角有一辆红色的汽车",
           "《红楼梦》是中国古典小说", "价格：￥１２８．００", "第一章 总则", "中华人民共和国"]
JAPANESE = ["こんにちは世界", "これは猫の写真です。", "カタカナとひらがな", "東京タワーが見えます",
            "ｶﾀｶﾅ半角", "日本語のテキスト、句読点。", "ラーメン一杯ください！", "「こんにちは」と言った",
            "ゔ", "か\u3099", "ハ\u309A", "ガ", "ﾊﾟﾋﾟﾌﾟ"]
KOREAN = ["안녕하세요 세계", "이 사진에는 고양이가 있습니다.", "한국어 텍스트", "무엇이 보이나요?",
          "빨간 자동차가 주차되어 있다", "대한민국", "값은 ₩1,000입니다"]
ARABIC = ["مرحبا بالعالم", "هذه صورة لقطة سوداء", "ما لون السيارة؟", "العربية ١٢٣ ٤٥٦", "كِتَابٌ"]
HEBREW = ["שלום עולם", "זוהי תמונה של חתול", "מה יש בתמונה?", "עִבְרִית"]
CYRILLIC = ["Привет, мир!", "Что изображено на картинке?", "Съешь же ещё этих мягких французских булок",
            "Ёжик в тумане", "ПРИВЕТ", "українська мова: ґ є ї", "Й", "И\u0306"]
GREEK = ["Γειά σου Κόσμε", "Τι δείχνει η εικόνα;", "Τι δείχνει η εικόνα\u037E", "αβγδε ΑΒΓΔΕ",
         "ὁ λόγος", "ΐ", "ι\u0308\u0301", "Ω\u0301", "\u03B1\u0313\u0301"]
THAI = ["สวัสดีชาวโลก", "ภาพนี้แสดงอะไร", "ภาษาไทย ๑๒๓", "กรุงเทพมหานคร"]
DEVANAGARI = ["नमस्ते दुनिया", "इस चित्र में क्या है?", "हिन्दी ०१२३४", "क़लम", "क\u093Cलम", "ड़", "ज़िन्दगी"]
OTHER_SCRIPTS = ["Ողջույն աշխարհ", "გამარჯობა მსოფლიო", "வணக்கம் உலகம்", "ওহে বিশ্ব", "ಹಲೋ ವರ್ಲ್ಡ್",
                 "ሰላም ልዑል", "ᏣᎳᎩ", "ᠮᠣᠩᠭᠣᠯ", "ཀཁགང", "Xin chào thế giới", "Ελληνικά"]
MIXED_POOLS = [ARABIC, HEBREW, CYRILLIC, GREEK, THAI, DEVANAGARI, OTHER_SCRIPTS]

EMOJI = ["😀", "😂", "🚀", "❤", "❤️", "👍", "👍🏽", "👍🏿", "👋🏻", "👨‍👩‍👧‍👦", "👩‍💻", "🧑🏾‍🚀", "🏳️‍🌈",
         "🏴‍☠️", "🇯🇵", "🇺🇸", "🇩🇪🇫🇷", "🇦", "1️⃣", "#️⃣", "*️⃣", "9⃣", "©️", "™", "☺", "☺️", "🤷‍♂️",
         "🙇🏼‍♀️", "🐱", "🐈‍⬛", "🍕", "🎉", "🔥", "✨", "💯", "🫠", "🥹", "🪿", "⌚", "⏳", "☕", "🏴󠁧󠁢󠁳󠁣󠁴󠁿",
         "👁️‍🗨️", "🧔🏻‍♂️", "💏🏽", "👩🏻‍❤️‍💋‍👨🏿", "\u200d", "\ufe0f", "🏻"]

PUNCT_ATOMS = ["!", "!!!", "?", "?!", "!?", "...", "…", "--", "—", "–", "-", "_", "__init__", ",", ";", ":",
               "'", '"', "''", '""', "`", "```", "(", ")", "[", "]", "{", "}", "<", ">", "</", "/>", "<>",
               "&", "&&", "||", "|", "@", "#", "##", "$", "%", "^", "*", "**", "+", "=", "==", "!=", "=>",
               "->", "~", "\\", "/", "//", "«", "»", "“", "”", "‘", "’", "„", "¿", "¡", "§", "¶", "†",
               "•", "·", "°", "€", "£", "¥", "©", "®", "™", "←", "→", "∀", "∑", "√", "∞", "≤", "≥",
               "、", "。", "，", "！", "？", "：", "；", "（", "）", "【", "】", "「", "」", "《", "》", "・",
               "\u00AD", "\u200B", "\u2060", "\x7f", "\x00", "\x01", "\x1b", "\x1c", "\x1f"]

WS_ATOMS = [" ", "  ", "   ", "    ", "        ", "\u00A0", "\u00A0\u00A0", "\u3000", "\u2028", "\u2029",
            "\u0085", "\v", "\f", "\u2000", "\u2003", "\u2009", "\u200A", "\u202F", "\u205F", "\u1680",
            "\u180E", "\u200B", "\uFEFF", "\t", " \t", "\t ", "\x1c", "\x1d", "\x1e", "\x1f"]

NL_ATOMS = ["\n", "\r\n", "\r", "\n\n", "\r\n\r\n", "\r\r", "\n\r", "\r\r\n", "\n\n\n", " \n", "\n ",
            " \r\n", "\r\n ", "\t\n", "\n\t", "\u2028", "\u0085", "\v", "\f", " \n \n", "\n \n"]

COMBINING_FIXED = [
    "e\u0301", "E\u0301", "A\u030A", "\u212B", "\u00C5", "A\u030A\u0301", "a\u0323\u0302", "a\u0302\u0323",
    "\u1EAD", "a\u0323", "o\u031B\u0301", "o\u0301\u031B", "u\u031B\u0323", "\u0344", "\u0340", "\u0341",
    "\u0343", "\u0374", "\u037E", "\u0387", "\u1FEE", "\u2126", "\u212A", "\uF900", "\U0002F800",
    "\u1100\u1161", "\u1100\u1161\u11A8", "\uAC00\u11A8", "\u1112\u1161\u11AB\u1100\u1173\u11AF",
    "\u1100", "\u1161", "\u11A8", "\u1100\u1176", "\u115F\u1160", "\u0915\u093C", "\u0958",
    "\u095C", "\u09DC", "\u0A33", "\u0B5C", "\u0DD9\u0DCF", "\u0DDC", "Tie\u0302\u0301ng Vie\u0323\u0302t",
    "Tiếng Việt", "Ti\u00EA\u0301ng Vi\u1EB9\u0302t", "\u1EC7", "e\u0323\u0302", "e\u0302\u0323", "x\u0301",
    "\u0301", "\u0301\u0301", " \u0301", "a\u0301\u0301\u0301", "q\u0307\u0323", "q\u0323\u0307",
    "\u00E9\u0301", "a\u0328\u0301", "a\u0301\u0328", "\u0104\u0301", "\u01FA", "A\u030A\u0301",
    "\u1E9B\u0323", "\u017F\u0323\u0307", "C\u0327\u0301", "\u0399\u0308\u0301", "\u03B9\u0308\u0301",
    "\u0CBF\u0CD5", "\u0CC6\u0CC2\u0CD5", "\u0B47\u0B3E", "\u0BC6\u0BBE", "\u0D46\u0D3E",
    "\u1025\u102E", "\u1B05\u1B35", "\u05D1\u05BC", "\uFB31", "\u05E9\u05C1\u05BC", "\uFB2C",
    "\u0627\u0653", "\u0622", "\u0648\u0654", "\u3046\u3099", "\u30CF\u309A", "\u00F1", "n\u0303",
    "\u0041\u0300\u0316", "\u0041\u0316\u0300", "a\u05AE\u0300\u0316", "a\u0316\u05AE\u0300",
    "\u0E40\u0E01\u0E35\u0E48", "\u0E01\u0E48\u0E35", "\u0F71\u0F72", "\u0F73", "\u0F40\u0FB5",
    "\u2ADC", "\u2ADD\u0338", ">\u0338", "<\u0338", "=\u0338", "\u2260", "a>\u0338b",
    "\U0001D15E", "\U0001D157\U0001D165", "\U0001D1BB", "\U000110AB", "\U0001109A",
    "\U00011099\U000110BA", "\U0001112E", "\U00011131\U00011127", "\U0001134B", "\U00011347\U0001133E",
    "\U000114BB", "\U000114B9\U000114BA", "\U000115BA", "\U000115B8\U000115AF",
]

VQA_OBJECTS = ["cat", "dog", "car", "bus", "bicycle", "person", "tree", "stop sign", "traffic light", "cup",
               "laptop", "banana", "pizza", "umbrella", "horse", "clock", "bench", "boat", "kite", "giraffe"]
VQA_COLORS = ["red", "blue", "green", "yellow", "white", "black", "orange", "purple", "brown", "gray"]
VQA_PLACES = ["table", "street", "beach", "kitchen", "field", "sidewalk", "bed", "road", "wall", "floor"]
VQA_Q = [
    "What color is the {o}?", "How many {o}s are in the image?", "Is there a {o} on the {p}?",
    "What is the {o} doing?", "Where is the {o} located?", "Describe the image in detail.",
    "What is written on the sign?", "Which object is closest to the camera?", "Is it daytime or nighttime?",
    "What is the man holding in his left hand?", "Can you see any {o}s? Answer yes or no.",
    "What's the weather like in this picture?", "Why might the {o} be on the {p}?",
    "Please output the bounding box of the {o}.", "Q: what time does the clock show?\nA:",
    "Count the {o}s and give the number only.", "What brand is the {o}?",
    "Read the text in the image and translate it to English.", "Is the {o} bigger than the {o2}?",
    "What is the relationship between the {o} and the {o2}?",
]
VQA_A = [
    "The {o} is {c}.", "There are {n} {o}s.", "Yes.", "No.", "yes", "no", "{n}", "It's {c}.",
    "The {o} is on the {p}, next to a {c} {o2}.", "It is daytime; the sky is clear and {c}.",
    "The sign says \"STOP\".", "The clock shows {h}:{m:02d}.", "I can't tell from the image.",
    "<|object_ref_start|>the {o}<|object_ref_end|><|box_start|>({x1},{y1}),({x2},{y2})<|box_end|>",
    "A {c} {o} is standing on the {p} while a {o2} looks on. In the background there are {n} trees.",
    "Answer: {n}", "The {o} costs $ {n}.{m:02d}.", "{c}", "The {o}'s owner isn't visible.",
    "1. A {o}\n2. A {o2}\n3. A {p}",
]

CODE_SNIPPETS = [
    "def f(x):\n    return x * 2\n", "for (int i = 0; i < n; ++i) {\n\tsum += a[i];\n}",
    "if x == 1:\n\tprint('one')\nelse:\n\tprint(\"other\")", "#include <stdio.h>\nint main(void) { return 0; }",
    '{"name": "Qwen2-VL", "size": 2, "tags": ["vlm", "ocr"], "ok": true, "x": null}',
    '{\n  "a": [1, 2, 3],\n  "b": {"c": "d"}\n}', "SELECT * FROM users WHERE id = 42;",
    "# Title\n\n## Subtitle\n\n- item 1\n- item 2\n\n**bold** and _italic_ and `code`",
    "| a | b |\n|---|---|\n| 1 | 2 |", "<div class=\"x\">Hello</div>", "https://example.com/path?q=1&r=2#frag",
    "http://www.qwen.ai/", "mailto:someone@example.org", "C:\\Users\\name\\file.txt", "~/.bashrc",
    "x = [i**2 for i in range(10)]", "a->b; c::d; e=>f; g!==h; i>>=2;", "$100.50", "$ 1,234.56 USD",
    "50% off!!!", "e.g., i.e., etc.", "Mr. Smith's", "...and then?!", "--flag=value -v", "std::vector<int>",
    "```python\nprint(1)\n```", "    indented code\n\tand tab", "lambda: None  # comment",
]


def cat_whitespace(rng, n):
    out = [" ", "  ", "   ", "\u00A0", "\u3000", "\u2028", "\u0085", "\v", "\f", " \v ", "\f\f",
           "hello ", "hello  ", "hello   world", "  hello", "hello  world  ", " a b  c   d    e",
           "a\u00A0b", "a \u00A0b", "a\u00A0 b", "x\u3000y", "x\u3000\u3000y", "line\u2028next",
           "a\u0085b", "a\u2029b", "word\u200Bword", "\uFEFFBOM", "a\u180Eb", "a\u1680b", "a\u2003 b"]
    while len(out) < n:
        k = rng.randint(1, 8)
        parts = []
        for _ in range(k):
            r = rng.random()
            if r < 0.45:
                parts.append(rng.choice(WS_ATOMS) * rng.choice([1, 1, 1, 2, 3]))
            elif r < 0.9:
                parts.append(rng.choice(WORDS))
            else:
                parts.append(rng.choice(PUNCT_ATOMS[:40] + ["1", "42"]))
        s = "".join(parts)
        if rng.random() < 0.15:
            s = "".join(rng.choice(WS_ATOMS) for _ in range(rng.randint(1, 6)))  # only whitespace
        out.append(s)
    return out


def cat_newlines(rng, n):
    out = ["\n", "\r\n", "\r", "\n\n", "\r\r\n", "\n\r", "a\r\nb", "a\rb", "a\nb", "a\r\n\r\nb",
           "line1\rline2\nline3\r\nline4", "x \r\n y", "x\t\r\n\ty", "!!\r\n", "!!!\n\n", "?\r\r", "end.\n",
           "\n\nstart", "  \n  ", "\r\n \r\n", "a\n\u2028b", "a\u2028\nb", "1\n2\r3\r\n4"]
    while len(out) < n:
        k = rng.randint(1, 7)
        parts = []
        for _ in range(k):
            r = rng.random()
            if r < 0.45:
                parts.append(rng.choice(NL_ATOMS))
            elif r < 0.8:
                parts.append(rng.choice(WORDS) if rng.random() < 0.7 else " " + rng.choice(WORDS))
            elif r < 0.9:
                parts.append(rng.choice(PUNCT_ATOMS[:50]))
            else:
                parts.append(rng.choice(WS_ATOMS))
        out.append("".join(parts))
    return out


def cat_tabs(rng, n):
    out = ["\t", "\t\t", "\tindented", "a\tb", "a\t\tb", " \tx", "\t x", "x\t", "x \t", "\t\n", "\t1",
           "name\tage\tcity\nBob\t42\tParis\n", "\t\t\treturn 0;", "a\t\u00A0b", "\t!\t?", "\t'll"]
    while len(out) < n:
        k = rng.randint(1, 6)
        parts = []
        for _ in range(k):
            r = rng.random()
            if r < 0.4:
                parts.append("\t" * rng.randint(1, 4) + (" " * rng.randint(0, 3) if rng.random() < 0.3 else ""))
            elif r < 0.8:
                parts.append(rng.choice(WORDS))
            elif r < 0.9:
                parts.append(rng.choice(["1", "23", "4.5", "-", ":", "=", "//", "#"]))
            else:
                parts.append(rng.choice(NL_ATOMS[:6]))
        out.append("".join(parts))
    return out


DIGIT_SETS = ["0123456789", "٠١٢٣٤٥٦٧٨٩", "۰۱۲۳۴۵۶۷۸۹", "０１２３４５６７８９", "०१२३४५६७८९",
              "๐๑๒๓๔๕๖๗๘๙", "০১২৩৪৫৬৭৮৯", "⁰¹²³⁴⁵⁶⁷⁸⁹", "₀₁₂₃₄₅₆₇₈₉", "①②③④⑤⑥⑦⑧⑨",
              "ⅠⅡⅢⅣⅤⅥⅦⅧⅨ", "𝟎𝟏𝟐𝟑𝟒𝟓𝟔𝟕𝟖𝟗", "〇一二三四五六七八九"]


def cat_digits(rng, n):
    out = ["0", "7", "12345", "3.14159", "1,000,000", "٠١٢٣", "۱۲۳", "１２３", "x²³", "½", "¼ cup", "1½",
           "Ⅻ", "①②", "१२३", "๑๒", "abc123def", "v1.2.3", "2024-01-15", "+1 (555) 123-4567", "0x1F",
           "1e-9", "-42", " 42", "  42", "42nd", "3rd", "100%", "$5", "10:30", "1/2", "⅔", "²", "¹²³",
           "H₂O", "m³", "٣٫١٤", "9" * 50, " 1 2 3"]
    while len(out) < n:
        k = rng.randint(1, 5)
        parts = []
        for _ in range(k):
            r = rng.random()
            ds = rng.choice(DIGIT_SETS)
            if r < 0.5:
                parts.append("".join(rng.choice(ds) for _ in range(rng.randint(1, 12))))
            elif r < 0.7:
                parts.append(rng.choice([" ", "", ".", ",", "-", "/", ":", "  ", "+", "e", "x"]))
            elif r < 0.85:
                parts.append(rng.choice(WORDS))
            else:
                parts.append(rng.choice("½¼¾⅓⅔⅛") + rng.choice(["", " ", "x"]))
        out.append("".join(parts))
    return out


CONTRACTIONS = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d"]


def case_variants(rng, c):
    return "".join(ch.upper() if rng.random() < 0.5 else ch for ch in c)


def cat_contractions(rng, n):
    out = ["it's", "IT'S", "It'S", "they'Re", "WE'LL", "we'lL", "I'd", "I'M", "'s", "'S", "'ſ", "x'ſ",
           "x'ſt", "'ſ'ſ", "don't", "DON'T", "can't", "won't", "'tis", "2't", " 't", "''s", "'''ll",
           "x'sy", "rock'n'roll", "O'Neil", "it’s", "’s", "'S'S'S", "'ll've", "'LL", "'Ve", "'rE", "'D",
           "'M", "'T", "''", "'", "' s", "'x", "123's", "!'s", "😀's", "你'll", "\t'd", "\n're", " 's",
           "the cat's toy", "The Dog'S bone", "I've we've you've", "'sss", "'stop", "'mom"]
    while len(out) < n:
        k = rng.randint(1, 5)
        parts = []
        for _ in range(k):
            c = case_variants(rng, rng.choice(CONTRACTIONS))
            if rng.random() < 0.1:
                c = c.replace("s", "ſ").replace("S", "ſ")
            pre = rng.choice([rng.choice(WORDS), rng.choice(WORDS), "", " ", "1", "!", "'", "你", "é",
                              "x", "\n", "''"])
            post = rng.choice(["", "", " ", "s", "x", "!", "'", " and"])
            parts.append(pre + c + post)
        out.append(rng.choice(["", " "]).join(parts))
    return out


def cat_punct(rng, n):
    out = list(CODE_SNIPPETS) + ["!!!\n\n", "...", "?!", "--", "\"quoted\"", "'single'", "(parens)",
                                 "[brackets]", "{braces}", "<angle>", " !", "  !!", "a!b", " ...\r\n",
                                 "!!\n\n\n", "?\r", "«Bonjour»", "„Hallo“", "“smart”", "¿Qué?", "¡Hola!"]
    while len(out) < n:
        k = rng.randint(1, 6)
        parts = []
        for _ in range(k):
            r = rng.random()
            if r < 0.5:
                parts.append("".join(rng.choice(PUNCT_ATOMS) for _ in range(rng.randint(1, 4))))
            elif r < 0.8:
                parts.append(rng.choice(WORDS))
            elif r < 0.9:
                parts.append(rng.choice([" ", "  ", "\n", "\r\n", "\t"]))
            else:
                parts.append(str(rng.randint(0, 9999)))
        out.append("".join(parts))
    return out


def jamo(text):
    return unicodedata.normalize("NFD", text)


def cat_cjk(rng, n):
    out = CHINESE + JAPANESE + KOREAN + [jamo(s) for s in KOREAN] + [
        "\u1100\u1161\u11A8", "\u1100\u1161", "\u1100", "\u1161\u11A8", "\uAC00\u11A8", "\uAC01\u11A8",
        "\u1100\u1161\u1100\u1161", "\u1100\u1176\u11A8", "ᄒᆞᆫ", "Hello, 世界!", "GPU显存80GB", "中文English混合",
        "你好 ", " 你好", "你好\n世界", "（全角括号）", "。。。", "！！", "漢字かなカナ한글"]
    pools = [CHINESE, JAPANESE, KOREAN]
    while len(out) < n:
        k = rng.randint(1, 4)
        parts = []
        for _ in range(k):
            r = rng.random()
            if r < 0.7:
                s = rng.choice(rng.choice(pools))
                if rng.random() < 0.25:
                    s = jamo(s)
                parts.append(s)
            elif r < 0.85:
                parts.append(rng.choice([" ", "", "\n", "，", "。", "、", " - "]))
            else:
                parts.append(rng.choice(WORDS + ["123", "2024年", "GPT-4"]))
        s = "".join(parts)
        if rng.random() < 0.2:
            s = "".join(chr(rng.randint(0x4E00, 0x9FFF)) for _ in range(rng.randint(1, 30)))
        out.append(s)
    return out


def cat_emoji(rng, n):
    out = list(EMOJI) + ["hi😀", "😀 hi", "hi 😀", "😀😀😀", "👍🏽👍🏽", "a👨‍👩‍👧‍👦b", "🇯🇵🇺🇸", "1️⃣2️⃣",
                         "❤️❤️", " 🚀", "🚀!", "😀's", "emoji: 🎉🎉", "\u200d\u200d", "👨\u200d", "\u200d👨"]
    while len(out) < n:
        k = rng.randint(1, 6)
        parts = []
        for _ in range(k):
            r = rng.random()
            if r < 0.6:
                parts.append("".join(rng.choice(EMOJI) for _ in range(rng.randint(1, 3))))
            elif r < 0.85:
                parts.append(rng.choice(WORDS))
            else:
                parts.append(rng.choice([" ", "", "!", "\n", "  ", "1", "。"]))
        out.append(rng.choice(["", " "]).join(parts))
    return out


MARKS = ["\u0300", "\u0301", "\u0302", "\u0303", "\u0304", "\u0306", "\u0307", "\u0308", "\u030A", "\u030B",
         "\u030C", "\u031B", "\u0323", "\u0324", "\u0325", "\u0327", "\u0328", "\u032D", "\u0331", "\u0334",
         "\u0338", "\u0345", "\u0360", "\u0591", "\u05B0", "\u093C", "\u094D", "\u0E48", "\u3099", "\u302A"]
BASES = "aeiouAEIOUnNcCsSzZyYwWxqQ" + "αεηιουωΑΕΗΙΟΥΩ" + "аеиоуАЕИОУ" + "<>=" + "क" + "か"


def cat_combining(rng, n):
    out = list(COMBINING_FIXED)
    while len(out) < n:
        k = rng.randint(1, 6)
        parts = []
        for _ in range(k):
            r = rng.random()
            if r < 0.6:
                parts.append(rng.choice(BASES) + "".join(rng.choice(MARKS) for _ in range(rng.randint(1, 4))))
            elif r < 0.75:
                parts.append(rng.choice(COMBINING_FIXED))
            elif r < 0.9:
                parts.append(rng.choice(WORDS))
            else:
                parts.append(rng.choice([" ", "", "\n", "'", "!", "1"]))
        s = "".join(parts)
        if rng.random() < 0.15:
            s = unicodedata.normalize(rng.choice(["NFD", "NFKD"]), s)
        out.append(s)
    return out


PARTIAL_SPECIALS = ["<|im_start", "<|im_end|", "<|im_start|", "|im_start|>", "im_start|>", "<|IM_START|>",
                    "< |im_start|>", "<| im_end |>", "<|im_end |>", "<|endoftext", "<|image_pad", "<|unknown|>",
                    "<|>", "<||>", "<|", "|>", "<|vision_|>", "<|image_pad||>", "<image>", "</s>", "<s>",
                    "<|ＩＭ_start|>", "<|im_start|\u0301>"]


def cat_specials(rng, n):
    out = ["<|im_start|>", "<|im_end|>", "<|image_pad|>", "hello<|im_start|>world", " <|im_end|> ",
           "<|im_start|>user\nHi<|im_end|>\n", "<|vision_start|><|image_pad|><|vision_end|>",
           "<|image_pad|>" * 20, "<|endoftext|>" * 3, "<<|im_start|>>", "<|im_start|><|im_end|>",
           "<|im_start|>>", "<|im_start|>\u0338", "x<|im_end|>\u0338y", "<|im_end|>\u0323\u0338",
           "<|im_start|>assistant\n", "text<|endoftext|>", "<|object_ref_start|>dog<|object_ref_end|>"
           "<|box_start|>(10,20),(30,40)<|box_end|>", "<|quad_start|>1<|quad_end|>", "<|video_pad|><|vision_pad|>",
           "<|im_start|", "<|im_end|", "<|im_start", "<|im_start|>'s", "'<|im_end|>s", "é<|im_end|>\u0301",
           "<|im_start|>\u0301", "  <|im_start|>  ", "\n<|im_end|>\n", "<|im_end|>\n\n", "<|image_pad|>😀"]
    while len(out) < n:
        k = rng.randint(1, 8)
        parts = []
        for _ in range(k):
            r = rng.random()
            if r < 0.35:
                parts.append(rng.choice(SPECIALS) * rng.choice([1, 1, 1, 2, 3]))
            elif r < 0.5:
                parts.append(rng.choice(PARTIAL_SPECIALS))
            elif r < 0.8:
                parts.append(rng.choice(WORDS) if rng.random() < 0.6 else " " + rng.choice(WORDS))
            else:
                parts.append(rng.choice([" ", "  ", "\n", "\r\n", "!", "'s", "你好", "😀", "e\u0301", "\t"]))
        out.append("".join(parts))
    return out


def cat_long(rng, n):
    lower = "abcdefghijklmnopqrstuvwxyz"
    letters = lower + lower.upper()
    out = ["".join(rng.choice(lower) for _ in range(20000)),
           "".join(rng.choice(letters) for _ in range(20000))]
    kinds = ["lower", "letters", "same", "digits", "punct", "bang", "dash", "spaces", "newlines", "words",
             "cjk", "mixed", "nospace_words", "crlf"]
    while len(out) < n:
        length = int(round(200 * (25 ** rng.random())))  # log-uniform in [200, 5000]
        kind = kinds[len(out) % len(kinds)]
        if kind == "lower":
            s = "".join(rng.choice(lower) for _ in range(length))
        elif kind == "letters":
            s = "".join(rng.choice(letters) for _ in range(length))
        elif kind == "same":
            s = rng.choice("aeszAx") * length
        elif kind == "digits":
            s = "".join(rng.choice("0123456789") for _ in range(length))
        elif kind == "punct":
            s = "".join(rng.choice("!?.,;:-_=+*/\\|<>()[]{}\"'`~@#$%^&") for _ in range(length))
        elif kind == "bang":
            s = rng.choice(["!", "=", ".", "*", "#"]) * length
        elif kind == "dash":
            s = (" " if rng.random() < 0.5 else "") + "-" * length + "\n"
        elif kind == "spaces":
            s = "a" + " " * length + "b"
        elif kind == "newlines":
            s = "x" + "\n" * length
        elif kind == "words":
            s = " ".join(rng.choice(WORDS) for _ in range(length // 5))
        elif kind == "cjk":
            s = "".join(chr(rng.randint(0x4E00, 0x9FFF)) for _ in range(min(length, 1200)))
        elif kind == "mixed":
            s = "".join(rng.choice(letters + "0123456789 .,'!") for _ in range(length))
        elif kind == "nospace_words":
            s = "".join(rng.choice(WORDS) for _ in range(length // 5))
        else:
            s = "\r\n".join(rng.choice(WORDS) for _ in range(length // 6))
        out.append(s)
    return out


def cat_mixed_scripts(rng, n):
    out = [s for pool in MIXED_POOLS for s in pool]
    while len(out) < n:
        k = rng.randint(1, 6)
        parts = []
        for _ in range(k):
            r = rng.random()
            if r < 0.6:
                parts.append(rng.choice(rng.choice(MIXED_POOLS)))
            elif r < 0.8:
                parts.append(rng.choice(WORDS))
            else:
                parts.append(rng.choice([" ", "", ", ", "!", "?", "\n", "123", "'s", " - "]))
        out.append(rng.choice(["", " "]).join(parts))
    return out


def vqa_fill(rng, t):
    o, o2 = rng.sample(VQA_OBJECTS, 2)
    x1, y1 = rng.randint(0, 500), rng.randint(0, 500)
    return t.format(o=o, o2=o2, c=rng.choice(VQA_COLORS), p=rng.choice(VQA_PLACES), n=rng.randint(0, 20),
                    h=rng.randint(1, 12), m=rng.randint(0, 59), x1=x1, y1=y1,
                    x2=x1 + rng.randint(1, 499), y2=y1 + rng.randint(1, 499))


def cat_vqa(rng, n):
    out = ["What is shown in this image?", "A red stop sign.", "Describe this image.",
           "What is the color of the bus?", "The bus is red.", "How many people are there?", "Two."]
    while len(out) < n:
        r = rng.random()
        if r < 0.45:
            out.append(vqa_fill(rng, rng.choice(VQA_Q)))
        elif r < 0.9:
            out.append(vqa_fill(rng, rng.choice(VQA_A)))
        else:
            out.append(vqa_fill(rng, rng.choice(VQA_Q)) + "\n" + vqa_fill(rng, rng.choice(VQA_A)))
    return out


# code point ranges for the random soup; only code points assigned in this Python's Unicode version
# (or noncharacters / private use) are used, minus the version-sensitive ones found by probe_unicode()
SOUP_RANGES = [
    (0x20, 0x7E), (0xA0, 0x24F), (0x250, 0x2FF), (0x300, 0x36F), (0x370, 0x3FF), (0x400, 0x52F),
    (0x530, 0x58F), (0x590, 0x5FF), (0x600, 0x6FF), (0x700, 0x74F), (0x780, 0x7BF), (0x900, 0x97F),
    (0x980, 0x9FF), (0xA00, 0xA7F), (0xB80, 0xBFF), (0xC80, 0xCFF), (0xD00, 0xD7F), (0xE00, 0xE7F),
    (0xE80, 0xEFF), (0xF00, 0xFFF), (0x1000, 0x109F), (0x10A0, 0x10FF), (0x1100, 0x11FF),
    (0x1200, 0x137F), (0x13A0, 0x13FF), (0x1780, 0x17FF), (0x1800, 0x18AF), (0x1AB0, 0x1AFF),
    (0x1D00, 0x1DFF), (0x1E00, 0x1FFF), (0x2000, 0x206F), (0x2070, 0x209F), (0x20A0, 0x20FF),
    (0x2100, 0x218F), (0x2190, 0x23FF), (0x2460, 0x24FF), (0x2500, 0x27BF), (0x2C00, 0x2C7F),
    (0x2E80, 0x2FDF), (0x3000, 0x30FF), (0x3130, 0x318F), (0x3190, 0x31FF), (0x3200, 0x33FF),
    (0x4E00, 0x9FFF), (0xA000, 0xA4CF), (0xA640, 0xA69F), (0xA800, 0xA82F), (0xAC00, 0xD7A3),
    (0xD7B0, 0xD7FF), (0xE000, 0xE0FF), (0xF900, 0xFAFF), (0xFB00, 0xFB4F), (0xFB50, 0xFDFF),
    (0xFE00, 0xFE6F), (0xFE70, 0xFEFF), (0xFF00, 0xFFEF), (0xFFF0, 0xFFFF), (0x10000, 0x1007F),
    (0x10300, 0x1034F), (0x10400, 0x1044F), (0x10800, 0x1083F), (0x11000, 0x1107F), (0x11080, 0x110CF),
    (0x11100, 0x1114F), (0x11300, 0x1137F), (0x11480, 0x114DF), (0x11580, 0x115FF), (0x16F00, 0x16F9F),
    (0x1D100, 0x1D1FF), (0x1D400, 0x1D7FF), (0x1E900, 0x1E95F), (0x1F000, 0x1F0FF), (0x1F100, 0x1F2FF),
    (0x1F300, 0x1FAFF), (0x20000, 0x2A6DF), (0x2F800, 0x2FA1F), (0xE0000, 0xE007F), (0xE0100, 0xE01EF),
    (0xF0000, 0xF00FF), (0x10FF00, 0x10FFFF),
]


def is_noncharacter(cp):
    return 0xFDD0 <= cp <= 0xFDEF or (cp & 0xFFFE) == 0xFFFE


def probe_unicode(tok):
    """Code points whose NFC behaviour in `tokenizers` differs from this Python's unicodedata.

    Python 3.11 has Unicode 14.0 tables; the NFC normaliser inside tokenizers is older. The probe puts
    every mark with a non-zero canonical combining class next to marks of other classes and compares
    the two NFC implementations; it also compares the NFC of every canonical decomposition."""
    norm = normalizers.NFC()
    ccc_marks = [cp for cp in range(0x110000)
                 if not 0xD800 <= cp <= 0xDFFF and unicodedata.combining(chr(cp))]
    probes = ["\u0334", "\u093C", "\u094D", "\u05B0", "\u0E38", "\u0345", "\u031B", "\u0321", "\u0316",
              "\u0301", "\u035C", "\u035D", "\u0F71", "\u302A", "\u302E"]
    bad = set()
    for cp in ccc_marks:
        for p in probes:
            for s in ("x" + chr(cp) + p, "x" + p + chr(cp)):
                if norm.normalize_str(s) != unicodedata.normalize("NFC", s):
                    bad.add(cp)
    for cp in range(0x110000):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        d = unicodedata.decomposition(chr(cp))
        if d and not d.startswith("<"):
            s = unicodedata.normalize("NFD", chr(cp))
            if norm.normalize_str(s) != unicodedata.normalize("NFC", s):
                bad.add(cp)
                bad.update(ord(c) for c in s)
    return sorted(bad)


def cat_soup(rng, n, excluded):
    pool = []
    for lo, hi in SOUP_RANGES:
        cps = [cp for cp in range(lo, hi + 1)
               if cp not in excluded and (unicodedata.category(chr(cp)) != "Cn" or is_noncharacter(cp))]
        if cps:
            pool.append(cps)
    out = []
    while len(out) < n:
        k = rng.randint(1, 40)
        chars = []
        block = rng.choice(pool)
        for _ in range(k):
            if rng.random() < 0.3:
                block = rng.choice(pool)
            if rng.random() < 0.1:
                chars.append(rng.choice(" \n\t'sa1.,"))
            else:
                chars.append(chr(rng.choice(block)))
        out.append("".join(chars))
    return out


def build_corpus(excluded):
    """(category, text) pairs; every generator has its own seeded random.Random."""
    gens = [
        ("whitespace", cat_whitespace), ("newlines", cat_newlines), ("tabs", cat_tabs), ("digits", cat_digits),
        ("contractions", cat_contractions), ("punctuation", cat_punct), ("cjk", cat_cjk), ("emoji", cat_emoji),
        ("combining", cat_combining), ("specials", cat_specials), ("long", cat_long),
        ("mixed_scripts", cat_mixed_scripts), ("vqa", cat_vqa),
        ("soup", lambda rng, n: cat_soup(rng, n, excluded)),
    ]
    per_category = 175
    uniq = [("empty", "")]
    seen = {""}
    for seed, (name, fn) in enumerate(gens, start=1000):
        # a generator called with a larger n yields the same first strings, so growing n until there
        # are enough new distinct strings stays deterministic
        n = per_category
        while True:
            texts = fn(random.Random(seed), n)
            fresh = []
            local = set()
            for t in texts:
                if t not in seen and t not in local:
                    local.add(t)
                    fresh.append(t)
            if len(fresh) >= per_category:
                break
            n += 50
        for t in fresh[:per_category]:
            seen.add(t)
            uniq.append((name, t))
    for _, t in uniq:
        t.encode("utf-8")  # raises on lone surrogates
    return uniq


def version_sensitive_texts(bad_cps):
    """Strings whose result depends on the Unicode version of the NFC / category tables."""
    out = []
    for cp in bad_cps:
        ch = chr(cp)
        if unicodedata.combining(ch):
            out.append(("ccc of U+%04X differs between tokenizers' NFC and Unicode 14/15" % cp,
                        "a" + "\u0301" + ch + "\u0334" + " x" + ch + "\u0316\u0301"))
    out.append(("DIVES AKURU U+11935 U+11930 composes to U+11938 since Unicode 13",
                "\U00011935\U00011930 x\U00011935\U00011930"))
    for cp, what in [(0x11F04, "Kawi letter (Unicode 15.0)"), (0x11F50, "Kawi digit (Unicode 15.0)"),
                     (0x31350, "CJK Ext H (Unicode 15.0)"), (0x2EBF0, "CJK Ext I (Unicode 15.1)"),
                     (0x10D50, "Garay letter (Unicode 16.0)"), (0x10D40, "Garay digit (Unicode 16.0)"),
                     (0x1E5D0, "Ol Onal letter (Unicode 16.0)"), (0x11BC0, "Sunuwar letter (Unicode 16.0)"),
                     (0x10EFD, "Arabic mark U+10EFD ccc 220 (Unicode 15.0)"),
                     (0x1E4EE, "Nag Mundari mark U+1E4EE ccc 220 (Unicode 15.0)")]:
        ch = chr(cp)
        out.append((what + ": not in Python 3.11's Unicode 14 tables; tokenizers' Oniguruma regex "
                    "has Unicode 16 categories",
                    "a" + ch + ch + "b " + ch + "1 x\u0301" + ch + "\u0316"))
    return out


def encode_case(tok, text):
    ids = tok.encode(text, add_special_tokens=False).ids
    return {"text": text, "ids": ids,
            "decoded": tok.decode(ids, skip_special_tokens=False),
            "decoded_skip": tok.decode(ids, skip_special_tokens=True)}


def nfc_with_specials(text):
    """NFC applied piece-wise between literal special tokens (what HF does, normalized=False)."""
    out, i = [], 0
    while i < len(text):
        hits = [(text.find(s, i), -len(s), s) for s in SPECIALS if text.find(s, i) >= 0]
        if not hits:
            break
        pos, _, s = min(hits)
        out.append(unicodedata.normalize("NFC", text[i:pos]))
        out.append(s)
        i = pos + len(s)
    out.append(unicodedata.normalize("NFC", text[i:]))
    return "".join(out)


# =============================================================================================
# decode-only cases
# =============================================================================================

def decode_id_lists(tok):
    rng = random.Random(3000)
    b2c = byte_to_char_table()
    byte_id = {b: tok.token_to_id(b2c[b]) for b in range(256)}
    c2b = {c: b for b, c in enumerate(b2c)}
    # regular tokens whose bytes are not valid UTF-8 on their own
    partial = []
    for i in range(N_REGULAR):
        bs = bytes(c2b[c] for c in tok.id_to_token(i))
        try:
            bs.decode("utf-8")
        except UnicodeDecodeError:
            partial.append(i)
    lists = []
    for i in rng.sample(partial, 100):
        lists.append([i])

    def B(*bs):
        return [byte_id[b] for b in bs]

    sp = {s: N_REGULAR + k for k, s in enumerate(SPECIALS)}
    lists += [
        B(0xC3, 0xA9), B(0xC3), B(0xA9), B(0xC3) + [sp["<|im_start|>"]] + B(0xA9),
        B(0xE4, 0xBD) + [sp["<|image_pad|>"]] + B(0xA0), B(0xE4, 0xBD, 0xA0), B(0xE4, 0xBD), B(0xE4),
        B(0xF0, 0x9F, 0x98, 0x80), B(0xF0, 0x9F, 0x98), B(0xF0, 0x9F), B(0xF0, 0x9F, 0x98, 0x41),
        B(0x80), B(0x80, 0x80, 0x80), B(0xBF), B(0xC0, 0x80), B(0xC1, 0xBF), B(0xE0, 0x80, 0x80),
        B(0xE0, 0x9F, 0xBF), B(0xED, 0xA0, 0x80), B(0xED, 0xBF, 0xBF), B(0xED, 0x9F, 0xBF),
        B(0xF0, 0x8F, 0xBF, 0xBF), B(0xF4, 0x90, 0x80, 0x80), B(0xF4, 0x8F, 0xBF, 0xBF), B(0xF5, 0x80),
        B(0xF8, 0x88, 0x80, 0x80, 0x80), B(0xFE), B(0xFF), B(0xFE, 0xFF), B(0xC3, 0x41), B(0xE2, 0x82, 0x41),
        B(0xE2, 0x41, 0x82), B(0xC3, 0xC3, 0xA9), B(0x41, 0xC3), B(0xE2, 0x82, 0xAC, 0x80, 0x41),
        B(0xEF, 0xBB, 0xBF), B(0x00), B(0x7F), B(0x0D, 0x0A),
        [sp["<|im_start|>"]], [sp["<|im_end|>"], sp["<|im_end|>"]], list(range(N_REGULAR, N_TOTAL)),
        [9707, sp["<|endoftext|>"], 1879], [0], [N_REGULAR - 1], [198, 198, 271],
    ]
    for _ in range(250):
        k = rng.randint(1, 12)
        lists.append([rng.randrange(N_REGULAR, N_TOTAL) if rng.random() < 0.08 else rng.randrange(N_TOTAL)
                      for _ in range(k)])
    for _ in range(40):  # concatenations of partial tokens: sometimes valid again, often not
        lists.append([rng.choice(partial) for _ in range(rng.randint(2, 6))])
    return lists, len(partial)


# =============================================================================================
# 3. chat template cases
# =============================================================================================

def user_content(question, n_images):
    if PLACEHOLDER not in question:
        content = [{"type": "image"} for _ in range(n_images)]
        if question:
            content.append({"type": "text", "text": question})
        return content
    pieces = question.split(PLACEHOLDER)
    if len(pieces) - 1 != n_images:
        raise ValueError("placeholder count != number of images")
    content = []
    for i, piece in enumerate(pieces):
        if i > 0:
            content.append({"type": "image"})
            if piece.startswith("\n"):
                piece = piece[1:]
        if piece:
            content.append({"type": "text", "text": piece})
    return content


def chat_samples():
    S = []

    def add(system, question, image_tokens, response):
        S.append({"system": system, "question": question, "image_tokens": list(image_tokens),
                  "response": response})

    # no image
    add(None, "Hello world", [], None)
    add(None, "Hello world", [], "Hi! How can I help you today?")
    add("You are a pirate.", "Who are you?", [], "Arr, I be a pirate!")
    add("", "Empty system prompt.", [], "OK.")
    add(None, "", [], None)
    add(None, "", [], "")
    # one image: placeholder at start with "\n", at start without "\n", middle, end, absent
    add(None, "<image>\nWhat is shown in this image?", [4], "A red stop sign.")
    add(None, "<image>What is shown in this image?", [4], "A red stop sign.")
    add(None, "Look at this: <image> and tell me what it is.", [6], "It is a cat.")
    add(None, "What is this?\n<image>", [1], "A dog.")
    add(None, "What is in the picture?", [9], "Two people walking on a beach.")
    add(None, "<image>", [12], "An empty street at night.")
    add(None, "<image>\n", [2], "Nothing.")
    add(None, "<image>\n\nDouble newline after the image.", [3], "Noted.")
    add(None, "<image>\nWhat is shown in this image?", [24], None)
    add(None, "Describe.", [40], None)
    add(None, "", [5], "A photo.")
    # two and three images
    add(None, "<image>\n<image>\nCompare the two images.", [4, 6], "The first is brighter.")
    add(None, "Compare these images.", [2, 3], "They are identical.")
    add(None, "First: <image> second: <image> Which is larger?", [8, 16], "The second one.")
    add(None, "<image><image><image>What do these have in common?", [1, 2, 3], "They all show cats.")
    add(None, "<image>\n<image>\n<image>\n", [10, 20, 30], None)
    add(None, "Three views:", [7, 7, 7], "A building from three angles.")
    add("You are a helpful assistant.", "<image>\nDescribe.", [4], "A tree.")
    add("Answer in one word.", "<image>\nWhat animal is this?", [16], "Cat.")
    add("Du bist ein hilfreicher Assistent.\nAntworte auf Deutsch.", "<image>\nWas ist das?", [6],
        "Ein Hund.")
    add("系统提示：请用中文回答。", "<image>\n这是什么？", [9], "这是一只猫。")
    # response edge cases
    add(None, "<image>\nSay something.", [4], "\nStarts with a newline.")
    add(None, "Say something.", [], " Starts with a space.")
    add(None, "Say something.", [], "\n\nTwo newlines first.")
    add(None, "Say something.", [], "  two spaces")
    add(None, "Say something.", [], "\r\nCRLF first")
    add(None, "Say something.", [], "\tTab first")
    add(None, "Say something.", [], "ends with newline\n")
    add(None, "Say something.", [], "ends with spaces  ")
    add(None, "Say something.", [], " ")
    add(None, "Say something.", [], "\n")
    add(None, "Special tokens?", [], "Use <|im_end|> to stop and <|endoftext|> to end.")
    add(None, "<image>\nWhere is the dog?", [12],
        "<|object_ref_start|>the dog<|object_ref_end|><|box_start|>(120,340),(560,880)<|box_end|>")
    add(None, "Special at the end?", [], "Bye<|im_end|>")
    add(None, "Partial specials?", [], "<|im_end| and <|im_start and <|IM_END|>")
    add(None, "<image>\n图片里有什么？", [6], "图片里有一只猫坐在桌子上。")
    add(None, "Emoji?", [], "Sure 😀👍🏽👨‍👩‍👧‍👦🇯🇵 done!")
    add(None, "Accents?", [], "Cafe\u0301 and A\u030Angstro\u0308m and \u212B.")
    add(None, "Korean jamo?", [], unicodedata.normalize("NFD", "한국어 텍스트"))
    add(None, "Caf\u00E9 or Cafe\u0301?", [], "Both: caf\u00E9 / cafe\u0301")
    add(None, "<image>\nDescribe the image in detail.", [32],
        " ".join(["The image shows a busy street with many cars, buses and people."] * 25))
    add(None, "Write code.", [], "```python\ndef f(x):\n\treturn x * 2\n```\n")
    add(None, "Contractions?", [], "It's, I'M, we'LL, they'd've.")
    # CRLF in questions
    add(None, "<image>\r\nWhat is this?", [4], "A lamp.")
    add(None, "Line one\r\nLine two\rLine three\n<image>", [3], "Three lines.")
    add("System\r\nwith CRLF", "Hi\r\n", [], "Hello\r\n")
    # generation prompts with custom systems
    add("You are a helpful assistant.", "Hello world", [], None)
    add("Be brief.", "<image>\n<image>\nSame or different?", [1, 1], None)

    rng = random.Random(4000)
    qs = VQA_Q
    responses = VQA_A + ["", " ", "\n", "\nOK", "😀", "Tiếng Việt", "e\u0301", "你好", "It's fine.",
                         "Line1\r\nLine2", "<|endoftext|>", "a  b   c"]
    systems = [None, None, None, "You are a helpful assistant.", "Answer briefly.", "You are an OCR engine."]
    while len(S) < 110:
        n_img = rng.choice([0, 1, 1, 1, 2, 3])
        ks = [rng.randint(1, 40) for _ in range(n_img)]
        q = vqa_fill(rng, rng.choice(qs))
        if n_img:
            style = rng.randrange(4)
            if style == 0:
                q = "".join(PLACEHOLDER + "\n" for _ in ks) + q
            elif style == 1:
                q = q + "".join(" " + PLACEHOLDER for _ in ks)
            elif style == 2:
                q = "".join("Image %d: %s\n" % (i + 1, PLACEHOLDER) for i in range(n_img)) + q
            # style 3: no placeholder, images first
        resp = None if rng.random() < 0.2 else vqa_fill(rng, rng.choice(responses))
        add(rng.choice(systems), q, ks, resp)
    return S


def chat_case(hf_tok, template, tok, sample):
    system, question, ks, response = (sample["system"], sample["question"], sample["image_tokens"],
                                      sample["response"])
    messages = []
    if system is not None:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": user_content(question, len(ks))})
    if response is not None:
        messages.append({"role": "assistant", "content": response})
    rendered = hf_tok.apply_chat_template(messages, chat_template=template, tokenize=False,
                                          add_generation_prompt=response is None)
    pieces = rendered.split(IMAGE_PAD)
    assert len(pieces) - 1 == len(ks), "image_pad count"
    expanded = pieces[0] + "".join(IMAGE_PAD * k + p for k, p in zip(ks, pieces[1:]))
    enc = hf_tok(expanded, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    assert ids == tok.encode(expanded, add_special_tokens=False).ids, "transformers != tokenizers"
    assert ids.count(N_REGULAR + SPECIALS.index(IMAGE_PAD)) == sum(ks)
    target = [0] * len(ids)
    boundary = False
    if response is not None:
        tail = response + "<|im_end|>\n"
        assert expanded.endswith(tail)
        R = len(expanded) - len(tail)
        E = R + len(response) + len("<|im_end|>")
        assert expanded[:R].endswith("<|im_start|>assistant\n")
        assert expanded.rfind("<|im_start|>assistant\n") + len("<|im_start|>assistant\n") == R
        target = [1 if (e > R and s < E) else 0 for s, e in offsets]
        got = tok.decode([i for i, t in zip(ids, target) if t], skip_special_tokens=False)
        want = nfc_with_specials(response) + "<|im_end|>"
        if got != want:
            # a response that starts with whitespace ending in a line break shares its first
            # pre-token with the "\n" of "assistant\n"
            assert got.endswith(want) and got[: len(got) - len(want)] == "\n", (got, want)
            boundary = True
    line = {"system": system, "question": question, "image_tokens": ks, "response": response,
            "ids": ids, "target": target, "rendered": expanded}
    return line, boundary


# =============================================================================================
# main
# =============================================================================================

def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=True) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(REPO, "tests", "fixtures", "tokenizer"))
    ap.add_argument("--tiktoken", default=None,
                    help="use this local qwen.tiktoken instead of pip-downloading dashscope (sha256 checked)")
    args = ap.parse_args()
    out = args.out
    os.makedirs(out, exist_ok=True)

    # ---- 1. tokenizer files ------------------------------------------------------------------
    data, wheel_sha = fetch_tiktoken(args.tiktoken)
    ranks = parse_tiktoken(data)
    tok, n_merges = build_tokenizer(ranks)
    tj = os.path.join(out, "tokenizer.json")
    tok.save(tj)
    tok = Tokenizer.from_file(tj)
    check_tokenizer(tok, tj)
    for name in ("tokenizer_config.json", "chat_template.json"):
        shutil.copyfile(os.path.join(CONFIG_DIR, name), os.path.join(out, name))
    with open(os.path.join(out, "chat_template.json"), encoding="utf-8") as f:
        template = json.load(f)["chat_template"]
    with open(os.path.join(out, "tokenizer_config.json"), encoding="utf-8") as f:
        assert json.load(f)["chat_template"] == template
    tj_sha = sha256_file(tj)

    # ---- 2. encode corpus ---------------------------------------------------------------------
    bad_cps = probe_unicode(tok)
    corpus = build_corpus(set(bad_cps) | set(range(0x11900, 0x11960)))
    cases, nfc_mismatch, cat_counts = [], [], {}
    for lineno, (cat, text) in enumerate(corpus, start=1):
        c = encode_case(tok, text)
        cases.append(c)
        cat_counts[cat] = cat_counts.get(cat, 0) + 1
        if c["decoded"] != unicodedata.normalize("NFC", text):
            why = ("special tokens are matched before NFC, so NFC never joins a special token's last "
                   "character with the following text"
                   if c["decoded"] == nfc_with_specials(text) else "UNEXPLAINED")
            nfc_mismatch.append({"line": lineno, "category": cat, "text": text, "reason": why})
    write_jsonl(os.path.join(out, "cases.jsonl"), cases)

    version_rows = []
    for note, text in version_sensitive_texts(bad_cps):
        c = encode_case(tok, text)
        c["note"] = note
        c["python_nfc_equal"] = c["decoded"] == unicodedata.normalize("NFC", text)
        version_rows.append(c)
    write_jsonl(os.path.join(out, "unicode_version_cases.jsonl"), version_rows)

    id_lists, n_partial_tokens = decode_id_lists(tok)
    dec_rows = [{"ids": ids, "decoded": tok.decode(ids, skip_special_tokens=False),
                 "decoded_skip": tok.decode(ids, skip_special_tokens=True)} for ids in id_lists]
    write_jsonl(os.path.join(out, "decode_cases.jsonl"), dec_rows)
    n_fffd = sum(1 for r in dec_rows if "\uFFFD" in r["decoded"])

    # ---- 3. chat template ---------------------------------------------------------------------
    from transformers import AutoTokenizer
    hf_tok = AutoTokenizer.from_pretrained(out)
    assert hf_tok.is_fast
    chat_rows, n_boundary = [], 0
    for sample in chat_samples():
        row, boundary = chat_case(hf_tok, template, tok, sample)
        chat_rows.append(row)
        n_boundary += boundary
    write_jsonl(os.path.join(out, "chat_cases.jsonl"), chat_rows)

    # ---- 4. metadata ----------------------------------------------------------------------------
    counts = {"cases": len(cases), "cases_by_category": dict(sorted(cat_counts.items())),
              "decode_cases": len(dec_rows), "decode_cases_with_U+FFFD": n_fffd,
              "regular_tokens_not_valid_utf8_alone": n_partial_tokens,
              "chat_cases": len(chat_rows),
              "chat_cases_with_response": sum(r["response"] is not None for r in chat_rows),
              "chat_cases_first_target_token_includes_assistant_newline": n_boundary,
              "unicode_version_cases": len(version_rows),
              "vocab_regular": N_REGULAR, "merges": n_merges, "specials": len(SPECIALS)}
    meta = {
        "generator": "tests/reference/make_tokenizer_fixtures.py",
        "versions": {"python": platform.python_version(), "unicodedata": unicodedata.unidata_version,
                     "tokenizers": tokenizers.__version__, "transformers": transformers.__version__},
        "source": {"package": DASHSCOPE_REQ, "file": TIKTOKEN_MEMBER, "sha256": TIKTOKEN_SHA256,
                   "wheel_sha256": wheel_sha, "license": "Apache-2.0 (Qwen / Alibaba Cloud)"},
        "sha256": {name: sha256_file(os.path.join(out, name))
                   for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.json")},
        "counts": counts,
        "cases_decoded_not_equal_python_nfc": {
            "note": "line = 1-based line number in cases.jsonl; decoded != unicodedata.normalize('NFC', text)",
            "cases": nfc_mismatch},
        "tokenizers_nfc_differs_from_python_unicodedata": {
            "note": "code points for which the NFC inside tokenizers differs from Python's unicodedata "
                    "(Unicode 14): its combining classes and compositions are Unicode 9.0 data (marks "
                    "added later have class 0 there; U+11935 U+11930 does not compose to U+11938). "
                    "The split regex (Oniguruma) has Unicode 16.0 categories. These code points are "
                    "left out of the random soup of cases.jsonl and exercised in "
                    "unicode_version_cases.jsonl",
            "code_points": ["U+%04X" % cp for cp in bad_cps]},
        "conventions": {
            "cases": "ids = Tokenizer.encode(text, add_special_tokens=False).ids; decoded/decoded_skip = "
                     "Tokenizer.decode(ids, skip_special_tokens=False/True)",
            "chat": "user content: split question at '<image>', each placeholder -> image item, one '\\n' "
                    "right after a placeholder dropped, non-empty text pieces -> text items; no "
                    "placeholder -> all images first. Rendered with apply_chat_template("
                    "add_generation_prompt = response is null); k-th <|image_pad|> expanded to "
                    "image_tokens[k] copies; ids with add_special_tokens=False; target[j] = 1 iff "
                    "token span (s,e) has e > R and s < E, R = start of the response, "
                    "E = end of the <|im_end|> after it (character offsets in the expanded text)"},
    }
    with open(os.path.join(out, "meta.json"), "w", encoding="utf-8", newline="\n") as f:
        json.dump(meta, f, ensure_ascii=True, indent=1, sort_keys=False)
        f.write("\n")

    with open(os.path.join(out, "SOURCE.md"), "w", encoding="utf-8", newline="\n") as f:
        f.write(SOURCE_MD.format(tiktoken_sha=TIKTOKEN_SHA256, wheel_sha=wheel_sha or "(local file)",
                                 tj_sha=tj_sha, tokenizers=tokenizers.__version__,
                                 transformers=transformers.__version__, python=platform.python_version(),
                                 cfg_sha=meta["sha256"]["tokenizer_config.json"],
                                 tpl_sha=meta["sha256"]["chat_template.json"]))

    print(json.dumps(counts, indent=1))
    print("tokenizer.json sha256", tj_sha)
    print("cases where decoded != NFC(text):", len(nfc_mismatch))
    for m in nfc_mismatch:
        print("  line %d [%s] %s: %s" % (m["line"], m["category"], ascii(m["text"]), m["reason"]))
    print("tokenizers-NFC vs unicodedata differences:", len(bad_cps), "code points")
    if any(m["reason"] == "UNEXPLAINED" for m in nfc_mismatch):
        raise SystemExit("unexplained decode != NFC(text) cases")


SOURCE_MD = """# Tokenizer fixtures: sources

Generated by `tests/reference/make_tokenizer_fixtures.py` (see its docstring and `meta.json`).

## Vocabulary and merges

* Source: `dashscope/resources/qwen.tiktoken` from the PyPI wheel `dashscope==2.0.2`
  (Alibaba Cloud DashScope SDK). License: Apache-2.0 (Qwen / Alibaba Cloud).
  sha256 `{tiktoken_sha}`; wheel sha256 `{wheel_sha}`.
* It lists the 151,643 byte strings of the Qwen BPE vocabulary with their ranks, which are the
  token ids 0..151642 of Qwen2 / Qwen2-VL. The 151,387 merges are recovered from the ranks (merge i
  makes token 256 + i). Known ids (`Hello world` -> 9707 1879, `\\n` -> 198, the default system
  prompt -> 2610 525 264 10950 17847 13) are asserted by the generator.
* `tokenizer.json` is assembled and saved by `tokenizers` {tokenizers}: NFC normaliser, the Qwen2
  split regex + ByteLevel pre-tokenizer, ByteLevel decoder and post-processor, BPE without unk or
  dropout, special tokens 151643..151656 (special, not normalized). Merges are saved in the
  `["a", "b"]` pair form. sha256 `{tj_sha}`.

## Other files

* `tokenizer_config.json` (sha256 `{cfg_sha}`) and `chat_template.json` (sha256 `{tpl_sha}`):
  copies of the Qwen2-VL-2B-Instruct files (`/work/shared/configs/Qwen2-VL-2B-Instruct/`).
* `cases.jsonl`, `decode_cases.jsonl`, `unicode_version_cases.jsonl`: `tokenizers` {tokenizers}.
* `chat_cases.jsonl`: `transformers` {transformers} (`Qwen2TokenizerFast.apply_chat_template`),
  Python {python}.
"""


if __name__ == "__main__":
    main()
