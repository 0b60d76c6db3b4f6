// Index builders for GPT datasets (document, sample and shuffle indices) and blends (largest-deficit order).
// Becomes the module megasnow._dataset_helpers; semantics follow Megatron-Core's helpers.cpp (see docs/datasets.md).

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

namespace py = pybind11;

namespace {

// ---------------------------------------------------------------------------------------------
// Portable seeded randomness. std::shuffle / std::uniform_int_distribution differ between standard
// libraries, so we spell the generator out: SplitMix64 (Steele et al.), bounded draws by Lemire's
// multiply-shift with rejection, and the textbook Fisher-Yates shuffle (i from n-1 down to 1).
// The same algorithm in ~15 lines of Python lives in tests/data/test_gpt_dataset.py.
// ---------------------------------------------------------------------------------------------
inline uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

struct SplitMix64 {
  uint64_t state;
  explicit SplitMix64(uint64_t seed) : state(seed) {}
  uint64_t next() {
    state += 0x9E3779B97F4A7C15ULL;
    return mix64(state);
  }
  // Uniform integer in [0, bound), bound >= 1 (Lemire 2019, unbiased).
  uint64_t below(uint64_t bound) {
    __uint128_t m = static_cast<__uint128_t>(next()) * bound;
    uint64_t low = static_cast<uint64_t>(m);
    if (low < bound) {
      const uint64_t threshold = (0 - bound) % bound;
      while (low < threshold) {
        m = static_cast<__uint128_t>(next()) * bound;
        low = static_cast<uint64_t>(m);
      }
    }
    return static_cast<uint64_t>(m >> 64);
  }
};

// One independent stream per (seed, purpose, epoch): purposes keep document and sample shuffles apart.
inline uint64_t stream_seed(uint64_t seed, uint64_t purpose, uint64_t epoch) {
  return mix64(mix64(mix64(seed) ^ (purpose * 0x9E3779B97F4A7C15ULL)) ^ (epoch + 1));
}

template <typename T>
void fisher_yates(T* a, int64_t n, SplitMix64& rng) {
  for (int64_t i = n - 1; i > 0; --i) {
    const int64_t j = static_cast<int64_t>(rng.below(static_cast<uint64_t>(i) + 1));
    std::swap(a[i], a[j]);
  }
}

constexpr uint64_t kPurposeDocuments = 1;
constexpr uint64_t kPurposeSamples = 2;
constexpr uint64_t kPurposePermutation = 3;

template <typename T>
py::array_t<T> take_vector(std::vector<T>&& v) {
  auto* heap = new std::vector<T>(std::move(v));
  py::capsule owner(heap, [](void* p) { delete reinterpret_cast<std::vector<T>*>(p); });
  return py::array_t<T>({static_cast<py::ssize_t>(heap->size())}, {sizeof(T)}, heap->data(), owner);
}

// ---------------------------------------------------------------------------------------------
// permutation(n, seed): a seeded permutation of [0, n) (used for the train/valid document split).
// ---------------------------------------------------------------------------------------------
py::array_t<int64_t> permutation(int64_t n, uint64_t seed) {
  if (n < 0) throw std::invalid_argument("permutation: n must be >= 0, got " + std::to_string(n));
  std::vector<int64_t> out(static_cast<size_t>(n));
  {
    py::gil_scoped_release release;
    for (int64_t i = 0; i < n; ++i) out[i] = i;
    SplitMix64 rng(stream_seed(seed, kPurposePermutation, 0));
    fisher_yates(out.data(), n, rng);
  }
  return take_vector(std::move(out));
}

// ---------------------------------------------------------------------------------------------
// build_document_index(document_bounds, documents, num_epochs, seed) -> int32 sequence ids.
// document_bounds: the dataset's document_indices (int64, starts 0, ends #sequences);
// documents: the selected document ids (this split). Each epoch lists every selected document once
// in a freshly shuffled order, and each document expands to its sequences in their stored order.
// ---------------------------------------------------------------------------------------------
py::array_t<int32_t> build_document_index(py::array_t<int64_t, py::array::c_style | py::array::forcecast> bounds_,
                                          py::array_t<int64_t, py::array::c_style | py::array::forcecast> docs_,
                                          int64_t num_epochs, uint64_t seed) {
  if (num_epochs < 1) throw std::invalid_argument("build_document_index: num_epochs must be >= 1");
  auto bounds = bounds_.unchecked<1>();
  auto docs = docs_.unchecked<1>();
  const int64_t num_docs_total = bounds.shape(0) - 1;
  if (num_docs_total < 0) throw std::invalid_argument("build_document_index: document_bounds is empty");
  const int64_t n = docs.shape(0);
  int64_t seqs_per_epoch = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t d = docs(i);
    if (d < 0 || d >= num_docs_total)
      throw std::out_of_range("build_document_index: document id " + std::to_string(d) + " outside [0, " +
                              std::to_string(num_docs_total) + ")");
    seqs_per_epoch += bounds(d + 1) - bounds(d);
  }
  if (bounds(num_docs_total) > std::numeric_limits<int32_t>::max())
    throw std::overflow_error("build_document_index: more than 2^31-1 sequences in one dataset");
  std::vector<int32_t> out(static_cast<size_t>(seqs_per_epoch * num_epochs));
  {
    py::gil_scoped_release release;
    std::vector<int64_t> order(static_cast<size_t>(n));
    int64_t w = 0;
    for (int64_t e = 0; e < num_epochs; ++e) {
      for (int64_t i = 0; i < n; ++i) order[i] = docs(i);
      SplitMix64 rng(stream_seed(seed, kPurposeDocuments, static_cast<uint64_t>(e)));
      fisher_yates(order.data(), n, rng);
      for (int64_t i = 0; i < n; ++i)
        for (int64_t s = bounds(order[i]); s < bounds(order[i] + 1); ++s) out[w++] = static_cast<int32_t>(s);
    }
  }
  return take_vector(std::move(out));
}

