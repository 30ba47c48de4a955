// The strict JSON pull reader (see json.h).
#include "json.h"

#include <cstring>

namespace lowrank::json {
namespace {

bool is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
bool is_digit(char c) { return c >= '0' && c <= '9'; }

// Length of the UTF-8 sequence at s (s < end), or 0 when malformed (RFC 3629 table).
size_t utf8_len(const unsigned char* s, const unsigned char* end) {
  const unsigned char c = s[0];
  if (c < 0x80) return 1;
  size_t n;
  unsigned char lo = 0x80, hi = 0xBF;
  if (c >= 0xC2 && c <= 0xDF) {
    n = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;  // no UTF-16 surrogates
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;  // nothing above U+10FFFF
  } else {
    return 0;
  }
  if (static_cast<size_t>(end - s) < n) return 0;
  if (s[1] < lo || s[1] > hi) return 0;
  for (size_t i = 2; i < n; ++i) {
    if (s[i] < 0x80 || s[i] > 0xBF) return 0;
  }
  return n;
}

}  // namespace

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::Object: return "an object";
    case Kind::Array: return "an array";
    case Kind::String: return "a string";
    case Kind::Number: return "a number";
    case Kind::Literal: return "true/false/null";
  }
  return "a value";
}

bool valid_utf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const auto* end = p + s.size();
  while (p < end) {
    size_t n = utf8_len(p, end);
    if (n == 0) return false;
    p += n;
  }
  return true;
}

void append_quoted(std::string& out, std::string_view s) {
  static const char hex[] = "0123456789abcdef";
  out.push_back('"');
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          out += "\\u00";
          out.push_back(hex[c >> 4]);
          out.push_back(hex[c & 15]);
        } else {
          out.push_back(ch);
        }
    }
  }
  out.push_back('"');
}

void Reader::fail(const std::string& what) const { throw SyntaxError{offset(), what}; }

void Reader::skip_ws() {
  while (p_ < end_ && is_ws(*p_)) ++p_;
}

void Reader::expect(char c, const char* what) {
  skip_ws();
  if (p_ >= end_ || *p_ != c) fail(std::string("expected ") + what);
  ++p_;
}

void Reader::push() {
  if (first_.size() >= kMaxDepth) fail("nesting deeper than " + std::to_string(kMaxDepth) + " levels");
  first_.push_back(true);
}

Kind Reader::peek() {
  skip_ws();
  if (p_ >= end_) fail("unexpected end of the header, expected a value");
  switch (*p_) {
    case '{': return Kind::Object;
    case '[': return Kind::Array;
    case '"': return Kind::String;
    case 't':
    case 'f':
    case 'n': return Kind::Literal;
    default:
      if (*p_ == '-' || is_digit(*p_)) return Kind::Number;
  }
  const auto c = static_cast<unsigned char>(*p_);
  if (c >= 0x20 && c < 0x7F) fail(std::string("unexpected character '") + *p_ + "', expected a value");
  fail("unexpected byte 0x" + std::string(1, "0123456789abcdef"[c >> 4]) + "0123456789abcdef"[c & 15] +
       ", expected a value");
}

void Reader::begin_object() {
  expect('{', "'{'");
  push();
}

bool Reader::next_member(std::string& key) {
  skip_ws();
  if (p_ < end_ && *p_ == '}') {
    ++p_;
    first_.pop_back();
    return false;
  }
  if (!first_.back()) {
    if (p_ >= end_ || *p_ != ',') fail("expected ',' or '}' after an object member");
    ++p_;
    skip_ws();
  }
  first_.back() = false;
  if (p_ >= end_ || *p_ != '"') fail("expected a string key");
  key = read_string();
  expect(':', "':' after an object key");
  return true;
}

void Reader::begin_array() {
  expect('[', "'['");
  push();
}

bool Reader::next_element() {
  skip_ws();
  if (first_.back()) {
    if (p_ < end_ && *p_ == ']') {
      ++p_;
      first_.pop_back();
      return false;
    }
    first_.back() = false;
    return true;
  }
  if (p_ < end_ && *p_ == ']') {
    ++p_;
    first_.pop_back();
    return false;
  }
  if (p_ >= end_ || *p_ != ',') fail("expected ',' or ']' after an array element");
  ++p_;
  return true;
}

uint32_t Reader::read_hex4() {
  if (end_ - p_ < 4) fail("truncated \\u escape");
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) {
    const char c = *p_++;
    v <<= 4;
    if (is_digit(c)) v |= static_cast<uint32_t>(c - '0');
    else if (c >= 'a' && c <= 'f') v |= static_cast<uint32_t>(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F') v |= static_cast<uint32_t>(c - 'A' + 10);
    else fail("invalid hex digit in \\u escape");
  }
  return v;
}

