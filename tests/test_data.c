/*
 * test_data.c — datasets (src/train/data.c, data_mnist.c): MNIST idx files (plain and gzip,
 * malformed ones), the real Fashion-MNIST t10k set when Debian's dataset-fashion-mnist is
 * installed (skipped otherwise), image folders with classes, captions and a corrupt file that is
 * counted and skipped, error messages naming the file, the background loader's determinism
 * (prefetch depths, seeks) and each augmentation (resize, crops, flip, channel conversion).
 *
 * Tolerances: pixel values through the no-resize path are exact (v * (hi-lo)/255 + lo in f32,
 * compared with the same expression). Resampling sums a handful of weights that add up to 1 in
 * f32: a constant stays constant within 1e-4 (of 255 levels); a linear ramp is reproduced by the
 * symmetric triangle filter away from the borders within 1e-3 levels.
 */
#include <dirent.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "nu_test.h"
#include "nuance/io.h"
#include "nuance/train.h"
#include "train/train_internal.h"

static char tmpdir[256];

static char *tp(const char *rel) {
    static char buf[8][600];
    static int k;
    k = (k + 1) % 8;
    snprintf(buf[k], sizeof buf[k], "%s/%s", tmpdir, rel);
    return buf[k];
}

static void write_bytes(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        exit(1);
    }
    fwrite(data, 1, n, f);
    fclose(f);
}

static void write_gz(const char *path, const void *data, size_t n) {
    gzFile f = gzopen(path, "wb");
    gzwrite(f, data, (unsigned)n);
    gzclose(f);
}

/* idx images [n, h, w] with pixel (i, y, x) = (i*31 + y*7 + x*3) & 255, labels i % 3 */
static size_t make_idx(uint8_t *img, uint8_t *lab, int n, int h, int w) {
    uint8_t hdr[16] = {0, 0, 8, 3, 0, 0, 0, (uint8_t)n, 0, 0, 0, (uint8_t)h, 0, 0, 0, (uint8_t)w};
    memcpy(img, hdr, 16);
    for (int i = 0; i < n; i++)
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) img[16 + (i * h + y) * w + x] = (uint8_t)((i * 31 + y * 7 + x * 3) & 255);
    uint8_t lh[8] = {0, 0, 8, 1, 0, 0, 0, (uint8_t)n};
    memcpy(lab, lh, 8);
    for (int i = 0; i < n; i++) lab[8 + i] = (uint8_t)(i % 3);
    return 16 + (size_t)n * h * w;
}

static nu_dataset_params plain_params(const char *path, int batch) {
    nu_dataset_params p = nu_dataset_params_init();
    p.path = path;
    p.batch_size = batch;
    p.shuffle = false;
    p.drop_last = false;
    p.range_lo = 0;
    p.range_hi = 1;
    p.prefetch = 0;
    return p;
}

