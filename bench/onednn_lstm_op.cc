// One direction of one LSTM layer as a MindSpore AOT custom operator (ops.Custom, func_type="aot") on
// oneDNN 3.2's LSTM primitives, kept for the life of a shape; bench/onednn_lstm_op.py builds the
// operator from this library, checks it against MindSpore's kernel and times the two.
//
// The weights come as ds2.model.BiLSTM holds them (PyTorch's layout): weight_ih [4H, C], weight_hh
// [4H, H], one bias [4H] (bias_ih + bias_hh, summed by the caller), gates in the order input, forget,
// cell, output. oneDNN's LSTM gate order is the same (i, f, c~, o), and [4H, C] row-major is oneDNN's
// `ldgoi` weights tag, so the weights go in as they are; one reorder per call puts them in the layout
// the primitive chose. The initial states are zero and the final states are not returned, as in
// BiLSTM's use of ops.LSTM.
//
// Exported functions (MindSpore's AOT signature: int f(nparam, params, ndims, shapes, dtypes, stream,
// extra), params = inputs then outputs):
//   lstm_forward   x [T, N, C], w_ih, w_hh, bias -> y [T, N, H], workspace [lstm_workspace_floats]
//   lstm_backward  x, w_ih, w_hh, bias, y, workspace, dy -> dx, dw_ih, dw_hh, dbias
//   lstm_workspace_floats(T, N, C, H): the workspace output's length in float32 elements, for the
//       operator's shape function (called from Python through ctypes).
// The forward's training workspace goes to the backward as an extra output of the forward.
//
// Per shape (T, N, C, H) a static map keeps the forward-training and backward primitives, their weight
// buffers in the primitives' layouts, the weight reorders and one user-mode scratchpad shared by both
// primitives. A mutex per shape makes calls on one shape (the two directions of a BiLSTM layer, which
// the runtime may launch together) take turns on the shared scratchpad.
#include <oneapi/dnnl/dnnl.hpp>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>

using namespace dnnl;
using tag = memory::format_tag;
using dt = memory::data_type;

namespace {

const memory::dim kGates = 4;

struct LstmShape {
    memory::dim steps, batch, inputs, hidden;
    std::array<memory::dim, 4> key() const { return {steps, batch, inputs, hidden}; }
};

reorder reorder_between(const engine &eng, const memory::desc &from, const memory::desc &to) {
    return reorder(reorder::primitive_desc(eng, from, eng, to));
}

// Everything made once for one shape.
struct LstmPrimitives {
    explicit LstmPrimitives(const engine &eng, const LstmShape &shape)
        : src_md({shape.steps, shape.batch, shape.inputs}, dt::f32, tag::tnc),
          dst_md({shape.steps, shape.batch, shape.hidden}, dt::f32, tag::tnc),
          w_layer_user({1, 1, shape.inputs, kGates, shape.hidden}, dt::f32, tag::ldgoi),
          w_iter_user({1, 1, shape.hidden, kGates, shape.hidden}, dt::f32, tag::ldgoi),
          bias_md({1, 1, kGates, shape.hidden}, dt::f32, tag::ldgo),
          state_md({1, 1, shape.batch, shape.hidden}, dt::f32, tag::ldnc) {
        memory::desc w_layer_any({1, 1, shape.inputs, kGates, shape.hidden}, dt::f32, tag::any);
        memory::desc w_iter_any({1, 1, shape.hidden, kGates, shape.hidden}, dt::f32, tag::any);
        memory::desc none;   // final states not needed
        primitive_attr attr;
        attr.set_scratchpad_mode(scratchpad_mode::user);
        fwd_pd = lstm_forward::primitive_desc(eng, prop_kind::forward_training,
                                              rnn_direction::unidirectional_left2right, src_md, state_md, state_md,
                                              w_layer_any, w_iter_any, bias_md, dst_md, none, none, attr);
        bwd_pd = lstm_backward::primitive_desc(eng, prop_kind::backward, rnn_direction::unidirectional_left2right,
                                               src_md, state_md, state_md, w_layer_any, w_iter_any, bias_md, dst_md,
                                               none, none, src_md, state_md, state_md, w_layer_any, w_iter_any, bias_md, dst_md,
                                               none, none, fwd_pd, attr);
        fwd = lstm_forward(fwd_pd);
        bwd = lstm_backward(bwd_pd);
        const size_t scratch_bytes =
            std::max(fwd_pd.scratchpad_desc().get_size(), bwd_pd.scratchpad_desc().get_size());
        scratchpad = memory(memory::desc({static_cast<memory::dim>(scratch_bytes)}, dt::u8, tag::x), eng);
        zero_state = memory(state_md, eng);
        std::memset(zero_state.get_data_handle(), 0, state_md.get_size());
        discarded_h = memory(state_md, eng);
        discarded_c = memory(state_md, eng);
        fwd_w_layer = memory(fwd_pd.weights_layer_desc(), eng);
        fwd_w_iter = memory(fwd_pd.weights_iter_desc(), eng);
        bwd_w_layer = memory(bwd_pd.weights_layer_desc(), eng);
        bwd_w_iter = memory(bwd_pd.weights_iter_desc(), eng);
        diff_w_layer = memory(bwd_pd.diff_weights_layer_desc(), eng);
        diff_w_iter = memory(bwd_pd.diff_weights_iter_desc(), eng);
        to_fwd_layer = reorder_between(eng, w_layer_user, fwd_pd.weights_layer_desc());
        to_fwd_iter = reorder_between(eng, w_iter_user, fwd_pd.weights_iter_desc());
        to_bwd_layer = reorder_between(eng, w_layer_user, bwd_pd.weights_layer_desc());
        to_bwd_iter = reorder_between(eng, w_iter_user, bwd_pd.weights_iter_desc());
        from_diff_layer = reorder_between(eng, bwd_pd.diff_weights_layer_desc(), w_layer_user);
        from_diff_iter = reorder_between(eng, bwd_pd.diff_weights_iter_desc(), w_iter_user);
    }

