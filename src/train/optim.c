/*
 * optim.c — the trainer: AdamW, global-norm gradient clipping, LR warm-up + cosine decay,
 * gradient accumulation and EMA of weights, all as flat loops over the buffers of params.c.
 *
 * Formulas (the references matched, checked by tests/test_train.c against
 * scripts/fixtures_train.py):
 *   AdamW    torch.optim.AdamW (torch 1.13 _single_tensor_adamw, amsgrad=False):
 *              t += 1;  p *= 1 - lr*wd;  m = m*b1 + (1-b1)*g;  v = v*b2 + (1-b2)*g*g;
 *              p += -(lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
 *            (Loshchilov & Hutter, "Decoupled Weight Decay Regularization", Alg. 2; eps outside
 *            the square root). Scalars are formed in double as Python does, then used as f32.
 *   clipping torch.nn.utils.clip_grad_norm_: norm = ||g||_2 over all gradients;
 *            coef = min(1, max_norm * 1/(norm + 1e-6)) (f32, as torch's tensor arithmetic);
 *            g *= coef.
 *   schedule transformers' get_cosine_schedule_with_warmup (num_cycles 0.5) as a LambdaLR:
 *            f(s) = s/W for s < W, else 0.5*(1 + cos(pi * min(1, (s-W)/(T-W)))), mapped to
 *            [min_lr_ratio, 1]; the constant schedule is get_constant_schedule_with_warmup.
 *            Beyond T the cosine stays at its floor (transformers' would rise again).
 *   EMA      diffusers EMAModel: decay(k) for the k-th update with s = k - update_after - 1:
 *            0 if s <= 0, else clamp((1+s)/(10+s) | 1-(1+s/inv_gamma)^-power | decay,
 *            min_decay, decay); shadow -= (1 - decay) * (shadow - param).
 *   accumulation: gradients of accum_steps micro-batches are summed, then multiplied by
 *            1/accum_steps (the mean of equal-size micro-batch means = the full-batch mean).
 *
 * Determinism: every loop is elementwise except the norm, which sums fixed 16384-value chunks in
 * double and adds the chunk sums in order, so results do not depend on the thread count.
 * The AVX2 paths (no FMA) compute the same operations in the same order as the scalar twins.
 */
#include <immintrin.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "train/train_internal.h"

#define NORM_CHUNK 16384
#define PAR_MIN 65536 /* below this many values the flat loops stay on the calling thread */

/* ---------------------------------------------------------------- splitting over the pool */

typedef void (*range_fn)(void *arg, int64_t lo, int64_t hi);
typedef struct {
    range_fn fn;
    void *arg;
    int64_t n, quantum;
} range_job;

static void range_thread(int ith, int nth, void *a) {
    range_job *j = a;
    int64_t blocks = (j->n + j->quantum - 1) / j->quantum, lo, hi;
    nu_split(blocks, ith, nth, &lo, &hi);
    lo *= j->quantum;
    hi = hi * j->quantum < j->n ? hi * j->quantum : j->n;
    if (lo < hi) j->fn(j->arg, lo, hi);
}

/* Calls fn on pieces of [0, n) whose boundaries are multiples of `quantum`. */
static void run_range(nu_pool *pool, int64_t n, int64_t quantum, range_fn fn, void *arg) {
    if (n <= 0) return;
    if (!pool || nu_pool_n_threads(pool) <= 1 || n < PAR_MIN) {
        fn(arg, 0, n);
        return;
    }
    range_job j = {fn, arg, n, quantum};
    nu_pool_run(pool, range_thread, &j);
}

static bool fast_ok(bool use_ref) {
    if (use_ref || !nu_cpu_fast_enabled()) return false;
    static int avx2 = -1;
    if (avx2 < 0) avx2 = nu_cpu_detect().avx2;
    return avx2 != 0;
}

/* ---------------------------------------------------------------- AdamW */

typedef struct {
    float decay_mul;  /* 1 - lr*wd                         */
    float b1, omb1;   /* beta1, 1 - beta1                  */
    float b2, omb2;   /* beta2, 1 - beta2                  */
    float neg_step;   /* -lr / (1 - beta1^t)               */
    float bc2_sqrt;   /* sqrt(1 - beta2^t)                 */
    float eps;
} adamw_coef;

