/* test_cli.c - the command line: mbpo_flags_parse on a table of every kind (each error class
   with its exact message, both syntaxes, ranges, overflow, nothing stored on a failure), the
   --help text made from the table, mbpo_build_info, and the six built drivers (build/mbpo-*):
   a bad flag exits 2 with one line on stderr naming it, --help and --version exit 0. */
#define _POSIX_C_SOURCE 200809L
#include "../mbpo.h"

#include <locale.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test_common.h"

/* The destinations of the test table, and their defaults. */
static const char *t_model, *t_out;
static int t_batch, t_shift, t_seeds, t_mode, t_quiet;
static int64_t t_steps;
static uint64_t t_seed;
static double t_lr, t_top_p;

static void t_defaults(void) {
    t_model = NULL; t_out = "out-default";
    t_batch = 4; t_shift = 0; t_seeds = 3; t_mode = 0; t_quiet = 0;
    t_steps = 100; t_seed = 1234; t_lr = 1e-6; t_top_p = 1.0;
}
#define N_TABLE 11
static void t_table(mbpo_flag *f) {
    mbpo_flag table[N_TABLE] = {
        { "--model", "DIR", MBPO_FLAG_STRING, &t_model, "required", "the model" },
        { "--out", "DIR", MBPO_FLAG_STRING, &t_out, NULL, "first line\nsecond line" },
        { "--batch", "N", MBPO_FLAG_INT, &t_batch, ">= 1", "prompts" },
        { "--shift", "N", MBPO_FLAG_INT, &t_shift, NULL, "any int" },
        { "--seeds", "N", MBPO_FLAG_INT, &t_seeds, "[1, 1000]", "seeds" },
        { "--steps", "N", MBPO_FLAG_INT64, &t_steps, ">= 1", "steps" },
        { "--seed", "S", MBPO_FLAG_UINT64, &t_seed, NULL, "seed" },
        { "--lr", "X", MBPO_FLAG_DOUBLE, &t_lr, "> 0", "learning rate" },
        { "--top-p", "P", MBPO_FLAG_DOUBLE, &t_top_p, "(0, 1]", "nucleus" },
        { "--mode", "M", MBPO_FLAG_CHOICE, &t_mode, "a|b|c", "the mode" },
        { "--quiet", NULL, MBPO_FLAG_SWITCH, &t_quiet, NULL, "no progress" },
    };
    memcpy(f, table, sizeof table);
}

/* Parse the NULL-terminated arguments (after the program name) with the test table, from
   the defaults. */
static int t_parse(const char *first, ...) {
    char *argv[32];
    int argc = 0;
    mbpo_flag flags[N_TABLE];
    va_list ap;
    const char *a;
    argv[argc++] = (char *)"prog";
    va_start(ap, first);
    for (a = first; a && argc < 31; a = va_arg(ap, const char *)) argv[argc++] = (char *)a;
    va_end(ap);
    argv[argc] = NULL;
    t_defaults();
    t_table(flags);
    return mbpo_flags_parse(flags, N_TABLE, argc, argv);
}

/* Each command line must fail with exactly this message. */
#define BAD(expect, ...) do { int r_ = t_parse(__VA_ARGS__, (const char *)NULL); \
    CHECK(r_ == MBPO_FLAGS_ERROR && !strcmp(mbpo_failure_reason(), expect), "%-48s -> %d '%s' (want '%s')", #__VA_ARGS__, r_, \
          mbpo_failure_reason(), expect); } while (0)

