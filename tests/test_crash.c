/* test_crash.c - crash safety of the executables (`make crash`, run by CI).

   1. mbpo-mine and mbpo-train are killed with SIGKILL at random moments and rerun on the same
      output directory until a run finishes. After every kill the outputs are checked against
      an uninterrupted run of the same executable:
        - every whole line of every JSONL file parses, and the whole lines are a byte prefix of
          the uninterrupted run's file (so no sample or step is duplicated or missing); a torn
          last line (a kill inside a write) is counted, and the next run cuts it;
        - every file written atomically (online.jsonl, adv/<i>.png, checkpoint-<step>/) is
          either absent or identical to the uninterrupted run's; every pair's adversarial
          image exists; every checkpoint loads, with finite weights;
      and when a run finishes, its directory holds exactly the uninterrupted run's files, byte
      for byte, and no temporary file.
   2. A full disk, on a small tmpfs (needs root, as in CI; reported SKIPPED otherwise): mining
      stops with a message naming the file, training refuses to start without room for one
      checkpoint, and when the disk fills at a checkpoint it stops keeping the previous one;
      after space is freed, both resume to the uninterrupted result. A read-only output
      directory is refused before any work by all three executables.

   usage: build/test_crash [kills per executable (default 24)] [seed (default 1)]
   Ends with "N passed, N failed"; a line per phase says what was killed, when and how often. */
#define MBPO_IMPLEMENTATION
#include "../mbpo.h"

#include <errno.h>
#include <stdarg.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int n_passed, n_failed;
#define CHECK(cond, ...) do { if (cond) n_passed++; else { n_failed++; \
    printf("FAIL %s:%d: ", __FILE__, __LINE__); printf(__VA_ARGS__); printf("\n"); } } while (0)

static char root[256];   /* the scratch directory */

/* ---------------------------------------------------------------- processes */

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}
/* Start `cmd` (through sh, exec'd so the pid is the executable's), stderr to err_path. */
static pid_t spawn(const char *cmd, const char *err_path) {
    pid_t pid = fork();
    if (pid < 0) { printf("FAIL: fork: %s\n", strerror(errno)); exit(1); }   /* never kill(-1, ...) */
    if (pid == 0) {
        char full[8192];
        snprintf(full, sizeof full, "exec %s 2>%s", cmd, err_path);
        execl("/bin/sh", "sh", "-c", full, (char *)NULL);
        _exit(127);
    }
    return pid;
}
/* Wait up to `seconds` for pid; kill it with SIGKILL if it is still running. Returns 1 when
   it was killed, 0 when it finished first (*status: its wait status). */
static int kill_after(pid_t pid, double seconds, int *status) {
    double until = now_s() + seconds;
    struct timespec ms = { 0, 500000 };
    while (now_s() < until) {
        if (waitpid(pid, status, WNOHANG) == pid) return 0;
        nanosleep(&ms, NULL);
    }
    kill(pid, SIGKILL);
    waitpid(pid, status, 0);
    /* it may have exited on its own just before the signal */
    return WIFSIGNALED(*status) && WTERMSIG(*status) == SIGKILL;
}
/* Run to the end (killed after 10 minutes: a hung run fails the test instead of hanging it);
   the exit code, or 128 + the signal. */
