// A 2-D convolution as MindSpore AOT custom operators (ops.Custom, func_type="aot") on oneDNN's
// convolution primitives: ds2.native_ops builds them from this library when train.conv_kernel is onednn.
//
// Why: MindSpore 2.7's CPU Conv2D and its gradients give oneDNN plain NCHW tensors, so oneDNN convolves
// through im2col and a GEMM with only out_channels rows. Here oneDNN picks the layouts its direct
// convolutions want (tag::any); the operator reorders the NCHW tensors MindSpore holds into them and
// back. Primitives are kept per shape and short-lived buffers come from one arena, as in
// onednn_lstm.cc.
//
// A convolution of one input channel (the first one, over the spectrogram) runs on ds2's own loops
// instead (see SingleChannel below): oneDNN has no direct kernel for it that does not pad the channel
// to a block of 8 or 16, and its im2col GEMM writes and reads the input 121 times over for an 11 x 11
// kernel.
//
// Stride and padding travel in the shape of a fourth input, the geometry marker, of shape
// [stride_h, stride_w, pad_h + 1, pad_w + 1] (its values are never read): shape functions see only
// shapes, and the output's shape depends on them. Padding is symmetric.
//
// Exported (MindSpore's AOT signature, params = inputs then outputs; NAMEInferShape per operator):
//   conv_forward          x [N, C, H, W], weight [O, C, KH, KW], bias [O], geometry -> y [N, O, OH, OW]
//   conv_backward_data    x, weight, geometry, dy -> dx          (x for its shape only)
//   conv_backward_weights x, weight, geometry, dy -> dweight, dbias   (weight for its shape only)
//   conv_cache_report(report): shapes kept, the arena's bytes, and the calls of each of the three
//       operators so far, for tests and benchmarks
//   conv_plain_vectors(on): the one-channel loops without AVX2 even where the CPU has it, for tests
// The gradients are two operators so that the graph drops the input gradient nobody reads (the first
// convolution's).
#include "native_common.h"
#include "onednn_engine.h"

#include <oneapi/dnnl/dnnl.hpp>
#include <omp.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

using namespace dnnl;
using namespace ds2_native;
using tag = memory::format_tag;
using dt = memory::data_type;