static void test_flags_parse(void) {
    if (!run_test("flags_parse")) return;
    /* good lines, both syntaxes */
    CHECK(t_parse("--model", "m", (const char *)NULL) == MBPO_FLAGS_OK && !strcmp(t_model, "m") && t_batch == 4 && t_lr == 1e-6 &&
          !strcmp(t_out, "out-default"), "only the required flag: the rest keep their defaults");
    CHECK(t_parse("--model=m", "--batch", "7", "--lr=5e-5", "--top-p", "1", "--steps=9000000000", "--seed",
                  "18446744073709551615", "--mode", "c", "--quiet", "--shift", "-5", "--seeds=1000", (const char *)NULL) == MBPO_FLAGS_OK &&
          !strcmp(t_model, "m") && t_batch == 7 && t_lr == 5e-5 && t_top_p == 1.0 && t_steps == 9000000000LL &&
          t_seed == 18446744073709551615ULL && t_mode == 2 && t_quiet == 1 && t_shift == -5 && t_seeds == 1000,
          "--flag value and --flag=value, every kind: %s", mbpo_failure_reason());
    CHECK(t_parse("--model", "m", "--batch=2147483647", "--shift=-2147483648", "--lr", "+1.25e-1", "--out=--odd", (const char *)NULL) ==
          MBPO_FLAGS_OK && t_batch == 2147483647 && t_shift == -2147483647 - 1 && t_lr == 0.125 && !strcmp(t_out, "--odd"),
          "the int limits; a value starting with -- through --flag=value: %s", mbpo_failure_reason());
    CHECK(t_parse("--model", "m", "--lr", "1e-4", "--top-p", "0.95", (const char *)NULL) == MBPO_FLAGS_OK && t_lr == strtod("1e-4", NULL) &&
          t_top_p == 0.95, "doubles read as strtod does");
    /* not numbers, trailing characters, non-finite, overflow */
    BAD("--lr: 'abc' is not a number", "--model", "m", "--lr", "abc");
    BAD("--lr: '1e-4x' has trailing characters", "--model", "m", "--lr", "1e-4x");
    BAD("--lr: '5e-5O' has trailing characters", "--model", "m", "--lr=5e-5O");
    BAD("--lr: ' 1' is not a number", "--model", "m", "--lr", " 1");
    BAD("--lr: 'nan' is not a finite number", "--model", "m", "--lr", "nan");
    BAD("--lr: 'inf' is not a finite number", "--model", "m", "--lr", "inf");
    BAD("--lr: 1e999 is out of range", "--model", "m", "--lr", "1e999");
    BAD("--batch: 'abc' is not an integer", "--model", "m", "--batch", "abc");
    BAD("--batch: '2.5' is not an integer", "--model", "m", "--batch", "2.5");
    BAD("--batch: '1e3' is not an integer", "--model", "m", "--batch", "1e3");
    BAD("--batch: '12x' has trailing characters", "--model", "m", "--batch", "12x");
    BAD("--batch: 2147483648 is out of range", "--model", "m", "--batch", "2147483648");
    BAD("--shift: -2147483649 is out of range", "--model", "m", "--shift", "-2147483649");
    BAD("--steps: 99999999999999999999 is out of range", "--model", "m", "--steps", "99999999999999999999");
    BAD("--seed: 18446744073709551616 is out of range", "--model", "m", "--seed", "18446744073709551616");
    /* ranges: inclusive, exclusive, intervals; negatives for unsigned are refused, never wrapped */
    BAD("--batch: must be >= 1, got 0", "--model", "m", "--batch", "0");
    BAD("--batch: must be >= 1, got -3", "--model", "m", "--batch", "-3");
    BAD("--lr: must be > 0, got 0", "--model", "m", "--lr", "0");
    BAD("--lr: must be > 0, got -1e-3", "--model", "m", "--lr", "-1e-3");
    BAD("--top-p: must be in (0, 1], got 0", "--model", "m", "--top-p", "0");
    BAD("--top-p: must be in (0, 1], got 1.5", "--model", "m", "--top-p", "1.5");
    BAD("--seeds: must be in [1, 1000], got 1001", "--model", "m", "--seeds", "1001");
    BAD("--seed: must be >= 0, got -1", "--model", "m", "--seed", "-1");
    /* the shape of the line */
    BAD("--model given twice", "--model", "a", "--model", "b");
    BAD("--lr given twice", "--model", "m", "--lr", "1", "--lr=2");
    BAD("--quiet given twice", "--model", "m", "--quiet", "--quiet");
    BAD("unknown flag --foo", "--model", "m", "--foo");
    BAD("unknown flag --foo", "--model", "m", "--foo=1");
    BAD("unknown flag -x", "--model", "m", "-x");
    BAD("unexpected argument 'stray'", "--model", "m", "stray");
    BAD("--out needs a value", "--model", "m", "--out");
    BAD("--out needs a value", "--model", "m", "--out", "--quiet");
    BAD("--out: empty value", "--model", "m", "--out=");
    BAD("--lr: empty value", "--model", "m", "--lr=");
    BAD("--batch: empty value", "--model", "m", "--batch", "");
    BAD("--quiet takes no value", "--model", "m", "--quiet=1");
    BAD("--help takes no value", "--help=1");
    BAD("--mode: 'd' is not one of a, b, c", "--model", "m", "--mode", "d");
    BAD("--mode: 'A' is not one of a, b, c", "--model", "m", "--mode=A");
    BAD("--model is required", "--batch", "2");
    /* help and version are reported, not stored; an error before them comes first */
    CHECK(t_parse("--lr", "0.5", "--help", (const char *)NULL) == MBPO_FLAGS_HELP && t_lr == 1e-6, "--help: reported, nothing stored");
    CHECK(t_parse("-h", (const char *)NULL) == MBPO_FLAGS_HELP, "-h");
    CHECK(t_parse("--batch", "0", "--version", (const char *)NULL) == MBPO_FLAGS_ERROR, "an error before --version comes first");
    CHECK(t_parse("--version", "--batch", "0", (const char *)NULL) == MBPO_FLAGS_VERSION, "--version, without --model");
    /* a failure stores nothing, also flags that came before it */
    CHECK(t_parse("--model", "m", "--lr", "0.5", "--batch", "8", "--mode", "b", "--quiet", "--top-p", "2", (const char *)NULL) ==
          MBPO_FLAGS_ERROR && !t_model && t_lr == 1e-6 && t_batch == 4 && t_mode == 0 && !t_quiet,
          "a failed parse leaves every destination as it was");
    {   /* a ',' decimal-point locale does not change what a flag means */
        const char *locs[3] = { "de_DE.UTF-8", "fr_FR.UTF-8", "de_DE" };
        int k, done = 0;
        for (k = 0; k < 3 && !done; k++) {
            if (!setlocale(LC_NUMERIC, locs[k]) || localeconv()->decimal_point[0] != ',') continue;
            done = 1;
            CHECK(t_parse("--model", "m", "--lr", "0.5", "--top-p=0.25", (const char *)NULL) == MBPO_FLAGS_OK && t_lr == 0.5 &&
                  t_top_p == 0.25, "%s: '0.5' is 0.5: %s", locs[k], mbpo_failure_reason());
            BAD("--lr: '0,5' has trailing characters", "--model", "m", "--lr", "0,5");
            {   /* and --help writes what the parser reads */
                mbpo_flag flags[N_TABLE];
                char path[512], *text;
                FILE *f;
                snprintf(path, sizeof path, "%s/usage_locale.txt", tmpdir());
                t_defaults();
                t_table(flags);
                t_lr = 0.25;
                if ((f = fopen(path, "wb")) != NULL) { mbpo_flags_usage(f, "prog", "", flags, N_TABLE); fclose(f); }
                text = mbpo_read_file(path, NULL);
                CHECK(text && contains(text, "(X > 0, default 0.25)") && contains(text, "(0 < P <= 1, default 1)"),
                      "%s: --help writes '.'", locs[k]);
                mbpo_free(text);
            }
        }
        setlocale(LC_NUMERIC, "C");
        if (!done) printf("  note: no ',' decimal-point locale installed; the locale check did not run\n");
    }
}

