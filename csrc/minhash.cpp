// MinHash signatures, LSH band hashes and word n-gram hashing for megasnow.curate (module megasnow._minhash).
//
// Words are maximal runs of [A-Za-z0-9_] or non-ASCII bytes, ASCII-lowercased; each word is hashed with
// FNV-1a + the splitmix64 finalizer, and an n-gram hash combines its n word hashes in order. Permutation i of a
// shingle hash x is the multiply-add-shift hash (a_i * x + b_i) mod 2^64 >> 32 (Dietzfelbinger's 2-universal
// family), which vectorizes (AVX-512/AVX2 clones picked at run time) unlike arithmetic mod 2^61 - 1.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace py = pybind11;

namespace {

inline uint64_t mix64(uint64_t x) {  // splitmix64 finalizer: a bijective avalanche of 64 bits
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

// Byte class table: 0 for separators, else the byte itself with ASCII letters lowercased.
struct WordTable {
  unsigned char map[256];
  WordTable() {
    for (int c = 0; c < 256; ++c) {
      const bool word = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
                        c >= 0x80;
      map[c] = word ? static_cast<unsigned char>(c >= 'A' && c <= 'Z' ? c + 32 : c) : 0;
    }
  }
};
const WordTable kWords;

// Hash of every word in text, in order. Bytes are packed 8 at a time into a word-sized chunk (word bytes are
// never 0, so a chunk also encodes its length) and chunks are folded by multiply-xor, then avalanched.
void word_hashes(const char* s, size_t n, std::vector<uint64_t>& out) {
  out.clear();
  const unsigned char* p = reinterpret_cast<const unsigned char*>(s);
  size_t i = 0;
  while (i < n) {
    while (i < n && !kWords.map[p[i]]) ++i;
    if (i >= n) break;
    uint64_t h = 0xcbf29ce484222325ULL, chunk = 0;
    int k = 0;
    for (unsigned char c; i < n && (c = kWords.map[p[i]]); ++i) {
      chunk |= static_cast<uint64_t>(c) << (8 * k);
      if (++k == 8) {
        h = (h ^ chunk) * 0x9e3779b97f4a7c15ULL;
        chunk = 0;
        k = 0;
      }
    }
    out.push_back(mix64(h ^ chunk));
  }
}

inline uint64_t combine(const uint64_t* words, int n) {
  uint64_t h = 0x9e3779b97f4a7c15ULL ^ static_cast<uint64_t>(n);
  for (int j = 0; j < n; ++j) h = rotl(h, 23) ^ words[j];
  return mix64(h);
}

// Hashes of the word n-grams of text, in order. With short_as_one, a text of 1..n-1 words gives one shingle
// of all its words (so short files still get a signature); otherwise it gives none.
void ngram_hashes_into(const char* s, size_t len, int ngram, bool short_as_one, std::vector<uint64_t>& words,
                       std::vector<uint64_t>& out) {
  word_hashes(s, len, words);
  out.clear();
  const int64_t w = static_cast<int64_t>(words.size());
  if (w >= ngram) {
    out.reserve(w - ngram + 1);
    for (int64_t i = 0; i + ngram <= w; ++i) out.push_back(combine(words.data() + i, ngram));
  } else if (short_as_one && w > 0) {
    out.push_back(combine(words.data(), static_cast<int>(w)));
  }
}

// Running minimum of the permuted shingle hashes; sig must start at 0xFFFFFFFF. Permutations are taken in
// blocks of kBlock held in registers while all shingles stream past, so a, b and sig are loaded once per block.
constexpr int kBlock = 32;

__attribute__((target_clones("avx512f", "avx2", "default"))) void minhash_update(const uint64_t* shingles,
                                                                                 size_t m, const uint64_t* a,
                                                                                 const uint64_t* b, uint32_t* sig,
                                                                                 int num_perm) {
  int i0 = 0;
  for (; i0 + kBlock <= num_perm; i0 += kBlock) {
    uint64_t ab[kBlock], bb[kBlock];
    uint32_t acc[kBlock];
    for (int i = 0; i < kBlock; ++i) {
      ab[i] = a[i0 + i];
      bb[i] = b[i0 + i];
      acc[i] = sig[i0 + i];
    }
    for (size_t k = 0; k < m; ++k) {
      const uint64_t x = shingles[k];
      for (int i = 0; i < kBlock; ++i) {
        const uint32_t v = static_cast<uint32_t>((ab[i] * x + bb[i]) >> 32);
        acc[i] = v < acc[i] ? v : acc[i];
      }
    }
    for (int i = 0; i < kBlock; ++i) sig[i0 + i] = acc[i];
  }
  for (size_t k = 0; k < m; ++k) {  // leftover permutations when num_perm is not a multiple of kBlock
    for (int i = i0; i < num_perm; ++i) {
      const uint32_t v = static_cast<uint32_t>((a[i] * shingles[k] + b[i]) >> 32);
      sig[i] = v < sig[i] ? v : sig[i];
    }
  }
}

struct Text {
  const char* data;
  size_t size;
};

// UTF-8 views of a list of str/bytes; must be called with the GIL held, the views live as long as the list.
std::vector<Text> utf8_views(const py::list& texts) {
  std::vector<Text> views;
  views.reserve(texts.size());
  for (size_t i = 0; i < texts.size(); ++i) {
    PyObject* obj = texts[i].ptr();
    if (PyUnicode_Check(obj)) {
      Py_ssize_t size = 0;
      const char* data = PyUnicode_AsUTF8AndSize(obj, &size);
      if (data == nullptr) throw py::error_already_set();
      views.push_back({data, static_cast<size_t>(size)});
    } else if (PyBytes_Check(obj)) {
      views.push_back({PyBytes_AS_STRING(obj), static_cast<size_t>(PyBytes_GET_SIZE(obj))});
    } else {
      throw py::type_error("texts[" + std::to_string(i) + "] is neither str nor bytes");
    }
  }
  return views;
}

template <typename Fn>
void parallel_for(size_t n, int threads, Fn fn) {
  if (threads <= 1 || n <= 1) {
    for (size_t i = 0; i < n; ++i) fn(i, 0);
    return;
  }
  threads = static_cast<int>(std::min<size_t>(threads, n));
  std::atomic<size_t> next{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      for (size_t i = next++; i < n; i = next++) fn(i, t);
    });
  }
  for (auto& th : pool) th.join();
}