namespace {

// Primitives are kept for this many shapes, least recently used dropped first (two convolutions per
// batch shape).
const size_t kMaxShapes = 64;

// N, C, H, W, O, KH, KW, stride_h, stride_w, pad_h, pad_w
using ConvKey = std::array<memory::dim, 11>;

memory::dim output_size(memory::dim input, memory::dim kernel, memory::dim stride, memory::dim pad) {
    return (input + 2 * pad - kernel) / stride + 1;
}

// A user buffer's desc and the primitive's, and the reorder between them when they differ.
struct Layout {
    Layout() = default;
    Layout(const memory::desc &user_md, const memory::desc &primitive_md, bool into_primitive)
        : user(user_md), inner(primitive_md), same(user_md == primitive_md) {
        if (!same) {
            const engine &eng = cpu_engine();
            move = into_primitive ? reorder(reorder::primitive_desc(eng, user_md, eng, primitive_md))
                                  : reorder(reorder::primitive_desc(eng, primitive_md, eng, user_md));
        }
    }
    size_t bytes() const { return same ? 0 : inner.get_size(); }
    memory::desc user, inner;
    bool same = true;
    reorder move;
};

struct ConvPrimitives {
    explicit ConvPrimitives(const ConvKey &k) {
        const engine &eng = cpu_engine();
        const memory::dims src_dims{k[0], k[1], k[2], k[3]};
        const memory::dims weight_dims{k[4], k[1], k[5], k[6]};
        const memory::dims dst_dims{k[0], k[4], output_size(k[2], k[5], k[7], k[9]),
                                    output_size(k[3], k[6], k[8], k[10])};
        const memory::dims strides{k[7], k[8]}, padding{k[9], k[10]};
        const memory::desc src_user(src_dims, dt::f32, tag::nchw), dst_user(dst_dims, dt::f32, tag::nchw),
            weight_user(weight_dims, dt::f32, tag::oihw);
        bias_md = memory::desc({k[4]}, dt::f32, tag::x);
        const memory::desc src_any(src_dims, dt::f32, tag::any), dst_any(dst_dims, dt::f32, tag::any),
            weight_any(weight_dims, dt::f32, tag::any);
        // One input channel: only the input gradient runs on oneDNN (SingleChannel does the rest), and in
        // the blocked layout oneDNN would pick the channel is padded to a block of 8 or 16.
        const memory::desc src_chosen = k[1] == 1 ? src_user : src_any;
        primitive_attr attr;
        attr.set_scratchpad_mode(scratchpad_mode::user);
        fwd_pd = convolution_forward::primitive_desc(eng, prop_kind::forward_training, algorithm::convolution_direct,
                                                     src_chosen, weight_any, bias_md, dst_any, strides, padding,
                                                     padding, attr);
        data_pd = convolution_backward_data::primitive_desc(eng, algorithm::convolution_direct, src_chosen, weight_any,
                                                            dst_any, strides, padding, padding, fwd_pd, attr);
        weights_pd = convolution_backward_weights::primitive_desc(eng, algorithm::convolution_direct, src_chosen,
                                                                  weight_any, bias_md, dst_any, strides, padding,
                                                                  padding, fwd_pd, attr);
        fwd = convolution_forward(fwd_pd);
        data = convolution_backward_data(data_pd);
        weights = convolution_backward_weights(weights_pd);
        fwd_src = Layout(src_user, fwd_pd.src_desc(), true);
        fwd_weight = Layout(weight_user, fwd_pd.weights_desc(), true);
        fwd_dst = Layout(dst_user, fwd_pd.dst_desc(), false);
        data_dy = Layout(dst_user, data_pd.diff_dst_desc(), true);
        data_weight = Layout(weight_user, data_pd.weights_desc(), true);
        data_dx = Layout(src_user, data_pd.diff_src_desc(), false);
        weights_src = Layout(src_user, weights_pd.src_desc(), true);
        weights_dy = Layout(dst_user, weights_pd.diff_dst_desc(), true);
        weights_dw = Layout(weight_user, weights_pd.diff_weights_desc(), false);
    }

