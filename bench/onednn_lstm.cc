// What an LSTM operator of ds2's own could buy: oneDNN's LSTM primitives trained the way such an operator
// would drive them, on ds2's layer shapes, against which MindSpore's fused LSTM kernel is timed
// (bench/onednn_lstm.py builds this and runs both).
//
//   onednn_lstm STEPS BATCH INPUT HIDDEN [REPEATS]
//
// One direction of one layer, as ds2's BiLSTM runs each direction: [STEPS, BATCH, INPUT] -> [STEPS,
// BATCH, HIDDEN], zero initial state. The primitives (forward training, backward), their weight layouts
// and one scratchpad are made once for the shape and reused by every repeat, as an operator that keeps
// them for the life of a batch shape would; each repeat reorders the weights from the framework's
// layout (they change every optimizer step), runs forward and backward and reorders the weight
// gradients back. Prints one line per repeat: forward, backward and total wall milliseconds and the
// process's CPU milliseconds, and at the end the resident memory the primitives and buffers took.
#include <oneapi/dnnl/dnnl.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <time.h>
#include <vector>

using namespace dnnl;
using tag = memory::format_tag;
using dt = memory::data_type;

static double now_ms() {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

static double cpu_ms() {   // this process's CPU time: less sensitive than wall time to a shared machine
    timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static long resident_kib() {
    std::ifstream status("/proc/self/status");
    std::string line;
    while (std::getline(status, line))
        if (line.rfind("VmRSS:", 0) == 0) return std::atol(line.c_str() + 6);
    return -1;
}

static memory filled(const memory::desc &md, const engine &eng, std::mt19937 &rng, float scale) {
    memory m(md, eng);
    std::uniform_real_distribution<float> uniform(-scale, scale);
    float *data = static_cast<float *>(m.get_data_handle());
    for (size_t i = 0; i < md.get_size() / sizeof(float); ++i) data[i] = uniform(rng);
    return m;
}

int main(int argc, char **argv) {
    if (argc < 5) {
        std::fprintf(stderr, "usage: %s STEPS BATCH INPUT HIDDEN [REPEATS]\n", argv[0]);
        return 2;
    }
    const memory::dim T = std::atol(argv[1]), N = std::atol(argv[2]), C = std::atol(argv[3]), H = std::atol(argv[4]);
    const int repeats = argc > 5 ? std::atoi(argv[5]) : 3;
    const memory::dim G = 4;   // gates
    const long start_kib = resident_kib();

    engine eng(engine::kind::cpu, 0);
    stream s(eng);
    std::mt19937 rng(0);
    const float scale = 1.0f / std::sqrt(static_cast<float>(H));

    // The framework's layouts: activations [T, N, C], weights [layers, directions, input, gates, hidden].
    memory::desc src_md({T, N, C}, dt::f32, tag::tnc), dst_md({T, N, H}, dt::f32, tag::tnc);
    memory::desc w_layer_user({1, 1, C, G, H}, dt::f32, tag::ldigo), w_iter_user({1, 1, H, G, H}, dt::f32, tag::ldigo);
    memory::desc bias_md({1, 1, G, H}, dt::f32, tag::ldgo);
    memory::desc w_layer_any({1, 1, C, G, H}, dt::f32, tag::any), w_iter_any({1, 1, H, G, H}, dt::f32, tag::any);
    memory::desc none;   // zero initial states, final states not needed

    primitive_attr attr;
    attr.set_scratchpad_mode(scratchpad_mode::user);
    auto fwd_pd = lstm_forward::primitive_desc(eng, prop_kind::forward_training, rnn_direction::unidirectional_left2right,
                                               src_md, none, none, w_layer_any, w_iter_any, bias_md, dst_md, none, none,
                                               attr);
    auto bwd_pd = lstm_backward::primitive_desc(eng, prop_kind::backward, rnn_direction::unidirectional_left2right,
                                                src_md, none, none, w_layer_any, w_iter_any, bias_md, dst_md, none, none,
                                                src_md, none, none, w_layer_any, w_iter_any, bias_md, dst_md, none, none,
                                                fwd_pd, attr);
    lstm_forward fwd(fwd_pd);
    lstm_backward bwd(bwd_pd);

    // One scratchpad for both primitives: they never run at once.
    const size_t scratch_bytes = std::max(fwd_pd.scratchpad_desc().get_size(), bwd_pd.scratchpad_desc().get_size());
    memory scratch(memory::desc({static_cast<memory::dim>(scratch_bytes)}, dt::u8, tag::x), eng);

    memory src = filled(src_md, eng, rng, 1.0f), diff_dst = filled(dst_md, eng, rng, 1.0f);
    memory w_layer = filled(w_layer_user, eng, rng, scale), w_iter = filled(w_iter_user, eng, rng, scale);
    memory bias = filled(bias_md, eng, rng, scale);
    memory dst(dst_md, eng), diff_src(src_md, eng), diff_bias(bias_md, eng);
    memory workspace(fwd_pd.workspace_desc(), eng);
    memory fwd_w_layer(fwd_pd.weights_layer_desc(), eng), fwd_w_iter(fwd_pd.weights_iter_desc(), eng);
    memory bwd_w_layer(bwd_pd.weights_layer_desc(), eng), bwd_w_iter(bwd_pd.weights_iter_desc(), eng);
    memory diff_w_layer(bwd_pd.diff_weights_layer_desc(), eng), diff_w_iter(bwd_pd.diff_weights_iter_desc(), eng);
    memory diff_w_layer_user(w_layer_user, eng), diff_w_iter_user(w_iter_user, eng);
    reorder to_fwd_layer(w_layer, fwd_w_layer), to_fwd_iter(w_iter, fwd_w_iter);
    reorder to_bwd_layer(w_layer, bwd_w_layer), to_bwd_iter(w_iter, bwd_w_iter);
    reorder from_diff_layer(diff_w_layer, diff_w_layer_user), from_diff_iter(diff_w_iter, diff_w_iter_user);

    std::printf("shape T=%ld N=%ld C=%ld H=%ld; scratchpad %.1f MiB, workspace %.1f MiB; oneDNN %d.%d.%d\n",
                (long)T, (long)N, (long)C, (long)H, scratch_bytes / 1048576.0,
                fwd_pd.workspace_desc().get_size() / 1048576.0, dnnl_version()->major, dnnl_version()->minor,
                dnnl_version()->patch);
    for (int r = 0; r < repeats; ++r) {
        double t0 = now_ms(), c0 = cpu_ms();
        to_fwd_layer.execute(s, w_layer, fwd_w_layer);
        to_fwd_iter.execute(s, w_iter, fwd_w_iter);
        fwd.execute(s, {{DNNL_ARG_SRC_LAYER, src}, {DNNL_ARG_WEIGHTS_LAYER, fwd_w_layer}, {DNNL_ARG_WEIGHTS_ITER, fwd_w_iter},
                        {DNNL_ARG_BIAS, bias}, {DNNL_ARG_DST_LAYER, dst}, {DNNL_ARG_WORKSPACE, workspace},
                        {DNNL_ARG_SCRATCHPAD, scratch}});
        s.wait();
        double t1 = now_ms();
        to_bwd_layer.execute(s, w_layer, bwd_w_layer);
        to_bwd_iter.execute(s, w_iter, bwd_w_iter);
        // diff weights accumulate in oneDNN: zero them first, as a fresh gradient
        std::memset(diff_w_layer.get_data_handle(), 0, bwd_pd.diff_weights_layer_desc().get_size());
        std::memset(diff_w_iter.get_data_handle(), 0, bwd_pd.diff_weights_iter_desc().get_size());
        std::memset(diff_bias.get_data_handle(), 0, bias_md.get_size());
        bwd.execute(s, {{DNNL_ARG_SRC_LAYER, src}, {DNNL_ARG_WEIGHTS_LAYER, bwd_w_layer}, {DNNL_ARG_WEIGHTS_ITER, bwd_w_iter},
                        {DNNL_ARG_BIAS, bias}, {DNNL_ARG_DST_LAYER, dst}, {DNNL_ARG_DIFF_DST_LAYER, diff_dst},
                        {DNNL_ARG_WORKSPACE, workspace}, {DNNL_ARG_DIFF_SRC_LAYER, diff_src},
                        {DNNL_ARG_DIFF_WEIGHTS_LAYER, diff_w_layer}, {DNNL_ARG_DIFF_WEIGHTS_ITER, diff_w_iter},
                        {DNNL_ARG_DIFF_BIAS, diff_bias}, {DNNL_ARG_SCRATCHPAD, scratch}});
        from_diff_layer.execute(s, diff_w_layer, diff_w_layer_user);
        from_diff_iter.execute(s, diff_w_iter, diff_w_iter_user);
        s.wait();
        double t2 = now_ms(), c2 = cpu_ms();
        std::printf("repeat %d: forward %.1f ms, backward %.1f ms, total %.1f ms, CPU %.1f ms\n", r, t1 - t0, t2 - t1,
                    t2 - t0, c2 - c0);
    }
    std::printf("resident memory added: %.1f MiB\n", (resident_kib() - start_kib) / 1024.0);
    return 0;
}