void Reader::append_utf8(std::string& out, uint32_t cp) {
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

std::string Reader::read_string() {
  expect('"', "a string");
  std::string out;
  for (;;) {
    // Copy a run of plain bytes at once.
    const char* run = p_;
    while (p_ < end_) {
      const auto c = static_cast<unsigned char>(*p_);
      if (c == '"' || c == '\\' || c < 0x20 || c >= 0x80) break;
      ++p_;
    }
    out.append(run, static_cast<size_t>(p_ - run));
    if (p_ >= end_) fail("unterminated string");
    const auto c = static_cast<unsigned char>(*p_);
    if (c == '"') {
      ++p_;
      return out;
    }
    if (c < 0x20) fail("control character in a string (must be escaped)");
    if (c >= 0x80) {
      const size_t n = utf8_len(reinterpret_cast<const unsigned char*>(p_), reinterpret_cast<const unsigned char*>(end_));
      if (n == 0) fail("invalid UTF-8 in a string");
      out.append(p_, n);
      p_ += n;
      continue;
    }
    ++p_;  // backslash
    if (p_ >= end_) fail("unterminated escape");
    const char e = *p_++;
    switch (e) {
      case '"': out.push_back('"'); break;
      case '\\': out.push_back('\\'); break;
      case '/': out.push_back('/'); break;
      case 'b': out.push_back('\b'); break;
      case 'f': out.push_back('\f'); break;
      case 'n': out.push_back('\n'); break;
      case 'r': out.push_back('\r'); break;
      case 't': out.push_back('\t'); break;
      case 'u': {
        uint32_t cp = read_hex4();
        if (cp >= 0xDC00 && cp <= 0xDFFF) fail("lone low surrogate in \\u escape");
        if (cp >= 0xD800 && cp <= 0xDBFF) {
          if (end_ - p_ < 2 || p_[0] != '\\' || p_[1] != 'u') fail("high surrogate not followed by a low surrogate");
          p_ += 2;
          const uint32_t lo = read_hex4();
          if (lo < 0xDC00 || lo > 0xDFFF) fail("high surrogate not followed by a low surrogate");
          cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        }
        append_utf8(out, cp);
        break;
      }
      default:
        fail("invalid escape in a string");
    }
  }
}

Number Reader::read_number() {
  skip_ws();
  const char* start = p_;
  Number n;
  bool negative = false;
  if (p_ < end_ && *p_ == '-') {
    negative = true;
    ++p_;
  }
  if (p_ >= end_ || !is_digit(*p_)) fail("invalid number");
  bool overflow = false;
  uint64_t v = 0;
  if (*p_ == '0') {
    ++p_;
    if (p_ < end_ && is_digit(*p_)) fail("invalid number (leading zero)");
  } else {
    while (p_ < end_ && is_digit(*p_)) {
      const uint64_t d = static_cast<uint64_t>(*p_ - '0');
      if (v > (UINT64_MAX - d) / 10) overflow = true;
      v = v * 10 + d;
      ++p_;
    }
  }
  bool integral = true;
  if (p_ < end_ && *p_ == '.') {
    integral = false;
    ++p_;
    if (p_ >= end_ || !is_digit(*p_)) fail("invalid number (no digit after '.')");
    while (p_ < end_ && is_digit(*p_)) ++p_;
  }
  if (p_ < end_ && (*p_ == 'e' || *p_ == 'E')) {
    integral = false;
    ++p_;
    if (p_ < end_ && (*p_ == '+' || *p_ == '-')) ++p_;
    if (p_ >= end_ || !is_digit(*p_)) fail("invalid number (no digit in exponent)");
    while (p_ < end_ && is_digit(*p_)) ++p_;
  }
  n.text = std::string_view(start, static_cast<size_t>(p_ - start));
  n.is_uint = integral && !negative && !overflow;
  n.value = n.is_uint ? v : 0;
  return n;
}

std::string_view Reader::read_literal() {
  skip_ws();
  for (const char* lit : {"true", "false", "null"}) {
    const size_t len = std::strlen(lit);
    if (static_cast<size_t>(end_ - p_) >= len && std::memcmp(p_, lit, len) == 0) {
      p_ += len;
      return std::string_view(p_ - len, len);
    }
  }
  fail("invalid literal");
}

void Reader::finish() {
  skip_ws();
  if (p_ != end_) fail("unexpected data after the top-level object");
}

}  // namespace lowrank::json
