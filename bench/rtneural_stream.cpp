// rtneural_stream: the per-step latency of one recurrent layer streamed at batch 1, RTNeural's
// compile-time Eigen layers (LSTMLayerT, GRULayerT) against rnnext's C API stream
// (rnx_stream_step) in fp32 and at each reduced precision asked for, on the same random weights,
// in one process. bench/bench_rtneural.py builds it (RTNeural with -O3 -march=native, rnnext's
// static library as its Makefile builds it, without -march=native: its kernels are chosen at run
// time) and runs it.
//   rtneural_stream BLOCKS REPEATS STEPS CHECK_STEPS [PRECISION=BOUND ...]
// PRECISION is bf16 or int8 (rnx_model_create_precision), BOUND the largest max abs diff from
// RTNeural's fp32 outputs that its rounding may give. For each cell (lstm, gru) and each (I, H)
// of STREAM_SIZES (a list of SIZE(I, H), fixed at compile time as RTNeural's layers are): first
// every engine runs CHECK_STEPS steps from zero states on the same inputs; rnnext's fp32 outputs
// must agree with RTNeural's within 1e-5 at every step, each reduced precision's within its
// BOUND. Then BLOCKS blocks are timed. A block is REPEATS rounds, in each of which every engine
// (RTNeural, then rnnext at each precision, the order rotating) makes a timed run of STEPS
// steps, so that a change of load hits all alike; an engine's figure for the block is its median
// run in ns per step, for the point the median over blocks. Prints one JSON object per point,
// one a line; on any failure prints why on stderr and exits 1.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include <RTNeural/RTNeural.h>

#include "rnnext.h"

#ifndef STREAM_SIZES
#define STREAM_SIZES SIZE(1, 32) SIZE(16, 64) SIZE(64, 256)
#endif

namespace {

// The most rnnext's fp32 outputs may differ from RTNeural's.
constexpr double kTolerance = 1e-5;

using Clock = std::chrono::steady_clock;
using Model = std::unique_ptr<rnx_model, decltype(&rnx_model_free)>;
using Stream = std::unique_ptr<rnx_stream, decltype(&rnx_stream_free)>;
using Matrix = std::vector<std::vector<float>>;

void check(rnx_status status, const std::string &what) {
    if (status != RNX_OK) throw std::runtime_error(what + ": " + rnx_status_string(status));
}

// A precision of rnnext's weights and the largest max abs diff from RTNeural's outputs allowed.
struct Precision {
    std::string name; // fp32, bf16 or int8
    rnx_precision value;
    double bound;