    memory::desc bias_md;
    convolution_forward::primitive_desc fwd_pd;
    convolution_backward_data::primitive_desc data_pd;
    convolution_backward_weights::primitive_desc weights_pd;
    convolution_forward fwd;
    convolution_backward_data data;
    convolution_backward_weights weights;
    Layout fwd_src, fwd_weight, fwd_dst, data_dy, data_weight, data_dx, weights_src, weights_dy, weights_dw;
};

// Everything below is used under this lock: calls take turns on the one arena.
std::mutex state_lock;
Arena arena;
std::array<int64_t, 3> calls{};   // forward, backward data, backward weights
RecentlyUsed<ConvKey, ConvPrimitives> kept(kMaxShapes);

ConvPrimitives &primitives_for(const ConvKey &key) {
    return kept.get(key, [&] { return std::make_unique<ConvPrimitives>(key); });
}

// The key from x [N, C, H, W], weight [O, C, KH, KW] and the geometry marker, given as indices into the
// parameters; false with one stderr line when they do not fit together.
bool read_key(const char *name, const int *ndims, int64_t *const *shapes, int x, int weight, int geometry,
              ConvKey *key) {
    if (ndims[x] != 4 || ndims[weight] != 4 || ndims[geometry] != 4) {
        std::fprintf(stderr, "%s: x, the weight and the geometry marker must have 4 dimensions\n", name);
        return false;
    }
    const int64_t *xs = shapes[x], *ws = shapes[weight], *gs = shapes[geometry];
    *key = {xs[0], xs[1], xs[2], xs[3], ws[0], ws[2], ws[3], gs[0], gs[1], gs[2] - 1, gs[3] - 1};
    if (ws[1] != xs[1]) {
        std::fprintf(stderr, "%s: the weight's input channels (%lld) differ from x's (%lld)\n", name,
                     static_cast<long long>(ws[1]), static_cast<long long>(xs[1]));
        return false;
    }
    if (gs[0] < 1 || gs[1] < 1 || gs[2] < 1 || gs[3] < 1) {
        std::fprintf(stderr, "%s: the geometry marker must be [stride_h, stride_w, pad_h + 1, pad_w + 1]\n", name);
        return false;
    }
    for (int i = 0; i < 7; ++i) {
        if ((*key)[i] < 1) {
            std::fprintf(stderr, "%s: x and the weight must have no empty dimension\n", name);
            return false;
        }
    }
    if (output_size(xs[2], ws[2], gs[0], gs[2] - 1) < 1 || output_size(xs[3], ws[3], gs[1], gs[3] - 1) < 1) {
        std::fprintf(stderr, "%s: the kernel is larger than the padded input\n", name);
        return false;
    }
    return true;
}

// Whether parameter `i` has exactly the shape `expected`.
bool has_shape(const char *name, const char *what, const int *ndims, int64_t *const *shapes, int i,
               const std::vector<int64_t> &expected) {
    if (ndims[i] == static_cast<int>(expected.size()) && shape_of(ndims, shapes, i) == expected) {
        return true;
    }
    std::fprintf(stderr, "%s: %s has the wrong shape\n", name, what);
    return false;
}

std::vector<int64_t> output_shape(const ConvKey &k) {
    return {k[0], k[4], output_size(k[2], k[5], k[7], k[9]), output_size(k[3], k[6], k[8], k[10])};
}

// The memory a primitive reads or writes for user buffer `data`: the buffer itself when the layouts
// agree, else `staging` (an arena buffer), filled from `data` first when the primitive reads it.
memory bring_in(const Layout &layout, const stream &s, void *data, void *staging) {
    if (layout.same) return wrap(layout.user, data);
    memory inner = wrap(layout.inner, staging);
    run_reorder(layout.move, s, wrap(layout.user, data), inner);
    return inner;
}

memory staged_out(const Layout &layout, void *data, void *staging) {
    return layout.same ? wrap(layout.user, data) : wrap(layout.inner, staging);
}

void take_out(const Layout &layout, const stream &s, memory inner, void *data) {
    if (!layout.same) run_reorder(layout.move, s, inner, wrap(layout.user, data));
}

// The forward and weight-gradient passes of a convolution with one input channel, in loops over
// vectors of 8 output channels (GCC's vector extensions: one AVX register, or two SSE ones).
//
// Each utterance's zero-padded input is split by column into `stride_w` phase planes, plane p holding
// padded columns p, p + stride_w, ...: the input that kernel tap (i, j) meets along an output row is
// then one contiguous run of plane j % stride_w, starting j / stride_w in. The forward pass keeps 8
// output channels x 6 output columns in registers across all taps; the weight gradient keeps 8 output
// channels x 6 taps across an output row. Both load about one float per multiply-add of 8.
typedef float Vec8 __attribute__((vector_size(32), aligned(32)));
const int64_t kLanes = 8;
const int64_t kBlock = 6;

struct SingleChannel {
    explicit SingleChannel(const ConvKey &k)
        : n(k[0]), h(k[2]), w(k[3]), o(k[4]), kh(k[5]), kw(k[6]), sh(k[7]), sw(k[8]), ph(k[9]), pw(k[10]),
          oh(output_size(h, kh, sh, ph)), ow(output_size(w, kw, sw, pw)), rows(h + 2 * ph),
          cols((w + 2 * pw + sw - 1) / sw), vectors((o + kLanes - 1) / kLanes), taps(kh * kw) {
        for (int64_t i = 0; i < kh; ++i) {
            for (int64_t j = 0; j < kw; ++j) tap_offset.push_back(((j % sw) * rows + i) * cols + j / sw);
        }
    }