static void test_idx(void) {
    mkdir(tp("idx"), 0755);
    uint8_t img[16 + 10 * 5 * 7], lab[8 + 10];
    size_t ni = make_idx(img, lab, 10, 5, 7);
    write_bytes(tp("idx/train-images-idx3-ubyte"), img, ni);
    write_bytes(tp("idx/train-labels-idx1-ubyte"), lab, sizeof lab);
    write_gz(tp("idx/t10k-images-idx3-ubyte.gz"), img, ni);
    write_gz(tp("idx/t10k-labels-idx1-ubyte.gz"), lab, sizeof lab);

    for (int variant = 0; variant < 3; variant++) {
        nu_dataset_params p = plain_params(variant == 2 ? tp("idx/t10k-images-idx3-ubyte.gz") : tp("idx"), 4);
        if (variant == 1) p.split = "t10k";
        nu_dataset *d;
        nu_status st = nu_dataset_open(&p, &d);
        NU_CHECK_MSG(st == NU_OK, "idx variant %d: %s", variant, nu_last_error());
        if (st != NU_OK) continue;
        NU_CHECK(nu_dataset_count(d) == 10 && nu_dataset_channels(d) == 1 && nu_dataset_height(d) == 5 &&
                 nu_dataset_width(d) == 7);
        NU_CHECK(nu_dataset_n_classes(d) == 3 && strcmp(nu_dataset_class_name(d, 2), "2") == 0);
        NU_CHECK(nu_dataset_batches_per_epoch(d) == 3);
        int bad = 0;
        for (int bi = 0; bi < 4; bi++) {
            const nu_batch *b;
            NU_CHECK(nu_dataset_next(d, &b) == NU_OK);
            int want_n = bi == 2 ? 2 : 4;
            NU_CHECK(b->n == want_n && b->position == bi && b->epoch == (bi == 3));
            for (int k = 0; k < b->n; k++) {
                int i = (bi % 3) * 4 + k;
                bad += b->indices[k] != i || b->labels[k] != i % 3;
                for (int y = 0; y < 5; y++)
                    for (int x = 0; x < 7; x++) {
                        float want = (float)img[16 + (i * 5 + y) * 7 + x] * (1.0f / 255.0f) + 0.0f;
                        bad += b->images[(k * 5 + y) * 7 + x] != want;
                    }
            }
        }
        NU_CHECK_MSG(bad == 0, "idx variant %d: %d wrong values/labels", variant, bad);
        NU_CHECK(nu_dataset_position(d) == 4);
        nu_dataset_free(d);
    }

    /* unlabeled: images file without a labels file */
    mkdir(tp("idx_nolab"), 0755);
    write_bytes(tp("idx_nolab/train-images-idx3-ubyte"), img, ni);
    nu_dataset_params p = plain_params(tp("idx_nolab"), 5);
    nu_dataset *d;
    NU_CHECK(nu_dataset_open(&p, &d) == NU_OK);
    const nu_batch *b;
    NU_CHECK(nu_dataset_n_classes(d) == 0 && nu_dataset_next(d, &b) == NU_OK && b->labels[0] == -1);
    nu_dataset_free(d);

    /* malformed files: each error names the file */
    struct {
        const char *what;
        size_t off;
        uint8_t val;
        size_t len;
        const char *msg;
    } cases[] = {
        {"bad magic", 0, 1, 0, "not an idx file"},
        {"wrong type", 2, 0x0D, 0, "element type"},
        {"wrong ndim", 3, 2, 0, "dimensions"},
        {"truncated", 0, 0, 16 + 10 * 35 - 5, "truncated"},
        {"trailing", 0, 0, 1, "after the idx data"},
        {"zero width", 15, 0, 0, "dimension 2"},
    };
    mkdir(tp("idx_bad"), 0755);
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        uint8_t buf[sizeof img + 8];
        memcpy(buf, img, ni);
        size_t n = ni;
        if (cases[c].len == 1) buf[n++] = 0;
        else if (cases[c].len) n = cases[c].len;
        else buf[cases[c].off] = cases[c].val;
        write_bytes(tp("idx_bad/train-images-idx3-ubyte"), buf, n);
        nu_status st = nu_dataset_open(&(nu_dataset_params){.path = tp("idx_bad"), .batch_size = 2, .prefetch = 0}, &d);
        NU_CHECK_MSG(st != NU_OK && strstr(nu_last_error(), "train-images-idx3-ubyte") &&
                         strstr(nu_last_error(), cases[c].msg),
                     "%s: %s (%s)", cases[c].what, nu_status_name(st), nu_last_error());
        if (st == NU_OK) nu_dataset_free(d);
    }
    /* label count mismatch, corrupt gzip */
    write_bytes(tp("idx_bad/train-images-idx3-ubyte"), img, ni);
    uint8_t lab2[8 + 9];
    memcpy(lab2, lab, sizeof lab2);
    lab2[7] = 9;
    write_bytes(tp("idx_bad/train-labels-idx1-ubyte"), lab2, sizeof lab2);
    nu_status st = nu_dataset_open(&(nu_dataset_params){.path = tp("idx_bad"), .batch_size = 2}, &d);
    NU_CHECK_MSG(st == NU_ERR_FORMAT && strstr(nu_last_error(), "9 labels for 10 images"), "%s", nu_last_error());
    FILE *f = fopen(tp("idx/t10k-images-idx3-ubyte.gz"), "rb");
    uint8_t gz[4096];
    size_t gn = fread(gz, 1, sizeof gz, f);
    fclose(f);
    write_bytes(tp("idx_bad/t10k-images-idx3-ubyte.gz"), gz, gn / 2);
    st = nu_dataset_open(&(nu_dataset_params){.path = tp("idx_bad"), .split = "t10k", .batch_size = 2}, &d);
    NU_CHECK_MSG(st == NU_ERR_FORMAT && strstr(nu_last_error(), "t10k-images-idx3-ubyte.gz") &&
                     strstr(nu_last_error(), "gzip"),
                 "corrupt gzip: %s", nu_last_error());
    /* too few samples for one batch */
    st = nu_dataset_open(&(nu_dataset_params){.path = tp("idx"), .batch_size = 11, .drop_last = true}, &d);
    NU_CHECK_MSG(st == NU_ERR_INVALID_ARG && strstr(nu_last_error(), "fewer than one batch"), "%s", nu_last_error());
}

