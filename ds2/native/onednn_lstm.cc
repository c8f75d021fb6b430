// One direction of one LSTM layer as a MindSpore AOT custom operator (ops.Custom, func_type="aot") on
// oneDNN's LSTM primitives: ds2.onednn_lstm builds the operator from this library when
// train.lstm_kernel is onednn. docker/build-lstm-kernel.sh compiles it in the image's build stage.
//
// Why: MindSpore's CPU LSTM kernel makes its oneDNN primitives, weight copies and scratchpad again at
// every step, touching gigabytes of fresh memory per step at the seed preset's size. Here primitives
// are kept per shape, and every buffer whose content lives only for one call (the weights in the
// primitive's layout, their gradients, the scratchpad, the initial states) comes from one arena that
// only grows, so after the first steps no call allocates.
//
// The weights come as ds2.model.BiLSTM holds them (PyTorch's layout): weight_ih [4H, C], weight_hh
// [4H, H], one bias [4H] (bias_ih + bias_hh, summed by the caller), gates in the order input, forget,
// cell, output. That is oneDNN's gate order, and [4H, C] row-major is its `ldgoi` weights tag, so the
// weights go in as they are; a reorder per call puts them in the layout the primitive chose. Initial
// states are zero and the final states are not returned, as in BiLSTM's use of ops.LSTM.
//
// Exported (MindSpore's AOT signature: int f(nparam, params, ndims, shapes, dtypes, stream, extra),
// params = inputs then outputs; a shape function NAMEInferShape per operator, so that one compiled
// graph serves every batch shape, train.shapes=dynamic):
//   lstm_forward   x [T, N, C], w_ih, w_hh, bias -> y [T, N, H], workspace [lstm_workspace_floats]
//   lstm_backward  x, w_ih, w_hh, bias, y, workspace, dy -> dx, dw_ih, dw_hh, dbias
//   lstm_workspace_floats(T, N, C, H): the workspace's length in float32 elements (-1: no primitive)
//   lstm_cache_report(report): shapes kept, the arena's bytes and the forward calls run so far, for
//       tests and benchmarks
// The forward's training workspace goes to the backward as the forward's second output.
#include "native_common.h"
#include "onednn_engine.h"

#include <oneapi/dnnl/dnnl.hpp>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

using namespace dnnl;
using namespace ds2_native;
using tag = memory::format_tag;
using dt = memory::data_type;

namespace {

const memory::dim kGates = 4;
// Primitives are kept for this many shapes, least recently used dropped first. A training step uses
// two (the first layer's input size and the others'); length bucketing gives a few dozen batch shapes.
const size_t kMaxShapes = 64;

using ShapeKey = std::array<memory::dim, 4>;   // steps, batch, inputs, hidden

struct LstmPrimitives {
    LstmPrimitives(const engine &eng, const ShapeKey &shape)
        : src_md({shape[0], shape[1], shape[2]}, dt::f32, tag::tnc),
          dst_md({shape[0], shape[1], shape[3]}, dt::f32, tag::tnc),
          w_layer_user({1, 1, shape[2], kGates, shape[3]}, dt::f32, tag::ldgoi),
          w_iter_user({1, 1, shape[3], kGates, shape[3]}, dt::f32, tag::ldgoi),
          bias_md({1, 1, kGates, shape[3]}, dt::f32, tag::ldgo),
          state_md({1, 1, shape[1], shape[3]}, dt::f32, tag::ldnc) {
        memory::desc w_layer_any({1, 1, shape[2], kGates, shape[3]}, dt::f32, tag::any);
        memory::desc w_iter_any({1, 1, shape[3], kGates, shape[3]}, dt::f32, tag::any);
        memory::desc none;   // final states not needed
        primitive_attr attr;
        attr.set_scratchpad_mode(scratchpad_mode::user);
        fwd_pd = lstm_forward::primitive_desc(eng, prop_kind::forward_training,
                                              rnn_direction::unidirectional_left2right, src_md, state_md, state_md,
                                              w_layer_any, w_iter_any, bias_md, dst_md, none, none, attr);
        bwd_pd = lstm_backward::primitive_desc(eng, prop_kind::backward, rnn_direction::unidirectional_left2right,
                                               src_md, state_md, state_md, w_layer_any, w_iter_any, bias_md, dst_md,
                                               none, none, src_md, state_md, state_md, w_layer_any, w_iter_any, bias_md,
                                               dst_md, none, none, fwd_pd, attr);
        fwd = lstm_forward(fwd_pd);
        bwd = lstm_backward(bwd_pd);
        to_fwd_layer = reorder(reorder::primitive_desc(eng, w_layer_user, eng, fwd_pd.weights_layer_desc()));
        to_fwd_iter = reorder(reorder::primitive_desc(eng, w_iter_user, eng, fwd_pd.weights_iter_desc()));
        to_bwd_layer = reorder(reorder::primitive_desc(eng, w_layer_user, eng, bwd_pd.weights_layer_desc()));
        to_bwd_iter = reorder(reorder::primitive_desc(eng, w_iter_user, eng, bwd_pd.weights_iter_desc()));
        from_diff_layer = reorder(reorder::primitive_desc(eng, bwd_pd.diff_weights_layer_desc(), eng, w_layer_user));
        from_diff_iter = reorder(reorder::primitive_desc(eng, bwd_pd.diff_weights_iter_desc(), eng, w_iter_user));
    }