static void test_flags_table(void) {
    mbpo_flag flags[N_TABLE], bad[2];
    char *argv[2] = { (char *)"prog", NULL };
    char path[512], *text;
    FILE *f;
    if (!run_test("flags_table")) return;
    /* programmer errors in a table are failures whatever the command line */
    t_table(flags);
    bad[0] = flags[2]; bad[1] = flags[3];
    bad[0].name = "batch";
    CHECK(!mbpo_flags_parse(bad, 2, 1, argv) && contains(mbpo_failure_reason(), "flag table") &&
          contains(mbpo_failure_reason(), "'batch'"), "a name without --: %s", mbpo_failure_reason());
    bad[0] = flags[2]; bad[1] = flags[2];
    CHECK(!mbpo_flags_parse(bad, 2, 1, argv) && !strcmp(mbpo_failure_reason(), "flag table: --batch appears twice"), "%s",
          mbpo_failure_reason());
    bad[0] = flags[2]; bad[0].check = ">= x";
    CHECK(!mbpo_flags_parse(bad, 1, 1, argv) && !strcmp(mbpo_failure_reason(), "flag table: --batch: bad range '>= x'"), "%s",
          mbpo_failure_reason());
    bad[0] = flags[8]; bad[0].check = "(1, 0]";
    CHECK(!mbpo_flags_parse(bad, 1, 1, argv) && contains(mbpo_failure_reason(), "bad range"), "an empty interval: %s",
          mbpo_failure_reason());
    bad[0] = flags[9]; bad[0].check = "a||b";
    CHECK(!mbpo_flags_parse(bad, 1, 1, argv) && contains(mbpo_failure_reason(), "--mode"), "an empty choice: %s", mbpo_failure_reason());
    bad[0] = flags[2]; bad[0].name = "--help";
    CHECK(!mbpo_flags_parse(bad, 1, 1, argv) && contains(mbpo_failure_reason(), "flag table"), "--help is the parser's: %s",
          mbpo_failure_reason());
    /* the usage text: from the table, with the destinations' current values as defaults */
    t_defaults();
    t_lr = 0.25; t_mode = 1; t_seed = 18446744073709551615ULL;
    snprintf(path, sizeof path, "%s/usage.txt", tmpdir());
    f = fopen(path, "wb");
    REQUIRE(f != NULL, "open %s", path);
    mbpo_flags_usage(f, "prog", "--model DIR [options]", flags, N_TABLE);
    fclose(f);
    text = mbpo_read_file(path, NULL);
    REQUIRE(text != NULL, "read %s", path);
    CHECK(!strncmp(text, "usage: prog --model DIR [options]\n", 34), "synopsis line: %.40s", text);
    CHECK(contains(text, "\n  --model DIR          the model (required)\n"), "a required string");
    CHECK(contains(text, "\n  --out DIR            first line\n                       second line (default out-default)\n"),
          "a help on two lines, the second aligned, then the default");
    CHECK(contains(text, "\n  --batch N            prompts (N >= 1, default 4)\n"), "a lower bound and an int default");
    CHECK(contains(text, "\n  --shift N            any int (default 0)\n"), "no range");
    CHECK(contains(text, "\n  --seeds N            seeds (1 <= N <= 1000, default 3)\n"), "a closed interval");
    CHECK(contains(text, "\n  --seed S             seed (default 18446744073709551615)\n"), "a uint64 default");
    CHECK(contains(text, "\n  --lr X               learning rate (X > 0, default 0.25)\n"), "the current value is the default");
    CHECK(contains(text, "\n  --top-p P            nucleus (0 < P <= 1, default 1)\n"), "a half-open interval");
    CHECK(contains(text, "\n  --mode M             the mode (a|b|c, default b)\n"), "a choice: the names, the current one");
    CHECK(contains(text, "\n  --quiet              no progress\n"), "a switch");
    CHECK(contains(text, "\n  --version ") && contains(text, "\n  -h, --help "), "--version and --help listed");
    mbpo_free(text);
}