static adamw_coef adamw_coefs(double lr, double b1, double b2, double eps, double wd, int64_t step) {
    adamw_coef c;
    double bc1 = 1.0 - pow(b1, (double)step), bc2 = 1.0 - pow(b2, (double)step);
    c.decay_mul = (float)(1.0 - lr * wd);
    c.b1 = (float)b1;
    c.omb1 = (float)(1.0 - b1);
    c.b2 = (float)b2;
    c.omb2 = (float)(1.0 - b2);
    c.neg_step = (float)-(lr / bc1);
    c.bc2_sqrt = (float)sqrt(bc2);
    c.eps = (float)eps;
    return c;
}

static void adamw_ref(float *p, const float *g, float *m, float *v, int64_t n, const adamw_coef *c) {
    for (int64_t i = 0; i < n; i++) {
        float gi = g[i];
        float pi = p[i] * c->decay_mul;
        float mi = m[i] * c->b1 + c->omb1 * gi;
        float vi = v[i] * c->b2 + c->omb2 * gi * gi;
        float denom = sqrtf(vi) / c->bc2_sqrt + c->eps;
        m[i] = mi;
        v[i] = vi;
        p[i] = pi + c->neg_step * mi / denom;
    }
}

__attribute__((target("avx2"))) static void adamw_avx2(float *p, const float *g, float *m, float *v, int64_t n,
                                                       const adamw_coef *c) {
    const __m256 dm = _mm256_set1_ps(c->decay_mul), b1 = _mm256_set1_ps(c->b1), omb1 = _mm256_set1_ps(c->omb1);
    const __m256 b2 = _mm256_set1_ps(c->b2), omb2 = _mm256_set1_ps(c->omb2), ns = _mm256_set1_ps(c->neg_step);
    const __m256 bc2 = _mm256_set1_ps(c->bc2_sqrt), eps = _mm256_set1_ps(c->eps);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 gi = _mm256_loadu_ps(g + i);
        __m256 pi = _mm256_mul_ps(_mm256_loadu_ps(p + i), dm);
        __m256 mi = _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(m + i), b1), _mm256_mul_ps(omb1, gi));
        __m256 vi = _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(v + i), b2), _mm256_mul_ps(_mm256_mul_ps(omb2, gi), gi));
        __m256 denom = _mm256_add_ps(_mm256_div_ps(_mm256_sqrt_ps(vi), bc2), eps);
        _mm256_storeu_ps(m + i, mi);
        _mm256_storeu_ps(v + i, vi);
        _mm256_storeu_ps(p + i, _mm256_add_ps(pi, _mm256_div_ps(_mm256_mul_ps(ns, mi), denom)));
    }
    if (i < n) adamw_ref(p + i, g + i, m + i, v + i, n - i, c);
}

typedef struct {
    float *p, *m, *v;
    const float *g;
    adamw_coef c;
    bool fast;
} adamw_job;

static void adamw_range(void *arg, int64_t lo, int64_t hi) {
    adamw_job *j = arg;
    if (j->fast) adamw_avx2(j->p + lo, j->g + lo, j->m + lo, j->v + lo, hi - lo, &j->c);
    else adamw_ref(j->p + lo, j->g + lo, j->m + lo, j->v + lo, hi - lo, &j->c);
}

void nu_adamw_update(nu_pool *pool, float *param, const float *grad, float *m, float *v, int64_t n, double lr,
                     double beta1, double beta2, double eps, double weight_decay, int64_t step, bool use_ref) {
    NU_ASSERT(step >= 1);
    adamw_job j = {param, m, v, grad, adamw_coefs(lr, beta1, beta2, eps, weight_decay, step), fast_ok(use_ref)};
    run_range(pool, n, 64, adamw_range, &j);
}

/* ---------------------------------------------------------------- norm, scale, add, EMA */

static double sumsq_ref(const float *x, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (double)x[i] * (double)x[i];
    return s;
}

__attribute__((target("avx2"))) static double sumsq_avx2(const float *x, int64_t n) {
    __m256d a0 = _mm256_setzero_pd(), a1 = _mm256_setzero_pd();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        __m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(v)), hi = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
        a0 = _mm256_add_pd(a0, _mm256_mul_pd(lo, lo));
        a1 = _mm256_add_pd(a1, _mm256_mul_pd(hi, hi));
    }
    double t[4];
    _mm256_storeu_pd(t, _mm256_add_pd(a0, a1));
    return ((t[0] + t[1]) + (t[2] + t[3])) + sumsq_ref(x + i, n - i);
}