static int run(const char *cmd, const char *err_path) {
    int status = 0;
    if (kill_after(spawn(cmd, err_path), 600, &status)) printf("  hung for 10 minutes, killed: %s\n", cmd);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
static int sh(const char *fmt, ...) {
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    return system(cmd);
}

/* ---------------------------------------------------------------- files */

static char *slurp(const char *dir, const char *name, size_t *n) {
    char path[1024];
    FILE *f;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (!(f = fopen(path, "rb"))) return NULL;
    fclose(f);
    return mbpo_read_file(path, n);
}
static int exists(const char *dir, const char *name) {
    char path[1024];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return stat(path, &st) == 0;
}
/* 1 if dir/name and ref/name have the same bytes (both missing counts as the same). */
static int same(const char *dir, const char *ref, const char *name) {
    size_t na = 0, nb = 0;
    char *a = slurp(dir, name, &na), *b = slurp(ref, name, &nb);
    int ok = (!a && !b) || (a && b && na == nb && !memcmp(a, b, na));
    mbpo_free(a); mbpo_free(b);
    return ok;
}
/* The names in a directory, sorted, as one "\n"-joined string (NULL if it cannot be read). */
static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }
static char *listing(const char *dir) {
    DIR *d = opendir(dir);
    struct dirent *e;
    char *names[4096], *out;
    size_t n = 0, len = 1, k;
    if (!d) return NULL;
    while ((e = readdir(d)) != NULL && n < 4096)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) { names[n] = strdup(e->d_name); len += strlen(e->d_name) + 1; n++; }
    closedir(d);
    qsort(names, n, sizeof names[0], cmp_str);
    out = (char *)malloc(len);
    out[0] = 0;
    for (k = 0; k < n; k++) { strcat(out, names[k]); strcat(out, "\n"); free(names[k]); }
    return out;
}
/* Temporary files a kill can leave: "<name>.tmp.<pid>" and "checkpoint-<step>.tmp". */
static int count_tmp(const char *dir) {
    char *l = listing(dir), *p;
    int n = 0;
    for (p = l; p && (p = strstr(p, ".tmp")) != NULL; p += 4) n++;
    free(l);
    return n;
}

/* A JSONL file after a kill: its whole lines must parse and be a byte prefix of the
   uninterrupted run's file. *torn is set when a partial last line follows them. Returns the
   number of whole lines, or -1 (with a message) when the file breaks the rule. */
static int64_t jsonl_prefix(const char *dir, const char *ref, const char *name, int *torn) {
    size_t n = 0, nr = 0, whole, i;
    char *t = slurp(dir, name, &n), *r = slurp(ref, name, &nr);
    int64_t lines = 0;
    *torn = 0;
    if (!t) { mbpo_free(r); return 0; }
    for (whole = n; whole > 0 && t[whole - 1] != '\n'; whole--) {}
    *torn = whole < n;
    for (i = 0; i < whole; ) {
        const char *eol = (const char *)memchr(t + i, '\n', whole - i);
        mbpo_json *j = mbpo_json_parse(t + i, (size_t)(eol - (t + i)), name);
        if (!j) { printf("  %s/%s line %lld does not parse: %s\n", dir, name, (long long)lines + 1, mbpo_failure_reason()); lines = -1; break; }
        mbpo_json_free(j);
        lines++;
        i = (size_t)(eol - t) + 1;
    }
    if (lines >= 0 && (!r || whole > nr || memcmp(t, r, whole) != 0)) {
        printf("  %s/%s: its %lld whole lines are not a prefix of the uninterrupted run's\n", dir, name, (long long)lines);
        lines = -1;
    }
    mbpo_free(t); mbpo_free(r);
    return lines;
}

/* ---------------------------------------------------------------- mining */

static const char *MINE_ARGS = "--top-k 16 --pgd-iters 10 --max-new-tokens 24 --temperature 0.7 --seed 7 --quiet";
static char world[300], mine_ref[300];

static void mine_cmd(char *cmd, size_t n, const char *out) {
    snprintf(cmd, n, "./build/mbpo-mine --model demo/tiny-sft --data %s/train.jsonl --image-root %s/images --out %s %s",
             world, world, out, MINE_ARGS);
}
/* The state a killed mining run left: returns 1 if it obeys every rule. *phase: where the kill
   landed (0 before any output, 1 in IIG, 2 in PGD / rejected sampling, 3 in the export). */
