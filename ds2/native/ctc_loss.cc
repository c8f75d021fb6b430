// CTC loss and its gradient as one MindSpore AOT custom operator (ops.Custom, func_type="aot"), in place of
// MindSpore's CPU CTCLossV2 + CTCLossV2Grad: the same loss as nn.CTCLoss(blank=0, reduction="none",
// zero_infinity=True), and the gradient computed in the same call for the operator's bprop.
//
// Why: MindSpore 2.7's CPU kernels take about 26 ms per training step at the seed preset's size
// (log_probs [357, 4, 29], 150-250 labels per utterance): they work in float32 log space with a log and
// three exps per (frame, state) and write a [B, T, 2S+1] log_alpha tensor for the backward kernel. Here
// each utterance is one forward and one backward pass in probability space (Rabiner's scaling: every
// frame's variables are divided by their sum and the log of that sum is kept), in double precision, over
// only the states that can still lie on a complete path: under 1 ms for that batch on one core.
//
// Probability space fails where exp(log_probs) underflows, or where one frame's variables span more than
// double's range. The scaled pass gives up on an utterance when an emission probability it needs is
// below 1e-300 (log_prob < -690), when a frame's scale is not finite or below 1e-200, or when the
// total probability recovered at some frame from its forward and backward variables differs from the
// forward pass's total (which it cannot in exact arithmetic: it means some path's mass was lost in one of
// the two passes). Such an utterance is computed again in log space (logsumexp), slower but exact. On
// log_softmax outputs of an ordinary model the scaled pass does every utterance; the test cases behind
// this needed log_probs of -800, or frames whose classes spread over hundreds of nats.
//
// Semantics (as MindSpore's kernels; blank = 0):
//   loss[b] = -log p(labels_b | log_probs[:input_lengths[b], b]); only labels[b, :label_lengths[b]] are
//   read. An utterance whose labels cannot be aligned in its frames (fewer frames than labels plus
//   repeated neighbours, or probability 0) has loss 0 and gradient 0 (zero_infinity). An empty label
//   sequence gives -sum_t log_probs[t, b, blank]; zero frames with no labels give 0.
//   grad[t, b, k] = d loss[b] / d log_probs[t, b, k] = -(occupancy of class k at frame t), 0 for
//   t >= input_lengths[b]. MindSpore's own gradient is exp(log_probs) - occupancy: the same gradient
//   with respect to the logits once it has passed log_softmax's backward (occupancy sums to 1 per frame).
//   A length outside [0, T] / [0, S] or a label outside [0, C) is an error (MindSpore raises): one stderr
//   line, non-zero return. MindSpore's kernel also rejects input_lengths[b] < label_lengths[b]; this one
//   gives such an utterance loss 0 like any other that cannot be aligned.
//
// Exported (MindSpore's AOT signature; params = inputs then outputs):
//   ctc_loss_forward   log_probs f32 [T, B, C], labels i32 [B, S], input_lengths i32 [B],
//                      label_lengths i32 [B] -> loss f32 [B], grad f32 [T, B, C]
//   ctc_loss_forwardInferShape: the outputs' shapes, so that one compiled graph serves every batch shape
//   ctc_loss_calls(): forward calls run so far, for tests and benchmarks
//   ctc_loss_fallbacks(): utterances so far that needed the log-space pass
#include "native_common.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <limits>
#include <vector>

using namespace ds2_native;