    // The planes, then the weight as [taps][vectors] Vec8 (channels past O zero).
    std::vector<size_t> buffer_bytes() const {
        return {sizeof(float) * static_cast<size_t>(n * sw * rows * cols),
                sizeof(Vec8) * static_cast<size_t>(taps * vectors)};
    }

    // Where output row `out_row` of utterance b starts reading: tap t's run begins tap_offset[t] later.
    const float *row_base(const float *planes, int64_t b, int64_t out_row) const {
        return planes + (b * sw * rows + out_row * sh) * cols;
    }

    void split(const float *x, float *planes) const {
#pragma omp parallel for collapse(2)
        for (int64_t b = 0; b < n; ++b) {
            for (int64_t row = 0; row < rows; ++row) {
                const int64_t source_row = row - ph;
                for (int64_t phase = 0; phase < sw; ++phase) {
                    float *out = planes + ((b * sw + phase) * rows + row) * cols;
                    for (int64_t j = 0; j < cols; ++j) {
                        const int64_t column = j * sw + phase - pw;
                        const bool inside = source_row >= 0 && source_row < h && column >= 0 && column < w;
                        out[j] = inside ? x[(b * h + source_row) * w + column] : 0.0f;
                    }
                }
            }
        }
    }

    // y [N, O, OH, OW] from the planes, the weight [O, 1, KH, KW] and the bias [O].
    void forward(const float *planes, const float *weight, const float *bias, Vec8 *packed, float *y) const {
        by_position(weight, taps, taps, packed);
        const bool wide = wide_vectors();
#pragma omp parallel for collapse(2)
        for (int64_t b = 0; b < n; ++b) {
            for (int64_t out_row = 0; out_row < oh; ++out_row) {
                if (wide) {
                    forward_row_avx2(*this, planes, packed, bias, y, b, out_row);
                } else {
                    forward_row_plain(*this, planes, packed, bias, y, b, out_row);
                }
            }
        }
    }

    // dweight [O, 1, KH, KW] and dbias [O] from the planes and dy [N, O, OH, OW]. Each thread transposes
    // one output row of dy at a time to [OW][vectors] and sums its rows' shares in double; then the threads'
    // sums are added in thread order, and the rows go to threads in a fixed order: the same gradient on
    // every run.
    void weight_gradient(const float *planes, const float *dy, float *dweight, float *dbias) const {
        const bool wide = wide_vectors();
        const size_t width = static_cast<size_t>(vectors * kLanes);
        // Every buffer is allocated before the threads start: an allocation failing inside the parallel
        // region would end the process instead of reaching `guarded`.
        const size_t threads = static_cast<size_t>(omp_get_max_threads());
        const size_t count = static_cast<size_t>(ow * vectors);
        std::vector<std::vector<double>> partial(threads, std::vector<double>(width * (taps + 1), 0.0));
        // std::vector does not align its floats for Vec8: one vector more per thread, and its first aligned one.
        std::vector<float> storage(threads * (count + 1) * kLanes);
#pragma omp parallel
        {
            const size_t thread = static_cast<size_t>(omp_get_thread_num());
            std::vector<double> &mine = partial[thread];
            void *start = storage.data() + thread * (count + 1) * kLanes;
            size_t space = sizeof(float) * (count + 1) * kLanes;
            Vec8 *transposed = static_cast<Vec8 *>(std::align(alignof(Vec8), sizeof(Vec8) * count, start, space));
#pragma omp for collapse(2) schedule(static)
            for (int64_t b = 0; b < n; ++b) {
                for (int64_t out_row = 0; out_row < oh; ++out_row) {
                    by_position(dy + (b * o * oh + out_row) * ow, oh * ow, ow, transposed);
                    if (wide) {
                        gradient_row_avx2(*this, planes, transposed, mine.data(), b, out_row);
                    } else {
                        gradient_row_plain(*this, planes, transposed, mine.data(), b, out_row);
                    }
                }
            }
        }
        std::vector<double> total(width * (taps + 1), 0.0);
        for (const std::vector<double> &sums : partial) {
            for (size_t i = 0; i < sums.size(); ++i) total[i] += sums[i];
        }
        // total: [taps][channels] then [channels] for the bias
        for (int64_t c = 0; c < o; ++c) {
            for (int64_t t = 0; t < taps; ++t) dweight[c * taps + t] = static_cast<float>(total[t * width + c]);
            dbias[c] = static_cast<float>(total[taps * width + c]);
        }
    }