static int check_mine_state(const char *out, int *torn_seen, int *tmp_seen, int *phase) {
    static const char *jsonl[3] = { "iig.jsonl", "offline.jsonl", "skipped.jsonl" };
    int64_t lines[3];
    int k, torn, ok = 1;
    size_t n = 0;
    char *text, adv[300];
    for (k = 0; k < 3; k++) {
        lines[k] = jsonl_prefix(out, mine_ref, jsonl[k], &torn);
        if (lines[k] < 0) ok = 0;
        *torn_seen += torn;
    }
    if (!same(out, mine_ref, "online.jsonl") && exists(out, "online.jsonl")) { printf("  online.jsonl is partial\n"); ok = 0; }
    /* every adversarial image present is whole; every written pair has its image */
    snprintf(adv, sizeof adv, "%s/adv", out);
    {
        char *l = listing(adv), *name = l, *nl;
        for (; l && (nl = strchr(name, '\n')) != NULL; name = nl + 1) {
            char rel[300];
            *nl = 0;
            if (strstr(name, ".tmp.")) continue;
            snprintf(rel, sizeof rel, "adv/%s", name);
            if (!same(out, mine_ref, rel)) { printf("  %s/%s differs from the uninterrupted run's\n", out, rel); ok = 0; }
        }
        free(l);
    }
    if ((text = slurp(out, "offline.jsonl", &n)) != NULL) {
        const char *p = text;
        while ((p = strstr(p, "\"adv_image\": \"")) != NULL) {
            char rel[300];
            const char *q = p + 14, *e = strchr(q, '"');
            if (!e) break;
            snprintf(rel, sizeof rel, "%.*s", (int)(e - q), q);
            if (!exists(out, rel)) { printf("  %s: a pair without its image %s\n", out, rel); ok = 0; }
            p = e;
        }
        mbpo_free(text);
    }
    {
        char exp[300];
        snprintf(exp, sizeof exp, "%s/export", out);
        *tmp_seen += count_tmp(out) + count_tmp(adv) + count_tmp(exp) > 0;
        *phase = !exists(out, "iig.jsonl") ? 0 : !exists(out, "offline.jsonl") ? 1 : !exists(out, "export") ? 2 : 3;
    }
    return ok;
}
/* A finished run: the same files as the uninterrupted run, byte for byte, and no temporary file. */
static int same_tree(const char *out, const char *ref, const char *sub, const char *skip) {
    char a[600], b[600], *la, *lb, *name, *nl;
    int ok;
    snprintf(a, sizeof a, "%s%s%s", out, *sub ? "/" : "", sub);
    snprintf(b, sizeof b, "%s%s%s", ref, *sub ? "/" : "", sub);
    la = listing(a); lb = listing(b);
    ok = la && lb && !strcmp(la, lb);
    if (!ok) printf("  %s holds other files than %s:\n%s---\n%s", a, b, la ? la : "(none)\n", lb ? lb : "(none)\n");
    for (name = la; ok && (nl = strchr(name, '\n')) != NULL; name = nl + 1) {
        struct stat st;
        char path[1200];
        *nl = 0;
        snprintf(path, sizeof path, "%s/%s", a, name);
        if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
            char s2[600];
            snprintf(s2, sizeof s2, "%s%s%s", sub, *sub ? "/" : "", name);
            ok = same_tree(out, ref, s2, skip);
        } else if ((!skip || strcmp(name, skip) != 0) && !same(a, b, name)) { printf("  %s/%s differs\n", a, name); ok = 0; }
    }
    free(la); free(lb);
    return ok;
}

/* ---------------------------------------------------------------- the kill loop */

/* An executable under test: its command line for an output folder, the rules a killed run's
   folder must obey (the function also counts where the kill landed), and the test of a
   finished run against the uninterrupted one. */
typedef struct {
    void (*command)(char *cmd, size_t n, const char *out);
    int (*killed_ok)(const char *out);
    int (*finished_ok)(const char *out);
} crash_target;
typedef struct { double T; int kills, finished, finished_same, bad_states; } crash_result;

/* Run the command once into `ref` (timing it: T), then start it again and again on one folder,
   with SIGKILL after a random delay in [0, 0.7 T], until `kills` kills have landed; a run that
   finishes first is compared with `ref` and the next run starts a new folder. */