static void test_fashion_mnist(void) {
    const char *dir = "/usr/share/datasets/fashion-mnist";
    struct stat sb;
    if (stat(dir, &sb) != 0) {
        printf("  fashion-mnist: %s absent (Debian package dataset-fashion-mnist), skipped\n", dir);
        return;
    }
    nu_dataset_params p = plain_params(dir, 100);
    p.split = "t10k";
    p.prefetch = 2;
    nu_dataset *d;
    nu_status st = nu_dataset_open(&p, &d);
    NU_CHECK_MSG(st == NU_OK, "%s", nu_last_error());
    if (st != NU_OK) return;
    NU_CHECK(nu_dataset_count(d) == 10000 && nu_dataset_n_classes(d) == 10 && nu_dataset_height(d) == 28 &&
             nu_dataset_width(d) == 28 && nu_dataset_batches_per_epoch(d) == 100);
    int64_t per[10] = {0};
    double sum = 0, lo = 1e9, hi = -1e9;
    for (int bi = 0; bi < 100; bi++) {
        const nu_batch *b;
        if (nu_dataset_next(d, &b) != NU_OK) break;
        for (int k = 0; k < b->n; k++)
            if (b->labels[k] >= 0 && b->labels[k] < 10) per[b->labels[k]]++;
        for (int64_t i = 0; i < (int64_t)b->n * 784; i++) {
            sum += b->images[i];
            lo = fmin(lo, b->images[i]);
            hi = fmax(hi, b->images[i]);
        }
    }
    bool balanced = true;
    for (int c = 0; c < 10; c++) balanced &= per[c] == 1000;
    NU_CHECK_MSG(balanced, "t10k labels per class: %lld %lld ... (1000 each expected)", (long long)per[0],
                 (long long)per[1]);
    NU_CHECK(lo == 0.0 && hi == 1.0);
    /* the first test image is an ankle boot (label 9); mean pixel of the test set ~0.286 */
    float img[784];
    int64_t label;
    NU_CHECK(nu_dataset_sample(d, 0, img, &label, NULL) == NU_OK && label == 9);
    double mean = sum / (10000.0 * 784);
    NU_CHECK_MSG(fabs(mean - 0.286) < 0.01, "t10k mean pixel %.4f", mean);
    printf("  fashion-mnist t10k: 10000 images, 1000 per class, mean pixel %.4f\n", mean);
    nu_dataset_free(d);
}

/* ---------------------------------------------------------------- image folders */

