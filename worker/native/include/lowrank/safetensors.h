// The safetensors format (https://github.com/huggingface/safetensors): an 8-byte
// little-endian header length, a JSON header, then the data section. Reading validates
// the whole header before any tensor byte is touched; writing is atomic (temp + rename).
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "lowrank/tensor.h"

namespace lowrank::safetensors {

/** The Rust crate's MAX_HEADER_SIZE: larger headers are refused, not parsed. */
constexpr uint64_t kMaxHeaderSize = 100'000'000;

using Metadata = std::map<std::string, std::string>;

struct Header {
  std::optional<Metadata> metadata;  // present iff the file has "__metadata__"
  std::vector<TensorInfo> tensors;   // sorted by data offset (file order)
  uint64_t data_start = 0;           // 8 + header length
  uint64_t data_size = 0;
};

/**
 * Validates a file's header completely: `data` holds the file's first `size` bytes of
 * `file_size` (the whole header must be among them). Throws lowrank::Error("invalid_file")
 * with a message prefixed by `label` (the file's name), never reads past data + size.
 */
Header parse_header(const uint8_t* data, size_t size, uint64_t file_size, std::string_view label);

/** A private, read-only-file memory map; unmapped when the last owner lets go. */
class Mapping {
 public:
  Mapping(uint8_t* data, size_t size) : data_(data), size_(size) {}
  ~Mapping();
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  uint8_t* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  uint8_t* data_;
  size_t size_;
};

/** An opened, validated safetensors file. */
class File {
 public:
  /** Maps and validates `path`; Error "not_found" / "io" / "invalid_file". */
  static File open(const std::string& path);
  const Header& header() const { return header_; }
  /** The mapping; its pages are copy-on-write, so writes never reach the file. */
  const std::shared_ptr<Mapping>& mapping() const { return mapping_; }
  /** Start of a tensor's bytes inside the mapping. */
  uint8_t* data(const TensorInfo& t) const { return mapping_->data() + header_.data_start + t.begin; }

 private:
  std::shared_ptr<Mapping> mapping_;
  Header header_;
};

/**
 * The padded header JSON for `tensors`, which it reorders into the file layout the Rust
 * crate uses (dtype alignment descending, then name). Error "invalid_request" for
 * duplicate or reserved names, invalid UTF-8, or data whose size does not match its shape.
 */
std::string serialize_header(std::vector<TensorView>& tensors, const std::optional<Metadata>& metadata);

/** Writes a safetensors file atomically: a temp file in the same directory, fsync, rename. */
void write_file(const std::string& path, std::vector<TensorView> tensors, const std::optional<Metadata>& metadata);

}  // namespace lowrank::safetensors