    // out [positions][vectors] Vec8 from channel c's `positions` floats at source + c * stride: lane c % 8
    // of vector c / 8 at each position, lanes past O zero. Lays out the weight (per tap) and each output
    // row of dy (per column) for the row loops.
    void by_position(const float *source, int64_t stride, int64_t positions, Vec8 *out) const {
        float *lanes = reinterpret_cast<float *>(out);
        std::fill(lanes, lanes + positions * vectors * kLanes, 0.0f);
        for (int64_t c = 0; c < o; ++c) {
            for (int64_t x = 0; x < positions; ++x) {
                lanes[(x * vectors + c / kLanes) * kLanes + c % kLanes] = source[c * stride + x];
            }
        }
    }

    static bool wide_vectors() {
        static const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
        return avx2 && !plain_only;
    }

    static std::atomic<bool> plain_only;   // conv_plain_vectors

    static void forward_row_avx2(const SingleChannel &, const float *, const Vec8 *, const float *, float *,
                                 int64_t, int64_t);
    static void forward_row_plain(const SingleChannel &, const float *, const Vec8 *, const float *, float *,
                                  int64_t, int64_t);
    static void gradient_row_avx2(const SingleChannel &, const float *, const Vec8 *, double *, int64_t, int64_t);
    static void gradient_row_plain(const SingleChannel &, const float *, const Vec8 *, double *, int64_t,
                                   int64_t);