// signatures(texts, a, b, ngram, threads) -> (uint32 [n, num_perm], int64 [n] distinct shingle counts)
py::tuple signatures(const py::list& texts, py::array_t<uint64_t, py::array::c_style | py::array::forcecast> a,
                     py::array_t<uint64_t, py::array::c_style | py::array::forcecast> b, int ngram, int threads) {
  if (a.ndim() != 1 || b.ndim() != 1 || a.shape(0) != b.shape(0) || a.shape(0) == 0)
    throw std::invalid_argument("a and b must be 1-D arrays of the same non-zero length (one per permutation)");
  if (ngram < 1) throw std::invalid_argument("ngram must be >= 1");
  const int num_perm = static_cast<int>(a.shape(0));
  const size_t n = texts.size();
  std::vector<Text> views = utf8_views(texts);
  py::array_t<uint32_t> sig({static_cast<py::ssize_t>(n), static_cast<py::ssize_t>(num_perm)});
  py::array_t<int64_t> counts(static_cast<py::ssize_t>(n));
  uint32_t* sig_ptr = sig.mutable_data();
  int64_t* count_ptr = counts.mutable_data();
  const uint64_t* a_ptr = a.data();
  const uint64_t* b_ptr = b.data();
  {
    py::gil_scoped_release release;
    const int nthreads = std::max(1, threads);
    std::vector<std::vector<uint64_t>> words(nthreads), shingles(nthreads);
    parallel_for(n, nthreads, [&](size_t i, int t) {
      ngram_hashes_into(views[i].data, views[i].size, ngram, true, words[t], shingles[t]);
      auto& sh = shingles[t];
      std::sort(sh.begin(), sh.end());  // a shingle set: repeated lines must not cost permutations
      sh.erase(std::unique(sh.begin(), sh.end()), sh.end());
      uint32_t* row = sig_ptr + i * num_perm;
      std::fill(row, row + num_perm, 0xFFFFFFFFu);
      minhash_update(sh.data(), sh.size(), a_ptr, b_ptr, row, num_perm);
      count_ptr[i] = static_cast<int64_t>(sh.size());
    });
  }
  return py::make_tuple(sig, counts);
}

