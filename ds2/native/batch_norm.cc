// BatchNorm in training (batch statistics) as MindSpore AOT custom operators (ops.Custom,
// func_type="aot"): ds2.native_ops builds them from this library when train.batch_norm_kernel is native.
//
// Why: MindSpore 2.7's CPU BatchNorm and BatchNormGrad took 19 ms of a 170 ms small-preset step for
// four BatchNorms whose tensors hold at most 2.3 M elements: a few passes over memory each. Here the
// forward is three passes over memory and the backward two, on one thread (OpenMP threads beside MindSpore's own measured
// several times slower on 2 cores).
//
// x is read as [N, C, S]: N samples, C channels, S positions per channel and sample (1 for BatchNorm1d's
// [N, C]; F x T for BatchNorm2d's [N, C, F, T]). The statistics are per channel over M = N x S values;
// the variance that normalises is the biased one (divided by M), as in MindSpore's and PyTorch's training
// mode, and the one returned the unbiased one (divided by M - 1; 0 when M is 1), which the moving
// variance takes in both frameworks. The moving statistics are the caller's to update
// (ds2.native_ops.batch_norm).
//
// epsilon is 1e-5, the default of MindSpore's and PyTorch's BatchNorm layers and every ds2 model's.
//
// Exported (MindSpore's AOT signature, params = inputs then outputs; NAMEInferShape per operator):
//   batch_norm_forward   x [N, C, ...], gamma [C], beta [C] -> y (x's shape), mean [C], variance [C] (unbiased)
//   batch_norm_backward  x, gamma, mean, variance (the forward's), dy -> dx, dgamma, dbeta
//   batch_norm_calls(): forward calls run so far, for tests and benchmarks
#include "native_common.h"

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <vector>

using namespace ds2_native;

