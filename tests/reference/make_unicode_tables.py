#!/usr/bin/env python3
"""Generate the Unicode tables of mbpo.h from the Unicode Character Database.

Reads (Debian package `unicode-data`, /usr/share/unicode by default):
  UnicodeData.txt               general category, canonical combining class, decompositions
  PropList.txt                  White_Space
  DerivedNormalizationProps.txt Full_Composition_Exclusion
and rewrites the block of mbpo.h between the GENERATED-UNICODE markers. Standard library only.

    python3 tests/reference/make_unicode_tables.py [UCD_DIR] [mbpo.h]
"""
import os
import re
import sys

UCD = sys.argv[1] if len(sys.argv) > 1 else "/usr/share/unicode"
HEADER = sys.argv[2] if len(sys.argv) > 2 else os.path.join(os.path.dirname(__file__), "..", "..", "mbpo.h")
BEGIN = "/* BEGIN GENERATED-UNICODE"
END = "/* END GENERATED-UNICODE */"


def read_lines(name):
    with open(os.path.join(UCD, name), encoding="utf-8") as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line:
                yield line


def ucd_version():
    with open(os.path.join(UCD, "DerivedNormalizationProps.txt"), encoding="utf-8") as f:
        m = re.match(r"# DerivedNormalizationProps-([0-9.]+)\.txt", f.readline())
    return m.group(1) if m else "unknown"


def parse_unicode_data():
    """cp -> (category, ccc, decomposition string) with First/Last ranges expanded."""
    rows = {}
    first = None
    for line in read_lines("UnicodeData.txt"):
        f = line.split(";")
        cp = int(f[0], 16)
        if f[1].endswith(", First>"):
            first = cp
            continue
        if f[1].endswith(", Last>"):
            for c in range(first, cp + 1):
                rows[c] = (f[2], int(f[3]), "")
            continue
        rows[cp] = (f[2], int(f[3]), f[5])
    return rows


def ranges(cps):
    out = []
    for cp in sorted(cps):
        if out and out[-1][1] == cp - 1:
            out[-1][1] = cp
        else:
            out.append([cp, cp])
    return out


def prop_set(name, prop):
    s = set()
    for line in read_lines(name):
        f = [x.strip() for x in line.split(";")]
        if f[1] != prop:
            continue
        if ".." in f[0]:
            lo, hi = (int(x, 16) for x in f[0].split(".."))
        else:
            lo = hi = int(f[0], 16)
        s.update(range(lo, hi + 1))
    return s


def c_array(ctype, name, width, rows, per_line):
    cells = [", ".join("0x%X" % v for v in row) for row in rows]
    body = []
    for i in range(0, len(cells), per_line):
        body.append("    " + ", ".join("{%s}" % c for c in cells[i:i + per_line]) + ",")
    return "static const %s %s[%d][%d] = {\n%s\n};\n" % (ctype, name, len(rows), width, "\n".join(body))


def main():
    data = parse_unicode_data()
    letters = [cp for cp, r in data.items() if r[0] in ("Lu", "Ll", "Lt", "Lm", "Lo")]
    numbers = [cp for cp, r in data.items() if r[0] in ("Nd", "Nl", "No")]
    space = prop_set("PropList.txt", "White_Space")
    # Oniguruma's \s (what tokenizers' Split regex uses) is \t\n\v\f\r, U+0085 and Z[slp]; check
    # that White_Space is exactly that set so the table means what the regex means.
    onig = set(range(9, 14)) | {0x85} | {cp for cp, r in data.items() if r[0] in ("Zs", "Zl", "Zp")}
    assert space == onig, sorted(space ^ onig)
    ccc = {cp: r[1] for cp, r in data.items() if r[1]}
    ccc_ranges = []
    for cp in sorted(ccc):
        if ccc_ranges and ccc_ranges[-1][1] == cp - 1 and ccc_ranges[-1][2] == ccc[cp]:
            ccc_ranges[-1][1] = cp
        else:
            ccc_ranges.append([cp, cp, ccc[cp]])
    decomp = []
    for cp in sorted(data):
        d = data[cp][2]
        if not d or d.startswith("<"):
            continue                       # no mapping, or a compatibility mapping
        parts = [int(x, 16) for x in d.split()]
        assert len(parts) in (1, 2)
        decomp.append([cp, parts[0], parts[1] if len(parts) == 2 else 0])
    dmap = {cp: [a] + ([b] if b else []) for cp, a, b in decomp}

    def full(cp):
        return sum((full(c) for c in dmap[cp]), []) if cp in dmap else [cp]
    # mbpo__nfc sizes its buffer for 4 code points per input code point (Hangul gives 3).
    assert max(len(full(cp)) for cp in dmap) <= 4
    excluded = prop_set("DerivedNormalizationProps.txt", "Full_Composition_Exclusion")
    compose = sorted([a, b, cp] for cp, a, b in decomp if b and cp not in excluded)
    version = ucd_version()
    out = []
    out.append("%s: written by tests/reference/make_unicode_tables.py from the Unicode\n"
               "   Character Database %s (Debian package unicode-data). Do not edit by hand. */\n" % (BEGIN, version))
    out.append("#define MBPO__UNICODE_VERSION \"%s\"\n" % version)
    out.append("/* General category L (Lu Ll Lt Lm Lo) and N (Nd Nl No), and White_Space: {first, last}. */\n")
    out.append(c_array("uint32_t", "mbpo__uc_letter", 2, ranges(letters), 6))
    out.append(c_array("uint32_t", "mbpo__uc_number", 2, ranges(numbers), 6))
    out.append(c_array("uint32_t", "mbpo__uc_space", 2, ranges(space), 6))
    out.append("/* Canonical combining class, nonzero only: {first, last, class}. */\n")
    out.append(c_array("uint32_t", "mbpo__uc_ccc_ranges", 3, ccc_ranges, 5))
    out.append("/* Canonical decompositions, one level: {code point, first, second or 0}. */\n")
    out.append(c_array("uint32_t", "mbpo__uc_decomp", 3, decomp, 5))
    out.append("/* Primary composites (Full_Composition_Exclusion removed): {first, second, composite},\n"
               "   sorted by (first, second). */\n")
    out.append(c_array("uint32_t", "mbpo__uc_compose", 3, compose, 5))
    out.append(END)
    block = "".join(out)
    with open(HEADER, encoding="utf-8") as f:
        text = f.read()
    i = text.index(BEGIN)
    j = text.index(END) + len(END)
    text = text[:i] + block + text[j:]
    tmp = HEADER + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, HEADER)
    print("unicode %s: %d letter ranges, %d number ranges, %d space ranges, %d ccc ranges, "
          "%d decompositions, %d compositions" % (version, len(ranges(letters)), len(ranges(numbers)),
          len(ranges(space)), len(ccc_ranges), len(decomp), len(compose)))


if __name__ == "__main__":
    main()