    int64_t n, h, w, o, kh, kw, sh, sw, ph, pw, oh, ow, rows, cols, vectors, taps;
    std::vector<int64_t> tap_offset;
};

std::atomic<bool> SingleChannel::plain_only{false};

// One output row of utterance b: blocks of 8 channels x kBlock columns summed over every tap in registers.
inline __attribute__((always_inline)) void forward_row(const SingleChannel &conv, const float *planes,
                                                       const Vec8 *packed, const float *bias, float *y,
                                                       int64_t b, int64_t out_row) {
    const float *base = conv.row_base(planes, b, out_row);
    for (int64_t v = 0; v < conv.vectors; ++v) {
        Vec8 start = {};
        for (int64_t lane = 0; lane < kLanes && v * kLanes + lane < conv.o; ++lane) {
            start[lane] = bias[v * kLanes + lane];
        }
        for (int64_t k0 = 0; k0 < conv.ow; k0 += kBlock) {
            Vec8 sum[kBlock];
            for (int64_t q = 0; q < kBlock; ++q) sum[q] = start;
            const int64_t count = std::min(kBlock, conv.ow - k0);
            for (int64_t t = 0; t < conv.taps; ++t) {
                const Vec8 weight = packed[t * conv.vectors + v];
                const float *in = base + conv.tap_offset[t] + k0;
                if (count == kBlock) {
                    for (int64_t q = 0; q < kBlock; ++q) sum[q] += weight * in[q];
                } else {
                    for (int64_t q = 0; q < count; ++q) sum[q] += weight * in[q];
                }
            }
            for (int64_t lane = 0; lane < kLanes && v * kLanes + lane < conv.o; ++lane) {
                float *out = y + ((b * conv.o + v * kLanes + lane) * conv.oh + out_row) * conv.ow + k0;
                for (int64_t q = 0; q < count; ++q) out[q] = sum[q][lane];
            }
        }
    }
}

// One output row's share of the gradients, added to `sums` ([taps][channels] then [channels] for the bias):
// blocks of 8 channels x kBlock taps summed along the row in registers.
inline __attribute__((always_inline)) void gradient_row(const SingleChannel &conv, const float *planes,
                                                        const Vec8 *transposed, double *sums, int64_t b,
                                                        int64_t out_row) {
    const float *base = conv.row_base(planes, b, out_row);
    const int64_t width = conv.vectors * kLanes;
    for (int64_t v = 0; v < conv.vectors; ++v) {
        Vec8 bias = {};
        for (int64_t k = 0; k < conv.ow; ++k) bias += transposed[k * conv.vectors + v];
        for (int64_t lane = 0; lane < kLanes; ++lane) sums[conv.taps * width + v * kLanes + lane] += bias[lane];
        for (int64_t t0 = 0; t0 < conv.taps; t0 += kBlock) {
            const int64_t count = std::min(kBlock, conv.taps - t0);
            const float *in[kBlock];
            for (int64_t q = 0; q < kBlock; ++q) in[q] = base + conv.tap_offset[t0 + std::min(q, count - 1)];
            Vec8 sum[kBlock] = {};
            for (int64_t k = 0; k < conv.ow; ++k) {
                const Vec8 grad = transposed[k * conv.vectors + v];
                for (int64_t q = 0; q < kBlock; ++q) sum[q] += grad * in[q][k];
            }
            for (int64_t q = 0; q < count; ++q) {
                for (int64_t lane = 0; lane < kLanes; ++lane) {
                    sums[(t0 + q) * width + v * kLanes + lane] += sum[q][lane];
                }
            }
        }
    }
}

// The rows above compiled twice: for AVX2 with FMA, and for any x86-64 CPU (SingleChannel::wide_vectors
// picks at run time, as oneDNN picks its kernels).
__attribute__((target("avx2,fma"))) void SingleChannel::forward_row_avx2(
    const SingleChannel &conv, const float *planes, const Vec8 *packed, const float *bias, float *y, int64_t b,
    int64_t out_row) {
    forward_row(conv, planes, packed, bias, y, b, out_row);
}

void SingleChannel::forward_row_plain(const SingleChannel &conv, const float *planes, const Vec8 *packed,
                                      const float *bias, float *y, int64_t b, int64_t out_row) {
    forward_row(conv, planes, packed, bias, y, b, out_row);
}

__attribute__((target("avx2,fma"))) void SingleChannel::gradient_row_avx2(
    const SingleChannel &conv, const float *planes, const Vec8 *transposed, double *sums, int64_t b,
    int64_t out_row) {
    gradient_row(conv, planes, transposed, sums, b, out_row);
}

void SingleChannel::gradient_row_plain(const SingleChannel &conv, const float *planes, const Vec8 *transposed,
                                       double *sums, int64_t b, int64_t out_row) {
    gradient_row(conv, planes, transposed, sums, b, out_row);
}

}  // namespace

// Shapes kept, the arena's bytes, then the forward, backward-data and backward-weights calls.
extern "C" void conv_cache_report(int64_t *report) {
    std::lock_guard<std::mutex> hold(state_lock);
    report[0] = static_cast<int64_t>(kept.size());
    report[1] = static_cast<int64_t>(arena.bytes());
    for (int i = 0; i < 3; ++i) report[2 + i] = calls[i];
}

// on != 0: the one-channel loops take their any-x86-64 build even where the CPU has AVX2 (for tests).
extern "C" void conv_plain_vectors(int on) { SingleChannel::plain_only = on != 0; }