typedef struct {
    const float *x;
    double *partial;
    bool fast;
} norm_job;

static void norm_range(void *arg, int64_t lo, int64_t hi) {
    norm_job *j = arg;
    for (int64_t c = lo; c < hi; c += NORM_CHUNK) {
        int64_t k = hi - c < NORM_CHUNK ? hi - c : NORM_CHUNK;
        j->partial[c / NORM_CHUNK] = j->fast ? sumsq_avx2(j->x + c, k) : sumsq_ref(j->x + c, k);
    }
}

static double grad_norm_with(nu_pool *pool, const float *x, int64_t n, double *partial) {
    if (n <= 0) return 0;
    norm_job j = {x, partial, fast_ok(false)};
    run_range(pool, n, NORM_CHUNK, norm_range, &j);
    double s = 0;
    for (int64_t c = 0; c < (n + NORM_CHUNK - 1) / NORM_CHUNK; c++) s += partial[c];
    return sqrt(s);
}

double nu_grad_norm(nu_pool *pool, const float *x, int64_t n) {
    int64_t chunks = (n + NORM_CHUNK - 1) / NORM_CHUNK;
    double stackbuf[64];
    double *partial = chunks <= 64 ? stackbuf : malloc(sizeof(double) * (size_t)chunks);
    NU_ASSERT(partial);
    double r = grad_norm_with(pool, x, n, partial);
    if (partial != stackbuf) free(partial);
    return r;
}

typedef struct {
    float *y;
    const float *x;
    float s;
    bool fast;
} axpy_job;

static void scale_range(void *arg, int64_t lo, int64_t hi) {
    axpy_job *j = arg;
    for (int64_t i = lo; i < hi; i++) j->y[i] *= j->s;
}

static void add_range(void *arg, int64_t lo, int64_t hi) {
    axpy_job *j = arg;
    for (int64_t i = lo; i < hi; i++) j->y[i] += j->x[i];
}

static void ema_ref(float *s, const float *p, int64_t n, float omd) {
    for (int64_t i = 0; i < n; i++) s[i] = s[i] - omd * (s[i] - p[i]);
}

__attribute__((target("avx2"))) static void ema_avx2(float *s, const float *p, int64_t n, float omd) {
    const __m256 o = _mm256_set1_ps(omd);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 si = _mm256_loadu_ps(s + i);
        _mm256_storeu_ps(s + i, _mm256_sub_ps(si, _mm256_mul_ps(o, _mm256_sub_ps(si, _mm256_loadu_ps(p + i)))));
    }
    if (i < n) ema_ref(s + i, p + i, n - i, omd);
}

static void ema_range(void *arg, int64_t lo, int64_t hi) {
    axpy_job *j = arg;
    if (j->fast) ema_avx2(j->y + lo, j->x + lo, hi - lo, j->s);
    else ema_ref(j->y + lo, j->x + lo, hi - lo, j->s);
}

void nu_ema_update(nu_pool *pool, float *shadow, const float *param, int64_t n, double decay, bool use_ref) {
    axpy_job j = {shadow, param, (float)(1.0 - decay), fast_ok(use_ref)};
    run_range(pool, n, 64, ema_range, &j);
}

/* ---------------------------------------------------------------- schedules */

nu_train_params nu_train_params_init(void) {
    nu_train_params p;
    memset(&p, 0, sizeof p);
    p.lr = 1e-3;
    p.beta1 = 0.9;
    p.beta2 = 0.999;
    p.eps = 1e-8;
    p.weight_decay = 0.01;
    p.schedule = NU_LR_SCHEDULE_COSINE;
    p.accum_steps = 1;
    p.ema_decay = 0.9999;
    p.ema_warmup = NU_EMA_WARMUP_DIFFUSERS;
    p.ema_inv_gamma = 1.0;
    p.ema_power = 2.0 / 3.0;
    return p;
}

double nu_train_lr_at(const nu_train_params *p, int64_t step) {
    if (step < 0) step = 0;
    double f;
    if (step < p->warmup_steps) {
        f = (double)step / (double)(p->warmup_steps > 1 ? p->warmup_steps : 1);
    } else if (p->schedule == NU_LR_SCHEDULE_CONSTANT || p->total_steps <= 0) {
        f = 1.0;
    } else {
        int64_t span = p->total_steps - p->warmup_steps;
        double progress = (double)(step - p->warmup_steps) / (double)(span > 1 ? span : 1);
        if (progress > 1.0) progress = 1.0;
        double c = 0.5 * (1.0 + cos(M_PI * progress));
        if (c < 0) c = 0;
        f = p->min_lr_ratio + (1.0 - p->min_lr_ratio) * c;
    }
    return p->lr * f;
}