// band_hashes(sig [n, num_perm], bands, rows) -> uint64 [n, bands]; band j hashes sig[:, j*rows:(j+1)*rows].
py::array_t<uint64_t> band_hashes(py::array_t<uint32_t, py::array::c_style | py::array::forcecast> sig, int bands,
                                  int rows) {
  if (sig.ndim() != 2) throw std::invalid_argument("sig must be a 2-D array [documents, permutations]");
  const size_t n = sig.shape(0), num_perm = sig.shape(1);
  if (bands < 1 || rows < 1 || static_cast<size_t>(bands) * rows > num_perm)
    throw std::invalid_argument("need bands >= 1, rows >= 1 and bands * rows <= permutations (" +
                                std::to_string(num_perm) + ")");
  py::array_t<uint64_t> out({static_cast<py::ssize_t>(n), static_cast<py::ssize_t>(bands)});
  const uint32_t* s = sig.data();
  uint64_t* o = out.mutable_data();
  {
    py::gil_scoped_release release;
    for (size_t i = 0; i < n; ++i) {
      for (int j = 0; j < bands; ++j) {
        uint64_t h = 0x243f6a8885a308d3ULL ^ static_cast<uint64_t>(j);  // the band index keeps bands apart
        const uint32_t* row = s + i * num_perm + static_cast<size_t>(j) * rows;
        for (int k = 0; k < rows; ++k) h = mix64(h ^ row[k]);
        o[i * bands + j] = h;
      }
    }
  }
  return out;
}

// ngram_hashes(text, ngram, unique=False, short_as_one=False) -> uint64 array (in order, or sorted distinct).
py::array_t<uint64_t> ngram_hashes(py::object text, int ngram, bool unique, bool short_as_one) {
  if (ngram < 1) throw std::invalid_argument("ngram must be >= 1");
  py::list one;
  one.append(text);
  std::vector<Text> views = utf8_views(one);
  std::vector<uint64_t> words, out;
  {
    py::gil_scoped_release release;
    ngram_hashes_into(views[0].data, views[0].size, ngram, short_as_one, words, out);
    if (unique) {
      std::sort(out.begin(), out.end());
      out.erase(std::unique(out.begin(), out.end()), out.end());
    }
  }
  py::array_t<uint64_t> arr(static_cast<py::ssize_t>(out.size()));
  std::copy(out.begin(), out.end(), arr.mutable_data());
  return arr;
}

// ---- StarCoder's encoded-data regexes as linear scans (filters.py keeps the regexes as the reference) ----

inline bool is_hex(unsigned char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }
inline bool is_b64(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '+' || c == '/' ||
         c == '\n' || c == '=';
}
inline bool is_rx_word(unsigned char c) {  // Python's \w on str, with every non-ASCII byte counted as a letter
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c >= 0x80;
}
inline bool is_rx_space(unsigned char c) { return c == ' ' || (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x1f); }

struct Runs {
  size_t longest = 0, total = 0;
  void add(size_t len) {
    longest = std::max(longest, len);
    total += len;
  }
};

