// Zeroing each utterance's padded time steps as MindSpore AOT custom operators (ops.Custom,
// func_type="aot"): ds2.native_ops builds them from this library when train.mask_kernel is native.
//
// Why: the model zeroes the padding after each convolution block and each BiLSTM layer by multiplying with
// a mask broadcast to the activation's full shape (ds2.model.full_mask); MindSpore's CPU BroadcastTo and
// Mul took about 10 ms of a 160 ms small-preset step for that. Here it is one copy of the valid steps and
// one memset of the rest, and the gradient is the same operation on dy.
//
// Exported (MindSpore's AOT signature, params = inputs then outputs; NAMEInferShape per operator):
//   mask_time_last   x [B, ..., T], lengths int32 [B] -> y: x with y[b, ..., t] = 0 for t >= lengths[b]
//   mask_time_first  x [T, B, ...], lengths int32 [B] -> y: x with y[t, b, ...] = 0 for t >= lengths[b]
//   time_mask_calls(): calls so far, for tests and benchmarks
#include "native_common.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string_view>
#include <vector>

using namespace ds2_native;

namespace {

std::atomic<int64_t> calls{0};

// The number of valid steps of utterance b: lengths[b] clipped to [0, steps].
int64_t valid_steps(const int32_t *lengths, int64_t b, int64_t steps) {
    return std::min<int64_t>(std::max<int32_t>(lengths[b], 0), steps);
}

bool checked(const char *name, int nparam, int *ndims, int64_t **shapes, const char **dtypes, int batch_axis) {
    if (!expected_params(name, nparam, 3)) return false;
    if (std::string_view(dtypes[0]) != "float32" || std::string_view(dtypes[2]) != "float32" ||
        std::string_view(dtypes[1]) != "int32") {
        std::fprintf(stderr, "%s: x must be float32 and the lengths int32\n", name);
        return false;
    }
    if (ndims[0] < 2 || ndims[1] != 1 || shapes[1][0] != shapes[0][batch_axis] || ndims[2] != ndims[0] ||
        shape_of(ndims, shapes, 0) != shape_of(ndims, shapes, 2)) {
        std::fprintf(stderr, "%s: x needs a batch and a time axis, one length per utterance, y x's shape\n", name);
        return false;
    }
    return true;
}

Shapes same_as_x(int *ndims, int64_t **shapes) {
    if (rank_unknown(ndims, shapes, 0)) return {{kDynamicRank}};
    return {shape_of(ndims, shapes, 0)};
}

int64_t product(const int64_t *dims, int from, int to) {
    int64_t p = 1;
    for (int i = from; i < to; ++i) p *= dims[i];
    return p;
}

}  // namespace

extern "C" int64_t time_mask_calls() { return calls.load(); }

extern "C" Shapes mask_time_lastInferShape(int *ndims, int64_t **shapes, AotExtra *) {
    return guarded("mask_time_last", Shapes{}, [&] { return same_as_x(ndims, shapes); });
}

extern "C" Shapes mask_time_firstInferShape(int *ndims, int64_t **shapes, AotExtra *) {
    return guarded("mask_time_first", Shapes{}, [&] { return same_as_x(ndims, shapes); });
}

extern "C" int mask_time_last(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *,
                              void *) {
    if (!checked("mask_time_last", nparam, ndims, shapes, dtypes, 0)) return 1;
    return guarded("mask_time_last", 1, [&] {
        ++calls;
        const int64_t batch = shapes[0][0], steps = shapes[0][ndims[0] - 1];
        const int64_t rows = product(shapes[0], 1, ndims[0] - 1);   // per utterance, each `steps` long
        const float *x = static_cast<const float *>(params[0]);
        const int32_t *lengths = static_cast<const int32_t *>(params[1]);
        float *y = static_cast<float *>(params[2]);
        for (int64_t b = 0; b < batch; ++b) {
            const int64_t valid = valid_steps(lengths, b, steps);
            for (int64_t r = 0; r < rows; ++r) {
                const int64_t start = (b * rows + r) * steps;
                std::memcpy(y + start, x + start, valid * sizeof(float));
                std::memset(y + start + valid, 0, (steps - valid) * sizeof(float));
            }
        }
        return 0;
    });
}

extern "C" int mask_time_first(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *,
                               void *) {
    if (!checked("mask_time_first", nparam, ndims, shapes, dtypes, 1)) return 1;
    return guarded("mask_time_first", 1, [&] {
        ++calls;
        const int64_t steps = shapes[0][0], batch = shapes[0][1];
        const int64_t width = product(shapes[0], 2, ndims[0]);   // values per (step, utterance)
        const float *x = static_cast<const float *>(params[0]);
        const int32_t *lengths = static_cast<const int32_t *>(params[1]);
        float *y = static_cast<float *>(params[2]);
        for (int64_t t = 0; t < steps; ++t) {
            for (int64_t b = 0; b < batch; ++b) {
                const int64_t start = (t * batch + b) * width;
                if (t < valid_steps(lengths, b, steps)) {
                    std::memcpy(y + start, x + start, width * sizeof(float));
                } else {
                    std::memset(y + start, 0, width * sizeof(float));
                }
            }
        }
        return 0;
    });
}