namespace {

const char *const kName = "ctc_loss_forward";
const int kBlank = 0;
// The scaled pass gives up below these (see the header comment).
const double kMinEmission = 1e-300;
const double kMinScale = 1e-200;
const double kMinTotal = 1e-280;       // a frame's sum of alpha * beta as kept (near denormals: imprecise)
const double kMaxLogMismatch = 1e-6;   // |log p at a frame - log p of the forward pass|
const double kNegInf = -std::numeric_limits<double>::infinity();

std::atomic<int64_t> forward_calls{0};
std::atomic<int64_t> fallbacks{0};   // utterances the log-space pass computed


// One utterance: its frames are log_probs[t * frame_stride + k] for t < frames, k < classes; its
// gradient goes to grad at the same offsets.
struct Utterance {
    const float *log_probs;
    float *grad;
    int64_t frame_stride;
    int classes;
    int frames;
    const int32_t *labels;
    int label_count;
};

// Buffers reused from call to call (one set per thread).
struct Workspace {
    std::vector<int> ext;          // the extended label sequence: blank, l1, blank, l2, ..., blank
    std::vector<double> skip;      // 1 where state s may be entered from s - 2 (a label unlike the previous)
    std::vector<int> used;         // the classes the extended sequence holds, each once
    std::vector<double> emission;  // exp(log_probs), [frames, classes]
    std::vector<double> alpha;     // scaled forward variables, [frames, states + 4] (two zeros each side)
    std::vector<double> log_scale; // log of the product of the forward sums up to frame t
    std::vector<double> inverse;   // 1 / the forward sum of frame t
    std::vector<double> beta, beta_next, emitted;  // one frame's backward variables, padded like alpha
    std::vector<double> occupancy; // per class, one frame
    std::vector<double> log_alpha; // log-space fallback, [frames, states]
};

double log_add(double a, double b) {
    if (a < b) std::swap(a, b);
    if (b == kNegInf) return a;
    return a + std::log1p(std::exp(b - a));
}

// The range of states at frame t that can lie on a complete path: reachable from the start in t steps
// and able to reach one of the two final states in the frames left.
inline int band_low(int states, int frames, int t) { return std::max(0, states - 2 * (frames - t)); }
inline int band_high(int states, int t) { return std::min(states - 1, 2 * t + 1); }

// Probability-space forward-backward with per-frame scaling. False when the result cannot be trusted
// (then nothing of it is used: the log-space pass overwrites the gradient rows).
//
// Row t of the forward variables is kept as alpha_t / (c_0 ... c_{t-1}), where c_t is row t's sum as
// kept: each row is computed from the previous one times 1 / c_{t-1}, so no pass rescales a row, and
// log alpha_t = log(row_t / c_t) + w.log_scale[t]. The backward rows likewise (d_t their sums), with
// log beta_t = log row_t + log_after.
bool scaled_pass(const Utterance &u, Workspace &w, double *log_p) {
    const int states = 2 * u.label_count + 1, width = states + 4, frames = u.frames, classes = u.classes;
    const int *ext = w.ext.data();
    const double *skip = w.skip.data();

    w.emission.resize(static_cast<size_t>(frames) * classes);
    for (int t = 0; t < frames; ++t) {
        const float *lp = u.log_probs + t * u.frame_stride;
        double *y = &w.emission[static_cast<size_t>(t) * classes];
        for (int k = 0; k < classes; ++k) y[k] = std::exp(static_cast<double>(lp[k]));
        for (int k : w.used) {
            if (!(y[k] >= kMinEmission)) return false;   // also NaN
        }
    }

    // Forward, over each frame's band.
    w.alpha.resize(static_cast<size_t>(frames) * width);
    w.log_scale.resize(frames);
    w.inverse.resize(frames);
    double log_before = 0, inverse = 1;   // log (c_0 ... c_{t-1}) and 1 / c_{t-1}
    for (int t = 0; t < frames; ++t) {
        double *cur = &w.alpha[static_cast<size_t>(t) * width + 2];
        const double *y = &w.emission[static_cast<size_t>(t) * classes];
        const int lo = band_low(states, frames, t), hi = band_high(states, t);
        double sum = 0;
        if (t == 0) {
            for (int s = lo; s <= hi; ++s) {
                cur[s] = y[ext[s]];
                sum += cur[s];
            }
        } else {
            const double *prev = cur - width;
            for (int s = lo; s <= hi; ++s) {
                cur[s] = (prev[s] + prev[s - 1] + skip[s] * prev[s - 2]) * (y[ext[s]] * inverse);
                sum += cur[s];
            }
        }
        if (!(sum >= kMinScale) || !std::isfinite(sum)) return false;
        // The next frame reads s - 2 .. s + 2 around this band: those outside it are zero.
        cur[lo - 1] = cur[lo - 2] = 0;
        cur[hi + 1] = cur[hi + 2] = 0;
        log_before += std::log(sum);
        w.log_scale[t] = log_before;
        inverse = w.inverse[t] = 1.0 / sum;
    }
    // The last frame's band is the two final states: its sum is the probability of the labels.
    *log_p = log_before;

    // Backward: beta_t(s), the probability of the rest of the path after frame t from state s at t
    // (frame t's emission not included); at each frame the occupancy alpha * beta gives the gradient.
    w.beta.assign(width, 0.0);
    w.emitted.assign(width, 0.0);
    w.occupancy.resize(classes);
    double *beta = w.beta.data() + 2, *emitted = w.emitted.data() + 2;
    double log_after = 0;   // log (d_{t+1} ... d_{frames-1})
    inverse = 1;            // 1 / d_{t+1}
    for (int t = frames - 1; t >= 0; --t) {
        const int lo = band_low(states, frames, t), hi = band_high(states, t);
        const double *alpha = &w.alpha[static_cast<size_t>(t) * width + 2];
        std::fill(w.occupancy.begin(), w.occupancy.end(), 0.0);
        const double normal = w.inverse[t];     // alpha * normal: frame t's forward row summing to 1
        double sum = 0, blank = 0, labels = 0;   // blanks sit at even states, labels at odd ones
        if (t == frames - 1) {
            for (int s = lo; s <= hi; ++s) {
                beta[s] = s >= states - 2 ? 1.0 : 0.0;
                sum += beta[s];
                const double o = alpha[s] * normal * beta[s];
                if (s & 1) {
                    w.occupancy[ext[s]] += o;
                    labels += o;
                } else {
                    blank += o;
                }
            }
        } else {
            // emitted(s) = y_{t+1}(s) beta_{t+1}(s) / d_{t+1} over frame t + 1's band, zero around it.
            const int lo1 = band_low(states, frames, t + 1), hi1 = band_high(states, t + 1);
            const double *y = &w.emission[static_cast<size_t>(t + 1) * classes];
            for (int s = lo1; s <= hi1; ++s) emitted[s] = y[ext[s]] * inverse * beta[s];
            emitted[lo1 - 1] = emitted[lo1 - 2] = 0;
            emitted[hi1 + 1] = emitted[hi1 + 2] = 0;
            // beta_t and the occupancy alpha_t * beta_t in one sweep, two states (blank, label) a step.
            auto at = [&](int s) {
                beta[s] = emitted[s] + emitted[s + 1] + skip[s + 2] * emitted[s + 2];
                sum += beta[s];
                return alpha[s] * normal * beta[s];
            };
            int s = lo;
            if (s & 1) {
                const double o = at(s++);
                w.occupancy[ext[s - 1]] += o;
                labels += o;
            }
            for (; s < hi; s += 2) {
                blank += at(s);
                const double o = at(s + 1);
                w.occupancy[ext[s + 1]] += o;
                labels += o;
            }
            if (s == hi) blank += at(s);
            if (!(sum >= kMinScale) || !std::isfinite(sum)) return false;
        }
        w.occupancy[kBlank] += blank;
        const double total = blank + labels;
        // alpha_t * beta_t summed over the states is the labels' probability at every frame: if not,
        // some path's mass was lost to underflow in one of the passes. (Written so that NaN fails.)
        const double mismatch = std::fabs(w.log_scale[t] + log_after + std::log(total) - *log_p);
        if (!(total >= kMinTotal) || !(mismatch <= kMaxLogMismatch)) return false;
        float *g = u.grad + t * u.frame_stride;
        for (int k = 0; k < classes; ++k) g[k] = static_cast<float>(-w.occupancy[k] / total);
        log_after += std::log(sum);
        inverse = 1.0 / sum;
    }
    return true;
}

// The same in log space: slower, but no underflow. *log_p is -inf when the labels cannot be aligned.
void log_space_pass(const Utterance &u, Workspace &w, double *log_p) {
    const int states = 2 * u.label_count + 1, frames = u.frames, classes = u.classes;
    const int *ext = w.ext.data();
    const double *skip = w.skip.data();
    auto lp = [&](int t, int s) { return static_cast<double>(u.log_probs[t * u.frame_stride + ext[s]]); };

    w.log_alpha.assign(static_cast<size_t>(frames) * states, kNegInf);
    double *la = w.log_alpha.data();
    la[0] = lp(0, 0);
    if (states > 1) la[1] = lp(0, 1);
    for (int t = 1; t < frames; ++t) {
        const double *prev = la + static_cast<size_t>(t - 1) * states;
        double *cur = la + static_cast<size_t>(t) * states;
        for (int s = 0; s < states; ++s) {
            double sum = prev[s];
            if (s >= 1) sum = log_add(sum, prev[s - 1]);
            if (s >= 2 && skip[s] != 0) sum = log_add(sum, prev[s - 2]);
            cur[s] = sum + lp(t, s);
        }
    }
    const double *last = la + static_cast<size_t>(frames - 1) * states;
    *log_p = states > 1 ? log_add(last[states - 1], last[states - 2]) : last[0];
    if (*log_p == kNegInf) return;

    // beta as in scaled_pass, in log space: emission at t excluded.
    w.beta.assign(states, kNegInf);
    w.beta_next.assign(states, kNegInf);
    w.occupancy.resize(classes);
    std::vector<double> &beta = w.beta, &older = w.beta_next;
    beta[states - 1] = 0;
    if (states > 1) beta[states - 2] = 0;
    for (int t = frames - 1; t >= 0; --t) {
        if (t < frames - 1) {
            for (int s = 0; s < states; ++s) {
                double sum = beta[s] + lp(t + 1, s);
                if (s + 1 < states) sum = log_add(sum, beta[s + 1] + lp(t + 1, s + 1));
                if (s + 2 < states && skip[s + 2] != 0) sum = log_add(sum, beta[s + 2] + lp(t + 1, s + 2));
                older[s] = sum;
            }
            std::swap(beta, older);
        }
        const double *alpha = la + static_cast<size_t>(t) * states;
        double top = kNegInf;
        for (int s = 0; s < states; ++s) top = std::max(top, alpha[s] + beta[s]);
        std::fill(w.occupancy.begin(), w.occupancy.end(), 0.0);
        double total = 0;
        if (top != kNegInf) {
            for (int s = 0; s < states; ++s) {
                const double o = std::exp(alpha[s] + beta[s] - top);
                w.occupancy[ext[s]] += o;
                total += o;
            }
        }
        float *g = u.grad + t * u.frame_stride;
        for (int k = 0; k < classes; ++k) g[k] = static_cast<float>(-w.occupancy[k] / total);
    }
}

// One utterance's loss; its gradient rows t < frames are written (the caller zeroed the rest).
// *fell_back tells whether the log-space pass was needed.
float utterance_loss(const Utterance &u, Workspace &w, bool *fell_back) {
    *fell_back = false;
    int repeats = 0;
    for (int i = 1; i < u.label_count; ++i) repeats += u.labels[i] == u.labels[i - 1];
    if (u.frames < u.label_count + repeats) return 0.0f;   // cannot be aligned: zero_infinity
    if (u.frames == 0) return 0.0f;                        // no frames, no labels: probability 1

    const int states = 2 * u.label_count + 1;
    w.ext.assign(states + 2, kBlank);
    w.skip.assign(states + 3, 0.0);
    for (int i = 0; i < u.label_count; ++i) {
        const int s = 2 * i + 1;
        w.ext[s] = u.labels[i];
        if (i > 0 && u.labels[i] != u.labels[i - 1]) w.skip[s] = 1.0;
    }
    w.used.assign(1, kBlank);
    for (int i = 0; i < u.label_count; ++i) {
        if (std::find(w.used.begin(), w.used.end(), u.labels[i]) == w.used.end()) w.used.push_back(u.labels[i]);
    }

    double log_p = 0;
    if (!scaled_pass(u, w, &log_p)) {
        *fell_back = true;
        log_space_pass(u, w, &log_p);
    }
    if (log_p == kNegInf) {   // probability 0: zero_infinity
        for (int t = 0; t < u.frames; ++t) std::fill_n(u.grad + t * u.frame_stride, u.classes, 0.0f);
        return 0.0f;
    }
    return static_cast<float>(-log_p);
}

bool check_parameters(int nparam, int *ndims, int64_t **shapes, const char **dtypes) {
    if (!expected_params(kName, nparam, 6)) return false;
    const char *expected_dtype[6] = {"float32", "int32", "int32", "int32", "float32", "float32"};
    const int expected_rank[6] = {3, 2, 1, 1, 1, 3};
    const char *what[6] = {"log_probs", "labels", "input_lengths", "label_lengths", "loss", "grad"};
    for (int i = 0; i < 6; ++i) {
        if (std::strcmp(dtypes[i], expected_dtype[i]) != 0) {
            std::fprintf(stderr, "%s: %s is %s, expected %s\n", kName, what[i], dtypes[i], expected_dtype[i]);
            return false;
        }
        if (ndims[i] != expected_rank[i]) {
            std::fprintf(stderr, "%s: %s has rank %d, expected %d\n", kName, what[i], ndims[i], expected_rank[i]);
            return false;
        }
    }
    const int64_t steps = shapes[0][0], batch = shapes[0][1], classes = shapes[0][2];
    if (shapes[1][0] != batch || shapes[2][0] != batch || shapes[3][0] != batch || shapes[4][0] != batch) {
        std::fprintf(stderr, "%s: labels [B, S], input_lengths [B], label_lengths [B] and loss [B] must match "
                             "log_probs [T, B, C] with B = %lld\n", kName, static_cast<long long>(batch));
        return false;
    }
    if (shapes[5][0] != steps || shapes[5][1] != batch || shapes[5][2] != classes) {
        std::fprintf(stderr, "%s: grad must have log_probs' shape\n", kName);
        return false;
    }
    if (classes < 1 || classes > std::numeric_limits<int>::max() || steps > std::numeric_limits<int>::max() ||
        shapes[1][1] > std::numeric_limits<int>::max() / 2 - 4) {
        std::fprintf(stderr, "%s: log_probs or labels has an unsupported size\n", kName);
        return false;
    }
    return true;
}

// Every length and every label read within range; one stderr line for the first that is not.
bool check_values(int64_t steps, int64_t batch, int64_t classes, int64_t max_labels, const int32_t *labels,
                  const int32_t *input_lengths, const int32_t *label_lengths) {
    for (int64_t b = 0; b < batch; ++b) {
        if (input_lengths[b] < 0 || input_lengths[b] > steps) {
            std::fprintf(stderr, "%s: input_lengths[%lld] = %d is outside [0, T = %lld]\n", kName,
                         static_cast<long long>(b), input_lengths[b], static_cast<long long>(steps));
            return false;
        }
        if (label_lengths[b] < 0 || label_lengths[b] > max_labels) {
            std::fprintf(stderr, "%s: label_lengths[%lld] = %d is outside [0, S = %lld]\n", kName,
                         static_cast<long long>(b), label_lengths[b], static_cast<long long>(max_labels));
            return false;
        }
        for (int32_t i = 0; i < label_lengths[b]; ++i) {
            const int32_t label = labels[b * max_labels + i];
            if (label < 0 || label >= classes) {
                std::fprintf(stderr, "%s: labels[%lld, %d] = %d is outside [0, C = %lld)\n", kName,
                             static_cast<long long>(b), i, label, static_cast<long long>(classes));
                return false;
            }
        }
    }
    return true;
}

}  // namespace