    size_t workspace_bytes() const { return fwd_pd.workspace_desc().get_size(); }

    std::mutex busy;
    memory::desc src_md, dst_md, w_layer_user, w_iter_user, bias_md, state_md;
    lstm_forward::primitive_desc fwd_pd;
    lstm_backward::primitive_desc bwd_pd;
    lstm_forward fwd;
    lstm_backward bwd;
    // The zero initial h and c, given explicitly: with no src_iter, oneDNN 3.2's backward paired each
    // step's gate gradients with h_t instead of h_{t-1} (weight_hh's gradient off, --check found it).
    // The gradients of the initial state go to buffers nobody reads.
    memory zero_state, discarded_h, discarded_c;
    memory scratchpad, fwd_w_layer, fwd_w_iter, bwd_w_layer, bwd_w_iter, diff_w_layer, diff_w_iter;
    reorder to_fwd_layer, to_fwd_iter, to_bwd_layer, to_bwd_iter, from_diff_layer, from_diff_iter;
};

engine &cpu_engine() {
    static engine eng(engine::kind::cpu, 0);
    return eng;
}

// The kept primitives for a shape, made on first use.
LstmPrimitives &primitives_for(const LstmShape &shape) {
    static std::mutex cache_lock;
    static std::map<std::array<memory::dim, 4>, std::unique_ptr<LstmPrimitives>> cache;
    std::lock_guard<std::mutex> hold(cache_lock);
    auto &slot = cache[shape.key()];
    if (!slot) slot = std::make_unique<LstmPrimitives>(cpu_engine(), shape);
    return *slot;
}

// The shape from x [T, N, C] and w_hh [4H, H], after checking the parameters the operator was given.
bool read_shape(const char *name, int nparam, int expected, int *ndims, int64_t **shapes, const char **dtypes,
                LstmShape *shape) {
    if (nparam != expected) {
        std::fprintf(stderr, "%s: %d inputs and outputs, expected %d\n", name, nparam, expected);
        return false;
    }
    for (int i = 0; i < nparam; ++i) {
        if (std::strcmp(dtypes[i], "float32") != 0) {
            std::fprintf(stderr, "%s: parameter %d is %s, only float32 is supported\n", name, i, dtypes[i]);
            return false;
        }
    }
    if (ndims[0] != 3 || ndims[2] != 2) {
        std::fprintf(stderr, "%s: x must be [T, N, C] and w_hh [4H, H]\n", name);
        return false;
    }
    *shape = {shapes[0][0], shapes[0][1], shapes[0][2], shapes[2][1]};
    if (shapes[1][0] != kGates * shape->hidden || shapes[1][1] != shape->inputs || shapes[2][0] != kGates * shape->hidden) {
        std::fprintf(stderr, "%s: w_ih must be [4H, C] and w_hh [4H, H] for x [T, N, C]\n", name);
        return false;
    }
    return true;
}

memory wrap(const memory::desc &md, void *data) { return memory(md, cpu_engine(), data); }

}  // namespace

extern "C" int64_t lstm_workspace_floats(int64_t steps, int64_t batch, int64_t inputs, int64_t hidden) {
    try {
        const size_t bytes = primitives_for({steps, batch, inputs, hidden}).workspace_bytes();
        return static_cast<int64_t>((bytes + sizeof(float) - 1) / sizeof(float));
    } catch (const std::exception &e) {
        std::fprintf(stderr, "lstm_workspace_floats: %s\n", e.what());
        return -1;
    }
}