    memory::desc src_md, dst_md, w_layer_user, w_iter_user, bias_md, state_md;
    lstm_forward::primitive_desc fwd_pd;
    lstm_backward::primitive_desc bwd_pd;
    lstm_forward fwd;
    lstm_backward bwd;
    reorder to_fwd_layer, to_fwd_iter, to_bwd_layer, to_bwd_iter, from_diff_layer, from_diff_iter;
};

// Everything below is used under this lock: calls take turns on the one arena (the runtime may launch
// a layer's two directions together; oneDNN spreads each call over every core anyway).
std::mutex state_lock;
Arena arena;
int64_t forward_calls = 0;
RecentlyUsed<ShapeKey, LstmPrimitives> kept(kMaxShapes);

LstmPrimitives &primitives_for(const ShapeKey &shape) {
    return kept.get(shape, [&] { return std::make_unique<LstmPrimitives>(cpu_engine(), shape); });
}

// The shape from x [T, N, C] and w_hh [4H, H], after checking the parameters the operator was given.
bool read_shape(const char *name, int nparam, int expected, int *ndims, int64_t **shapes, const char **dtypes,
                ShapeKey *shape) {
    if (!float32_call(name, nparam, expected, dtypes)) return false;
    if (ndims[0] != 3 || ndims[1] != 2 || ndims[2] != 2) {
        std::fprintf(stderr, "%s: x must be [T, N, C], w_ih [4H, C] and w_hh [4H, H]\n", name);
        return false;
    }
    *shape = {shapes[0][0], shapes[0][1], shapes[0][2], shapes[2][1]};
    const memory::dim hidden = (*shape)[3];
    if (shapes[1][0] != kGates * hidden || shapes[1][1] != (*shape)[2] || shapes[2][0] != kGates * hidden) {
        std::fprintf(stderr, "%s: w_ih must be [4H, C] and w_hh [4H, H] for x [T, N, C]\n", name);
        return false;
    }
    if (ndims[3] != 1 || shapes[3][0] != kGates * hidden) {
        std::fprintf(stderr, "%s: the bias must be [4H]\n", name);
        return false;
    }
    // y [T, N, H]: the forward's first output, the backward's fifth input; dy, the backward's seventh.
    const std::vector<int> like_y = expected == 11 ? std::vector<int>{4, 6} : std::vector<int>{4};
    for (int i : like_y) {
        if (ndims[i] != 3 || shapes[i][0] != (*shape)[0] || shapes[i][1] != (*shape)[1] || shapes[i][2] != hidden) {
            std::fprintf(stderr, "%s: y and dy must be [T, N, H]\n", name);
            return false;
        }
    }
    return true;
}

// Whether the workspace parameter holds at least oneDNN's training workspace for these primitives.
bool workspace_fits(const char *name, int ndim, const int64_t *shape, const lstm_forward::primitive_desc &pd) {
    if (ndim != 1 || shape[0] < 0 ||
        static_cast<size_t>(shape[0]) * sizeof(float) < pd.workspace_desc().get_size()) {
        std::fprintf(stderr, "%s: the workspace is smaller than oneDNN's training workspace\n", name);
        return false;
    }
    return true;
}

int64_t workspace_floats(const ShapeKey &shape) {
    const size_t bytes = primitives_for(shape).fwd_pd.workspace_desc().get_size();
    return static_cast<int64_t>((bytes + sizeof(float) - 1) / sizeof(float));
}

size_t scratchpad_bytes(const LstmPrimitives &p) {
    return std::max(p.fwd_pd.scratchpad_desc().get_size(), p.bwd_pd.scratchpad_desc().get_size());
}

}  // namespace