    // What the JSON keys of its figures add to fp32's: rnnext_ns, rnnext_bf16_ns, ...
    std::string key_suffix() const { return value == RNX_PRECISION_FP32 ? "" : "_" + name; }
};

struct Options {
    int blocks, repeats, steps, check_steps;
    std::vector<Precision> precisions; // fp32 first
};

// One layer's weights in PyTorch's layout (rnnext's): G gates of H rows each.
struct Weights {
    int G, I, H;
    std::vector<float> w_ih; // (G*H, I)
    std::vector<float> w_hh; // (G*H, H)
    std::vector<float> b_ih; // (G*H)
    std::vector<float> b_hh; // (G*H)
};

// PyTorch's initialisation, U(-1/sqrt(H), 1/sqrt(H)), so that the states stay in the range
// a trained layer sees.
Weights random_weights(int G, int I, int H, std::mt19937 &rng) {
    std::uniform_real_distribution<float> uniform(-1.0f / std::sqrt(float(H)),
                                                  1.0f / std::sqrt(float(H)));
    auto draw = [&](size_t n) {
        std::vector<float> v(n);
        for (float &x : v) x = uniform(rng);
        return v;
    };
    const size_t rows = size_t(G) * H;
    Weights w{G, I, H, draw(rows * I), draw(rows * H), {}, {}};
    w.b_ih = draw(rows);
    w.b_hh = draw(rows);
    return w;
}

// RTNeural's setters take Keras's layout: a kernel (columns, G*H), the transpose of PyTorch's
// (G*H, columns), with gate slot s holding PyTorch's gate gate_of_slot[s]. Keras's LSTM order
// i, f, c, o is PyTorch's i, f, g, o; its GRU order z, r, h is PyTorch's r, z, n permuted.
const std::vector<int> kLstmSlots = {0, 1, 2, 3};
const std::vector<int> kGruSlots = {1, 0, 2};

Matrix keras_kernel(const std::vector<float> &w, int columns, int H,
                    const std::vector<int> &gate_of_slot) {
    const int G = int(gate_of_slot.size());
    Matrix kernel(columns, std::vector<float>(size_t(G) * H));
    for (int col = 0; col < columns; ++col)
        for (int s = 0; s < G; ++s)
            for (int k = 0; k < H; ++k) {
                const size_t row = size_t(gate_of_slot[s]) * H + k;
                kernel[col][size_t(s) * H + k] = w[row * columns + col];
            }
    return kernel;
}

std::vector<float> keras_bias(const std::vector<float> &b, int H,
                              const std::vector<int> &gate_of_slot) {
    std::vector<float> bias(b.size());
    for (size_t s = 0; s < gate_of_slot.size(); ++s)
        for (int k = 0; k < H; ++k) bias[s * H + k] = b[size_t(gate_of_slot[s]) * H + k];
    return bias;
}

// RTNeural's LSTM has one bias (Keras's); PyTorch's two add up.
template <int I, int H>
void load(RTNeural::LSTMLayerT<float, I, H> &layer, const Weights &w) {
    std::vector<float> bias(w.b_ih.size());
    for (size_t k = 0; k < bias.size(); ++k) bias[k] = w.b_ih[k] + w.b_hh[k];
    layer.setWVals(keras_kernel(w.w_ih, I, H, kLstmSlots));
    layer.setUVals(keras_kernel(w.w_hh, H, H, kLstmSlots));
    layer.setBVals(keras_bias(bias, H, kLstmSlots));
}

// RTNeural's GRU keeps both biases (Keras's reset_after=True, PyTorch's GRU).
template <int I, int H>
void load(RTNeural::GRULayerT<float, I, H> &layer, const Weights &w) {
    layer.setWVals(keras_kernel(w.w_ih, I, H, kGruSlots));
    layer.setUVals(keras_kernel(w.w_hh, H, H, kGruSlots));
    layer.setBVals({keras_bias(w.b_ih, H, kGruSlots), keras_bias(w.b_hh, H, kGruSlots)});
}

// rnnext's model of the one layer at a precision, its stream at batch 1 and the output it writes.
struct RnnextLayer {
    Model model{nullptr, rnx_model_free};
    Stream stream{nullptr, rnx_stream_free};
    std::vector<float> y;