// y's shape; -1 where x's sizes are not known yet (compile time, dynamic shapes).
extern "C" Shapes conv_forwardInferShape(int *ndims, int64_t **shapes, AotExtra *) {
    return guarded("conv_forward", Shapes{}, [&]() -> Shapes {
        for (int i = 0; i < 4; ++i) {
            if (rank_unknown(ndims, shapes, i)) return {{kDynamicRank}};
        }
        if (ndims[0] != 4 || ndims[1] != 4 || ndims[3] != 4) {
            std::fprintf(stderr, "conv_forward: x, the weight and the geometry marker must have 4 dimensions\n");
            return {};
        }
        const int64_t *xs = shapes[0], *ws = shapes[1], *gs = shapes[3];
        const int64_t rows = xs[2] < 0 ? -1 : output_size(xs[2], ws[2], gs[0], gs[2] - 1);
        const int64_t steps = xs[3] < 0 ? -1 : output_size(xs[3], ws[3], gs[1], gs[3] - 1);
        return {{xs[0], ws[0], rows, steps}};
    });
}

extern "C" Shapes conv_backward_dataInferShape(int *ndims, int64_t **shapes, AotExtra *) {
    return guarded("conv_backward_data", Shapes{}, [&]() -> Shapes {
        if (rank_unknown(ndims, shapes, 0)) return {{kDynamicRank}};
        return {shape_of(ndims, shapes, 0)};
    });
}

extern "C" Shapes conv_backward_weightsInferShape(int *ndims, int64_t **shapes, AotExtra *) {
    return guarded("conv_backward_weights", Shapes{}, [&]() -> Shapes {
        if (rank_unknown(ndims, shapes, 1)) return {{kDynamicRank}, {kDynamicRank}};
        return {shape_of(ndims, shapes, 1), {shapes[1][0]}};
    });
}

extern "C" int conv_forward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *,
                            void *) {
    const char *name = "conv_forward";
    ConvKey key;
    if (!float32_call(name, nparam, 5, dtypes) || !read_key(name, ndims, shapes, 0, 1, 3, &key)) return 1;
    if (!has_shape(name, "the bias", ndims, shapes, 2, {key[4]}) ||
        !has_shape(name, "y", ndims, shapes, 4, output_shape(key))) {
        return 1;
    }
    return guarded(name, 1, [&] {
        std::lock_guard<std::mutex> hold(state_lock);
        ++calls[0];
        if (key[1] == 1) {
            const SingleChannel conv(key);
            std::vector<void *> buffers = arena.carve(conv.buffer_bytes());
            float *planes = static_cast<float *>(buffers[0]);
            conv.split(static_cast<const float *>(params[0]), planes);
            conv.forward(planes, static_cast<const float *>(params[1]), static_cast<const float *>(params[2]),
                         static_cast<Vec8 *>(buffers[1]), static_cast<float *>(params[4]));
            return 0;
        }
        ConvPrimitives &p = primitives_for(key);
        std::vector<void *> buffers = arena.carve({p.fwd_pd.scratchpad_desc().get_size(), p.fwd_src.bytes(),
                                                   p.fwd_weight.bytes(), p.fwd_dst.bytes()});
        stream s(cpu_engine());
        memory src = bring_in(p.fwd_src, s, params[0], buffers[1]);
        memory weight = bring_in(p.fwd_weight, s, params[1], buffers[2]);
        memory dst = staged_out(p.fwd_dst, params[4], buffers[3]);
        p.fwd.execute(s, {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, weight},
                          {DNNL_ARG_BIAS, wrap(p.bias_md, params[2])}, {DNNL_ARG_DST, dst},
                          {DNNL_ARG_SCRATCHPAD, wrap(p.fwd_pd.scratchpad_desc(), buffers[0])}});
        take_out(p.fwd_dst, s, dst, params[4]);
        s.wait();
        return 0;
    });
}