static void test_build_info(void) {
    const char *info;
    char want[64];
    if (!run_test("build_info")) return;
    info = mbpo_build_info();
    snprintf(want, sizeof want, "mbpo %s; openmp ", MBPO_VERSION);
    CHECK(!strcmp(mbpo_version(), MBPO_VERSION) && !strcmp(MBPO_VERSION, "0.1.0"), "mbpo_version: %s", mbpo_version());
    CHECK(!strncmp(info, want, strlen(want)) && !strchr(info, '\n'), "one line that starts with the version: %s", info);
#ifdef _OPENMP
    CHECK(contains(info, " thread"), "OpenMP build: its threads: %s", info);
#else
    CHECK(contains(info, "openmp off"), "no OpenMP: %s", info);
#endif
#ifdef MBPO_LIBJPEG
    CHECK(contains(info, "; libjpeg yes;"), "MBPO_LIBJPEG: %s", info);
#else
    CHECK(contains(info, "; libjpeg no;"), "no MBPO_LIBJPEG: %s", info);
#endif
    CHECK(contains(info, "; cuda no; "), "a CPU build: %s", info);
#if defined(__GNUC__) && !defined(__clang__)
    {
        char cc[32];
        snprintf(cc, sizeof cc, "; gcc %d.%d.%d", __GNUC__, __GNUC_MINOR__, __GNUC_PATCHLEVEL__);
        CHECK(contains(info, cc), "the compiler: %s", info);
    }
#endif
}