    RnnextLayer(rnx_cell cell, const Weights &w, rnx_precision precision) : y(w.H) {
        const rnx_layer layer = rnx_recurrent_layer(cell, w.I, w.H, RNX_DIRECTION_FORWARD);
        std::vector<float> params;
        for (const auto *part : {&w.w_ih, &w.w_hh, &w.b_ih, &w.b_hh})
            params.insert(params.end(), part->begin(), part->end());
        rnx_model *m = nullptr;
        check(rnx_model_create_precision(&m, &layer, 1, RNX_ISA_AUTO, precision, params.data()),
              "rnx_model_create_precision");
        model.reset(m);
        rnx_stream *s = nullptr;
        check(rnx_stream_create(&s, model.get(), 1), "rnx_stream_create");
        stream.reset(s);
    }
};

double median(std::vector<double> values) {
    const size_t mid = values.size() / 2;
    std::nth_element(values.begin(), values.begin() + mid, values.end());
    return values[mid];
}

std::string number(double value) {
    char text[32];
    std::snprintf(text, sizeof text, "%.3g", value);
    return text;
}

void print_list(const std::string &key, const std::vector<double> &values) {
    std::printf(", \"%s\": [", key.c_str());
    for (size_t k = 0; k < values.size(); ++k) std::printf("%s%.1f", k ? ", " : "", values[k]);
    std::printf("]");
}

// Checks and times one point; Layer is RTNeural's LSTMLayerT or GRULayerT<float, I, H>.
template <class Layer, int I, int H>
void run_point(const char *cell_name, rnx_cell cell, int G, const Options &opt,
               std::mt19937 &rng) {
    using Input = Eigen::Matrix<float, I, 1>;
    const Weights weights = random_weights(G, I, H, rng);
    // Its fixed-size weights are too large for the stack at H = 256.
    auto rtneural = std::make_unique<Layer>();
    load(*rtneural, weights);
    // rnnext[p] runs at opt.precisions[p]
    std::vector<RnnextLayer> rnnext;
    for (const Precision &precision : opt.precisions)
        rnnext.emplace_back(cell, weights, precision.value);

    std::normal_distribution<float> normal;
    std::vector<Input, Eigen::aligned_allocator<Input>> xs(opt.check_steps);
    for (Input &x : xs)
        for (int i = 0; i < I; ++i) x(i) = normal(rng);

    rtneural->reset();
    for (RnnextLayer &layer : rnnext)
        check(rnx_stream_reset(layer.stream.get(), nullptr, nullptr), "rnx_stream_reset");
    std::vector<double> max_diff(rnnext.size(), 0.0);
    for (int t = 0; t < opt.check_steps; ++t) {
        rtneural->forward(xs[t]);
        for (size_t p = 0; p < rnnext.size(); ++p) {
            check(rnx_stream_step(rnnext[p].stream.get(), rnnext[p].y.data(), xs[t].data(),
                                  nullptr),
                  "rnx_stream_step");
            for (int k = 0; k < H; ++k)
                max_diff[p] = std::max(max_diff[p],
                                       double(std::fabs(rtneural->outs(k) - rnnext[p].y[k])));
        }
    }
    for (size_t p = 0; p < rnnext.size(); ++p) {
        const Precision &precision = opt.precisions[p];
        if (!(max_diff[p] <= precision.bound))
            throw std::runtime_error(
                std::string(cell_name) + " " + std::to_string(I) + "->" + std::to_string(H) +
                ": rnnext " + precision.name + " and RTNeural differ by " + number(max_diff[p]) +
                " over " + std::to_string(opt.check_steps) + " steps, beyond the bound " +
                number(precision.bound) +
                (precision.value == RNX_PRECISION_FP32
                     ? std::string()
                     : " that rounding to " + precision.name + " stays within: a broken path"));
    }

    // A timed run of opt.steps steps on engine 0 (RTNeural) or 1 + p (rnnext[p]), in ns per
    // step. The inputs cycle through xs; the output read at the end keeps the work observable.
    const int engines = 1 + int(rnnext.size());
    int failed_steps = 0;
    volatile float sink = 0;
    auto timed_run = [&](int engine) {
        const Clock::time_point start = Clock::now();
        if (engine == 0) {
            for (int s = 0; s < opt.steps; ++s) rtneural->forward(xs[s % opt.check_steps]);
        } else {
            RnnextLayer &layer = rnnext[engine - 1];
            for (int s = 0; s < opt.steps; ++s)
                failed_steps += rnx_stream_step(layer.stream.get(), layer.y.data(),
                                                xs[s % opt.check_steps].data(), nullptr) != RNX_OK;
        }
        const Clock::time_point end = Clock::now();
        sink = sink + (engine == 0 ? rtneural->outs(0) : rnnext[engine - 1].y[0]);
        return std::chrono::duration<double, std::nano>(end - start).count() / opt.steps;
    };
    for (int engine = 0; engine < engines; ++engine) timed_run(engine);
    std::vector<std::vector<double>> block_medians(engines);
    std::vector<std::vector<double>> runs(engines, std::vector<double>(opt.repeats));
    for (int block = 0; block < opt.blocks; ++block) {
        for (int r = 0; r < opt.repeats; ++r)
            for (int turn = 0; turn < engines; ++turn) {
                const int engine = (block + r + turn) % engines;
                runs[engine][r] = timed_run(engine);
            }
        for (int engine = 0; engine < engines; ++engine)
            block_medians[engine].push_back(median(runs[engine]));
    }
    if (failed_steps) throw std::runtime_error("rnx_stream_step failed while timed");

    const rnx_model_info info = rnx_model_get_info(rnnext[0].model.get());
    std::printf("{\"cell\": \"%s\", \"input_size\": %d, \"hidden_size\": %d, "
                "\"check_steps\": %d, \"rnnext_isa\": \"%s\", \"rtneural_ns\": %.1f",
                cell_name, I, H, opt.check_steps, rnx_isa_name(static_cast<rnx_isa>(info.isa)),
                median(block_medians[0]));
    for (size_t p = 0; p < rnnext.size(); ++p) {
        const std::string suffix = opt.precisions[p].key_suffix();
        std::printf(", \"rnnext%s_ns\": %.1f, \"max_abs_diff%s\": %.3g", suffix.c_str(),
                    median(block_medians[1 + p]), suffix.c_str(), max_diff[p]);
    }
    print_list("rtneural_block_ns", block_medians[0]);
    for (size_t p = 0; p < rnnext.size(); ++p)
        print_list("rnnext" + opt.precisions[p].key_suffix() + "_block_ns",
                   block_medians[1 + p]);
    std::printf("}\n");
    std::fflush(stdout);
}

int positive_argument(const char *text, const char *name) {
    char *end = nullptr;
    const long value = std::strtol(text, &end, 10);
    if (*text == '\0' || *end != '\0' || value < 1 || value > 100000000)
        throw std::runtime_error(std::string(name) + ": expected an integer in [1, 1e8], got '" +
                                 text + "'");
    return int(value);
}

// A reduced precision to time, from PRECISION=BOUND.
Precision reduced_precision(const std::string &text) {
    const size_t equals = text.find('=');
    const std::string name = text.substr(0, equals);
    const rnx_precision value = name == "bf16"   ? RNX_PRECISION_BF16
                                : name == "int8" ? RNX_PRECISION_INT8
                                                 : RNX_PRECISION_FP32;
    char *end = nullptr;
    const double bound =
        equals == std::string::npos ? 0 : std::strtod(text.c_str() + equals + 1, &end);
    if (value == RNX_PRECISION_FP32 || !(bound > 0) || *end != '\0')
        throw std::runtime_error("expected PRECISION=BOUND with PRECISION bf16 or int8 and a "
                                 "positive BOUND, got '" + text + "'");
    return {name, value, bound};
}

} // namespace