extern "C" int conv_backward_data(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                                  void *, void *) {
    const char *name = "conv_backward_data";
    ConvKey key;
    if (!float32_call(name, nparam, 5, dtypes) || !read_key(name, ndims, shapes, 0, 1, 2, &key)) return 1;
    if (!has_shape(name, "dy", ndims, shapes, 3, output_shape(key)) ||
        !has_shape(name, "dx", ndims, shapes, 4, {key[0], key[1], key[2], key[3]})) {
        return 1;
    }
    return guarded(name, 1, [&] {
        std::lock_guard<std::mutex> hold(state_lock);
        ConvPrimitives &p = primitives_for(key);
        ++calls[1];
        std::vector<void *> buffers = arena.carve({p.data_pd.scratchpad_desc().get_size(), p.data_dy.bytes(),
                                                   p.data_weight.bytes(), p.data_dx.bytes()});
        stream s(cpu_engine());
        memory dy = bring_in(p.data_dy, s, params[3], buffers[1]);
        memory weight = bring_in(p.data_weight, s, params[1], buffers[2]);
        memory dx = staged_out(p.data_dx, params[4], buffers[3]);
        p.data.execute(s, {{DNNL_ARG_DIFF_DST, dy}, {DNNL_ARG_WEIGHTS, weight}, {DNNL_ARG_DIFF_SRC, dx},
                           {DNNL_ARG_SCRATCHPAD, wrap(p.data_pd.scratchpad_desc(), buffers[0])}});
        take_out(p.data_dx, s, dx, params[4]);
        s.wait();
        return 0;
    });
}

extern "C" int conv_backward_weights(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                                     void *, void *) {
    const char *name = "conv_backward_weights";
    ConvKey key;
    if (!float32_call(name, nparam, 6, dtypes) || !read_key(name, ndims, shapes, 0, 1, 2, &key)) return 1;
    if (!has_shape(name, "dy", ndims, shapes, 3, output_shape(key)) ||
        !has_shape(name, "dweight", ndims, shapes, 4, {key[4], key[1], key[5], key[6]}) ||
        !has_shape(name, "dbias", ndims, shapes, 5, {key[4]})) {
        return 1;
    }
    return guarded(name, 1, [&] {
        std::lock_guard<std::mutex> hold(state_lock);
        ++calls[2];
        if (key[1] == 1) {
            const SingleChannel conv(key);
            float *planes = static_cast<float *>(arena.carve(conv.buffer_bytes())[0]);
            conv.split(static_cast<const float *>(params[0]), planes);
            conv.weight_gradient(planes, static_cast<const float *>(params[3]), static_cast<float *>(params[4]),
                                 static_cast<float *>(params[5]));
            return 0;
        }
        ConvPrimitives &p = primitives_for(key);
        std::vector<void *> buffers = arena.carve({p.weights_pd.scratchpad_desc().get_size(), p.weights_src.bytes(),
                                                   p.weights_dy.bytes(), p.weights_dw.bytes()});
        stream s(cpu_engine());
        memory src = bring_in(p.weights_src, s, params[0], buffers[1]);
        memory dy = bring_in(p.weights_dy, s, params[3], buffers[2]);
        memory dw = staged_out(p.weights_dw, params[4], buffers[3]);
        p.weights.execute(s, {{DNNL_ARG_SRC, src}, {DNNL_ARG_DIFF_DST, dy}, {DNNL_ARG_DIFF_WEIGHTS, dw},
                              {DNNL_ARG_DIFF_BIAS, wrap(p.bias_md, params[5])},
                              {DNNL_ARG_SCRATCHPAD, wrap(p.weights_pd.scratchpad_desc(), buffers[0])}});
        take_out(p.weights_dw, s, dw, params[4]);
        s.wait();
        return 0;
    });
}
