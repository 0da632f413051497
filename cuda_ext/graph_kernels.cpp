// Compiled fixed in-degree synapse sampler (docs/model.md §3.4), bitwise identical to the
// reference numpy/torch sampler of dtb/network/build.py.
//
// Plain C++17 + OpenMP with an extern "C" API, loaded with ctypes by
// dtb/network/compiled.py (built on first use with the system compiler).  Every random
// word is Philox4x32-10 (dtb/philox.py) keyed by the graph seed, with counter
// (id_lo, id_hi, c2, GRAPH + 16 * purpose); purposes: 0 column, 1 long-range population,
// 2 neuron, 3 subset keys, 8 + r redraw round r.  Each target neuron is sampled on its
// own, from its own counters only, so the result does not depend on the thread count,
// on the schedule, or on which block of ids a call builds.
//
// Floating point: only the long-range draw uses it, ((w + 0.5) * 2^-32 + v) compared
// with the layout's cumulative table; compile with -ffp-contract=off so the two
// operations are rounded separately, as numpy does.

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#include "lif_common.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace {

constexpr uint32_t kStreamGraph = 2;  // dtb.philox.Stream.GRAPH
constexpr int kColumn = 0, kLongRange = 1, kNeuron = 2, kSubset = 3, kRedraw = 8;

using dtb::Words;

// Philox4x32-10, the one implementation of lif_common.h (shared with the simulation kernels).
inline Words philox(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1) {
    return dtb::philox4x32_10(c0, c1, c2, c3, k0, k1);
}

}  // namespace

extern "C" {

// Everything the sampler needs, per population / connectome entry (never per neuron).
// Arrays are C-contiguous; P populations, C = max local populations + 1 columns.
struct DtbGraphLayout {
    int64_t n_populations;
    int64_t n_columns;
    const int64_t* offsets;         // (P + 1) first neuron id of every population
    const int64_t* pop_voxel;       // (P) kept-voxel index
    const int64_t* pop_first;       // (P) first population of the population's voxel
    const int64_t* pop_local;       // (P) index within the voxel's model
    const int64_t* indegree;        // (P) K_a
    const int64_t* column_counts;   // (P, C) exact split: draws per column, last = long range
    const int64_t* thresholds;      // (P, C) multinomial split: 32-bit categorical thresholds
    const uint8_t* needs_subset;    // (P) exact split: some local column drawn as a random subset
    const uint8_t* weight;          // (P) weight k of synapses from the population
    const int64_t* lr_indptr;       // (V + 1) long-range table rows per kept voxel
    const int64_t* lr_population;   // (L) source population of each entry
    const double* lr_cdf;           // (L) cumulative probability shifted by the voxel index
    int64_t multinomial;            // 0 exact split, 1 multinomial
    int64_t min_output_size;        // smallest long-range source population (0 if none)
    int64_t max_redraws;
    uint32_t key0, key1;            // Philox key (low, high 32 bits of the seed)
};

}  // extern "C"

namespace {

// Set of source ids seen by one target (open addressing; a generation stamp per slot
// makes clearing free).  insert() returns true when the id was already present.
class SeenSet {
  public:
    void reset(int64_t n) {
        int bits = 4;
        while ((int64_t{1} << bits) < 2 * n) ++bits;
        shift_ = 64 - bits;
        mask_ = (size_t{1} << bits) - 1;
        if (keys_.size() <= mask_) {
            keys_.resize(mask_ + 1);
            stamp_.assign(mask_ + 1, 0);
            gen_ = 0;
        }
        if (++gen_ == 0) {
            std::fill(stamp_.begin(), stamp_.end(), 0u);
            gen_ = 1;
        }
    }
    bool insert(int64_t key) {
        size_t i = static_cast<size_t>((static_cast<uint64_t>(key) * 0x9E3779B97F4A7C15ull) >> shift_);
        while (stamp_[i] == gen_) {
            if (keys_[i] == key) return true;
            i = (i + 1) & mask_;
        }
        stamp_[i] = gen_;
        keys_[i] = key;
        return false;
    }

  private:
    std::vector<int64_t> keys_;
    std::vector<uint32_t> stamp_;
    uint32_t gen_ = 0;
    int shift_ = 60;
    size_t mask_ = 15;
};

struct Scratch {
    SeenSet seen;
    std::vector<int64_t> q, src, local;
    std::vector<uint8_t> keep;
    std::vector<uint64_t> sorted;
    std::vector<std::pair<uint32_t, uint32_t>> keys;
    std::vector<int64_t> dups;
};

class Sampler {
  public:
    explicit Sampler(const DtbGraphLayout& L) : L_(L) {}

