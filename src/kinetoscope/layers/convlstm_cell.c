/* Fused pointwise ConvLSTM cell, forward and backward (Broomé 2022 Eq. 4.5-4.10), for
 * kinetoscope.layers.convlstm. Compiled on first use by kinetoscope.layers.native with the machine's
 * C compiler (-O3 -march=native -fno-math-errno -fopenmp; deliberately not -ffast-math, whose
 * start-up code would switch the whole thread to flush-to-zero); loaded with ctypes.
 *
 * One pass over memory per step instead of the ~7 (forward) and ~10 (backward) passes of the
 * equivalent torch operations, reading the convolution's channels-last output directly and writing
 * H_t straight into the next step's channels-last convolution input.
 *
 * Layouts: "NHWC" arrays are [batch * pixels, channels] contiguous (pixels = H * W); gates are
 * [batch * pixels, 4 * hidden] in the order input, forget, candidate, output. Arrays given with
 * strides (b, c, p) may have any layout whose H and W dimensions collapse into one pixel index.
 * sigmoid(x) = 1 / (1 + exp(-x)) in IEEE arithmetic (exp overflows to inf and gives exactly 0 in the
 * negative tail, as torch does); exp and tanh are vectorised through glibc's libmvec, declared below.
 */
#include <math.h>
#include <stdint.h>

#pragma omp declare simd notinbranch
float expf(float);
#pragma omp declare simd notinbranch
double exp(double);
#pragma omp declare simd notinbranch
float tanhf(float);
#pragma omp declare simd notinbranch
double tanh(double);

#define DEFINE_CELL(T, SUFFIX, EXP, TANH, ONE)                                                      \
  void cell_forward_##SUFFIX(int64_t batch, int64_t pixels, int64_t hidden, T *gates,                \
                             const T *c_prev, T *c, T *tanh_c, T *h_out, int64_t ho_b, int64_t ho_c,  \
                             int64_t ho_p, T *h_next, int64_t hn_b, int64_t hn_p, int threads) {      \
    int64_t n = batch * pixels;                                                                      \
    _Pragma("omp parallel for schedule(static) num_threads(threads) if (threads > 1)")              \
    for (int64_t idx = 0; idx < n; idx++) {                                                          \
      int64_t b = idx / pixels, p = idx - b * pixels;                                                \
      T *gi = gates + idx * 4 * hidden, *gf = gi + hidden, *gg = gf + hidden, *go = gg + hidden;     \
      T *cc = c + idx * hidden, *tc = tanh_c + idx * hidden;                                         \
      if (c_prev) {                                                                                  \
        const T *cp = c_prev + idx * hidden;                                                         \
        _Pragma("omp simd")                                                                          \
        for (int64_t k = 0; k < hidden; k++) {                                                       \
          T i = ONE / (ONE + EXP(-gi[k])), f = ONE / (ONE + EXP(-gf[k]));                           \
          T g = TANH(gg[k]), o = ONE / (ONE + EXP(-go[k]));                                          \
          T s = f * cp[k] + i * g;                                                                   \
          gi[k] = i, gf[k] = f, gg[k] = g, go[k] = o, cc[k] = s, tc[k] = TANH(s);                    \
        }                                                                                            \
      } else { /* S_{-1} = 0: the forget gate multiplies nothing */                                  \
        _Pragma("omp simd")                                                                          \
        for (int64_t k = 0; k < hidden; k++) {                                                       \
          T i = ONE / (ONE + EXP(-gi[k])), f = ONE / (ONE + EXP(-gf[k]));                           \
          T g = TANH(gg[k]), o = ONE / (ONE + EXP(-go[k]));                                          \
          T s = i * g;                                                                               \
          gi[k] = i, gf[k] = f, gg[k] = g, go[k] = o, cc[k] = s, tc[k] = TANH(s);                    \
        }                                                                                            \
      }                                                                                              \
      T *ho = h_out + b * ho_b + p * ho_p;                                                           \
      T *hn = h_next ? h_next + b * hn_b + p * hn_p : 0;                                             \
      for (int64_t k = 0; k < hidden; k++) {                                                         \
        T h = go[k] * tc[k];                                                                         \
        ho[k * ho_c] = h;                                                                            \
        if (hn) hn[k] = h;                                                                           \
      }                                                                                              \
    }                                                                                                \
  }                                                                                                  \
                                                                                                     \
  void cell_backward_##SUFFIX(int64_t batch, int64_t pixels, int64_t hidden, const T *act,           \
                              const T *tanh_c, const T *c_prev, const T *dh_out, int64_t do_b,       \
                              int64_t do_c, int64_t do_p, const T *dh_rec, int64_t dr_b,             \
                              int64_t dr_c, int64_t dr_p, const T *dc_in, T *dc_out,                 \
                              T *grad_gates, int threads) {                                          \
    int64_t n = batch * pixels;                                                                      \
    _Pragma("omp parallel for schedule(static) num_threads(threads) if (threads > 1)")              \
    for (int64_t idx = 0; idx < n; idx++) {                                                          \
      int64_t b = idx / pixels, p = idx - b * pixels;                                                \
      T dh[hidden];                                                                                  \
      const T *a = dh_out + b * do_b + p * do_p;                                                     \
      for (int64_t k = 0; k < hidden; k++) dh[k] = a[k * do_c];                                      \
      if (dh_rec) {                                                                                  \
        const T *r = dh_rec + b * dr_b + p * dr_p;                                                   \
        for (int64_t k = 0; k < hidden; k++) dh[k] += r[k * dr_c];                                   \
      }                                                                                              \
      const T *i = act + idx * 4 * hidden, *f = i + hidden, *g = f + hidden, *o = g + hidden;        \
      const T *tc = tanh_c + idx * hidden;                                                           \
      const T *dci = dc_in ? dc_in + idx * hidden : 0;                                               \
      const T *cp = c_prev ? c_prev + idx * hidden : 0;                                              \
      T *dco = dc_out ? dc_out + idx * hidden : 0;                                                   \
      T *di = grad_gates + idx * 4 * hidden, *df = di + hidden, *dg = df + hidden, *dO = dg + hidden; \
      _Pragma("omp simd")                                                                            \
      for (int64_t k = 0; k < hidden; k++) {                                                         \
        T t = tc[k];                                                                                 \
        T dc = dh[k] * o[k] * (ONE - t * t) + (dci ? dci[k] : 0);                                    \
        dO[k] = dh[k] * t * o[k] * (ONE - o[k]);                                                     \
        di[k] = dc * g[k] * i[k] * (ONE - i[k]);                                                     \
        dg[k] = dc * i[k] * (ONE - g[k] * g[k]);                                                     \
        df[k] = cp ? dc * cp[k] * f[k] * (ONE - f[k]) : 0;                                           \
        if (dco) dco[k] = dc * f[k];                                                                 \
      }                                                                                              \
    }                                                                                                \
  }

DEFINE_CELL(float, f32, expf, tanhf, 1.0f)
DEFINE_CELL(double, f64, exp, tanh, 1.0)