static crash_result crash_loop(const crash_target *t, const char *name, const char *ref, int kills, mbpo_rng *rng) {
    char out[300], cmd[4096], err[300];
    crash_result r;
    int chain = 0;
    memset(&r, 0, sizeof r);
    snprintf(err, sizeof err, "%s/err.txt", root);
    t->command(cmd, sizeof cmd, ref);
    r.T = now_s();
    CHECK(run(cmd, err) == 0, "%s uninterrupted", name);
    r.T = now_s() - r.T;
    for (;;) {
        int status = 0, killed;
        snprintf(out, sizeof out, "%s/%s_%d", root, name, chain);
        t->command(cmd, sizeof cmd, out);
        killed = r.kills < kills && kill_after(spawn(cmd, err), 0.7 * r.T * mbpo_rng_uniform(rng), &status);
        if (!killed && r.kills == kills) status = (run(cmd, err) & 0xFF) << 8;   /* the last chain: finish it */
        if (killed) {
            r.kills++;
            r.bad_states += !t->killed_ok(out);
            continue;
        }
        r.finished++;
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0 && t->finished_ok(out)) r.finished_same++;
        else printf("  %s chain %d: exit %d, or not identical to the uninterrupted run\n", name, chain,
                    WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
        if (r.kills == kills) break;
        chain++;
    }
    CHECK(r.bad_states == 0, "%s: %d of %d killed states broke a rule", name, r.bad_states, r.kills);
    CHECK(r.finished_same == r.finished, "%s: %d of %d resumed runs identical to the uninterrupted one", name, r.finished_same,
          r.finished);
    return r;
}

/* ---------------------------------------------------------------- mining */

static int mine_torn, mine_tmp, mine_phase[4];
static int mine_killed_ok(const char *out) {
    int phase = 0, ok = check_mine_state(out, &mine_torn, &mine_tmp, &phase);
    mine_phase[phase]++;
    return ok;
}
static int mine_finished_ok(const char *out) { return same_tree(out, mine_ref, "", NULL); }

static void crash_mine(int kills, mbpo_rng *rng) {
    crash_target t = { mine_cmd, mine_killed_ok, mine_finished_ok };
    crash_result r;
    snprintf(mine_ref, sizeof mine_ref, "%s/mine_ref", root);
    r = crash_loop(&t, "mine", mine_ref, kills, rng);
    printf("  %s  mbpo-mine (%.2f s uninterrupted): %d SIGKILLs at random moments in [0, %.2f s] over %d runs to the end "
           "(%d before any output, %d in IIG, %d in PGD/sampling, %d in the export; %d left a temporary file, %d a torn line); "
           "%d killed states broke a rule; %d/%d finished runs byte-identical to the uninterrupted one\n",
           r.bad_states == 0 && r.finished_same == r.finished ? "ok" : "!!", r.T, r.kills, 0.7 * r.T, r.finished, mine_phase[0],
           mine_phase[1], mine_phase[2], mine_phase[3], mine_tmp, mine_torn, r.bad_states, r.finished_same, r.finished);
}
/* A random kill lands in the export (a few ms at the end) only now and then, so its leftovers are
   also planted: the temporary files a killed run leaves in the output, in adv/ and in export/
   (named for a process that has exited) must be gone after the rerun, which ends identical. */
static void mine_stale_leftovers(void) {
    static const char *planted[4] = { "offline.jsonl", "adv/0.png", "export/dataset_info.json", "export/trl_dpo.jsonl" };
    char out[300], cmd[4096], err[300];
    pid_t dead = fork();
    int k, ok;
    if (dead == 0) _exit(0);
    waitpid(dead, NULL, 0);
    snprintf(out, sizeof out, "%s/mine_stale", root);
    snprintf(err, sizeof err, "%s/err.txt", root);
    sh("cp -r %s %s", mine_ref, out);
    for (k = 0; k < 4; k++) sh("echo partial > %s/%s.tmp.%ld", out, planted[k], (long)dead);
    mine_cmd(cmd, sizeof cmd, out);
    ok = run(cmd, err) == 0 && same_tree(out, mine_ref, "", NULL);
    CHECK(ok, "mine: a rerun removes the temporary files a killed run left in the output, adv/ and export/");
    if (ok) printf("  ok  mbpo-mine rerun over a killed run's temporary files (in the output, adv/, export/): removed, the rest identical\n");
}

/* ---------------------------------------------------------------- training */