double nu_train_ema_decay_at(const nu_train_params *p, int64_t update) {
    int64_t s = update - p->ema_update_after_step - 1;
    if (s <= 0) return 0.0;
    double d;
    switch (p->ema_warmup) {
    case NU_EMA_WARMUP_DIFFUSERS: d = (1.0 + (double)s) / (10.0 + (double)s); break;
    case NU_EMA_WARMUP_POWER: d = 1.0 - pow(1.0 + (double)s / p->ema_inv_gamma, -p->ema_power); break;
    default: d = p->ema_decay; break;
    }
    if (d > p->ema_decay) d = p->ema_decay;
    if (d < p->ema_min_decay) d = p->ema_min_decay;
    return d;
}

/* ---------------------------------------------------------------- trainer */

static nu_status check_params(const nu_train_params *p) {
    if (!(p->lr >= 0) || !isfinite(p->lr)) return nu_error(NU_ERR_INVALID_ARG, "learning rate %g must be >= 0", p->lr);
    if (!(p->beta1 >= 0 && p->beta1 < 1) || !(p->beta2 >= 0 && p->beta2 < 1))
        return nu_error(NU_ERR_INVALID_ARG, "AdamW betas (%g, %g) must be in [0, 1)", p->beta1, p->beta2);
    if (!(p->eps >= 0)) return nu_error(NU_ERR_INVALID_ARG, "AdamW eps %g must be >= 0", p->eps);
    if (!(p->weight_decay >= 0)) return nu_error(NU_ERR_INVALID_ARG, "weight decay %g must be >= 0", p->weight_decay);
    if ((unsigned)p->schedule >= NU_LR_SCHEDULE_COUNT) return nu_error(NU_ERR_INVALID_ARG, "unknown LR schedule %d", (int)p->schedule);
    if (p->warmup_steps < 0 || p->total_steps < 0)
        return nu_error(NU_ERR_INVALID_ARG, "warm-up (%lld) and total (%lld) steps must be >= 0",
                        (long long)p->warmup_steps, (long long)p->total_steps);
    if (!(p->min_lr_ratio >= 0 && p->min_lr_ratio <= 1))
        return nu_error(NU_ERR_INVALID_ARG, "min_lr_ratio %g must be in [0, 1]", p->min_lr_ratio);
    if (isnan(p->clip_norm)) return nu_error(NU_ERR_INVALID_ARG, "clip norm is NaN");
    if (p->accum_steps < 1 || p->accum_steps > 1 << 20)
        return nu_error(NU_ERR_INVALID_ARG, "accumulation steps %d must be in [1, 2^20]", p->accum_steps);
    if (p->ema) {
        if (!(p->ema_decay >= 0 && p->ema_decay <= 1) || !(p->ema_min_decay >= 0 && p->ema_min_decay <= 1))
            return nu_error(NU_ERR_INVALID_ARG, "EMA decay %g / min decay %g must be in [0, 1]", p->ema_decay,
                            p->ema_min_decay);
        if ((unsigned)p->ema_warmup >= NU_EMA_WARMUP_COUNT)
            return nu_error(NU_ERR_INVALID_ARG, "unknown EMA warm-up %d", (int)p->ema_warmup);
        if (p->ema_warmup == NU_EMA_WARMUP_POWER && !(p->ema_inv_gamma > 0 && p->ema_power > 0))
            return nu_error(NU_ERR_INVALID_ARG, "EMA inv_gamma %g and power %g must be > 0", p->ema_inv_gamma,
                            p->ema_power);
        if (p->ema_update_after_step < 0) return nu_error(NU_ERR_INVALID_ARG, "EMA update_after_step must be >= 0");
    }
    return NU_OK;
}

static float *falloc(int64_t n) {
    size_t bytes = ((size_t)(n > 0 ? n : 1) * sizeof(float) + 63) & ~(size_t)63;
    float *p = aligned_alloc(64, bytes);
    if (p) memset(p, 0, bytes);
    return p;
}