    int64_t population_of(int64_t t) const {
        const int64_t* end = L_.offsets + L_.n_populations + 1;
        return static_cast<int64_t>(std::upper_bound(L_.offsets, end, t) - L_.offsets) - 1;
    }

    // Sample target t: writes its kept sources (draw order) and weights, returns how many.
    int64_t sample(int64_t t, Scratch& s, uint32_t* out_src, uint8_t* out_w) const {
        const int64_t p = population_of(t);
        const int64_t K = L_.indegree[p];
        if (K == 0) return 0;
        const int64_t C = L_.n_columns;
        const int64_t v = L_.pop_voxel[p], first = L_.pop_first[p], a = L_.pop_local[p];
        const int64_t* counts = L_.column_counts + p * C;
        const int64_t n_outer = counts[C - 1];
        const int64_t self_local = t - L_.offsets[p];
        const uint32_t id_lo = static_cast<uint32_t>(t), id_hi = static_cast<uint32_t>(static_cast<uint64_t>(t) >> 32);
        s.q.resize(K);
        s.src.resize(K);
        s.local.resize(K);
        s.keep.assign(K, 1);
        int64_t* q = s.q.data();
        int64_t* src = s.src.data();
        int64_t* local = s.local.data();
        uint8_t* keep = s.keep.data();

        auto for_words = [&](int purpose, int64_t n, uint32_t c2_offset, auto&& fn) {
            const uint32_t c3 = kStreamGraph + 16u * static_cast<uint32_t>(purpose);
            for (int64_t j0 = 0; j0 < n; j0 += 4) {
                const Words w = philox(id_lo, id_hi, static_cast<uint32_t>(j0 / 4) + c2_offset, c3, L_.key0, L_.key1);
                const int64_t m = std::min<int64_t>(4, n - j0);
                for (int64_t k = 0; k < m; ++k) fn(j0 + k, w.w[k]);
            }
        };
        const int64_t lo = L_.lr_indptr[v], hi = L_.lr_indptr[v + 1];
        auto long_range = [&](uint32_t word) -> int64_t {
            const double x = (static_cast<double>(word) + 0.5) * 2.3283064365386963e-10 + static_cast<double>(v);
            // branchless lower_bound over the row (first entry >= x), then clipped to the row
            const double* base = L_.lr_cdf + lo;
            int64_t n = hi - lo;
            while (n > 1) {
                const int64_t half = n / 2;
                base = (base[half] < x) ? base + half : base;
                n -= half;
            }
            int64_t idx = static_cast<int64_t>(base - L_.lr_cdf) + (*base < x);
            if (idx > hi - 1) idx = hi - 1;
            return L_.lr_population[idx];
        };

        if (!L_.multinomial) {
            int64_t j = 0;
            for (int64_t b = 0; b < C; ++b)
                for (int64_t c = 0; c < counts[b]; ++c) q[j++] = first + b;
            if (n_outer) for_words(kLongRange, n_outer, 0, [&](int64_t m, uint32_t w) { q[K - n_outer + m] = long_range(w); });
        } else {
            const int64_t* thr = L_.thresholds + p * C;
            bool any_outer = false;
            for_words(kColumn, K, 0, [&](int64_t j, uint32_t w) {
                // searchsorted(thr, w, side="right"): first column whose threshold exceeds w
                const int64_t col = static_cast<int64_t>(std::upper_bound(thr, thr + C, static_cast<int64_t>(w)) - thr);
                q[j] = first + col;
                local[j] = (col == C - 1);  // outer flag, overwritten below
                any_outer |= (col == C - 1);
            });
            if (any_outer)
                for_words(kLongRange, K, 0, [&](int64_t j, uint32_t w) {
                    if (local[j]) q[j] = long_range(w);
                });
        }

        auto size_of = [&](int64_t pop) { return L_.offsets[pop + 1] - L_.offsets[pop]; };
        for_words(kNeuron, K, 0, [&](int64_t j, uint32_t w) {
            const bool is_self = q[j] == p;
            const uint64_t pool = static_cast<uint64_t>(size_of(q[j]) - is_self);
            int64_t l = static_cast<int64_t>((static_cast<uint64_t>(w) * pool) >> 32);
            l += (is_self && l >= self_local);
            local[j] = l;
        });

        if (!L_.multinomial && L_.needs_subset[p]) {  // dense local columns: a random subset
            int64_t draw0 = 0;
            for (int64_t b = 0; b < C - 1; ++b) {
                const int64_t c = counts[b];
                const int64_t pool_b = c ? size_of(first + b) - (b == a) : 0;
                if (c && 2 * c > pool_b) {
                    s.keys.resize(pool_b);
                    for_words(kSubset, pool_b, static_cast<uint32_t>(b) << 16, [&](int64_t j, uint32_t w) {
                        s.keys[j] = {w, static_cast<uint32_t>(j)};
                    });
                    // stable argsort of the keys = sort by (key, index); the first c in order
                    std::partial_sort(s.keys.begin(), s.keys.begin() + c, s.keys.end());
                    for (int64_t m = 0; m < c; ++m) {
                        int64_t chosen = s.keys[m].second;
                        if (b == a) chosen += (chosen >= self_local);
                        local[draw0 + m] = chosen;
                    }
                }
                draw0 += c;
            }
        }
        for (int64_t j = 0; j < K; ++j) src[j] = L_.offsets[q[j]] + local[j];

        if (L_.multinomial || (n_outer && L_.min_output_size < n_outer)) {
            // a population asked for more distinct neurons than it has: drop the surplus
            // draws (the latest in draw order)
            s.sorted.resize(K);
            for (int64_t j = 0; j < K; ++j) s.sorted[j] = (static_cast<uint64_t>(q[j]) << 32) | static_cast<uint64_t>(j);
            std::sort(s.sorted.begin(), s.sorted.end());
            int64_t rank = 0;
            for (int64_t m = 0; m < K; ++m) {
                const int64_t qq = static_cast<int64_t>(s.sorted[m] >> 32);
                const int64_t j = static_cast<int64_t>(s.sorted[m] & 0xFFFFFFFFu);
                rank = (m && (s.sorted[m - 1] >> 32) == static_cast<uint64_t>(qq)) ? rank + 1 : 0;
                if (rank >= size_of(qq) - (qq == p)) {
                    keep[j] = 0;
                    src[j] = -1 - j;  // unique sentinel: never a duplicate
                }
            }
        }

        for (int64_t round = 0; round <= L_.max_redraws; ++round) {
            // duplicates: every occurrence of a source but the earliest in draw order
            // (surplus sentinels are negative and never duplicates)
            s.seen.reset(K);
            s.dups.clear();
            for (int64_t j = 0; j < K; ++j)
                if (src[j] >= 0 && s.seen.insert(src[j])) s.dups.push_back(j);
            if (s.dups.empty()) break;
            if (round == L_.max_redraws) {
                for (int64_t d : s.dups) keep[d] = 0;
                break;
            }
            const uint32_t c3 = kStreamGraph + 16u * static_cast<uint32_t>(kRedraw + round);
            for (int64_t d : s.dups) {
                const uint32_t word = philox(id_lo, id_hi, static_cast<uint32_t>(d), c3, L_.key0, L_.key1).w[0];
                const int64_t qq = q[d];
                const bool selfq = qq == p;
                int64_t l = static_cast<int64_t>((static_cast<uint64_t>(word) * static_cast<uint64_t>(size_of(qq) - selfq)) >> 32);
                l += (selfq && l >= self_local);
                src[d] = L_.offsets[qq] + l;
            }
        }

        int64_t n = 0;
        for (int64_t j = 0; j < K; ++j) {
            if (!keep[j]) continue;
            out_src[n] = static_cast<uint32_t>(src[j]);
            out_w[n] = L_.weight[q[j]];
            ++n;
        }
        return n;
    }