static const char *TRAIN_ARGS = "--mode mbpo --steps 12 --save-every 1 --batch 4 --G 4 --max-new-tokens 16 --lr 5e-5 "
                                "--iig-every 2 --seed 3 --quiet";
static char train_ref[300];
static const char *CKPT_FILES[10] = { "config.json", "model.safetensors", "optimizer.safetensors", "preprocessor_config.json",
                                      "tokenizer.json", "tokenizer_config.json", "chat_template.json", "generation_config.json",
                                      "mbpo_state.json", NULL };

static void train_cmd(char *cmd, size_t n, const char *out) {
    snprintf(cmd, n, "./build/mbpo-train --model demo/tiny-sft --offline %s/offline.jsonl --online %s/online.jsonl "
             "--image-root %s/images --out %s %s", mine_ref, mine_ref, world, out, TRAIN_ARGS);
}
/* metrics.jsonl after a kill: whole lines parse, line k is step k, and its numbers equal the
   uninterrupted run's step k (all but the timings: tokens_per_s and time_*). Returns the whole lines or -1. */
static int64_t check_metrics(const char *out, int *torn) {
    size_t n = 0, nr = 0, whole, i, ir = 0;
    char *t = slurp(out, "metrics.jsonl", &n), *r = slurp(train_ref, "metrics.jsonl", &nr);
    int64_t lines = 0;
    *torn = 0;
    if (!t || !r) { mbpo_free(t); mbpo_free(r); return 0; }
    for (whole = n; whole > 0 && t[whole - 1] != '\n'; whole--) {}
    *torn = whole < n;
    for (i = 0; i < whole && lines >= 0; ) {
        const char *eol = (const char *)memchr(t + i, '\n', whole - i), *eolr = ir < nr ? (const char *)memchr(r + ir, '\n', nr - ir) : NULL;
        mbpo_json *j = mbpo_json_parse(t + i, (size_t)(eol - (t + i)), "metrics.jsonl");
        mbpo_json *jr = eolr ? mbpo_json_parse(r + ir, (size_t)(eolr - (r + ir)), "ref metrics.jsonl") : NULL;
        const mbpo_json *st = j ? mbpo_json_get(j, "step") : NULL;
        size_t k;
        int good = j && jr && st && st->is_int && st->integer == lines + 1 && j->count == jr->count;
        for (k = 0; good && k < j->count; k++) {
            const mbpo_json *a = &j->items[k], *b = mbpo_json_get(jr, j->keys[k]);
            if (!strcmp(j->keys[k], "tokens_per_s") || !strncmp(j->keys[k], "time_", 5)) continue;
            good = b && a->type == b->type && (a->type != MBPO_JSON_NUMBER || a->number == b->number);
        }
        if (!good) { printf("  %s/metrics.jsonl line %lld: not step %lld of the uninterrupted run\n", out, (long long)lines + 1, (long long)lines + 1); lines = -2; }
        mbpo_json_free(j); mbpo_json_free(jr);
        lines++;
        i = (size_t)(eol - t) + 1;
        ir = eolr ? (size_t)(eolr - r) + 1 : nr;
    }
    mbpo_free(t); mbpo_free(r);
    return lines < 0 ? -1 : lines;
}
/* Every checkpoint-<step> present: the uninterrupted run's files, and it loads with finite weights. */
static int check_checkpoints(const char *out, int64_t *newest) {
    int64_t s;
    int ok = 1;
    *newest = 0;
    for (s = 1; s <= 12; s++) {
        char name[64], dir[400], ref[400];
        int k;
        snprintf(name, sizeof name, "checkpoint-%lld", (long long)s);
        if (!exists(out, name)) continue;
        *newest = s;
        snprintf(dir, sizeof dir, "%s/%s", out, name);
        snprintf(ref, sizeof ref, "%s/%s", train_ref, name);
        for (k = 0; CKPT_FILES[k]; k++)
            if (!exists(dir, CKPT_FILES[k]) || !same(dir, ref, CKPT_FILES[k])) { printf("  %s/%s differs or is missing\n", dir, CKPT_FILES[k]); ok = 0; }
        {
            mbpo_model m;
            size_t i;
            if (!mbpo_model_load(&m, dir)) { printf("  %s does not load: %s\n", dir, mbpo_failure_reason()); ok = 0; continue; }
            for (i = 0; i < m.table.total_floats; i++) if (!isfinite(m.params[i])) { ok = 0; break; }
            mbpo_model_free(&m);
        }
    }
    return ok;
}
/* A finished training run: the uninterrupted run's files (metrics compared without timings). */
static int same_tree_train(const char *out) {
    int torn;
    return same_tree(out, train_ref, "", "metrics.jsonl") && check_metrics(out, &torn) == 12 && !torn;
}
static int train_torn, train_in_write, train_before_ckpt;
static int train_killed_ok(const char *out) {
    int64_t lines, newest;
    int torn, good;
    char *l = listing(out);
    train_in_write += l && strstr(l, ".tmp") != NULL;   /* inside a checkpoint or an atomic write */
    free(l);
    lines = check_metrics(out, &torn);
    train_torn += torn;
    good = check_checkpoints(out, &newest) && lines >= 0 && lines >= newest;
    if (lines >= 0 && lines < newest) printf("  %s: checkpoint-%lld but %lld metrics lines\n", out, (long long)newest, (long long)lines);
    train_before_ckpt += newest == 0;
    return good;
}
static void crash_train(int kills, mbpo_rng *rng) {
    crash_target t = { train_cmd, train_killed_ok, same_tree_train };
    crash_result r;
    snprintf(train_ref, sizeof train_ref, "%s/train_ref", root);
    r = crash_loop(&t, "train", train_ref, kills, rng);
    printf("  %s  mbpo-train (%.2f s uninterrupted, 12 steps, a checkpoint each): %d SIGKILLs at random moments in [0, %.2f s] "
           "over %d runs to the end (%d before the first checkpoint, %d inside a checkpoint or file write; %d left a torn "
           "metrics line); %d killed states broke a rule; %d/%d finished runs byte-identical to the uninterrupted one\n",
           r.bad_states == 0 && r.finished_same == r.finished ? "ok" : "!!", r.T, r.kills, 0.7 * r.T, r.finished,
           train_before_ckpt, train_in_write, train_torn, r.bad_states, r.finished_same, r.finished);
}

