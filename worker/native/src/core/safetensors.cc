// Reading safetensors: header validation (the Rust crate's rules, stricter JSON) and
// the memory-mapped file.
#include "lowrank/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <unordered_set>

#include "json.h"
#include "lowrank/error.h"

namespace lowrank::safetensors {
namespace {

// A name as a JSON literal, cut short so a hostile header cannot flood a message.
std::string quoted(std::string_view name) {
  constexpr size_t kMax = 200;
  std::string out;
  if (name.size() <= kMax) {
    json::append_quoted(out, name);
  } else {
    size_t cut = kMax;
    while (cut > 0 && (static_cast<unsigned char>(name[cut]) & 0xC0) == 0x80) --cut;  // whole UTF-8 chars
    json::append_quoted(out, name.substr(0, cut));
    out.insert(out.size() - 1, "...");
  }
  return out;
}

std::string shape_text(const std::vector<uint64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? "," : "") + std::to_string(shape[i]);
  return s + "]";
}

std::string span_text(uint64_t b, uint64_t e) { return "[" + std::to_string(b) + ", " + std::to_string(e) + "]"; }

class HeaderParser {
 public:
  HeaderParser(const char* json, size_t n, uint64_t data_size, std::string_view label)
      : reader_(json, n), data_size_(data_size), prefix_(label.empty() ? "" : std::string(label) + ": ") {}

  Header parse() {
    Header h;
    h.data_size = data_size_;
    std::unordered_set<std::string> names;
    std::string key;
    reader_.begin_object();
    while (reader_.next_member(key)) {
      if (key == "__metadata__") {
        if (h.metadata) fail("\"__metadata__\" appears twice in the header");
        h.metadata = parse_metadata();
      } else {
        if (!names.insert(key).second) fail_tensor(key, "appears twice in the header");
        h.tensors.push_back(parse_tensor(std::move(key)));
      }
    }
    reader_.finish();
    check_layout(h.tensors);
    return h;
  }

  [[noreturn]] void fail(const std::string& what) const { throw Error("invalid_file", prefix_ + what); }
  [[noreturn]] void fail_tensor(std::string_view name, const std::string& what) const {
    fail("tensor " + quoted(name) + ": " + what);
  }

 private:
  Metadata parse_metadata() {
    json::Kind k = reader_.peek();
    if (k != json::Kind::Object) fail(std::string("\"__metadata__\" must be an object of strings, got ") + json::kind_name(k));
    Metadata m;
    std::string key;
    reader_.begin_object();
    while (reader_.next_member(key)) {
      k = reader_.peek();
      if (k != json::Kind::String) {
        fail("\"__metadata__\" value " + quoted(key) + " must be a string, got " + json::kind_name(k));
      }
      std::string value = reader_.read_string();
      if (!m.emplace(key, std::move(value)).second) fail("\"__metadata__\" key " + quoted(key) + " appears twice");
    }
    return m;
  }

  uint64_t read_uint(std::string_view name, const std::string& what) {
    json::Kind k = reader_.peek();
    if (k != json::Kind::Number) fail_tensor(name, what + " must be a non-negative integer, got " + json::kind_name(k));
    json::Number n = reader_.read_number();
    if (!n.is_uint) {
      fail_tensor(name, what + " is " + std::string(n.text.substr(0, 40)) +
                            ", not a non-negative integer that fits in 64 bits");
    }
    return n.value;
  }

  TensorInfo parse_tensor(std::string name) {
    json::Kind k = reader_.peek();
    if (k != json::Kind::Object) {
      fail_tensor(name, std::string("entry must be an object with dtype, shape and data_offsets, got ") + json::kind_name(k));
    }
    TensorInfo t;
    bool has_dtype = false, has_shape = false, has_offsets = false;
    std::string field;
    reader_.begin_object();
    while (reader_.next_member(field)) {
      if (field == "dtype") {
        if (has_dtype) fail_tensor(name, "field \"dtype\" appears twice");
        has_dtype = true;
        k = reader_.peek();
        if (k != json::Kind::String) fail_tensor(name, std::string("dtype must be a string, got ") + json::kind_name(k));
        const std::string d = reader_.read_string();
        auto dt = parse_dtype(d);
        if (!dt) fail_tensor(name, "unknown dtype " + quoted(d) + " (known: " + std::string(dtype_names()) + ")");
        t.dtype = *dt;
      } else if (field == "shape") {
        if (has_shape) fail_tensor(name, "field \"shape\" appears twice");
        has_shape = true;
        k = reader_.peek();
        if (k != json::Kind::Array) fail_tensor(name, std::string("shape must be an array of integers, got ") + json::kind_name(k));
        reader_.begin_array();
        while (reader_.next_element()) {
          t.shape.push_back(read_uint(name, "shape entry " + std::to_string(t.shape.size())));
        }
      } else if (field == "data_offsets") {
        if (has_offsets) fail_tensor(name, "field \"data_offsets\" appears twice");
        has_offsets = true;
        k = reader_.peek();
        if (k != json::Kind::Array) fail_tensor(name, std::string("data_offsets must be an array [begin, end], got ") + json::kind_name(k));
        reader_.begin_array();
        uint64_t v[2];
        size_t count = 0;
        while (reader_.next_element()) {
          if (count == 2) fail_tensor(name, "data_offsets must have exactly 2 entries [begin, end], got more");
          v[count] = read_uint(name, count == 0 ? "data_offsets begin" : "data_offsets end");
          ++count;
        }
        if (count != 2) fail_tensor(name, "data_offsets must have exactly 2 entries [begin, end], got " + std::to_string(count));
        t.begin = v[0];
        t.end = v[1];
      } else {
        fail_tensor(name, "unexpected field " + quoted(field) + " (an entry has exactly dtype, shape and data_offsets)");
      }
    }
    if (!has_dtype) fail_tensor(name, "missing field \"dtype\"");
    if (!has_shape) fail_tensor(name, "missing field \"shape\"");
    if (!has_offsets) fail_tensor(name, "missing field \"data_offsets\"");

    const std::string span = span_text(t.begin, t.end);
    if (t.begin > t.end) fail_tensor(name, "data_offsets " + span + " begin after they end");
    if (t.end > data_size_) {
      fail_tensor(name, "data_offsets " + span + " run past the end of the data section (" + std::to_string(data_size_) + " bytes)");
    }
    const std::string what = "shape " + shape_text(t.shape) + " x " + std::string(dtype_name(t.dtype));
    auto nbytes = checked_nbytes(t.shape, t.dtype);
    if (!nbytes) fail_tensor(name, what + " needs more bytes than fit in 64 bits");
    if (*nbytes != t.end - t.begin) {
      fail_tensor(name, what + " needs " + std::to_string(*nbytes) + " bytes but data_offsets " + span + " span " +
                            std::to_string(t.end - t.begin));
    }
    t.name = std::move(name);
    return t;
  }