// [a-zA-Z0-9+/\n=]{64,}: maximal runs of at least 64 such bytes.
void base64_runs(const unsigned char* s, size_t n, Runs& r) {
  size_t i = 0;
  while (i < n) {
    if (!is_b64(s[i])) { ++i; continue; }
    size_t j = i;
    while (j < n && is_b64(s[j])) ++j;
    if (j - i >= 64) r.add(j - i);
    i = j;
  }
}

// (?:\\u[0-9a-fA-F]{4}){8,}
void unicode_runs(const unsigned char* s, size_t n, Runs& r) {
  size_t i = 0;
  while (i < n) {
    size_t j = i;
    while (j + 6 <= n && s[j] == '\\' && s[j + 1] == 'u' && is_hex(s[j + 2]) && is_hex(s[j + 3]) && is_hex(s[j + 4]) &&
           is_hex(s[j + 5]))
      j += 6;
    if (j - i >= 48) {
      r.add(j - i);
      i = j;
    } else {
      ++i;
    }
  }
}

// (?:\b(?:0x|\\x)?[0-9a-fA-F]{2}(?:,|\b\s*)){8,} -- the regex's greedy path is its only path (see filters.py).
void hex_runs(const unsigned char* s, size_t n, Runs& r) {
  auto boundary = [&](size_t q) {
    const bool before = q > 0 && is_rx_word(s[q - 1]);
    const bool after = q < n && is_rx_word(s[q]);
    return before != after;
  };
  size_t i = 0;
  while (i < n) {
    size_t p = i;
    int groups = 0;
    for (;;) {
      size_t q = p;
      if (!boundary(q)) break;
      if (q + 1 < n && (s[q] == '0' || s[q] == '\\') && s[q + 1] == 'x') q += 2;
      if (!(q + 1 < n && is_hex(s[q]) && is_hex(s[q + 1]))) break;
      q += 2;
      if (q < n && s[q] == ',') {
        ++q;
      } else if (boundary(q)) {
        while (q < n && is_rx_space(s[q])) ++q;
      } else {
        break;
      }
      ++groups;
      p = q;
    }
    if (groups >= 8) {
      r.add(p - i);
      i = p;
    } else {
      ++i;
    }
  }
}

// encoded_runs(text) -> (longest match, summed match lengths) over the base64, hex and \\u-escape patterns.
py::tuple encoded_runs(py::object text) {
  py::list one;
  one.append(text);
  std::vector<Text> views = utf8_views(one);
  Runs r;
  {
    py::gil_scoped_release release;
    const auto* s = reinterpret_cast<const unsigned char*>(views[0].data);
    base64_runs(s, views[0].size, r);
    hex_runs(s, views[0].size, r);
    unicode_runs(s, views[0].size, r);
  }
  return py::make_tuple(r.longest, r.total);
}

}  // namespace

PYBIND11_MODULE(_minhash, m) {
  m.doc() = "MinHash signatures, LSH band hashes and word n-gram hashes (megasnow.curate hot path)";
  m.def("signatures", &signatures, py::arg("texts"), py::arg("a"), py::arg("b"), py::arg("ngram") = 5,
        py::arg("threads") = 1,
        "MinHash signatures of texts over word n-gram shingles: (uint32 [n, len(a)], int64 [n] shingle counts). "
        "Releases the GIL and runs on `threads` threads over documents.");
  m.def("band_hashes", &band_hashes, py::arg("sig"), py::arg("bands"), py::arg("rows"),
        "LSH band hashes uint64 [n, bands] of signatures uint32 [n, permutations].");
  m.def("ngram_hashes", &ngram_hashes, py::arg("text"), py::arg("ngram"), py::arg("unique") = false,
        py::arg("short_as_one") = false, "Hashes of the word n-grams of one text.");
  m.def("encoded_runs", &encoded_runs, py::arg("text"),
        "(longest, total) length of StarCoder's base64 / hex / unicode-escape regex matches, in one linear pass.");
}
