// A strict RFC 8259 pull reader for untrusted headers: no DOM (a 100 MB header cannot
// blow up memory), bounded nesting, UTF-8 validated, lone surrogates and control
// characters refused. The caller drives it by the schema it expects and checks keys
// for duplicates. Internal to the core.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace lowrank::json {

enum class Kind { Object, Array, String, Number, Literal };

/** Malformed JSON: `offset` is the byte (from the reader's start) where it went wrong. */
struct SyntaxError {
  size_t offset;
  std::string what;
};

struct Number {
  std::string_view text;
  bool is_uint = false;  // no sign, fraction or exponent, and fits in 64 bits
  uint64_t value = 0;
};

class Reader {
 public:
  static constexpr size_t kMaxDepth = 64;

  Reader(const char* data, size_t size) : p_(data), begin_(data), end_(data + size) {}

  /** Kind of the next value; throws when no value starts here. */
  Kind peek();
  void begin_object();
  /** Next key of the current object, or false at its '}'. */
  bool next_member(std::string& key);
  void begin_array();
  /** Whether another element follows in the current array (false at its ']'). */
  bool next_element();
  std::string read_string();
  Number read_number();
  /** true, false or null, returned as written. */
  std::string_view read_literal();
  /** Only whitespace may remain. */
  void finish();
  size_t offset() const { return static_cast<size_t>(p_ - begin_); }

 private:
  [[noreturn]] void fail(const std::string& what) const;
  void skip_ws();
  void expect(char c, const char* what);
  void push();
  uint32_t read_hex4();
  void append_utf8(std::string& out, uint32_t cp);

  const char* p_;
  const char* begin_;
  const char* end_;
  std::vector<bool> first_;  // per open container: no element read yet
};

/** Kind in words, for "got a ..." messages. */
const char* kind_name(Kind k);

/** `s` as a JSON string literal (serde_json's escaping), for headers and messages. */
void append_quoted(std::string& out, std::string_view s);

/** Whether `s` is well-formed UTF-8 (no overlongs, surrogates or code points > U+10FFFF). */
bool valid_utf8(std::string_view s);

}  // namespace lowrank::json