int main(int argc, char **argv) {
    try {
        if (argc < 5)
            throw std::runtime_error("usage: rtneural_stream BLOCKS REPEATS STEPS CHECK_STEPS "
                                     "[PRECISION=BOUND ...]");
        Options opt{positive_argument(argv[1], "BLOCKS"),
                    positive_argument(argv[2], "REPEATS"),
                    positive_argument(argv[3], "STEPS"),
                    positive_argument(argv[4], "CHECK_STEPS"),
                    {{"fp32", RNX_PRECISION_FP32, kTolerance}}};
        for (int k = 5; k < argc; ++k) {
            const Precision precision = reduced_precision(argv[k]);
            for (const Precision &earlier : opt.precisions)
                if (earlier.name == precision.name)
                    throw std::runtime_error(precision.name + " given twice");
            opt.precisions.push_back(precision);
        }
        std::mt19937 rng(20261203);
#define SIZE(I, H)                                                                         \
    run_point<RTNeural::LSTMLayerT<float, I, H>, I, H>("lstm", RNX_CELL_LSTM, 4, opt, rng); \
    run_point<RTNeural::GRULayerT<float, I, H>, I, H>("gru", RNX_CELL_GRU, 3, opt, rng);
        STREAM_SIZES
#undef SIZE
    } catch (const std::exception &e) {
        std::fprintf(stderr, "rtneural_stream: %s\n", e.what());
        return 1;
    }
    return 0;
}
