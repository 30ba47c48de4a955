// Writing safetensors byte-compatible with the Rust crate (and so Python safetensors and
// PEFT): same tensor order, same compact JSON, header padded with spaces to 8 bytes.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <unordered_set>

#include "json.h"
#include "lowrank/error.h"
#include "lowrank/safetensors.h"

namespace lowrank::safetensors {
namespace {

[[noreturn]] void bad_request(const std::string& what) { throw Error("invalid_request", "cannot write safetensors: " + what); }

std::string quoted(std::string_view s) {
  std::string out;
  json::append_quoted(out, s.substr(0, 200));
  return out;
}

void write_all(int fd, const void* data, size_t n) {
  const auto* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = ::write(fd, p, std::min<size_t>(n, size_t{1} << 30));
    if (w < 0) {
      if (errno == EINTR) continue;
      throw errno;
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
}

// Opens a fresh temp file next to `path` (O_EXCL; mode 0666 minus the umask, like any file).
int open_temp(const std::string& path, std::string& tmp) {
  static std::atomic<uint64_t> counter{0};
  const auto seed = static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  for (int attempt = 0; attempt < 100; ++attempt) {
    tmp = path + ".tmp-" + std::to_string(getpid()) + "-" + std::to_string(seed % 1000000) + "-" +
          std::to_string(counter.fetch_add(1));
    const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd >= 0 || errno != EEXIST) return fd;
  }
  errno = EEXIST;
  return -1;
}

std::string parent_dir(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

}  // namespace

std::string serialize_header(std::vector<TensorView>& tensors, const std::optional<Metadata>& metadata) {
  std::unordered_set<std::string_view> names;
  for (const auto& t : tensors) {
    if (t.name == "__metadata__") bad_request("\"__metadata__\" is reserved and cannot name a tensor");
    if (!json::valid_utf8(t.name)) bad_request("tensor name " + quoted(t.name) + " is not valid UTF-8");
    if (!names.insert(t.name).second) bad_request("tensor " + quoted(t.name) + " is given twice");
    auto nbytes = checked_nbytes(t.shape, t.dtype);
    if (!nbytes || *nbytes != t.nbytes) {
      bad_request("tensor " + quoted(t.name) + ": its data is " + std::to_string(t.nbytes) + " bytes, which does not match its shape and dtype " + std::string(dtype_name(t.dtype)));
    }
  }
  // The Rust crate's order: dtype (alignment) descending, then name; keeps every
  // tensor aligned to its element size when the data section is 8-aligned.
  std::sort(tensors.begin(), tensors.end(), [](const TensorView& a, const TensorView& b) {
    return a.dtype != b.dtype ? a.dtype > b.dtype : a.name < b.name;
  });

  std::string h = "{";
  if (metadata) {
    h += "\"__metadata__\":{";
    bool first = true;
    for (const auto& [k, v] : *metadata) {
      if (!json::valid_utf8(k) || !json::valid_utf8(v)) bad_request("metadata " + quoted(k) + " is not valid UTF-8");
      if (!first) h += ',';
      first = false;
      json::append_quoted(h, k);
      h += ':';
      json::append_quoted(h, v);
    }
    h += '}';
  }
  uint64_t offset = 0;
  for (const auto& t : tensors) {
    if (h.size() > 1) h += ',';
    json::append_quoted(h, t.name);
    h += ":{\"dtype\":\"";
    h += dtype_name(t.dtype);
    h += "\",\"shape\":[";
    for (size_t i = 0; i < t.shape.size(); ++i) h += (i ? "," : "") + std::to_string(t.shape[i]);
    h += "],\"data_offsets\":[" + std::to_string(offset) + "," + std::to_string(offset + t.nbytes) + "]}";
    offset += t.nbytes;
  }
  h += '}';
  h.append((8 - h.size() % 8) % 8, ' ');
  if (h.size() > kMaxHeaderSize) bad_request("the header would be " + std::to_string(h.size()) + " bytes, over the 100000000-byte limit");
  return h;
}

void write_file(const std::string& path, std::vector<TensorView> tensors, const std::optional<Metadata>& metadata) {
  const std::string header = serialize_header(tensors, metadata);
  std::string tmp;
  const int fd = open_temp(path, tmp);
  if (fd < 0) throw Error(errno == ENOENT ? "not_found" : "io", path + ": cannot create a temporary file beside it: " + std::strerror(errno));
  const char* step = "write";
  try {
    uint8_t len[8];
    uint64_t n = header.size();
    for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(n >> (8 * i));
    write_all(fd, len, 8);
    write_all(fd, header.data(), header.size());
    for (const auto& t : tensors) write_all(fd, t.data, t.nbytes);
    step = "fsync";
    if (fsync(fd) != 0) throw errno;
    step = "close";
    const int rc = ::close(fd);
    if (rc != 0) {
      const int err = errno;
      ::unlink(tmp.c_str());
      throw Error("io", path + ": cannot close the temporary file: " + std::strerror(err));
    }
  } catch (int err) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw Error("io", path + ": cannot " + step + " the temporary file: " + std::strerror(err));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    throw Error("io", path + ": cannot rename the temporary file into place: " + std::strerror(err));
  }
  // Persist the rename itself; a failure here leaves a complete file, so it is not an error.
  const int dir = ::open(parent_dir(path).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir >= 0) {
    fsync(dir);
    ::close(dir);
  }
}

}  // namespace lowrank::safetensors