extern "C" int64_t lstm_workspace_floats(int64_t steps, int64_t batch, int64_t inputs, int64_t hidden) {
    return guarded("lstm_workspace_floats", int64_t{-1}, [&] {
        std::lock_guard<std::mutex> hold(state_lock);
        return workspace_floats({steps, batch, inputs, hidden});
    });
}

// Shapes kept, the arena's bytes, forward calls run: report[0], report[1], report[2].
extern "C" void lstm_cache_report(int64_t *report) {
    std::lock_guard<std::mutex> hold(state_lock);
    report[0] = static_cast<int64_t>(kept.size());
    report[1] = static_cast<int64_t>(arena.bytes());
    report[2] = forward_calls;
}

// Output shapes: y [T, N, H] and the workspace; -1 where the batch's sizes are not known yet (compile
// time, dynamic shapes), the real length when the runtime asks again with them. An empty answer tells
// MindSpore the shapes are wrong; the reason goes to stderr.
extern "C" Shapes lstm_forwardInferShape(int *ndims, int64_t **shapes, AotExtra *) {
    return guarded("lstm_forward", Shapes{}, [&]() -> Shapes {
        if (rank_unknown(ndims, shapes, 0)) return {{kDynamicRank}, {-1}};
        if (ndims[0] != 3 || ndims[2] != 2) {
            std::fprintf(stderr, "lstm_forward: x must be [T, N, C] and w_hh [4H, H]\n");
            return {};
        }
        const int64_t steps = shapes[0][0], batch = shapes[0][1], inputs = shapes[0][2], hidden = shapes[2][1];
        if (steps < 0 || batch < 0 || inputs < 0) return {{steps, batch, hidden}, {-1}};
        const int64_t floats = lstm_workspace_floats(steps, batch, inputs, hidden);
        if (floats < 0) return {};
        return {{steps, batch, hidden}, {floats}};
    });
}

// Gradients have the shapes of x, w_ih, w_hh and bias.
extern "C" Shapes lstm_backwardInferShape(int *ndims, int64_t **shapes, AotExtra *) {
    return guarded("lstm_backward", Shapes{}, [&] {
        Shapes outputs;
        for (int i = 0; i < 4; ++i) {
            outputs.push_back(rank_unknown(ndims, shapes, i) ? std::vector<int64_t>{kDynamicRank}
                                                             : shape_of(ndims, shapes, i));
        }
        return outputs;
    });
}

extern "C" int lstm_forward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                            void *, void *) {
    ShapeKey shape;
    if (!read_shape("lstm_forward", nparam, 6, ndims, shapes, dtypes, &shape)) return 1;
    return guarded("lstm_forward", 1, [&] {
        std::lock_guard<std::mutex> hold(state_lock);
        LstmPrimitives &p = primitives_for(shape);
        if (!workspace_fits("lstm_forward", ndims[5], shapes[5], p.fwd_pd)) return 1;
        ++forward_calls;
        std::vector<void *> buffers = arena.carve({scratchpad_bytes(p), p.fwd_pd.weights_layer_desc().get_size(),
                                                   p.fwd_pd.weights_iter_desc().get_size(), p.state_md.get_size()});
        memory scratchpad = wrap(p.fwd_pd.scratchpad_desc(), buffers[0]);
        memory w_layer = wrap(p.fwd_pd.weights_layer_desc(), buffers[1]);
        memory w_iter = wrap(p.fwd_pd.weights_iter_desc(), buffers[2]);
        std::memset(buffers[3], 0, p.state_md.get_size());
        memory zero_state = wrap(p.state_md, buffers[3]);
        stream s(cpu_engine());
        run_reorder(p.to_fwd_layer, s, wrap(p.w_layer_user, params[1]), w_layer);
        run_reorder(p.to_fwd_iter, s, wrap(p.w_iter_user, params[2]), w_iter);
        p.fwd.execute(s, {{DNNL_ARG_SRC_LAYER, wrap(p.src_md, params[0])}, {DNNL_ARG_SRC_ITER, zero_state},
                          {DNNL_ARG_SRC_ITER_C, zero_state}, {DNNL_ARG_WEIGHTS_LAYER, w_layer},
                          {DNNL_ARG_WEIGHTS_ITER, w_iter}, {DNNL_ARG_BIAS, wrap(p.bias_md, params[3])},
                          {DNNL_ARG_DST_LAYER, wrap(p.dst_md, params[4])},
                          {DNNL_ARG_WORKSPACE, wrap(p.fwd_pd.workspace_desc(), params[5])},
                          {DNNL_ARG_SCRATCHPAD, scratchpad}});
        s.wait();
        return 0;
    });
}