nu_status nu_trainer_new(nu_graph *g, nu_tensor *loss, nu_pool *pool, const nu_train_params *p, nu_trainer **out) {
    if (!out) return nu_error(NU_ERR_INVALID_ARG, "nu_trainer_new: NULL out");
    *out = NULL;
    if (!g || !loss || !p) return nu_error(NU_ERR_INVALID_ARG, "nu_trainer_new: NULL argument");
    if (loss->type != NU_TYPE_F32 || nu_nelements(loss) != 1)
        return nu_error(NU_ERR_INVALID_ARG, "the loss '%s' must be a 1-element f32 tensor", loss->name);
    nu_status st = check_params(p);
    if (st != NU_OK) return st;
    nu_trainer *t = calloc(1, sizeof *t);
    if (!t) return nu_error(NU_ERR_NOMEM, "nu_trainer_new: out of memory");
    t->p = *p;
    t->g = g;
    t->loss = loss;
    t->pool = pool;
    st = nu_params_collect(g, &t->params);
    if (st != NU_OK) {
        free(t);
        return st;
    }
    if (nu_params_n_trainable_tensors(t->params) == 0) {
        nu_trainer_free(t);
        return nu_error(NU_ERR_INVALID_ARG, "no parameter receives a gradient from the loss '%s'", loss->name);
    }
    int64_t n = nu_params_size(t->params), nt = nu_params_trainable_size(t->params);
    t->m = falloc(nt);
    t->v = falloc(nt);
    t->partial = malloc(sizeof(double) * (size_t)((nt + NORM_CHUNK - 1) / NORM_CHUNK + 1));
    if (p->ema) t->ema = falloc(n);
    if (p->accum_steps > 1) t->acc = falloc(nt);
    if (!t->m || !t->v || !t->partial || (p->ema && !t->ema) || (p->accum_steps > 1 && !t->acc)) {
        nu_trainer_free(t);
        return nu_error(NU_ERR_NOMEM, "out of memory for optimizer state (%lld parameters)",
                        (long long)nu_params_count(t->params));
    }
    if (t->ema) memcpy(t->ema, nu_params_values(t->params), sizeof(float) * (size_t)n);
    nu_rng_seed(&t->rng, p->seed);
    *out = t;
    return NU_OK;
}

void nu_trainer_free(nu_trainer *t) {
    if (!t) return;
    nu_params_free(t->params);
    free(t->m);
    free(t->v);
    free(t->ema);
    free(t->acc);
    free(t->partial);
    free(t);
}

nu_params *nu_trainer_params(nu_trainer *t) { return t->params; }
const nu_train_params *nu_trainer_train_params(const nu_trainer *t) { return &t->p; }
nu_rng *nu_trainer_rng(nu_trainer *t) { return &t->rng; }
int64_t nu_trainer_step_count(const nu_trainer *t) { return t->step; }
int nu_trainer_micro_count(const nu_trainer *t) { return t->micro; }
float *nu_trainer_ema(nu_trainer *t) { return t->ema; }
float *nu_trainer_adam_m(nu_trainer *t) { return t->m; }
float *nu_trainer_adam_v(nu_trainer *t) { return t->v; }
float *nu_trainer_grads(nu_trainer *t) { return t->acc ? t->acc : nu_params_grads(t->params); }

void nu_trainer_zero_grad(nu_trainer *t) {
    t->micro = 0;
    t->loss_sum = 0;
}

nu_status nu_trainer_forward_backward(nu_trainer *t, float *loss_out) {
    if (t->micro >= t->p.accum_steps)
        return nu_error(NU_ERR_INVALID_ARG, "%d micro-batches already summed: call nu_trainer_step first", t->micro);
    nu_status st = nu_graph_compute(t->g, t->pool);
    if (st != NU_OK) return st;
    float l = *(const float *)t->loss->data;
    if (loss_out) *loss_out = l;
    if (!isfinite(l))
        return nu_error(NU_ERR_NUMERIC, "loss is %s at step %lld (micro-batch %d of %d)", isnan(l) ? "NaN" : "infinite",
                        (long long)t->step + 1, t->micro + 1, t->p.accum_steps);
    if (t->acc) {
        int64_t nt = nu_params_trainable_size(t->params);
        const float *g = nu_params_grads(t->params);
        if (t->micro == 0) memcpy(t->acc, g, sizeof(float) * (size_t)nt);
        else {
            axpy_job j = {t->acc, g, 0, false};
            run_range(t->pool, nt, 64, add_range, &j);
        }
    }
    t->micro++;
    t->loss_sum += l;
    return NU_OK;
}

