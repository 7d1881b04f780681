// rnx_predict_cpp: rnx_predict.c's run written in C++, with the same input and output (see
// there; check_predict.py compares either with Python). What differs: the C API's handles are
// owned by std::unique_ptr, failures are exceptions, and the sequences stream concurrently on up
// to one std::thread per core, each with a stream of its own, all on one shared model (a model
// is read-only once loaded; a stream belongs to one thread at a time).
//   rnx_predict_cpp MODEL [B T]
// Build: c++ -std=c++17 -pthread rnx_predict.cpp $(pkg-config --cflags --libs rnnext), or see
// CMakeLists.txt here.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <iterator>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "rnnext.h"

namespace {

using Model = std::unique_ptr<rnx_model, decltype(&rnx_model_free)>;
using Stream = std::unique_ptr<rnx_stream, decltype(&rnx_stream_free)>;

void check(rnx_status status, const std::string &what) {
    if (status != RNX_OK) throw std::runtime_error(what + ": " + rnx_status_string(status));
}

Model load(const std::string &path) {
    std::ifstream file(path, std::ios::binary);
    if (!file) throw std::runtime_error(path + ": cannot open the file");
    const std::vector<char> bytes{std::istreambuf_iterator<char>(file),
                                  std::istreambuf_iterator<char>()};
    char message[256] = "";
    rnx_model *model = nullptr;
    const rnx_status status = rnx_model_load(&model, bytes.data(), bytes.size(), RNX_ISA_AUTO,
                                             message, sizeof message);
    check(status, path + " (" + message + ")");
    return Model(model, rnx_model_free);
}

void print(const char *key, const std::vector<float> &values) {
    std::printf("%s", key);
    for (const float v : values) std::printf(" %.9g", v);
    std::printf("\n");
}

void print(const char *key, const std::vector<int32_t> &values) {
    std::printf("%s", key);
    for (const int32_t v : values) std::printf(" %d", static_cast<int>(v));
    std::printf("\n");
}

// Sequence b of the batch streamed on `stream` from zero states: its output at each valid step.
std::vector<float> stream_sequence(rnx_stream *stream, const rnx_model_info &info,
                                   const std::vector<float> &x, const std::vector<int32_t> &ids,
                                   int b, int T, int length) {
    check(rnx_stream_reset(stream, nullptr, nullptr), "rnx_stream_reset");
    const size_t I = info.takes_ids ? 1 : static_cast<size_t>(info.input_size);
    const size_t O = static_cast<size_t>(info.output_size);
    std::vector<float> y(static_cast<size_t>(length) * O);
    for (int t = 0; t < length; t++) {
        const size_t at = static_cast<size_t>(b) * T + t;
        check(rnx_stream_step(stream, y.data() + t * O,
                              info.takes_ids ? nullptr : x.data() + at * I,
                              info.takes_ids ? ids.data() + at : nullptr),
              "rnx_stream_step");
    }
    return y;
}

void run(const std::string &path, int B, int T) {
    if (rnx_version_number() != RNX_VERSION_NUMBER)
        throw std::runtime_error("rnnext.h is version " + std::to_string(RNX_VERSION_NUMBER) +
                                 ", the library " + std::to_string(rnx_version_number()));
    const Model model = load(path);
    const rnx_model_info info = rnx_model_get_info(model.get());
    const size_t I = info.takes_ids ? 1 : static_cast<size_t>(info.input_size);
    const size_t cells = static_cast<size_t>(B) * T;
    std::vector<float> x(cells * I);
    std::vector<int32_t> ids(cells), lengths(B);
    for (size_t k = 0; k < x.size(); k++) x[k] = std::sin(0.37f * k + 0.1f);
    for (size_t k = 0; k < cells; k++) ids[k] = static_cast<int32_t>((7 * k + 3) % info.input_size);
    for (int b = 0; b < B; b++) lengths[b] = T - b > 1 ? T - b : 1;

    std::vector<float> y(static_cast<size_t>(B) * (info.per_step ? T : 1) * info.output_size);
    check(rnx_forward(model.get(), y.data(), nullptr, nullptr,
                      info.takes_ids ? nullptr : x.data(), info.takes_ids ? ids.data() : nullptr,
                      nullptr, nullptr, lengths.data(), nullptr, B, T, 0),
          "rnx_forward");
    std::printf("shape %d %d\n", B, T);
    print("lengths", lengths);
    if (info.takes_ids)
        print("ids", ids);
    else
        print("x", x);
    print("y", y);
    if (!info.streamable) return;

    // each thread owns one stream and takes every n_threads-th sequence
    const int cores = static_cast<int>(std::thread::hardware_concurrency());
    const int n_threads = std::max(1, std::min(B, cores));
    std::vector<std::vector<float>> streamed(B);
    std::vector<std::exception_ptr> errors(n_threads);
    std::vector<std::thread> threads;
    for (int id = 0; id < n_threads; id++)
        threads.emplace_back([&, id] {
            try {
                rnx_stream *handle = nullptr;
                check(rnx_stream_create(&handle, model.get(), 1), "rnx_stream_create");
                const Stream stream(handle, rnx_stream_free);
                for (int b = id; b < B; b += n_threads)
                    streamed[b] = stream_sequence(stream.get(), info, x, ids, b, T, lengths[b]);
            } catch (...) {
                errors[id] = std::current_exception();
            }
        });
    for (std::thread &thread : threads) thread.join();
    for (const std::exception_ptr &error : errors)
        if (error) std::rethrow_exception(error);
    for (int b = 0; b < B; b++) print(("stream " + std::to_string(b)).c_str(), streamed[b]);
}

}  // namespace

int main(int argc, char **argv) {
    if (argc != 2 && argc != 4) {
        std::fprintf(stderr, "usage: %s MODEL [B T]\n", argv[0]);
        return 2;
    }
    const int B = argc == 4 ? std::atoi(argv[2]) : 3, T = argc == 4 ? std::atoi(argv[3]) : 5;
    if (B < 1 || T < 1) {
        std::fprintf(stderr, "B and T: expected positive integers, got %s and %s\n", argv[2],
                     argv[3]);
        return 2;
    }
    try {
        run(argv[1], B, T);
    } catch (const std::exception &error) {
        std::fprintf(stderr, "rnx_predict_cpp: %s\n", error.what());
        return 1;
    }
    return 0;
}