/* ---------------------------------------------------------------- a full disk, a read-only one */

static int err_has(const char *err, const char *what) {
    char *t = mbpo_read_file(err, NULL);
    int yes = t && strstr(t, what) != NULL;
    if (!yes) printf("  %s does not say \"%s\": %s\n", err, what, t ? t : "(empty)");
    mbpo_free(t);
    return yes;
}
static void disk_full(void) {
    char fs[300], out[400], cmd[4096], err[300];
    int rc, t1, failed_before = n_failed;
    int64_t newest = 0;
    snprintf(fs, sizeof fs, "%s/fs", root);
    snprintf(err, sizeof err, "%s/err.txt", root);
    sh("mkdir -p %s", fs);
    if (sh("mount -t tmpfs -o size=128k tmpfs %s 2>/dev/null", fs) != 0) {
        printf("  SKIPPED  full and read-only disks: cannot mount a tmpfs here (needs root, as in CI)\n");
        return;
    }
    /* 1. mining fills a 128 KB disk, stops naming the file; after more room it resumes */
    snprintf(out, sizeof out, "%s/mine", fs);
    mine_cmd(cmd, sizeof cmd, out);
    rc = run(cmd, err);
    {
        int torn = 0, tmp = 0, phase = 0;
        CHECK(rc != 0 && err_has(err, "No space left on device") && err_has(err, out), "mining on a full disk: a clear error");
        CHECK(check_mine_state(out, &torn, &tmp, &phase), "mining on a full disk: what was written obeys the rules");
    }
    sh("mount -o remount,size=16m %s", fs);
    CHECK(run(cmd, err) == 0 && same_tree(out, mine_ref, "", NULL), "mining resumed after the disk was enlarged: identical");
    sh("umount %s", fs);
    /* 2. training on a disk without room for one checkpoint: refused before any work */
    sh("mount -t tmpfs -o size=8m tmpfs %s", fs);
    snprintf(out, sizeof out, "%s/train", fs);
    train_cmd(cmd, sizeof cmd, out);
    rc = run(cmd, err);
    CHECK(rc != 0 && err_has(err, "a checkpoint needs about") && !exists(out, "metrics.jsonl"),
          "training without room for a checkpoint: refused at the start");
    sh("umount %s", fs);
    /* 3. room for one and a half checkpoints: checkpoint-2 fails, checkpoint-1 is kept and
       whole, nothing partial is left; with more room the run resumes to the same end */
    sh("mount -t tmpfs -o size=20m tmpfs %s", fs);
    rc = run(cmd, err);
    {
        char *l = listing(out);
        CHECK(rc != 0 && err_has(err, "No space left on device") && err_has(err, "checkpoint-1 is the newest whole checkpoint"),
              "the disk fills at checkpoint-2: a clean stop that names the kept checkpoint");
        CHECK(l && !strcmp(l, "checkpoint-1\nmetrics.jsonl\nrun.json\n"), "left: checkpoint-1, metrics.jsonl and run.json, no partial checkpoint (%s)",
              l ? l : "?");
        CHECK(check_checkpoints(out, &newest) && newest == 1 && check_metrics(out, &t1) >= 1,
              "checkpoint-1 loads and equals the uninterrupted run's");
        free(l);
    }
    sh("mount -o remount,size=200m %s", fs);
    CHECK(run(cmd, err) == 0 && same_tree_train(out), "training resumed after the disk was enlarged: identical");
    sh("umount %s", fs);
    /* 4. a read-only output directory: all three executables refuse before any work */
    sh("mount -t tmpfs -o ro,size=1m tmpfs %s", fs);
    mine_cmd(cmd, sizeof cmd, fs);
    CHECK(run(cmd, err) != 0 && err_has(err, "not writable") && err_has(err, fs), "mbpo-mine: a read-only --out is refused");
    train_cmd(cmd, sizeof cmd, fs);
    CHECK(run(cmd, err) != 0 && err_has(err, "not writable") && err_has(err, fs), "mbpo-train: a read-only --out is refused");
    snprintf(cmd, sizeof cmd, "./build/mbpo-score --model demo/tiny-sft --data %s/test_prior.jsonl --image-root %s/images "
             "--out %s/scores.jsonl --quiet", world, world, fs);
    CHECK(run(cmd, err) != 0 && err_has(err, "not writable") && err_has(err, fs), "mbpo-score: a read-only --out is refused");
    sh("umount %s", fs);
    printf("  %s  full disk (tmpfs): mining stops naming the file and resumes identically; training is refused without room "
           "for a checkpoint, stops at a full checkpoint keeping the previous one, and resumes identically; a read-only --out "
           "is refused by mine, train and score\n", n_failed > failed_before ? "!!" : "ok");
}

int main(int argc, char **argv) {
    int kills = argc > 1 && atoi(argv[1]) > 0 ? atoi(argv[1]) : 24;
    uint64_t seed = argc > 2 ? strtoull(argv[2], NULL, 10) : 1;
    mbpo_rng rng;
    snprintf(root, sizeof root, "/tmp/mbpo_crash_%ld", (long)getpid());
    snprintf(world, sizeof world, "%s/world", root);
    if (sh("rm -rf %s && mkdir -p %s && ./build/mbpo-synth --out %s --train 24 --test 1 --seed 5 >/dev/null", root, root, world)) {
        printf("FAIL: cannot make the shapes world in %s\n", world);
        return 1;
    }
    mbpo_rng_seed(&rng, seed);
    printf("== crash: %d kills per executable, seed %llu, in %s\n", kills, (unsigned long long)seed, root);
    crash_mine(kills, &rng);
    mine_stale_leftovers();
    crash_train(kills, &rng);
    disk_full();
    if (n_failed == 0) sh("rm -rf %s", root);
    else printf("(the directories are kept in %s)\n", root);
    printf("%d passed, %d failed\n", n_passed, n_failed);
    return n_failed != 0;
}