/* First trainable tensor holding a non-finite gradient value (for the error message). */
static const char *first_bad_tensor(nu_trainer *t, const float *g) {
    nu_params *p = t->params;
    for (int i = 0; i < nu_params_n_trainable_tensors(p); i++) {
        int64_t o = nu_params_offset(p, i), e = o + nu_nelements(nu_params_tensor(p, i));
        for (int64_t k = o; k < e; k++)
            if (!isfinite(g[k])) return nu_params_tensor(p, i)->name;
    }
    return "?";
}

nu_status nu_trainer_step(nu_trainer *t, nu_step_info *info) {
    if (t->micro < t->p.accum_steps)
        return nu_error(NU_ERR_INVALID_ARG, "step %lld: %d of %d micro-batches run (nu_trainer_forward_backward)",
                        (long long)t->step + 1, t->micro, t->p.accum_steps);
    nu_params *P = t->params;
    int64_t nt = nu_params_trainable_size(P);
    float *g = nu_trainer_grads(t);
    float loss = (float)(t->loss_sum / t->micro);
    if (t->p.accum_steps > 1) {
        axpy_job j = {g, NULL, (float)(1.0 / t->p.accum_steps), false};
        run_range(t->pool, nt, 64, scale_range, &j);
    }
    double norm = grad_norm_with(t->pool, g, nt, t->partial);
    if (!isfinite(norm)) {
        nu_trainer_zero_grad(t);
        return nu_error(NU_ERR_NUMERIC, "gradient is not finite at step %lld (first in '%s'); the update is skipped",
                        (long long)t->step + 1, first_bad_tensor(t, g));
    }
    float coef = 1.0f;
    if (t->p.clip_norm > 0) {
        /* torch: clip_coef = max_norm / (total_norm + 1e-6), where the division of a Python number
         * by a tensor is reciprocal() * number, all in f32; clamp(max=1) */
        float r = 1.0f / ((float)norm + 1e-6f);
        coef = r * (float)t->p.clip_norm;
        if (coef > 1.0f) coef = 1.0f;
        if (coef < 1.0f) {
            axpy_job j = {g, NULL, coef, false};
            run_range(t->pool, nt, 64, scale_range, &j);
        }
    }
    double lr = nu_train_lr_at(&t->p, t->step);
    int64_t step1 = t->step + 1;
    float *val = nu_params_values(P);
    if (!t->p.no_decay_1d) {
        nu_adamw_update(t->pool, val, g, t->m, t->v, nt, lr, t->p.beta1, t->p.beta2, t->p.eps, t->p.weight_decay, step1,
                        false);
    } else {
        /* consecutive tensors with the same decay run as one flat range */
        int nten = nu_params_n_trainable_tensors(P);
        for (int i = 0; i < nten;) {
            bool nd = nu_params_tensor(P, i)->ndim == 1;
            int k = i + 1;
            while (k < nten && (nu_params_tensor(P, k)->ndim == 1) == nd) k++;
            int64_t o = nu_params_offset(P, i), e = nu_params_offset(P, k);
            nu_adamw_update(t->pool, val + o, g + o, t->m + o, t->v + o, e - o, lr, t->p.beta1, t->p.beta2, t->p.eps,
                            nd ? 0.0 : t->p.weight_decay, step1, false);
            i = k;
        }
    }
    t->step = step1;
    double decay = 0;
    if (t->ema) {
        decay = nu_train_ema_decay_at(&t->p, t->step);
        nu_ema_update(t->pool, t->ema, val, nt, decay, false);
    }
    if (info) {
        info->step = t->step;
        info->lr = lr;
        info->loss = loss;
        info->grad_norm = (float)norm;
        info->clip_coef = coef;
        info->ema_decay = decay;
    }
    nu_trainer_zero_grad(t);
    return NU_OK;
}

void nu_trainer_swap_ema(nu_trainer *t) {
    if (!t->ema) return;
    float *a = nu_params_values(t->params), *b = t->ema;
    int64_t n = nu_params_size(t->params);
    for (int64_t i = 0; i < n; i++) {
        float x = a[i];
        a[i] = b[i];
        b[i] = x;
    }
}