extern "C" int lstm_backward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                             void *, void *) {
    ShapeKey shape;
    if (!read_shape("lstm_backward", nparam, 11, ndims, shapes, dtypes, &shape)) return 1;
    return guarded("lstm_backward", 1, [&] {
        std::lock_guard<std::mutex> hold(state_lock);
        LstmPrimitives &p = primitives_for(shape);
        if (!workspace_fits("lstm_backward", ndims[5], shapes[5], p.fwd_pd)) return 1;
        const size_t state_bytes = p.state_md.get_size();
        std::vector<void *> buffers = arena.carve(
            {scratchpad_bytes(p), p.bwd_pd.weights_layer_desc().get_size(), p.bwd_pd.weights_iter_desc().get_size(),
             p.bwd_pd.diff_weights_layer_desc().get_size(), p.bwd_pd.diff_weights_iter_desc().get_size(),
             state_bytes, state_bytes, state_bytes});
        memory scratchpad = wrap(p.bwd_pd.scratchpad_desc(), buffers[0]);
        memory w_layer = wrap(p.bwd_pd.weights_layer_desc(), buffers[1]);
        memory w_iter = wrap(p.bwd_pd.weights_iter_desc(), buffers[2]);
        memory diff_w_layer = wrap(p.bwd_pd.diff_weights_layer_desc(), buffers[3]);
        memory diff_w_iter = wrap(p.bwd_pd.diff_weights_iter_desc(), buffers[4]);
        // oneDNN adds the weight gradients to what the buffers hold: start them at zero.
        std::memset(buffers[3], 0, p.bwd_pd.diff_weights_layer_desc().get_size());
        std::memset(buffers[4], 0, p.bwd_pd.diff_weights_iter_desc().get_size());
        std::memset(params[10], 0, p.bias_md.get_size());
        // The zero initial h and c are given explicitly: without src_iter, oneDNN 3.2's backward paired
        // each step's gate gradients with h_t instead of h_{t-1}. Their gradients go where nobody reads.
        std::memset(buffers[5], 0, state_bytes);
        memory zero_state = wrap(p.state_md, buffers[5]);
        stream s(cpu_engine());
        run_reorder(p.to_bwd_layer, s, wrap(p.w_layer_user, params[1]), w_layer);
        run_reorder(p.to_bwd_iter, s, wrap(p.w_iter_user, params[2]), w_iter);
        p.bwd.execute(s, {{DNNL_ARG_SRC_LAYER, wrap(p.src_md, params[0])}, {DNNL_ARG_SRC_ITER, zero_state},
                          {DNNL_ARG_SRC_ITER_C, zero_state}, {DNNL_ARG_DIFF_SRC_ITER, wrap(p.state_md, buffers[6])},
                          {DNNL_ARG_DIFF_SRC_ITER_C, wrap(p.state_md, buffers[7])},
                          {DNNL_ARG_WEIGHTS_LAYER, w_layer}, {DNNL_ARG_WEIGHTS_ITER, w_iter},
                          {DNNL_ARG_BIAS, wrap(p.bias_md, params[3])}, {DNNL_ARG_DST_LAYER, wrap(p.dst_md, params[4])},
                          {DNNL_ARG_DIFF_DST_LAYER, wrap(p.dst_md, params[6])},
                          {DNNL_ARG_WORKSPACE, wrap(p.fwd_pd.workspace_desc(), params[5])},
                          {DNNL_ARG_DIFF_SRC_LAYER, wrap(p.src_md, params[7])},
                          {DNNL_ARG_DIFF_WEIGHTS_LAYER, diff_w_layer}, {DNNL_ARG_DIFF_WEIGHTS_ITER, diff_w_iter},
                          {DNNL_ARG_DIFF_BIAS, wrap(p.bias_md, params[10])}, {DNNL_ARG_SCRATCHPAD, scratchpad}});
        run_reorder(p.from_diff_layer, s, diff_w_layer, wrap(p.w_layer_user, params[8]));
        run_reorder(p.from_diff_iter, s, diff_w_iter, wrap(p.w_iter_user, params[9]));
        s.wait();
        return 0;
    });
}