// Forward calls run so far.
extern "C" int64_t ctc_loss_calls() { return forward_calls.load(); }

// Utterances so far that the scaled pass gave to the log-space pass.
extern "C" int64_t ctc_loss_fallbacks() { return fallbacks.load(); }

// Output shapes from log_probs [T, B, C]: loss [B], grad [T, B, C]; -1 (not known until run time) passes
// through; unknown rank gives unknown rank. An empty answer tells MindSpore the shapes are wrong.
extern "C" Shapes ctc_loss_forwardInferShape(int *ndims, int64_t **shapes, AotExtra *) {
    return guarded(kName, Shapes{}, [&]() -> Shapes {
        if (rank_unknown(ndims, shapes, 0)) return {{kDynamicRank}, {kDynamicRank}};
        const int expected_rank[4] = {3, 2, 1, 1};
        const char *what[4] = {"log_probs", "labels", "input_lengths", "label_lengths"};
        for (int i = 0; i < 4; ++i) {
            if (!rank_unknown(ndims, shapes, i) && ndims[i] != expected_rank[i]) {
                std::fprintf(stderr, "%s: %s has rank %d, expected %d\n", kName, what[i], ndims[i], expected_rank[i]);
                return {};
            }
        }
        const int64_t steps = shapes[0][0], batch = shapes[0][1], classes = shapes[0][2];
        return {{batch}, {steps, batch, classes}};
    });
}