namespace {

const double kEpsilon = 1e-5;
std::atomic<int64_t> forward_calls{0};

struct Layout {
    int64_t samples = 0, channels = 0, positions = 1;
};

// [N, C, S] from x's shape, and whether gamma-like parameters `per_channel` are [C]; one stderr line
// naming the problem otherwise.
bool read_layout(const char *name, const int *ndims, int64_t *const *shapes, const std::vector<int> &per_channel,
                 Layout *layout) {
    if (ndims[0] < 2) {
        std::fprintf(stderr, "%s: x must be [N, C, ...]\n", name);
        return false;
    }
    layout->samples = shapes[0][0];
    layout->channels = shapes[0][1];
    layout->positions = 1;
    for (int i = 2; i < ndims[0]; ++i) layout->positions *= shapes[0][i];
    for (int i : per_channel) {
        if (ndims[i] != 1 || shapes[i][0] != layout->channels) {
            std::fprintf(stderr, "%s: parameter %d must be [C] for x [N, C, ...]\n", name, i);
            return false;
        }
    }
    if (layout->samples * layout->positions < 1) {
        std::fprintf(stderr, "%s: x holds no value per channel\n", name);
        return false;
    }
    return true;
}

bool same_shape(const char *name, const int *ndims, int64_t *const *shapes, int a, int b) {
    if (shape_of(ndims, shapes, a) == shape_of(ndims, shapes, b)) {
        return true;
    }
    std::fprintf(stderr, "%s: parameters %d and %d must have x's shape\n", name, a, b);
    return false;
}

// Element (n, c, s) of a [N, C, S] tensor.
inline int64_t at(const Layout &l, int64_t n, int64_t c, int64_t s) { return (n * l.channels + c) * l.positions + s; }

int64_t values_per_channel(const Layout &l) { return l.samples * l.positions; }

// The biased variance from the unbiased one the forward returns.
double biased(const Layout &l, float unbiased) {
    const int64_t m = values_per_channel(l);
    return m > 1 ? static_cast<double>(unbiased) * static_cast<double>(m - 1) / static_cast<double>(m) : 0.0;
}

// The loops run sample by sample and channel by channel, so that memory is read in order whether the
// positions per channel are many (BatchNorm2d) or one (BatchNorm1d: the channel loop is the inner one).
// Each channel's values within one sample are summed in float, those sums in double.

// Per channel: the sum over every sample and position of f(channel, value).
template <typename F>
void channel_sums(const Layout &l, const float *x, F f, std::vector<double> *sums) {
    sums->assign(l.channels, 0.0);
    double *out = sums->data();
    for (int64_t n = 0; n < l.samples; ++n) {
        const float *sample = x + at(l, n, 0, 0);
        if (l.positions == 1) {
            for (int64_t c = 0; c < l.channels; ++c) out[c] += f(c, sample[c]);
            continue;
        }
        for (int64_t c = 0; c < l.channels; ++c) {
            const float *row = sample + c * l.positions;
            float part = 0;
            for (int64_t s = 0; s < l.positions; ++s) part += f(c, row[s]);
            out[c] += part;
        }
    }
}

// Per channel: the mean and the unbiased variance of x.
void statistics(const Layout &l, const float *x, float *mean, float *variance) {
    const int64_t m_values = values_per_channel(l);
    std::vector<double> sums;
    channel_sums(l, x, [](int64_t, float v) { return v; }, &sums);
    std::vector<float> centre(l.channels);
    for (int64_t c = 0; c < l.channels; ++c) {
        centre[c] = static_cast<float>(sums[c] / static_cast<double>(m_values));
        mean[c] = centre[c];
    }
    const float *m = centre.data();
    channel_sums(l, x, [m](int64_t c, float v) { return (v - m[c]) * (v - m[c]); }, &sums);
    for (int64_t c = 0; c < l.channels; ++c) {
        variance[c] = m_values > 1 ? static_cast<float>(sums[c] / static_cast<double>(m_values - 1)) : 0.0f;
    }
}

// out = a[c] * in + b[c] for every value.
void per_channel_affine(const Layout &l, const float *in, const float *a, const float *b, float *out) {
    for (int64_t n = 0; n < l.samples; ++n) {
        const float *sample = in + at(l, n, 0, 0);
        float *result = out + at(l, n, 0, 0);
        if (l.positions == 1) {
            for (int64_t c = 0; c < l.channels; ++c) result[c] = sample[c] * a[c] + b[c];
            continue;
        }
        for (int64_t c = 0; c < l.channels; ++c) {
            const float *row = sample + c * l.positions;
            float *row_out = result + c * l.positions;
            const float scale = a[c], shift = b[c];
            for (int64_t s = 0; s < l.positions; ++s) row_out[s] = row[s] * scale + shift;
        }
    }
}

void normalize(const Layout &l, const float *x, const float *gamma, const float *beta, const float *mean,
               const float *variance, float *y) {
    std::vector<float> scale(l.channels), shift(l.channels);
    for (int64_t c = 0; c < l.channels; ++c) {
        scale[c] = static_cast<float>(gamma[c] / std::sqrt(biased(l, variance[c]) + kEpsilon));
        shift[c] = beta[c] - mean[c] * scale[c];
    }
    per_channel_affine(l, x, scale.data(), shift.data(), y);
}

// dx = gamma * inv_std * (dy - mean(dy) - x_hat * mean(dy * x_hat)), dgamma = sum(dy * x_hat), dbeta = sum(dy),
// with x_hat = (x - mean) * inv_std. dx is written as k[c] * dy + a[c] * x + b[c].
void gradients(const Layout &l, const float *x, const float *gamma, const float *mean, const float *variance,
               const float *dy, float *dx, float *dgamma, float *dbeta) {
    const double count = static_cast<double>(values_per_channel(l));
    std::vector<double> sum_dy(l.channels, 0.0), sum_dy_x(l.channels, 0.0);
    for (int64_t n = 0; n < l.samples; ++n) {
        const float *xs = x + at(l, n, 0, 0), *gs = dy + at(l, n, 0, 0);
        if (l.positions == 1) {
            for (int64_t c = 0; c < l.channels; ++c) {
                sum_dy[c] += gs[c];
                sum_dy_x[c] += gs[c] * (xs[c] - mean[c]);
            }
            continue;
        }
        for (int64_t c = 0; c < l.channels; ++c) {
            const float *row = xs + c * l.positions, *grad = gs + c * l.positions;
            const float centre = mean[c];
            float part_dy = 0, part_dy_x = 0;
            for (int64_t s = 0; s < l.positions; ++s) {
                part_dy += grad[s];
                part_dy_x += grad[s] * (row[s] - centre);
            }
            sum_dy[c] += part_dy;
            sum_dy_x[c] += part_dy_x;
        }
    }
    std::vector<float> k(l.channels), a(l.channels), b(l.channels);
    for (int64_t c = 0; c < l.channels; ++c) {
        const double inv_std = 1.0 / std::sqrt(biased(l, variance[c]) + kEpsilon);
        const double sum_dy_xhat = sum_dy_x[c] * inv_std;
        dgamma[c] = static_cast<float>(sum_dy_xhat);
        dbeta[c] = static_cast<float>(sum_dy[c]);
        const double kc = gamma[c] * inv_std;
        // k * (dy - mean_dy - (x - mean) * inv_std * mean_dy_xhat)
        const double slope = kc * inv_std * sum_dy_xhat / count;
        k[c] = static_cast<float>(kc);
        a[c] = static_cast<float>(-slope);
        b[c] = static_cast<float>(-kc * sum_dy[c] / count + slope * mean[c]);
    }
    for (int64_t n = 0; n < l.samples; ++n) {
        const float *xs = x + at(l, n, 0, 0), *gs = dy + at(l, n, 0, 0);
        float *out = dx + at(l, n, 0, 0);
        if (l.positions == 1) {
            for (int64_t c = 0; c < l.channels; ++c) out[c] = k[c] * gs[c] + a[c] * xs[c] + b[c];
            continue;
        }
        for (int64_t c = 0; c < l.channels; ++c) {
            const float *row = xs + c * l.positions, *grad = gs + c * l.positions;
            float *row_out = out + c * l.positions;
            const float kc = k[c], ac = a[c], bc = b[c];
            for (int64_t s = 0; s < l.positions; ++s) row_out[s] = kc * grad[s] + ac * row[s] + bc;
        }
    }
}

// Both operators' outputs: one like x (parameter 0), two like gamma (parameter 1, [C]).
Shapes like_x_and_channels(const int *ndims, int64_t *const *shapes) {
    const std::vector<int64_t> channels = shape_of(ndims, shapes, 1);
    if (rank_unknown(ndims, shapes, 0)) return {{kDynamicRank}, channels, channels};
    return {shape_of(ndims, shapes, 0), channels, channels};
}

}  // namespace