extern "C" int lstm_forward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                            void *stream_unused, void *extra_unused) {
    LstmShape shape;
    if (!read_shape("lstm_forward", nparam, 6, ndims, shapes, dtypes, &shape)) return 1;
    try {
        LstmPrimitives &p = primitives_for(shape);
        std::lock_guard<std::mutex> hold(p.busy);
        stream s(cpu_engine());
        memory x = wrap(p.src_md, params[0]), w_ih = wrap(p.w_layer_user, params[1]);
        memory w_hh = wrap(p.w_iter_user, params[2]), bias = wrap(p.bias_md, params[3]);
        memory y = wrap(p.dst_md, params[4]), workspace = wrap(p.fwd_pd.workspace_desc(), params[5]);
        p.to_fwd_layer.execute(s, w_ih, p.fwd_w_layer);
        p.to_fwd_iter.execute(s, w_hh, p.fwd_w_iter);
        p.fwd.execute(s, {{DNNL_ARG_SRC_LAYER, x}, {DNNL_ARG_SRC_ITER, p.zero_state}, {DNNL_ARG_SRC_ITER_C, p.zero_state},
                          {DNNL_ARG_WEIGHTS_LAYER, p.fwd_w_layer},
                          {DNNL_ARG_WEIGHTS_ITER, p.fwd_w_iter}, {DNNL_ARG_BIAS, bias}, {DNNL_ARG_DST_LAYER, y},
                          {DNNL_ARG_WORKSPACE, workspace}, {DNNL_ARG_SCRATCHPAD, p.scratchpad}});
        s.wait();
    } catch (const std::exception &e) {
        std::fprintf(stderr, "lstm_forward: %s\n", e.what());
        return 1;
    }
    return 0;
}

extern "C" int lstm_backward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                             void *stream_unused, void *extra_unused) {
    LstmShape shape;
    if (!read_shape("lstm_backward", nparam, 11, ndims, shapes, dtypes, &shape)) return 1;
    try {
        LstmPrimitives &p = primitives_for(shape);
        std::lock_guard<std::mutex> hold(p.busy);
        stream s(cpu_engine());
        memory x = wrap(p.src_md, params[0]), w_ih = wrap(p.w_layer_user, params[1]);
        memory w_hh = wrap(p.w_iter_user, params[2]), bias = wrap(p.bias_md, params[3]);
        memory y = wrap(p.dst_md, params[4]), workspace = wrap(p.fwd_pd.workspace_desc(), params[5]);
        memory dy = wrap(p.dst_md, params[6]), dx = wrap(p.src_md, params[7]);
        memory dw_ih = wrap(p.w_layer_user, params[8]), dw_hh = wrap(p.w_iter_user, params[9]);
        memory dbias = wrap(p.bias_md, params[10]);
        p.to_bwd_layer.execute(s, w_ih, p.bwd_w_layer);
        p.to_bwd_iter.execute(s, w_hh, p.bwd_w_iter);
        // oneDNN adds the weight gradients to what the buffers hold: start them at zero.
        std::memset(p.diff_w_layer.get_data_handle(), 0, p.diff_w_layer.get_desc().get_size());
        std::memset(p.diff_w_iter.get_data_handle(), 0, p.diff_w_iter.get_desc().get_size());
        std::memset(params[10], 0, p.bias_md.get_size());
        p.bwd.execute(s, {{DNNL_ARG_SRC_LAYER, x}, {DNNL_ARG_SRC_ITER, p.zero_state}, {DNNL_ARG_SRC_ITER_C, p.zero_state},
                          {DNNL_ARG_DIFF_SRC_ITER, p.discarded_h}, {DNNL_ARG_DIFF_SRC_ITER_C, p.discarded_c},
                          {DNNL_ARG_WEIGHTS_LAYER, p.bwd_w_layer},
                          {DNNL_ARG_WEIGHTS_ITER, p.bwd_w_iter}, {DNNL_ARG_BIAS, bias}, {DNNL_ARG_DST_LAYER, y},
                          {DNNL_ARG_DIFF_DST_LAYER, dy}, {DNNL_ARG_WORKSPACE, workspace},
                          {DNNL_ARG_DIFF_SRC_LAYER, dx}, {DNNL_ARG_DIFF_WEIGHTS_LAYER, p.diff_w_layer},
                          {DNNL_ARG_DIFF_WEIGHTS_ITER, p.diff_w_iter}, {DNNL_ARG_DIFF_BIAS, dbias},
                          {DNNL_ARG_SCRATCHPAD, p.scratchpad}});
        p.from_diff_layer.execute(s, p.diff_w_layer, dw_ih);
        p.from_diff_iter.execute(s, p.diff_w_iter, dw_hh);
        s.wait();
    } catch (const std::exception &e) {
        std::fprintf(stderr, "lstm_backward: %s\n", e.what());
        return 1;
    }
    return 0;
}