  private:
    const DtbGraphLayout& L_;
};

}  // namespace

extern "C" {

// Incoming synapses of targets start .. stop-1, CSR by target.
//   capacity_indptr: (stop - start + 1) prefix sums of the targets' in-degrees (the
//       caller computes them; sources/weights have room for capacity_indptr[last]).
//   indptr (out): (stop - start + 1) CSR row pointer of the kept synapses.
//   sources, weights (out): kept synapses, compacted to indptr[last] entries.
// Returns the number of dropped synapses (>= 0), or -1 on bad arguments.
int64_t dtb_graph_build(const DtbGraphLayout* layout, int64_t start, int64_t stop, int threads,
                        const int64_t* capacity_indptr, int64_t* indptr, uint32_t* sources, uint8_t* weights) {
    if (!layout || stop < start || start < 0 || stop > layout->offsets[layout->n_populations]) return -1;
    const int64_t n = stop - start;
    Sampler sampler(*layout);
    std::vector<int64_t> kept(n, 0);
#ifdef _OPENMP
    const int n_threads = threads > 0 ? threads : 1;
#pragma omp parallel num_threads(n_threads)
#endif
    {
        Scratch scratch;
#ifdef _OPENMP
#pragma omp for schedule(dynamic, 512)
#endif
        for (int64_t i = 0; i < n; ++i) {
            const int64_t base = capacity_indptr[i];
            kept[i] = sampler.sample(start + i, scratch, sources + base, weights + base);
        }
    }
    (void)threads;
    indptr[0] = 0;
    int64_t dropped = 0;
    for (int64_t i = 0; i < n; ++i) {
        const int64_t base = capacity_indptr[i];
        const int64_t cap = capacity_indptr[i + 1] - base;
        const int64_t out = indptr[i];
        if (out != base && kept[i]) {  // compact after a drop (sequential, in id order)
            std::memmove(sources + out, sources + base, static_cast<size_t>(kept[i]) * sizeof(uint32_t));
            std::memmove(weights + out, weights + base, static_cast<size_t>(kept[i]));
        }
        indptr[i + 1] = out + kept[i];
        dropped += cap - kept[i];
    }
    return dropped;
}

// Join CSR-by-target synapses (blocks covering ids 0 .. n-1 in order) into CSR by source:
// a stable counting sort, so every source keeps its synapses in target order, then draw
// order (as a stable sort of the concatenated blocks by source does).
//   target_indptr: (n + 1); sources, weights: (target_indptr[n]) by target.
//   source_indptr (out): (n + 1); targets_out, weights_out (out): (target_indptr[n]).
// Returns 0, or -1 when a source id is out of range.
int64_t dtb_graph_transpose(int64_t n, const int64_t* target_indptr, const uint32_t* sources, const uint8_t* weights,
                            int64_t* source_indptr, uint32_t* targets_out, uint8_t* weights_out) {
    const int64_t S = target_indptr[n];
    std::fill(source_indptr, source_indptr + n + 1, int64_t{0});
    for (int64_t k = 0; k < S; ++k) {
        if (static_cast<int64_t>(sources[k]) >= n) return -1;
        ++source_indptr[sources[k] + 1];
    }
    for (int64_t j = 0; j < n; ++j) source_indptr[j + 1] += source_indptr[j];
    std::vector<int64_t> cursor(source_indptr, source_indptr + n);
    for (int64_t t = 0; t < n; ++t)
        for (int64_t k = target_indptr[t]; k < target_indptr[t + 1]; ++k) {
            const int64_t pos = cursor[sources[k]]++;
            targets_out[pos] = static_cast<uint32_t>(t);
            weights_out[pos] = weights[k];
        }
    return 0;
}

// Fixed in-degree draws of dtb/network/fixed_indegree.py: for target i and draw j, word 0
// of Philox (id_lo, id_hi, j, stream) picks a local source (w * n_pool) >> 32 among
// n_pool = n_sources - (exclude != nullptr), shifted past exclude[i] when given.
//   out: (n, K) int64 local source indices.  Returns 0, or -1 on bad arguments.
int64_t dtb_graph_draw_sources(uint32_t key0, uint32_t key1, uint32_t stream, const int64_t* target_ids, int64_t n,
                               int64_t K, int64_t n_sources, const int64_t* exclude, int threads, int64_t* out) {
    const int64_t n_pool = n_sources - (exclude != nullptr);
    if (n < 0 || K < 0 || (K > 0 && n_pool < 1)) return -1;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(threads > 0 ? threads : 1)
#endif
    for (int64_t i = 0; i < n; ++i) {
        const uint64_t id = static_cast<uint64_t>(target_ids[i]);
        const uint32_t lo = static_cast<uint32_t>(id), hi = static_cast<uint32_t>(id >> 32);
        int64_t* row = out + i * K;
        for (int64_t j = 0; j < K; ++j) {
            const uint32_t w = philox(lo, hi, static_cast<uint32_t>(j), stream, key0, key1).w[0];
            int64_t local = static_cast<int64_t>((static_cast<uint64_t>(w) * static_cast<uint64_t>(n_pool)) >> 32);
            if (exclude) local += (local >= exclude[i]);
            row[j] = local;
        }
    }
    (void)threads;
    return 0;
}

int64_t dtb_graph_abi_version(void) { return 3; }

int dtb_graph_max_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

}  // extern "C"