static void save_png(const char *path, int w, int h, int c, uint8_t base) {
    nu_image im = {w, h, c, malloc((size_t)w * h * c)};
    for (int i = 0; i < w * h * c; i++) im.pixels[i] = (uint8_t)(base + i);
    if (nu_image_save(path, &im, NULL, 0, 0) != NU_OK) {
        fprintf(stderr, "%s\n", nu_last_error());
        exit(1);
    }
    free(im.pixels);
}

static void test_folder(void) {
    mkdir(tp("f"), 0755);
    mkdir(tp("f/cat"), 0755);
    mkdir(tp("f/dog"), 0755);
    mkdir(tp("f/.hidden"), 0755);
    save_png(tp("f/cat/a.png"), 6, 4, 3, 10);
    save_png(tp("f/cat/b.png"), 6, 4, 3, 20);
    save_png(tp("f/cat/c.png"), 6, 4, 1, 30); /* gray: replicated to RGB */
    save_png(tp("f/dog/a.png"), 6, 4, 4, 40); /* RGBA: alpha dropped */
    save_png(tp("f/dog/b.png"), 6, 4, 3, 50);
    save_png(tp("f/.hidden/x.png"), 6, 4, 3, 0);
    write_bytes(tp("f/dog/zz_bad.png"), "\x89PNG\r\n\x1a\nthis is not a png", 25);
    write_bytes(tp("f/cat/a.txt"), "a red cat\n\n", 11);
    write_bytes(tp("f/dog/notes.md"), "ignored", 7);

    nu_dataset_params p = plain_params(tp("f"), 2);
    p.captions = true;
    p.prefetch = 2;
    nu_dataset *d;
    nu_status st = nu_dataset_open(&p, &d);
    NU_CHECK_MSG(st == NU_OK, "%s", nu_last_error());
    if (st != NU_OK) return;
    NU_CHECK(nu_dataset_count(d) == 6 && nu_dataset_n_classes(d) == 2 && nu_dataset_channels(d) == 3);
    NU_CHECK(strcmp(nu_dataset_class_name(d, 0), "cat") == 0 && strcmp(nu_dataset_class_name(d, 1), "dog") == 0);
    NU_CHECK(strstr(nu_dataset_path(d, 5), "zz_bad.png") != NULL);
    int64_t idx[6], labels[6];
    const char *caps[6];
    float px0[6][3];
    for (int bi = 0; bi < 3; bi++) {
        const nu_batch *b;
        NU_CHECK(nu_dataset_next(d, &b) == NU_OK);
        NU_CHECK(b->n == 2 && b->c == 3 && b->h == 4 && b->w == 6);
        for (int k = 0; k < 2; k++) {
            idx[bi * 2 + k] = b->indices[k];
            labels[bi * 2 + k] = b->labels[k];
            caps[bi * 2 + k] = b->captions[k];
            for (int c = 0; c < 3; c++) px0[bi * 2 + k][c] = b->images[(size_t)k * 72 + c * 24] * 255.0f;
        }
    }
    /* order cat/a, cat/b, cat/c, dog/a, dog/b, then the corrupt dog/zz_bad replaced by the next
     * sample of the order (wrapping to cat/a) */
    int64_t want_idx[6] = {0, 1, 2, 3, 4, 0}, want_lab[6] = {0, 0, 0, 1, 1, 0};
    NU_CHECK(memcmp(idx, want_idx, sizeof idx) == 0 && memcmp(labels, want_lab, sizeof labels) == 0);
    NU_CHECK(nu_dataset_skipped(d) == 1);
    NU_CHECK(caps[0] && strcmp(caps[0], "a red cat") == 0 && caps[1] == NULL && caps[3] == NULL);
    /* first pixel: RGB base, base+1, base+2; gray replicated; RGBA drops alpha */
    NU_CHECK(fabsf(px0[1][0] - 20) < 1e-3f && fabsf(px0[1][2] - 22) < 1e-3f);
    NU_CHECK(fabsf(px0[2][0] - 30) < 1e-3f && fabsf(px0[2][1] - 30) < 1e-3f && fabsf(px0[2][2] - 30) < 1e-3f);
    NU_CHECK(fabsf(px0[3][0] - 40) < 1e-3f && fabsf(px0[3][2] - 42) < 1e-3f);
    float one[72];
    int64_t lb;
    const char *cap;
    NU_CHECK(nu_dataset_sample(d, 0, one, &lb, &cap) == NU_OK && lb == 0 && cap && !strcmp(cap, "a red cat"));
    NU_CHECK(nu_dataset_sample(d, 5, one, NULL, NULL) == NU_ERR_FORMAT && strstr(nu_last_error(), "zz_bad.png"));
    nu_dataset_free(d);

    /* gray output: ITU-R 601-2 luma of the RGB images */
    p.channels = 1;
    p.captions = false;
    NU_CHECK(nu_dataset_open(&p, &d) == NU_OK);
    NU_CHECK(nu_dataset_sample(d, 0, one, NULL, NULL) == NU_OK);
    NU_CHECK_MSG(fabsf(one[0] * 255 - (0.299f * 10 + 0.587f * 11 + 0.114f * 12)) < 1e-3f, "luma %.4f", one[0] * 255);
    nu_dataset_free(d);

    /* strict channels: the gray image is an error naming it, met by the background loader */
    p.channels = 3;
    p.strict_channels = true;
    NU_CHECK(nu_dataset_open(&p, &d) == NU_OK);
    const nu_batch *b;
    NU_CHECK(nu_dataset_next(d, &b) == NU_OK);
    st = nu_dataset_next(d, &b);
    NU_CHECK_MSG(st == NU_ERR_FORMAT && strstr(nu_last_error(), "cat/c.png") && strstr(nu_last_error(), "channel"),
                 "strict: %s", nu_last_error());
    NU_CHECK(nu_dataset_next(d, &b) == NU_ERR_FORMAT); /* stays failed */
    nu_dataset_free(d);

    /* wrong size at native resolution: named; with a resolution it is resized */
    mkdir(tp("g"), 0755);
    save_png(tp("g/a.png"), 6, 4, 3, 0);
    save_png(tp("g/b.png"), 5, 4, 3, 0);
    p = plain_params(tp("g"), 2);
    NU_CHECK(nu_dataset_open(&p, &d) == NU_OK && nu_dataset_n_classes(d) == 0);
    st = nu_dataset_next(d, &b);
    NU_CHECK_MSG(st == NU_ERR_FORMAT && strstr(nu_last_error(), "g/b.png") && strstr(nu_last_error(), "5x4"), "size: %s",
                 nu_last_error());
    nu_dataset_free(d);
    p.resolution = 3;
    NU_CHECK(nu_dataset_open(&p, &d) == NU_OK);
    NU_CHECK(nu_dataset_next(d, &b) == NU_OK && b->h == 3 && b->w == 3 && b->labels[0] == -1);
    nu_dataset_free(d);

    /* missing, empty, empty class, nothing readable */
    st = nu_dataset_open(&(nu_dataset_params){.path = tp("nope"), .batch_size = 1}, &d);
    NU_CHECK_MSG(st == NU_ERR_NOT_FOUND && strstr(nu_last_error(), "nope"), "missing: %s", nu_last_error());
    mkdir(tp("empty"), 0755);
    st = nu_dataset_open(&(nu_dataset_params){.path = tp("empty"), .batch_size = 1}, &d);
    NU_CHECK_MSG(st == NU_ERR_INVALID_ARG && strstr(nu_last_error(), "empty") && strstr(nu_last_error(), "no images"),
                 "empty: %s", nu_last_error());
    mkdir(tp("f/zebra"), 0755);
    st = nu_dataset_open(&(nu_dataset_params){.path = tp("f"), .batch_size = 1}, &d);
    NU_CHECK_MSG(st == NU_ERR_INVALID_ARG && strstr(nu_last_error(), "zebra"), "empty class: %s", nu_last_error());
    rmdir(tp("f/zebra"));
    mkdir(tp("junk"), 0755);
    write_bytes(tp("junk/a.jpg"), "not a jpeg", 10);
    st = nu_dataset_open(&(nu_dataset_params){.path = tp("junk"), .batch_size = 1}, &d);
    NU_CHECK_MSG(st == NU_ERR_FORMAT && strstr(nu_last_error(), "can be read"), "unreadable: %s", nu_last_error());
    write_bytes(tp("file.bin"), "x", 1);
    st = nu_dataset_open(&(nu_dataset_params){.path = tp("file.bin"), .batch_size = 1}, &d);
    NU_CHECK_MSG(st == NU_ERR_INVALID_ARG && strstr(nu_last_error(), "file.bin"), "not a folder: %s", nu_last_error());
}

