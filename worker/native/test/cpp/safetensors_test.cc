// Unit tests for the safetensors header parser, the JSON reader beneath it, the writer's
// layout and the f16/bf16 conversions.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include "../../src/core/json.h"
#include "lowrank/dtype.h"
#include "lowrank/error.h"
#include "lowrank/safetensors.h"

namespace st = lowrank::safetensors;
using lowrank::DType;

namespace {

std::vector<uint8_t> file_with(const std::string& header, size_t data_bytes = 0, uint64_t length = UINT64_MAX) {
  const uint64_t n = length == UINT64_MAX ? header.size() : length;
  std::vector<uint8_t> f(8);
  for (int i = 0; i < 8; ++i) f[i] = static_cast<uint8_t>(n >> (8 * i));
  f.insert(f.end(), header.begin(), header.end());
  f.resize(f.size() + data_bytes, 0);
  return f;
}

st::Header parse(const std::vector<uint8_t>& f) { return st::parse_header(f.data(), f.size(), f.size(), "t.safetensors"); }

// The message of the invalid_file error parsing `f` throws ("" when it parses).
std::string error_of(const std::vector<uint8_t>& f) {
  try {
    parse(f);
  } catch (const lowrank::Error& e) {
    EXPECT_EQ(e.code(), "invalid_file");
    return e.what();
  }
  return "";
}

uint32_t bits(float f) { return lowrank::f32_bits(f); }

}  // namespace

TEST(SafetensorsHeader, ParsesAValidHeaderAndSortsByOffset) {
  auto f = file_with(
      R"({"__metadata__":{"format":"pt"},"b":{"dtype":"BF16","shape":[2],"data_offsets":[8,12]},)"
      R"("a":{"shape":[2],"data_offsets":[0,8],"dtype":"F32"}}   )",
      12);
  st::Header h = parse(f);
  ASSERT_TRUE(h.metadata.has_value());
  EXPECT_EQ(h.metadata->at("format"), "pt");
  ASSERT_EQ(h.tensors.size(), 2u);
  EXPECT_EQ(h.tensors[0].name, "a");
  EXPECT_EQ(h.tensors[0].dtype, DType::F32);
  EXPECT_EQ(h.tensors[1].name, "b");
  EXPECT_EQ(h.tensors[1].begin, 8u);
  EXPECT_EQ(h.data_start, 8 + f.size() - 8 - 12);
  EXPECT_EQ(h.data_size, 12u);
}

TEST(SafetensorsHeader, RejectsMalformedBuffers) {
  struct Case {
    std::vector<uint8_t> file;
    const char* expect;
  };
  const Case cases[] = {
      {{1, 2, 3}, "t.safetensors: file is 3 bytes, too short"},
      {file_with("{}", 0, 100'000'001), "over the 100000000-byte limit"},
      {file_with("{}", 0, 64), "header length 64 runs past the end of the file"},
      {file_with("{} x"), "unexpected data after the top-level object at byte 3"},
      {file_with(R"({"a":1,"a":2})"), "tensor \"a\": entry must be an object"},
      {file_with(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"w":{}})", 4), "tensor \"w\": appears twice"},
      {file_with(R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4), "shape entry 0 is -1"},
      {file_with(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8),
       "t.safetensors: tensor \"w\": shape [3] x F32 needs 12 bytes but data_offsets [0, 8] span 8"},
      {file_with(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"b":{"dtype":"U8","shape":[1],"data_offsets":[2,3]}})", 3),
       "tensor \"b\": data_offsets [2, 3] leave a hole of 1 bytes"},
      {file_with(R"({"__metadata__":{"k":null}})"), "\"__metadata__\" value \"k\" must be a string, got true/false/null"},
      {file_with("{\"\xed\xa0\x80\":{}}"), "invalid UTF-8"},
  };
  for (const auto& c : cases) {
    const std::string msg = error_of(c.file);
    EXPECT_NE(msg.find(c.expect), std::string::npos) << "got: " << msg << "\nwant: " << c.expect;
  }
}