extern "C" int64_t batch_norm_calls() { return forward_calls.load(); }

extern "C" Shapes batch_norm_forwardInferShape(int *ndims, int64_t **shapes, AotExtra *) {
    return guarded("batch_norm_forward", Shapes{}, [&] { return like_x_and_channels(ndims, shapes); });
}

extern "C" Shapes batch_norm_backwardInferShape(int *ndims, int64_t **shapes, AotExtra *) {
    return guarded("batch_norm_backward", Shapes{}, [&] { return like_x_and_channels(ndims, shapes); });
}

extern "C" int batch_norm_forward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                                  void *, void *) {
    const char *name = "batch_norm_forward";
    Layout l;
    if (!float32_call(name, nparam, 6, dtypes) || !read_layout(name, ndims, shapes, {1, 2, 4, 5}, &l) ||
        !same_shape(name, ndims, shapes, 0, 3)) {
        return 1;
    }
    return guarded(name, 1, [&] {
        ++forward_calls;
        const float *x = static_cast<const float *>(params[0]);
        float *mean = static_cast<float *>(params[4]), *variance = static_cast<float *>(params[5]);
        statistics(l, x, mean, variance);
        normalize(l, x, static_cast<const float *>(params[1]), static_cast<const float *>(params[2]), mean, variance,
                  static_cast<float *>(params[3]));
        return 0;
    });
}

extern "C" int batch_norm_backward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                                   void *, void *) {
    const char *name = "batch_norm_backward";
    Layout l;
    if (!float32_call(name, nparam, 8, dtypes) || !read_layout(name, ndims, shapes, {1, 2, 3, 6, 7}, &l) ||
        !same_shape(name, ndims, shapes, 0, 4) || !same_shape(name, ndims, shapes, 0, 5)) {
        return 1;
    }
    return guarded(name, 1, [&] {
        gradients(l, static_cast<const float *>(params[0]), static_cast<const float *>(params[1]),
                  static_cast<const float *>(params[2]), static_cast<const float *>(params[3]),
                  static_cast<const float *>(params[4]), static_cast<float *>(params[5]),
                  static_cast<float *>(params[6]), static_cast<float *>(params[7]));
        return 0;
    });
}