/* ---------------------------------------------------------------- loader determinism */

typedef struct {
    float img[6][2 * 3 * 4 * 4];
    int64_t idx[6][2];
} run_log;

static void log_run(nu_dataset *d, int n_batches, run_log *out) {
    for (int bi = 0; bi < n_batches; bi++) {
        const nu_batch *b;
        NU_CHECK(nu_dataset_next(d, &b) == NU_OK);
        memcpy(out->img[bi], b->images, sizeof out->img[bi]);
        memcpy(out->idx[bi], b->indices, sizeof out->idx[bi]);
    }
}

static void test_determinism(void) {
    mkdir(tp("h"), 0755);
    for (int i = 0; i < 6; i++) {
        char name[32];
        snprintf(name, sizeof name, "h/%02d.png", i);
        save_png(tp(name), 7 + i % 2, 5 + i % 3, 3, (uint8_t)(i * 40));
    }
    nu_dataset_params p = nu_dataset_params_init();
    p.path = tp("h");
    p.batch_size = 2;
    p.resolution = 4;
    p.random_crop = p.random_flip = true;
    p.seed = 5;
    run_log ref, got;
    for (int depth = 0; depth <= 4; depth += 2) {
        p.prefetch = depth;
        nu_dataset *d;
        NU_CHECK(nu_dataset_open(&p, &d) == NU_OK);
        log_run(d, 6, depth == 0 ? &ref : &got); /* two epochs */
        if (depth) {
            NU_CHECK_MSG(memcmp(&ref, &got, sizeof ref) == 0, "prefetch %d: batches differ from prefetch 0", depth);
        }
        /* seek: batch 4 again, then 5 */
        NU_CHECK(nu_dataset_seek(d, 4) == NU_OK && nu_dataset_position(d) == 4);
        const nu_batch *b;
        NU_CHECK(nu_dataset_next(d, &b) == NU_OK && b->position == 4 && b->epoch == 1);
        NU_CHECK(memcmp(b->images, ref.img[4], sizeof ref.img[4]) == 0 && memcmp(b->indices, ref.idx[4], 16) == 0);
        NU_CHECK(nu_dataset_next(d, &b) == NU_OK && memcmp(b->images, ref.img[5], sizeof ref.img[5]) == 0);
        nu_dataset_free(d);
    }
    /* epochs are permutations; the two epochs differ in order; another seed gives another run */
    int seen[6] = {0};
    for (int bi = 0; bi < 3; bi++)
        for (int k = 0; k < 2; k++) seen[ref.idx[bi][k]]++;
    bool perm = true;
    for (int i = 0; i < 6; i++) perm &= seen[i] == 1;
    NU_CHECK(perm);
    NU_CHECK(memcmp(ref.idx[0], ref.idx[3], sizeof ref.idx[0] * 3) != 0);
    p.seed = 6;
    p.prefetch = 1;
    nu_dataset *d;
    NU_CHECK(nu_dataset_open(&p, &d) == NU_OK);
    log_run(d, 6, &got);
    NU_CHECK(memcmp(&ref, &got, sizeof ref) != 0);
    nu_dataset_free(d);
}