/* Run a shell command with stdout and stderr into files; returns the exit status (-1 if it
   did not exit). */
static int t_run(const char *args, char **out, char **err) {
    char cmd[2048], po[512], pe[512];
    int rc;
    snprintf(po, sizeof po, "%s/cli_out.txt", tmpdir());
    snprintf(pe, sizeof pe, "%s/cli_err.txt", tmpdir());
    snprintf(cmd, sizeof cmd, "%s > %s 2> %s", args, po, pe);
    rc = system(cmd);
    *out = mbpo_read_file(po, NULL);
    *err = mbpo_read_file(pe, NULL);
    return rc != -1 && WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}
static int t_lines(const char *s) {
    int n = 0;
    for (; s && *s; s++) n += *s == '\n';
    return n;
}

static void test_drivers_cli(void) {
    /* each driver: a bad flag, and the stderr line it must print */
    static const struct { const char *tool, *args, *expect; } bad[] = {
        { "train", "--model m --out o --lr abc", "mbpo-train: --lr: 'abc' is not a number (see --help)\n" },
        { "train", "--model m --out o --lr=5e-5O", "mbpo-train: --lr: '5e-5O' has trailing characters (see --help)\n" },
        { "train", "--model m --out o --batch 0", "mbpo-train: --batch: must be >= 1, got 0 (see --help)\n" },
        { "train", "--model m --out o --G 1", "mbpo-train: --G: must be >= 2, got 1 (see --help)\n" },
        { "train", "--model m --out o --steps 99999999999999999999",
          "mbpo-train: --steps: 99999999999999999999 is out of range (see --help)\n" },
        { "train", "--model a --model b --out o", "mbpo-train: --model given twice (see --help)\n" },
        { "train", "--model m --out o --mode dpo", "mbpo-train: --mode: 'dpo' is not one of mbpo, offline, offline-rand, online, sft "
          "(see --help)\n" },
        { "train", "--model m --out o --save-dtype f16", "mbpo-train: --save-dtype: 'f16' is not one of f32, bf16 (see --help)\n" },
        { "train", "--model m --out o --seed -1", "mbpo-train: --seed: must be >= 0, got -1 (see --help)\n" },
        { "train", "--model m", "mbpo-train: --out is required (see --help)\n" },
        { "train", "--model m --out o --quiet=1", "mbpo-train: --quiet takes no value (see --help)\n" },
        { "mine", "--model m --data d --out o --top-p 0", "mbpo-mine: --top-p: must be in (0, 1], got 0 (see --help)\n" },
        { "mine", "--model m --data d --out o --negatives noise", "mbpo-mine: --negatives: 'noise' is not one of pgd, rand (see --help)\n" },
        { "mine", "--model m --data d --out o --pgd-eps -1", "mbpo-mine: --pgd-eps: must be >= 0, got -1 (see --help)\n" },
        { "mine", "--model m --out o", "mbpo-mine: --data is required (see --help)\n" },
        { "score", "--model m --data d --out o --max-new-tokens 0", "mbpo-score: --max-new-tokens: must be >= 1, got 0 (see --help)\n" },
        { "score", "--model m --data d --out", "mbpo-score: --out needs a value (see --help)\n" },
        { "synth", "--out w --prior 1.5", "mbpo-synth: --prior: must be in [0, 1], got 1.5 (see --help)\n" },
        { "synth", "--train 5", "mbpo-synth: --out (or --model-out) is required (see --help)\n" },
        { "synth", "--model-out m --arch qwen3_vl", "mbpo-synth: --arch: 'qwen3_vl' is not one of qwen2_vl, qwen2_5_vl (see --help)\n" },
        { "synth", "--model-out m --arch", "mbpo-synth: --arch needs a value (see --help)\n" },
        { "demo", "--seeds 0", "mbpo-demo: --seeds: must be in [1, 1000], got 0 (see --help)\n" },
        { "demo", "--lr 0", "mbpo-demo: --lr: must be > 0, got 0 (see --help)\n" },
        { "bench", "--model m --iters x", "mbpo-bench: --iters: 'x' is not an integer (see --help)\n" },
        { "bench", "--tokenizer t", "mbpo-bench: --tokenizer and --text go together (see --help)\n" },
        { "train", "--model m --out o --save-total-limit -1", "mbpo-train: --save-total-limit: must be >= 0, got -1 (see --help)\n" },
        { "export", "--image-root r", "mbpo-export: --mined is required (see --help)\n" },
        { "score", "--model m --data d --out o --device gpu", "mbpo-score: --device: 'gpu' is not one of cpu, cuda (see --help)\n" },
    };
    static const char *tools[7] = { "mine", "train", "score", "export", "synth", "demo", "bench" };
    char cmd[1024], *out, *err, want[128];
    size_t k;
    int rc, i;
    if (!run_test("drivers_cli")) return;
    for (k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        snprintf(cmd, sizeof cmd, "./build/mbpo-%s %s", bad[k].tool, bad[k].args);
        rc = t_run(cmd, &out, &err);
        CHECK(rc == 2 && err && !strcmp(err, bad[k].expect) && out && !out[0], "%s: exit %d, stderr '%s' (want exit 2, '%.*s')", cmd, rc,
              err ? err : "(none)", (int)strlen(bad[k].expect) - 1, bad[k].expect);
        mbpo_free(out); mbpo_free(err);
    }
    for (i = 0; i < 7; i++) {
        snprintf(cmd, sizeof cmd, "./build/mbpo-%s --version", tools[i]);
        snprintf(want, sizeof want, "mbpo-%s: mbpo %s; openmp ", tools[i], MBPO_VERSION);
        rc = t_run(cmd, &out, &err);
        CHECK(rc == 0 && out && !strncmp(out, want, strlen(want)) && t_lines(out) == 1 && err && !err[0],
              "%s: exit %d, '%s'", cmd, rc, out ? out : "(none)");
        mbpo_free(out); mbpo_free(err);
        snprintf(cmd, sizeof cmd, "./build/mbpo-%s --help", tools[i]);
        snprintf(want, sizeof want, "usage: mbpo-%s ", tools[i]);
        rc = t_run(cmd, &out, &err);
        CHECK(rc == 0 && out && !strncmp(out, want, strlen(want)) && contains(out, "  --version ") && err && !err[0],
              "%s: exit %d, the usage on stdout", cmd, rc);
        mbpo_free(out); mbpo_free(err);
    }
    /* --flag=value reaches the library: a missing model is a runtime error (exit 1) naming it */
    snprintf(cmd, sizeof cmd, "./build/mbpo-score --model=%s/no-such-model --data=%s/d.jsonl --out=%s/s.jsonl --quiet", tmpdir(), tmpdir(),
             tmpdir());
    rc = t_run(cmd, &out, &err);
    CHECK(rc == 1 && err && contains(err, "no-such-model") && t_lines(err) == 1, "%s: exit %d, '%s'", cmd, rc, err ? err : "(none)");
    mbpo_free(out); mbpo_free(err);
    /* --device cuda in a build without the CUDA table: one line that says which build has it */
    for (i = 0; i < 3; i++) {
        snprintf(cmd, sizeof cmd, "./build/mbpo-%s --model %s/m --data %s/d.jsonl --out %s/o --device cuda", tools[i], tmpdir(),
                 tmpdir(), tmpdir());
        if (i == 1) snprintf(cmd, sizeof cmd, "./build/mbpo-train --model %s/m --data %s/d.jsonl --out %s/o --device cuda", tmpdir(),
                             tmpdir(), tmpdir());
        rc = t_run(cmd, &out, &err);
        CHECK(rc == 1 && err && contains(err, "--device cuda: this build has no CUDA backend") && contains(err, "make cuda") &&
              t_lines(err) == (i == 0 ? 2 : 1), "%s: exit %d, '%s'", cmd, rc, err ? err : "(none)");   /* mine: its settings line first */
        mbpo_free(out); mbpo_free(err);
    }
    /* the CUDA build (make cuda; check-nvcc builds it when nvcc is there) on a machine without a
       GPU: --device cuda stops with the CUDA runtime's reason, and --version says what it has */
    if (access("build/cuda/mbpo-score", X_OK) == 0 && access("/dev/nvidia0", F_OK) != 0) {
        snprintf(cmd, sizeof cmd, "./build/cuda/mbpo-score --model demo/tiny-sft --data %s/d.jsonl --out %s/o --device cuda", tmpdir(),
                 tmpdir());
        rc = t_run(cmd, &out, &err);
        CHECK(rc == 1 && err && contains(err, "mbpo-score: --device cuda: no usable GPU") && t_lines(err) == 1, "%s: exit %d, '%s'",
              cmd, rc, err ? err : "(none)");
        mbpo_free(out); mbpo_free(err);
        rc = t_run("./build/cuda/mbpo-score --version", &out, &err);
        CHECK(rc == 0 && out && contains(out, "; cuda bf16; nvcc "), "build/cuda/mbpo-score --version: '%s'", out ? out : "(none)");
        mbpo_free(out); mbpo_free(err);
    }
    /* one binary, two backends: the CUDA build on the CPU scores exactly as the cc build
       (the same CPU table, the same bits: IIG values and greedy answers byte for byte) */
    if (access("build/cuda/mbpo-score", X_OK) == 0) {
        char dir[256], a[300], b[300], cmd2[2048];
        size_t na = 0, nb = 0;
        char *x, *y;
        snprintf(dir, sizeof dir, "%s/cuda_cpu", tmpdir());
        make_world(dir);
        snprintf(a, sizeof a, "%s/cc.jsonl", dir);
        snprintf(b, sizeof b, "%s/nvcc.jsonl", dir);
        snprintf(cmd2, sizeof cmd2, "./build/mbpo-score --model %s/model --data %s/data.jsonl --image-root %s/images --out %s "
                 "--max-new-tokens 6 --quiet", dir, dir, dir, a);
        rc = t_run(cmd2, &out, &err);
        mbpo_free(out); mbpo_free(err);
        snprintf(cmd2, sizeof cmd2, "./build/cuda/mbpo-score --model %s/model --data %s/data.jsonl --image-root %s/images --out %s "
                 "--max-new-tokens 6 --quiet --device cpu", dir, dir, dir, b);
        i = t_run(cmd2, &out, &err);
        mbpo_free(out); mbpo_free(err);
        x = mbpo_read_file(a, &na); y = mbpo_read_file(b, &nb);
        CHECK(rc == 0 && i == 0 && x && y && na > 100 && na == nb && !memcmp(x, y, na),
              "build/mbpo-score and build/cuda/mbpo-score --device cpu: exit %d and %d, %zu and %zu bytes, identical: %d", rc, i,
              na, nb, x && y && na == nb && !memcmp(x, y, na));
        mbpo_free(x); mbpo_free(y);
    }
    /* the defaults --help shows are the library's */
    rc = t_run("./build/mbpo-train --help", &out, &err);
    CHECK(rc == 0 && out && contains(out, "--lr X               AdamW learning rate (X > 0, default 1e-06)\n") &&
          contains(out, "(mbpo|offline|offline-rand|online|sft, default mbpo)") && contains(out, "(N >= 2, default 8)"),
          "mbpo-train --help: the defaults of mbpo_train_defaults");
    mbpo_free(out); mbpo_free(err);
}

void test_cli(void) {
    test_flags_parse();
    test_flags_table();
    test_build_info();
    test_drivers_cli();
}
