// What ds2's native operators share (ds2/native/*.cc, one library): the exception guard every
// extern "C" entry point runs its body in, the arena short-lived buffers come from, and oneDNN's
// CPU engine.
#ifndef DS2_NATIVE_COMMON_H
#define DS2_NATIVE_COMMON_H

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <new>
#include <string_view>
#include <vector>

class AotExtra;   // MindSpore's attribute accessor; ds2's operators take no attributes

namespace ds2_native {

const int64_t kDynamicRank = -2;   // MindSpore's shape for "rank not known yet"
const size_t kAlign = 4096;

using Shapes = std::vector<std::vector<int64_t>>;

// body(), or `on_error` with one stderr line naming `name` when it throws: no exception may leave the
// extern "C" functions MindSpore calls.
template <typename Result, typename Body>
Result guarded(const char *name, Result on_error, Body body) {
    try {
        return body();
    } catch (const std::exception &e) {
        std::fprintf(stderr, "%s: %s\n", name, e.what());
    } catch (...) {
        std::fprintf(stderr, "%s: failed\n", name);
    }
    return on_error;
}

// One block of memory for the buffers that live for one call, grown (never shrunk) to the largest call.
class Arena {
  public:
    Arena() = default;
    Arena(const Arena &) = delete;
    Arena &operator=(const Arena &) = delete;
    ~Arena() { std::free(data_); }
    // Pointers to `sizes.size()` aligned buffers of those sizes, valid until the next call.
    std::vector<void *> carve(const std::vector<size_t> &sizes) {
        size_t total = 0;
        for (size_t size : sizes) total += round_up(size);
        if (total > bytes_) {
            std::free(data_);
            data_ = std::aligned_alloc(kAlign, total);
            if (!data_) {
                bytes_ = 0;
                throw std::bad_alloc();
            }
            bytes_ = total;
        }
        std::vector<void *> pointers;
        char *next = static_cast<char *>(data_);
        for (size_t size : sizes) {
            pointers.push_back(next);
            next += round_up(size);
        }
        return pointers;
    }
    size_t bytes() const { return bytes_; }

  private:
    static size_t round_up(size_t size) { return (size + kAlign - 1) / kAlign * kAlign; }
    void *data_ = nullptr;
    size_t bytes_ = 0;
};

// Whether every one of the first `count` parameters is float32; one stderr line naming the first
// that is not.
inline bool all_float32(const char *name, int count, const char **dtypes) {
    for (int i = 0; i < count; ++i) {
        if (std::string_view(dtypes[i]) != "float32") {
            std::fprintf(stderr, "%s: parameter %d is %s, only float32 is supported\n", name, i, dtypes[i]);
            return false;
        }
    }
    return true;
}

}  // namespace ds2_native

#endif  // DS2_NATIVE_COMMON_H