extern "C" int ctc_loss_forward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                                void *, void *) {
    return guarded(kName, 1, [&] {
        if (!check_parameters(nparam, ndims, shapes, dtypes)) return 1;
        const int64_t steps = shapes[0][0], batch = shapes[0][1], classes = shapes[0][2], max_labels = shapes[1][1];
        const float *log_probs = static_cast<const float *>(params[0]);
        const int32_t *labels = static_cast<const int32_t *>(params[1]);
        const int32_t *input_lengths = static_cast<const int32_t *>(params[2]);
        const int32_t *label_lengths = static_cast<const int32_t *>(params[3]);
        float *loss = static_cast<float *>(params[4]);
        float *grad = static_cast<float *>(params[5]);
        if (!check_values(steps, batch, classes, max_labels, labels, input_lengths, label_lengths)) return 1;
        ++forward_calls;

        std::fill_n(grad, steps * batch * classes, 0.0f);
        // Each thread MindSpore calls from has its own buffers. One thread does the whole batch: a second
        // one over the batch saved at most 0.3 ms of 0.8 on two cores, and only while the other core idled.
        static thread_local Workspace workspace;
        for (int64_t b = 0; b < batch; ++b) {
            const Utterance u{log_probs + b * classes, grad + b * classes, batch * classes, static_cast<int>(classes),
                              input_lengths[b], labels + b * max_labels, label_lengths[b]};
            bool fell_back = false;
            loss[b] = utterance_loss(u, workspace, &fell_back);
            if (fell_back) ++fallbacks;
        }
        return 0;
    });
}