TEST(SafetensorsHeader, NeverReadsPastTheGivenBytes) {
  // The length says 64 bytes of header but only 10 are available: refused, not read.
  auto f = file_with("{}", 0, 2);
  f[0] = 64;
  std::vector<uint8_t> exact(f.begin(), f.end());
  EXPECT_NE(error_of(exact).find("runs past the end"), std::string::npos);
  // Every prefix of a valid file fails cleanly (ASan catches any overread).
  auto good = file_with(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 8);
  for (size_t n = 0; n < good.size(); ++n) {
    std::vector<uint8_t> prefix(good.begin(), good.begin() + static_cast<long>(n));
    EXPECT_NE(error_of(prefix), "") << n;
  }
  EXPECT_EQ(error_of(good), "");
}

TEST(JsonReader, DecodesEscapesAndRejectsBadInput) {
  const std::string text = R"("a\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00")";
  lowrank::json::Reader r(text.data(), text.size());
  EXPECT_EQ(r.read_string(), "a\"\\/\b\f\n\r\t\xc3\xa9\xf0\x9f\x98\x80");
  for (const std::string bad : {R"("\ud800")", R"("\udc00")", R"("\x")", "\"\x01\"", "\"\xc0\x80\"", "\"abc"}) {
    lowrank::json::Reader b(bad.data(), bad.size());
    EXPECT_THROW(b.read_string(), lowrank::json::SyntaxError) << bad;
  }
  const std::string deep(100, '[');
  lowrank::json::Reader d(deep.data(), deep.size());
  EXPECT_THROW(
      {
        for (int i = 0; i < 100; ++i) d.begin_array();
      },
      lowrank::json::SyntaxError);
  for (const std::string bad : {"01", "-", "1.", "1e", "+1"}) {
    lowrank::json::Reader b(bad.data(), bad.size());
    EXPECT_ANY_THROW(b.read_number()) << bad;
  }
  const std::string big = "18446744073709551615 18446744073709551616";
  lowrank::json::Reader n(big.data(), big.size());
  auto a = n.read_number();
  EXPECT_TRUE(a.is_uint);
  EXPECT_EQ(a.value, UINT64_MAX);
  EXPECT_FALSE(n.read_number().is_uint);
}

TEST(Float16, RoundTripsEveryNonNaNPattern) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = lowrank::f16_to_f32(static_cast<uint16_t>(h));
    if (std::isnan(f)) {
      EXPECT_EQ(h & 0x7C00u, 0x7C00u);
      EXPECT_EQ(lowrank::f32_to_f16(f) & 0x7E00u, 0x7E00u);  // stays a (quiet) NaN
      continue;
    }
    EXPECT_EQ(lowrank::f32_to_f16(f), h) << std::hex << h;
  }
}

