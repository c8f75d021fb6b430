// What ds2's native operators share (ds2/native/*.cc, one library): the exception guard every
// extern "C" entry point runs its body in, the checks of the parameters MindSpore passes, the arena
// short-lived buffers come from, and the cache of what an operator keeps per shape.
#ifndef DS2_NATIVE_COMMON_H
#define DS2_NATIVE_COMMON_H

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <list>
#include <memory>
#include <new>
#include <string_view>
#include <utility>
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

// Whether the call has `expected` inputs and outputs; one stderr line naming `name` when not.
inline bool expected_params(const char *name, int nparam, int expected) {
    if (nparam == expected) return true;
    std::fprintf(stderr, "%s: %d inputs and outputs, expected %d\n", name, nparam, expected);
    return false;
}

// expected_params, and every parameter float32.
inline bool float32_call(const char *name, int nparam, int expected, const char **dtypes) {
    return expected_params(name, nparam, expected) && all_float32(name, nparam, dtypes);
}

// Parameter i's shape as a vector.
inline std::vector<int64_t> shape_of(const int *ndims, int64_t *const *shapes, int i) {
    return std::vector<int64_t>(shapes[i], shapes[i] + ndims[i]);
}

// Whether a shape function is asked before parameter i's rank is known (compile time, dynamic shapes).
inline bool rank_unknown(const int *ndims, int64_t *const *shapes, int i) {
    return ndims[i] < 0 || (ndims[i] > 0 && shapes[i][0] == kDynamicRank);
}

// What an operator keeps per shape (its primitives), for the `capacity` most recently used shapes:
// the least recently used is dropped first.
template <typename Key, typename Value>
class RecentlyUsed {
  public:
    explicit RecentlyUsed(size_t capacity) : capacity_(capacity) {}
    // The value for `key`, made by make() the first time (or again after it was dropped).
    template <typename Make>
    Value &get(const Key &key, Make make) {
        for (auto it = kept_.begin(); it != kept_.end(); ++it) {
            if (it->first == key) {
                kept_.splice(kept_.begin(), kept_, it);
                return *kept_.front().second;
            }
        }
        kept_.emplace_front(key, make());
        if (kept_.size() > capacity_) kept_.pop_back();
        return *kept_.front().second;
    }
    size_t size() const { return kept_.size(); }

  private:
    size_t capacity_;
    std::list<std::pair<Key, std::unique_ptr<Value>>> kept_;   // most recently used first
};

}  // namespace ds2_native

#endif  // DS2_NATIVE_COMMON_H
