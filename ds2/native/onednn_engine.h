// oneDNN's CPU engine, one for every oneDNN operator of the library, and user buffers as oneDNN memory.
#ifndef DS2_ONEDNN_ENGINE_H
#define DS2_ONEDNN_ENGINE_H

#include <oneapi/dnnl/dnnl.hpp>

namespace ds2_native {

inline dnnl::engine &cpu_engine() {
    static dnnl::engine eng(dnnl::engine::kind::cpu, 0);
    return eng;
}

inline dnnl::memory wrap(const dnnl::memory::desc &md, void *data) { return dnnl::memory(md, cpu_engine(), data); }

// A reorder between two buffers (reorder::execute takes its memories by non-const reference).
inline void run_reorder(const dnnl::reorder &r, const dnnl::stream &s, dnnl::memory from, dnnl::memory to) {
    r.execute(s, from, to);
}

}  // namespace ds2_native

#endif  // DS2_ONEDNN_ENGINE_H