/* ---------------------------------------------------------------- augmentations */

static void test_transform(void) {
    enum { W = 20, H = 12 };
    uint8_t src[W * H * 3];
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            src[(y * W + x) * 3 + 0] = (uint8_t)(10 * x);     /* horizontal ramp      */
            src[(y * W + x) * 3 + 1] = (uint8_t)(20 * y);     /* vertical ramp        */
            src[(y * W + x) * 3 + 2] = 77;                     /* constant             */
        }
    float out[3 * W * H], out2[3 * W * H];
    /* identity */
    nu_xform x = {.c = 3, .out_w = W, .out_h = H, .resize_w = W, .resize_h = H, .lo = 0, .hi = 255};
    nu_image_transform(src, W, H, 3, &x, out);
    int bad = 0;
    for (int y = 0; y < H; y++)
        for (int xx = 0; xx < W; xx++)
            for (int c = 0; c < 3; c++) bad += out[(c * H + y) * W + xx] != (float)src[(y * W + xx) * 3 + c];
    NU_CHECK_MSG(bad == 0, "identity transform: %d values differ", bad);
    /* flip mirrors */
    x.flip = true;
    nu_image_transform(src, W, H, 3, &x, out2);
    bad = 0;
    for (int c = 0; c < 3; c++)
        for (int y = 0; y < H; y++)
            for (int xx = 0; xx < W; xx++) bad += out2[(c * H + y) * W + xx] != out[(c * H + y) * W + (W - 1 - xx)];
    NU_CHECK_MSG(bad == 0, "flip: %d values differ", bad);
    /* centre crop without resize: columns 4..15 of 20 for a 12-wide crop */
    x = (nu_xform){.c = 3, .out_w = 12, .out_h = 12, .resize_w = W, .resize_h = H, .crop_x = 4, .lo = 0, .hi = 255};
    nu_image_transform(src, W, H, 3, &x, out);
    NU_CHECK(out[0] == 40 && out[11] == 150);
    /* downscale 2x: constant stays, ramps are reproduced at the output centres away from borders */
    x = (nu_xform){.c = 3, .out_w = 10, .out_h = 6, .resize_w = 10, .resize_h = 6, .lo = 0, .hi = 255};
    nu_image_transform(src, W, H, 3, &x, out);
    double e_ramp = 0, e_const = 0;
    for (int y = 0; y < 6; y++)
        for (int xx = 0; xx < 10; xx++) {
            e_const = fmax(e_const, fabs(out[(2 * 6 + y) * 10 + xx] - 77));
            double cx = (xx + 0.5) * 2 - 0.5, cy = (y + 0.5) * 2 - 0.5; /* source centre */
            if (xx >= 1 && xx <= 8) e_ramp = fmax(e_ramp, fabs(out[(0 * 6 + y) * 10 + xx] - 10 * cx));
            if (y >= 1 && y <= 4) e_ramp = fmax(e_ramp, fabs(out[(1 * 6 + y) * 10 + xx] - 20 * cy));
        }
    NU_CHECK_MSG(e_const < 1e-4 && e_ramp < 1e-3, "downscale: constant err %.3g, ramp err %.3g", e_const, e_ramp);
    /* upscale 1.5x: same properties */
    x = (nu_xform){.c = 3, .out_w = 30, .out_h = 18, .resize_w = 30, .resize_h = 18, .lo = 0, .hi = 255};
    float up[3 * 30 * 18];
    nu_image_transform(src, W, H, 3, &x, up);
    e_ramp = e_const = 0;
    for (int y = 0; y < 18; y++)
        for (int xx = 0; xx < 30; xx++) {
            e_const = fmax(e_const, fabs(up[(2 * 18 + y) * 30 + xx] - 77));
            double cx = (xx + 0.5) / 1.5 - 0.5;
            if (cx >= 0 && cx <= W - 1) e_ramp = fmax(e_ramp, fabs(up[(0 * 18 + y) * 30 + xx] - 10 * cx));
        }
    NU_CHECK_MSG(e_const < 1e-4 && e_ramp < 1e-3, "upscale: constant err %.3g, ramp err %.3g", e_const, e_ramp);
    /* a large downscale (300 -> 7: 2*43+1 taps) of a constant */
    uint8_t *big = malloc(300 * 200);
    memset(big, 200, 300 * 200);
    x = (nu_xform){.c = 1, .out_w = 7, .out_h = 4, .resize_w = 7, .resize_h = 4, .lo = -1, .hi = 1};
    float small[28];
    nu_image_transform(big, 300, 200, 1, &x, small);
    e_const = 0;
    for (int i = 0; i < 28; i++) e_const = fmax(e_const, fabs(small[i] - (200 * (2.0f / 255.0f) - 1)));
    NU_CHECK_MSG(e_const < 1e-5, "large downscale of a constant: err %.3g", e_const);
    free(big);

    /* through the loader: random crops stay in range and vary; flips happen about half the time */
    mkdir(tp("r"), 0755);
    nu_image im = {10, 4, 1, malloc(40)};
    for (int i = 0; i < 40; i++) im.pixels[i] = (uint8_t)(10 * (i % 10)); /* column c has value 10c */
    nu_image_save(tp("r/a.png"), &im, NULL, 0, 0);
    free(im.pixels);
    nu_dataset_params p = nu_dataset_params_init();
    p.path = tp("r");
    p.batch_size = 1;
    p.resolution = 4; /* 10x4 -> no resize (shorter side 4), crop 4 of 10 columns */
    p.random_crop = p.random_flip = true;
    p.range_lo = 0, p.range_hi = 255;
    p.prefetch = 3;
    nu_dataset *d;
    NU_CHECK(nu_dataset_open(&p, &d) == NU_OK);
    int offs[7] = {0}, flips = 0, n = 200;
    for (int i = 0; i < n; i++) {
        const nu_batch *b;
        if (nu_dataset_next(d, &b) != NU_OK) break;
        float a = b->images[0], z = b->images[3];
        bool flipped = a > z;
        flips += flipped;
        int off = (int)lroundf((flipped ? z : a) / 10);
        if (off >= 0 && off <= 6 && fabsf(fabsf(a - z) - 30) < 1e-3f) offs[off]++;
        else offs[0] = -100000; /* out of range or not a contiguous crop */
    }
    int distinct = 0;
    for (int o = 0; o <= 6; o++) distinct += offs[o] > 0;
    NU_CHECK_MSG(offs[0] >= 0 && distinct == 7, "random crop offsets: %d distinct of 7", distinct);
    NU_CHECK_MSG(flips > n / 4 && flips < 3 * n / 4, "flipped %d of %d", flips, n);
    nu_dataset_free(d);
    /* centre crop of the same image: offset round(6/2) = 3 */
    p.random_crop = p.random_flip = false;
    NU_CHECK(nu_dataset_open(&p, &d) == NU_OK);
    const nu_batch *b;
    NU_CHECK(nu_dataset_next(d, &b) == NU_OK && b->images[0] == 30 && b->images[3] == 60);
    nu_dataset_free(d);
}

static void rm_tree(const char *path) {
    DIR *d = opendir(path);
    if (!d) {
        remove(path);
        return;
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char sub[1024];
        snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
        rm_tree(sub);
    }
    closedir(d);
    rmdir(path);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/nu_test_data_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_idx();
    test_fashion_mnist();
    test_folder();
    test_determinism();
    test_transform();
    rm_tree(tmpdir);
    return nu_test_summary("test_data");
}
