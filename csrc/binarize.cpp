// Binarization core for tools/preprocess_data.py: JSONL block parsing (UTF-8 check, JSON unescape of the wanted
// keys) and token packing into MMIDIDX dtypes, both without the GIL so they overlap with tokenizer threads.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace py = pybind11;

namespace {

// ----------------------------------------------------------------------------------------------- UTF-8

// Index of the first byte of an invalid UTF-8 sequence (Python's strict decoder rules: no overlongs, no
// surrogates, nothing above U+10FFFF), or -1 when the whole range is valid.
int64_t find_invalid_utf8(const unsigned char* s, size_t n) {
  size_t i = 0;
  while (i < n) {
    // Fast path over ASCII, 8 bytes at a time.
    while (i + 8 <= n) {
      uint64_t w;
      std::memcpy(&w, s + i, 8);
      if (w & 0x8080808080808080ULL) break;
      i += 8;
    }
    if (i >= n) break;
    unsigned char c = s[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    uint32_t lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;  // UTF-16 surrogates are not valid UTF-8
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    } else {
      return static_cast<int64_t>(i);
    }
    if (i + len > n) return static_cast<int64_t>(i);
    if (s[i + 1] < lo || s[i + 1] > hi) return static_cast<int64_t>(i);
    for (size_t k = 2; k < len; ++k)
      if ((s[i + k] & 0xC0) != 0x80) return static_cast<int64_t>(i);
    i += len;
  }
  return -1;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

// ----------------------------------------------------------------------------------------------- JSON

struct ParseError {
  std::string reason;
};

// A strict JSON parser for one line holding one object (RFC 8259, as Python's json.loads accepts it, minus
// NaN/Infinity). Only the values of wanted top-level keys are decoded; everything else is validated and skipped.
class LineParser {
 public:
  LineParser(const char* begin, const char* end) : p_(begin), end_(end), begin_(begin) {}

  // Fills values[k] for each wanted key found (last duplicate wins); kinds[k]: 0 missing, 1 string, 2 other.
  void parse_object(const std::unordered_map<std::string, size_t>& wanted, std::vector<std::string>& values,
                    std::vector<int>& kinds) {
    skip_ws();
    if (p_ >= end_ || *p_ != '{') fail("expected a JSON object");
    ++p_;
    skip_ws();
    if (peek() == '}') {
      ++p_;
    } else {
      std::string key;
      while (true) {
        skip_ws();
        if (peek() != '"') fail("expected a string key");
        key.clear();
        parse_string(&key);
        skip_ws();
        if (peek() != ':') fail("expected ':' after key");
        ++p_;
        skip_ws();
        auto it = wanted.find(key);
        if (it != wanted.end() && peek() == '"') {
          std::string& v = values[it->second];
          v.clear();
          parse_string(&v);
          kinds[it->second] = 1;
        } else {
          if (it != wanted.end()) kinds[it->second] = 2;
          skip_value(0);
        }
        skip_ws();
        char c = peek();
        ++p_;
        if (c == ',') continue;
        if (c == '}') break;
        fail("expected ',' or '}' in object");
      }
    }
    skip_ws();
    if (p_ != end_) fail("extra data after the object");
  }

 private:
  const char* p_;
  const char* end_;
  const char* begin_;

  [[noreturn]] void fail(const char* what) {
    throw ParseError{std::string(what) + " at column " + std::to_string(p_ - begin_ + 1)};
  }
  char peek() const { return p_ < end_ ? *p_ : '\0'; }
  void skip_ws() {
    while (p_ < end_ && (*p_ == ' ' || *p_ == '\t' || *p_ == '\n' || *p_ == '\r')) ++p_;
  }

  uint32_t hex4() {
    if (end_ - p_ < 4) fail("truncated \\u escape");
    uint32_t v = 0;
    for (int k = 0; k < 4; ++k) {
      char c = p_[k];
      v <<= 4;
      if (c >= '0' && c <= '9') v |= c - '0';
      else if (c >= 'a' && c <= 'f') v |= c - 'a' + 10;
      else if (c >= 'A' && c <= 'F') v |= c - 'A' + 10;
      else fail("bad \\u escape");
    }
    p_ += 4;
    return v;
  }

  // Parses a string starting at '"'; appends its decoded UTF-8 to out (when out is not null).
  void parse_string(std::string* out) {
    ++p_;  // opening quote
    while (true) {
      const char* run = p_;
      while (p_ < end_ && *p_ != '"' && *p_ != '\\' && static_cast<unsigned char>(*p_) >= 0x20) ++p_;
      if (out) out->append(run, p_ - run);
      if (p_ >= end_) fail("unterminated string");
      char c = *p_;
      if (c == '"') {
        ++p_;
        return;
      }
      if (c != '\\') fail("control character in string");
      ++p_;
      if (p_ >= end_) fail("unterminated string");
      char e = *p_++;
      char lit;
      switch (e) {
        case '"': lit = '"'; break;
        case '\\': lit = '\\'; break;
        case '/': lit = '/'; break;
        case 'b': lit = '\b'; break;
        case 'f': lit = '\f'; break;
        case 'n': lit = '\n'; break;
        case 'r': lit = '\r'; break;
        case 't': lit = '\t'; break;
        case 'u': {
          uint32_t cp = hex4();
          // A surrogate pair is one code point. A lone surrogate is valid JSON (Python accepts it) but has no
          // UTF-8 form, so it only fails a value we must decode for the tokenizer.
          if (cp >= 0xD800 && cp <= 0xDBFF && end_ - p_ >= 6 && p_[0] == '\\' && p_[1] == 'u') {
            const char* save = p_;
            p_ += 2;
            uint32_t low = hex4();
            if (low >= 0xDC00 && low <= 0xDFFF) cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
            else p_ = save;
          }
          if (cp >= 0xD800 && cp <= 0xDFFF) {
            if (out) fail("lone surrogate \\u escape (not encodable as UTF-8)");
            continue;
          }
          if (out) append_utf8(*out, cp);
          continue;
        }
        default:
          --p_;
          fail("invalid escape");
      }
      if (out) out->push_back(lit);
    }
  }

  void parse_number() {
    if (peek() == '-') ++p_;
    if (peek() == '0') {
      ++p_;
    } else if (peek() >= '1' && peek() <= '9') {
      while (peek() >= '0' && peek() <= '9') ++p_;
    } else {
      fail("invalid value");
    }
    if (peek() == '.') {
      ++p_;
      if (!(peek() >= '0' && peek() <= '9')) fail("invalid number");
      while (peek() >= '0' && peek() <= '9') ++p_;
    }
    if (peek() == 'e' || peek() == 'E') {
      ++p_;
      if (peek() == '+' || peek() == '-') ++p_;
      if (!(peek() >= '0' && peek() <= '9')) fail("invalid number");
      while (peek() >= '0' && peek() <= '9') ++p_;
    }
  }

  void literal(const char* word) {
    size_t n = std::strlen(word);
    if (static_cast<size_t>(end_ - p_) < n || std::memcmp(p_, word, n) != 0) fail("invalid value");
    p_ += n;
  }

  void skip_value(int depth) {
    if (depth > 512) fail("nesting too deep");
    skip_ws();
    char c = peek();
    if (c == '"') {
      parse_string(nullptr);
    } else if (c == '{') {
      ++p_;
      skip_ws();
      if (peek() == '}') {
        ++p_;
        return;
      }
      while (true) {
        skip_ws();
        if (peek() != '"') fail("expected a string key");
        parse_string(nullptr);
        skip_ws();
        if (peek() != ':') fail("expected ':' after key");
        ++p_;
        skip_value(depth + 1);
        skip_ws();
        char d = peek();
        ++p_;
        if (d == ',') continue;
        if (d == '}') return;
        fail("expected ',' or '}' in object");
      }
    } else if (c == '[') {
      ++p_;
      skip_ws();
      if (peek() == ']') {
        ++p_;
        return;
      }
      while (true) {
        skip_value(depth + 1);
        skip_ws();
        char d = peek();
        ++p_;
        if (d == ',') continue;
        if (d == ']') return;
        fail("expected ',' or ']' in array");
      }
    } else if (c == 't') {
      literal("true");
    } else if (c == 'f') {
      literal("false");
    } else if (c == 'n') {
      literal("null");
    } else {
      parse_number();
    }
  }
};

bool is_blank(const char* b, const char* e) {
  for (; b < e; ++b)
    if (!(*b == ' ' || *b == '\t' || *b == '\n' || *b == '\r' || *b == '\v' || *b == '\f')) return false;
  return true;
}

struct ParsedBlock {
  std::vector<std::vector<std::string>> texts;  // [key][record]
  std::vector<int64_t> lines;                   // line number of each kept record
  std::vector<std::pair<int64_t, std::string>> errors;
  int64_t num_lines = 0;
};

// Parses every line of a block of complete JSONL lines. Lines are numbered from first_line.
ParsedBlock parse_block(const char* data, size_t size, const std::vector<std::string>& keys, int64_t first_line) {
  ParsedBlock out;
  std::unordered_map<std::string, size_t> wanted;
  for (size_t k = 0; k < keys.size(); ++k) wanted[keys[k]] = k;
  out.texts.resize(keys.size());
  std::vector<std::string> values(keys.size());
  std::vector<int> kinds(keys.size());
  const char* p = data;
  const char* end = data + size;
  int64_t line = first_line;
  while (p < end) {
    const char* nl = static_cast<const char*>(std::memchr(p, '\n', end - p));
    const char* line_end = nl ? nl : end;
    if (!is_blank(p, line_end)) {
      int64_t bad = find_invalid_utf8(reinterpret_cast<const unsigned char*>(p), line_end - p);
      if (bad >= 0) {
        out.errors.emplace_back(line, "invalid UTF-8");
      } else {
        std::fill(kinds.begin(), kinds.end(), 0);
        try {
          LineParser(p, line_end).parse_object(wanted, values, kinds);
          size_t k = 0;
          for (; k < keys.size(); ++k)
            if (kinds[k] != 1) break;
          if (k == keys.size()) {
            for (size_t j = 0; j < keys.size(); ++j) out.texts[j].push_back(std::move(values[j]));
            out.lines.push_back(line);
          } else if (kinds[k] == 0) {
            out.errors.emplace_back(line, "missing key '" + keys[k] + "'");
          } else {
            out.errors.emplace_back(line, "key '" + keys[k] + "' is not a string");
          }
        } catch (const ParseError& e) {
          out.errors.emplace_back(line, "bad JSON (" + e.reason + ")");
        }
      }
    }
    ++line;
    out.num_lines++;
    p = nl ? nl + 1 : end;
  }
  return out;
}

// ----------------------------------------------------------------------------------------------- packing

template <typename T>
void pack_into(std::string& out, const std::vector<std::pair<const int32_t*, size_t>>& seqs, int64_t eod,
               int64_t max_id, int64_t* bad, bool* bad_found) {
  size_t total = 0;
  for (auto& s : seqs) total += s.second + (eod >= 0 && s.second > 0 ? 1 : 0);
  size_t base = out.size();
  out.resize(base + total * sizeof(T));
  T* dst = reinterpret_cast<T*>(&out[base]);
  for (auto& s : seqs) {
    for (size_t i = 0; i < s.second; ++i) {
      int64_t v = s.first[i];
      if (v < 0 || v > max_id) {
        *bad = v;
        *bad_found = true;
      }
      *dst++ = static_cast<T>(v);
    }
    if (eod >= 0 && s.second > 0) *dst++ = static_cast<T>(eod);
  }
}

}  // namespace

PYBIND11_MODULE(_binarize, m) {
  m.doc() = "Binarization core: GIL-free JSONL block parsing and token packing (see tools/preprocess_data.py)";

  m.def(
      "parse_jsonl_block",
      [](py::buffer block, const std::vector<std::string>& keys, int64_t first_line) {
        py::buffer_info info = block.request();
        const char* data = static_cast<const char*>(info.ptr);
        size_t size = static_cast<size_t>(info.size * info.itemsize);
        ParsedBlock parsed;
        {
          py::gil_scoped_release release;
          parsed = parse_block(data, size, keys, first_line);
        }
        py::list texts;
        for (auto& per_key : parsed.texts) {
          py::list items(per_key.size());
          for (size_t i = 0; i < per_key.size(); ++i) items[i] = py::bytes(per_key[i]);
          texts.append(items);
        }
        py::list errors;
        for (auto& e : parsed.errors) errors.append(py::make_tuple(e.first, e.second));
        return py::make_tuple(texts, parsed.lines, errors, parsed.num_lines);
      },
      py::arg("block"), py::arg("keys"), py::arg("first_line"),
      "Parse a block of complete JSONL lines. Returns (texts[key][record] as UTF-8 bytes, line of each record, "
      "[(line, reason)] for skipped lines, number of lines). Blank lines are ignored.");

  m.def(
      "pack_tokens",
      [](const py::list& arrays, int itemsize, int64_t eod, int64_t max_id) {
        if (itemsize != 2 && itemsize != 4 && itemsize != 8)
          throw py::value_error("pack_tokens: itemsize must be 2, 4 or 8");
        // Each array is an int32 buffer (SentencePiece's numpy output), one document each.
        std::vector<py::buffer_info> infos;
        std::vector<std::pair<const int32_t*, size_t>> seqs;
        infos.reserve(arrays.size());
        for (auto a : arrays) {
          infos.push_back(py::reinterpret_borrow<py::buffer>(a).request());
          const auto& info = infos.back();
          if (info.itemsize != 4 || info.ndim != 1 || info.format != py::format_descriptor<int32_t>::format())
            throw py::value_error("pack_tokens expects 1-D int32 arrays");
          seqs.emplace_back(static_cast<const int32_t*>(info.ptr), static_cast<size_t>(info.size));
        }
        std::vector<int64_t> lengths(seqs.size());
        for (size_t i = 0; i < seqs.size(); ++i)
          lengths[i] = static_cast<int64_t>(seqs[i].second) + (eod >= 0 && seqs[i].second > 0 ? 1 : 0);
        std::string out;
        int64_t bad = 0;
        bool bad_found = false;
        {
          py::gil_scoped_release release;
          if (itemsize == 2) pack_into<uint16_t>(out, seqs, eod, max_id, &bad, &bad_found);
          else if (itemsize == 4) pack_into<int32_t>(out, seqs, eod, max_id, &bad, &bad_found);
          else pack_into<int64_t>(out, seqs, eod, max_id, &bad, &bad_found);
        }
        if (bad_found)
          throw py::value_error("token id " + std::to_string(bad) + " does not fit the dataset dtype (max " +
                                std::to_string(max_id) + ")");
        return py::make_tuple(py::bytes(out), lengths);
      },
      py::arg("arrays"), py::arg("itemsize"), py::arg("eod"), py::arg("max_id"),
      "Concatenate int32 token arrays into MMIDIDX bytes of the given itemsize, appending eod (if >= 0) to each "
      "non-empty document. Returns (bytes, lengths).");

  m.def(
      "find_invalid_utf8",
      [](py::buffer b) {
        py::buffer_info info = b.request();
        return find_invalid_utf8(static_cast<const unsigned char*>(info.ptr), info.size * info.itemsize);
      },
      "Offset of the first invalid UTF-8 byte, or -1.");
}