  // Spans must tile the data section exactly, as the Rust crate requires (it rejects
  // holes as MetadataIncompleteBuffer); the header itself may list them in any order.
  void check_layout(std::vector<TensorInfo>& tensors) const {
    std::stable_sort(tensors.begin(), tensors.end(), [](const TensorInfo& a, const TensorInfo& b) {
      return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
    });
    uint64_t pos = 0;
    const TensorInfo* prev = nullptr;
    for (const auto& t : tensors) {
      const std::string span = span_text(t.begin, t.end);
      if (t.begin < pos) {
        fail_tensor(t.name, "data_offsets " + span + " overlap tensor " + quoted(prev->name) + " at " +
                                span_text(prev->begin, prev->end));
      }
      if (t.begin > pos) {
        fail_tensor(t.name, "data_offsets " + span + " leave a hole of " + std::to_string(t.begin - pos) +
                                " bytes before them (" + (prev ? "tensor " + quoted(prev->name) + " ends at " + std::to_string(pos)
                                                               : std::string("no tensor starts at 0")) + ")");
      }
      pos = t.end;
      prev = &t;
    }
    if (pos != data_size_) {
      fail("the data section is " + std::to_string(data_size_) + " bytes but the tensors cover only " +
           std::to_string(pos) + ": the last " + std::to_string(data_size_ - pos) + " bytes belong to no tensor");
    }
  }

  json::Reader reader_;
  uint64_t data_size_;
  std::string prefix_;
};

}  // namespace

Header parse_header(const uint8_t* data, size_t size, uint64_t file_size, std::string_view label) {
  const std::string prefix = label.empty() ? "" : std::string(label) + ": ";
  auto fail = [&](const std::string& what) { return Error("invalid_file", prefix + what); };
  if (file_size < 8 || size < 8) {
    throw fail("file is " + std::to_string(file_size) + " bytes, too short for the 8-byte header length that starts a safetensors file");
  }
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | data[i];  // little-endian
  if (n > kMaxHeaderSize) {
    throw fail("header length " + std::to_string(n) + " is over the " + std::to_string(kMaxHeaderSize) +
               "-byte limit (not a safetensors file, or a corrupt one)");
  }
  if (n > file_size - 8) {
    throw fail("header length " + std::to_string(n) + " runs past the end of the file (" + std::to_string(file_size) +
               " bytes; the file is truncated or not a safetensors file)");
  }
  if (n > size - 8) throw fail("only " + std::to_string(size) + " bytes of the header were read");
  if (n == 0 || data[8] != '{') throw fail("header must be a JSON object starting with '{'");

  const char* json = reinterpret_cast<const char*>(data + 8);
  HeaderParser parser(json, static_cast<size_t>(n), file_size - 8 - n, label);
  Header h;
  try {
    h = parser.parse();
  } catch (const json::SyntaxError& e) {
    throw fail("header is not valid JSON: " + e.what + " at byte " + std::to_string(e.offset) + " of the header");
  }
  h.data_start = 8 + n;
  return h;
}

Mapping::~Mapping() {
  if (data_ && size_) munmap(data_, size_);
}

File File::open(const std::string& path) {
  auto os_error = [&](const char* what) {
    const int err = errno;
    return Error(err == ENOENT ? "not_found" : "io", path + ": " + what + ": " + std::strerror(err));
  };
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw os_error("cannot open");
  struct stat st;
  if (fstat(fd, &st) != 0) {
    Error e = os_error("cannot stat");
    ::close(fd);
    throw e;
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error("io", path + ": not a regular file");
  }
  const auto size = static_cast<uint64_t>(st.st_size);
  if (size < 8) {
    ::close(fd);
    uint8_t none[8] = {};
    parse_header(none, 0, size, path);  // throws the "too short" error
  }
  // MAP_PRIVATE + PROT_WRITE over a read-only descriptor: pages are copy-on-write, so a
  // caller writing into a returned view changes only its own copy (never the file) and
  // does not fault, which PROT_READ alone would turn into a crash.
  void* p = mmap(nullptr, static_cast<size_t>(size), PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  if (p == MAP_FAILED) {
    Error e = os_error("cannot map");
    ::close(fd);
    throw e;
  }
  ::close(fd);  // the mapping keeps the file alive
  File f;
  f.mapping_ = std::make_shared<Mapping>(static_cast<uint8_t*>(p), static_cast<size_t>(size));
  f.header_ = parse_header(f.mapping_->data(), f.mapping_->size(), size, path);
  return f;
}

}  // namespace lowrank::safetensors