TEST(Float16, KnownValuesAndRounding) {
  EXPECT_EQ(lowrank::f16_to_f32(0x3C00), 1.0f);
  EXPECT_EQ(lowrank::f16_to_f32(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(lowrank::f16_to_f32(0x03FF), std::ldexp(1023.0f, -24));
  EXPECT_EQ(lowrank::f16_to_f32(0x7BFF), 65504.0f);
  EXPECT_TRUE(std::isinf(lowrank::f16_to_f32(0xFC00)) && lowrank::f16_to_f32(0xFC00) < 0);
  EXPECT_EQ(lowrank::f32_to_f16(65520.0f), 0x7C00);              // tie to even: inf
  EXPECT_EQ(lowrank::f32_to_f16(std::ldexp(1.0f, -25)), 0x0000);  // tie to even: zero
  EXPECT_EQ(lowrank::f32_to_f16(std::ldexp(3.0f, -25)), 0x0002);
  EXPECT_EQ(lowrank::f32_to_f16(1.0f + std::ldexp(1.0f, -11)), 0x3C00);
  EXPECT_EQ(lowrank::f32_to_f16(1.0f + std::ldexp(3.0f, -11)), 0x3C02);
  EXPECT_EQ(lowrank::f32_to_f16(-0.0f), 0x8000);
  EXPECT_EQ(lowrank::f32_to_f16(std::nanf("")), 0x7E00);
}

TEST(BFloat16, RoundsToNearestEven) {
  auto from = [](uint32_t u) { return lowrank::f32_from_bits(u); };
  EXPECT_EQ(lowrank::f32_to_bf16(from(0x3F808000)), 0x3F80);
  EXPECT_EQ(lowrank::f32_to_bf16(from(0x3F818000)), 0x3F82);
  EXPECT_EQ(lowrank::f32_to_bf16(from(0x3F808001)), 0x3F81);
  EXPECT_EQ(lowrank::f32_to_bf16(from(0x7F7FFFFF)), 0x7F80);
  EXPECT_EQ(lowrank::f32_to_bf16(from(0xFF800000)), 0xFF80);
  EXPECT_EQ(lowrank::f32_to_bf16(from(0xFFC00001)), 0x7FC0);
  for (uint32_t b = 0; b < 65536; ++b) {
    EXPECT_EQ(bits(lowrank::bf16_to_f32(static_cast<uint16_t>(b))), b << 16);
  }
}

TEST(Conversions, BulkMatchesScalarAndHandlesUnalignedInput) {
  std::vector<float> src;
  for (int i = -2000; i < 2000; ++i) src.push_back(std::ldexp(static_cast<float>(i) * 1.37f, i % 40 - 20));
  std::vector<uint16_t> h(src.size()), b(src.size());
  lowrank::f32_to_f16(src.data(), h.data(), src.size());
  lowrank::f32_to_bf16(src.data(), b.data(), src.size());
  for (size_t i = 0; i < src.size(); ++i) {
    EXPECT_EQ(h[i], lowrank::f32_to_f16(src[i]));
    EXPECT_EQ(b[i], lowrank::f32_to_bf16(src[i]));
  }
  std::vector<uint8_t> unaligned(1 + h.size() * 2);
  std::memcpy(unaligned.data() + 1, h.data(), h.size() * 2);
  std::vector<float> out(h.size());
  lowrank::to_float32(DType::F16, unaligned.data() + 1, out.data(), h.size());
  for (size_t i = 0; i < h.size(); ++i) EXPECT_EQ(bits(out[i]), bits(lowrank::f16_to_f32(h[i])));
  EXPECT_THROW(lowrank::to_float32(DType::I64, unaligned.data(), out.data(), 1), lowrank::Error);
}

TEST(SafetensorsWriter, UsesTheRustLayoutAndReadsBack) {
  const float f[2] = {1.0f, -2.0f};
  const uint16_t half[1] = {0x3C00};
  const int8_t q[3] = {-1, 0, 1};
  std::vector<lowrank::TensorView> views = {
      {"q", DType::I8, {3}, q, 3}, {"h", DType::F16, {1}, half, 2}, {"f", DType::F32, {2}, f, 8}};
  char dir[] = "/tmp/lowrank-st-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  const std::string path = std::string(dir) + "/a.safetensors";
  st::write_file(path, views, st::Metadata{{"format", "pt"}});
  st::File file = st::File::open(path);
  const auto& h = file.header();
  EXPECT_EQ((h.data_start - 8) % 8, 0u);
  ASSERT_EQ(h.tensors.size(), 3u);
  EXPECT_EQ(h.tensors[0].name, "f");
  EXPECT_EQ(h.tensors[1].name, "h");
  EXPECT_EQ(h.tensors[2].name, "q");
  EXPECT_EQ(std::memcmp(file.data(h.tensors[0]), f, 8), 0);
  EXPECT_EQ(std::memcmp(file.data(h.tensors[2]), q, 3), 0);
  EXPECT_EQ(h.metadata->at("format"), "pt");

  std::vector<lowrank::TensorView> dup = {{"a", DType::I8, {1}, q, 1}, {"a", DType::I8, {1}, q, 1}};
  EXPECT_THROW(st::write_file(path, dup, std::nullopt), lowrank::Error);
  std::vector<lowrank::TensorView> wrong = {{"a", DType::F32, {2}, f, 4}};
  EXPECT_THROW(st::write_file(path, wrong, std::nullopt), lowrank::Error);
  unlink(path.c_str());
  rmdir(dir);
}