// ---------------------------------------------------------------------------------------------
// build_sample_index(sequence_lengths, document_index, seq_len) -> int64 [num_samples + 1, 2].
// Megatron's build_sample_idx (drop_last_partial_sequence=True, add_extra_token_to_sequence=1): the
// documents in document_index order form one token stream; sample i is stream[i*seq_len : i*seq_len
// + seq_len + 1], so consecutive samples share one token. Row i holds (position in document_index,
// offset in that sequence) of sample i's first token; row i+1 holds its last token (inclusive).
// num_samples = (total_tokens - 1) // seq_len.
// ---------------------------------------------------------------------------------------------
py::array_t<int64_t> build_sample_index(py::array_t<int32_t, py::array::c_style | py::array::forcecast> sizes_,
                                        py::array_t<int32_t, py::array::c_style | py::array::forcecast> doc_index_,
                                        int64_t seq_len) {
  if (seq_len < 1) throw std::invalid_argument("build_sample_index: seq_len must be >= 1");
  auto sizes = sizes_.unchecked<1>();
  auto doc_index = doc_index_.unchecked<1>();
  const int64_t n_pos = doc_index.shape(0);
  const int64_t n_seq = sizes.shape(0);
  int64_t total = 0;
  for (int64_t p = 0; p < n_pos; ++p) {
    const int32_t s = doc_index(p);
    if (s < 0 || s >= n_seq)
      throw std::out_of_range("build_sample_index: document_index[" + std::to_string(p) + "] = " + std::to_string(s) +
                              " outside [0, " + std::to_string(n_seq) + ")");
    if (sizes(s) < 0) throw std::invalid_argument("build_sample_index: negative sequence length");
    total += sizes(s);
  }
  if (total < seq_len + 1)
    throw std::invalid_argument("build_sample_index: " + std::to_string(total) +
                                " tokens are fewer than one sample of seq_len + 1 = " + std::to_string(seq_len + 1));
  const int64_t num_samples = (total - 1) / seq_len;
  std::vector<int64_t> out(static_cast<size_t>(2 * (num_samples + 1)));
  {
    py::gil_scoped_release release;
    int64_t pos = 0, offset = 0;
    out[0] = 0;
    out[1] = 0;
    for (int64_t i = 1; i <= num_samples; ++i) {
      // Advance seq_len tokens: the new position is sample i-1's last token and sample i's first.
      int64_t remaining = seq_len;
      while (true) {
        const int64_t left_in_sequence = sizes(doc_index(pos)) - offset;
        if (left_in_sequence > remaining) {
          offset += remaining;
          break;
        }
        remaining -= left_in_sequence;
        ++pos;
        offset = 0;
      }
      out[2 * i] = pos;
      out[2 * i + 1] = offset;
    }
  }
  auto* heap = new std::vector<int64_t>(std::move(out));
  py::capsule owner(heap, [](void* p) { delete reinterpret_cast<std::vector<int64_t>*>(p); });
  return py::array_t<int64_t>({static_cast<py::ssize_t>(num_samples + 1), static_cast<py::ssize_t>(2)},
                              {2 * sizeof(int64_t), sizeof(int64_t)}, heap->data(), owner);
}

