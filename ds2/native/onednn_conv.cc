// A 2-D convolution as MindSpore AOT custom operators (ops.Custom, func_type="aot") on oneDNN's
// convolution primitives: ds2.native_ops builds them from this library when train.conv_kernel is onednn.
//
// Why: MindSpore 2.7's CPU Conv2D and its gradients give oneDNN plain NCHW tensors, so oneDNN convolves
// through im2col and a GEMM with only out_channels rows. Here oneDNN picks the layouts its direct
// convolutions want (tag::any); the operator reorders the NCHW tensors MindSpore holds into them and
// back. Primitives are kept per shape and short-lived buffers come from one arena, as in
// onednn_lstm.cc.
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
// The gradients are two operators so that the graph drops the input gradient nobody reads (the first
// convolution's).
#include "native_common.h"
#include "onednn_engine.h"

#include <oneapi/dnnl/dnnl.hpp>

#include <array>
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
        primitive_attr attr;
        attr.set_scratchpad_mode(scratchpad_mode::user);
        fwd_pd = convolution_forward::primitive_desc(eng, prop_kind::forward_training, algorithm::convolution_direct,
                                                     src_any, weight_any, bias_md, dst_any, strides, padding,
                                                     padding, attr);
        data_pd = convolution_backward_data::primitive_desc(eng, algorithm::convolution_direct, src_any, weight_any,
                                                            dst_any, strides, padding, padding, fwd_pd, attr);
        weights_pd = convolution_backward_weights::primitive_desc(eng, algorithm::convolution_direct, src_any,
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

}  // namespace

// Shapes kept, the arena's bytes, then the forward, backward-data and backward-weights calls.
extern "C" void conv_cache_report(int64_t *report) {
    std::lock_guard<std::mutex> hold(state_lock);
    report[0] = static_cast<int64_t>(kept.size());
    report[1] = static_cast<int64_t>(arena.bytes());
    for (int i = 0; i < 3; ++i) report[2 + i] = calls[i];
}

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
        ConvPrimitives &p = primitives_for(key);
        ++calls[0];
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
        ConvPrimitives &p = primitives_for(key);
        ++calls[2];
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