// ---------------------------------------------------------------------------------------------
// build_shuffle_index(group_bounds, num_keep, seed) -> int64 [num_keep].
// group_bounds (ascending, starts 0) cuts the sample ids into groups (one per epoch); each group is
// shuffled on its own and the groups are concatenated in order, then cut to the first num_keep ids.
// So training walks epoch 0 in random order, then epoch 1, ...; a partly used final epoch yields a
// uniformly random subset of its samples.
// ---------------------------------------------------------------------------------------------
py::array_t<int64_t> build_shuffle_index(py::array_t<int64_t, py::array::c_style | py::array::forcecast> bounds_,
                                         int64_t num_keep, uint64_t seed) {
  auto bounds = bounds_.unchecked<1>();
  const int64_t n_groups = bounds.shape(0) - 1;
  if (n_groups < 1 || bounds(0) != 0) throw std::invalid_argument("build_shuffle_index: group_bounds must start at 0");
  for (int64_t g = 0; g < n_groups; ++g)
    if (bounds(g + 1) < bounds(g)) throw std::invalid_argument("build_shuffle_index: group_bounds must ascend");
  const int64_t total = bounds(n_groups);
  if (num_keep < 0 || num_keep > total)
    throw std::invalid_argument("build_shuffle_index: num_keep " + std::to_string(num_keep) + " outside [0, " +
                                std::to_string(total) + "]");
  std::vector<int64_t> out(static_cast<size_t>(total));
  {
    py::gil_scoped_release release;
    for (int64_t g = 0; g < n_groups; ++g) {
      const int64_t lo = bounds(g), hi = bounds(g + 1);
      if (lo >= num_keep) break;
      for (int64_t i = lo; i < hi; ++i) out[i] = i;
      SplitMix64 rng(stream_seed(seed, kPurposeSamples, static_cast<uint64_t>(g)));
      fisher_yates(out.data() + lo, hi - lo, rng);
    }
  }
  out.resize(static_cast<size_t>(num_keep));
  return take_vector(std::move(out));
}

// ---------------------------------------------------------------------------------------------
// build_blending_indices(weights, size) -> (dataset_index int16 [size], dataset_sample_index int64 [size]).
// Megatron's largest-deficit order: sample i goes to the dataset whose count lags weight * max(i, 1)
// the most (ties to the lowest id); dataset_sample_index counts that dataset's samples so far.
// ---------------------------------------------------------------------------------------------
py::tuple build_blending_indices(py::array_t<double, py::array::c_style | py::array::forcecast> weights_,
                                 int64_t size) {
  auto weights = weights_.unchecked<1>();
  const int64_t k = weights.shape(0);
  if (k < 1 || k > std::numeric_limits<int16_t>::max())
    throw std::invalid_argument("build_blending_indices: need 1..32767 datasets, got " + std::to_string(k));
  if (size < 0) throw std::invalid_argument("build_blending_indices: size must be >= 0");
  std::vector<int16_t> which(static_cast<size_t>(size));
  std::vector<int64_t> local(static_cast<size_t>(size));
  {
    py::gil_scoped_release release;
    std::vector<int64_t> counts(static_cast<size_t>(k), 0);
    for (int64_t i = 0; i < size; ++i) {
      const double n = std::max(static_cast<double>(i), 1.0);
      int64_t best = 0;
      double best_error = weights(0) * n - static_cast<double>(counts[0]);
      for (int64_t d = 1; d < k; ++d) {
        const double error = weights(d) * n - static_cast<double>(counts[d]);
        if (error > best_error) {
          best_error = error;
          best = d;
        }
      }
      which[i] = static_cast<int16_t>(best);
      local[i] = counts[best]++;
    }
  }
  return py::make_tuple(take_vector(std::move(which)), take_vector(std::move(local)));
}

// ---------------------------------------------------------------------------------------------
// build_exhaustive_blending_indices(sizes) -> (dataset_index, dataset_sample_index), length sum(sizes).
// Megatron's exhaustive variant: largest-deficit with weights sizes / sum(sizes), a dataset leaving the
// race once it has given exactly sizes[d] samples. Every dataset contributes exactly its size.
// ---------------------------------------------------------------------------------------------
py::tuple build_exhaustive_blending_indices(py::array_t<int64_t, py::array::c_style | py::array::forcecast> sizes_) {
  auto sizes = sizes_.unchecked<1>();
  const int64_t k = sizes.shape(0);
  if (k < 1 || k > std::numeric_limits<int16_t>::max())
    throw std::invalid_argument("build_exhaustive_blending_indices: need 1..32767 datasets, got " + std::to_string(k));
  int64_t total = 0;
  for (int64_t d = 0; d < k; ++d) {
    if (sizes(d) < 0) throw std::invalid_argument("build_exhaustive_blending_indices: negative size");
    total += sizes(d);
  }
  std::vector<int16_t> which(static_cast<size_t>(total));
  std::vector<int64_t> local(static_cast<size_t>(total));
  {
    py::gil_scoped_release release;
    std::vector<double> weights(static_cast<size_t>(k));
    std::vector<int64_t> counts(static_cast<size_t>(k), 0);
    for (int64_t d = 0; d < k; ++d) weights[d] = static_cast<double>(sizes(d)) / static_cast<double>(total);
    for (int64_t i = 0; i < total; ++i) {
      const double n = std::max(static_cast<double>(i), 1.0);
      int64_t best = -1;
      double best_error = std::numeric_limits<double>::lowest();
      for (int64_t d = 0; d < k; ++d) {
        if (counts[d] >= sizes(d)) continue;
        const double error = weights[d] * n - static_cast<double>(counts[d]);
        if (error > best_error) {
          best_error = error;
          best = d;
        }
      }
      which[i] = static_cast<int16_t>(best);
      local[i] = counts[best]++;
    }
  }
  return py::make_tuple(take_vector(std::move(which)), take_vector(std::move(local)));
}

}  // namespace

PYBIND11_MODULE(_dataset_helpers, m) {
  m.doc() = "Index builders for megasnow GPT datasets and blends (see docs/datasets.md).";
  m.def("permutation", &permutation, py::arg("n"), py::arg("seed"));
  m.def("build_document_index", &build_document_index, py::arg("document_bounds"), py::arg("documents"),
        py::arg("num_epochs"), py::arg("seed"));
  m.def("build_sample_index", &build_sample_index, py::arg("sequence_lengths"), py::arg("document_index"),
        py::arg("seq_len"));
  m.def("build_shuffle_index", &build_shuffle_index, py::arg("group_bounds"), py::arg("num_keep"), py::arg("seed"));
  m.def("build_blending_indices", &build_blending_indices, py::arg("weights"), py::arg("size"));
  m.def("build_exhaustive_blending_indices", &build_exhaustive_blending_indices, py::arg("sizes"));
}
