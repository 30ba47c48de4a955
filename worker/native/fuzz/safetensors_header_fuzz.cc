// libFuzzer target: arbitrary bytes as a whole safetensors file through the complete
// header validation. Beyond "no crash, no sanitizer report", it checks that whatever is
// accepted is in bounds and survives our writer's serialization unchanged.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "lowrank/error.h"
#include "lowrank/safetensors.h"

namespace st = lowrank::safetensors;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  st::Header h;
  try {
    h = st::parse_header(data, size, size, "fuzz");
  } catch (const lowrank::Error&) {
    return 0;
  }
  for (const auto& t : h.tensors) {
    if (t.begin > t.end || h.data_start + t.end > size) abort();
  }
  // Re-serialize what was accepted; the result must parse to the same tensors.
  std::vector<lowrank::TensorView> views;
  for (const auto& t : h.tensors) {
    views.push_back({t.name, t.dtype, t.shape, data + h.data_start + t.begin, static_cast<size_t>(t.end - t.begin)});
  }
  std::string header;
  try {
    header = st::serialize_header(views, h.metadata);
  } catch (const lowrank::Error&) {
    abort();  // everything the reader accepts, the writer must be able to write
  }
  std::vector<uint8_t> file(8);
  for (int i = 0; i < 8; ++i) file[i] = static_cast<uint8_t>(static_cast<uint64_t>(header.size()) >> (8 * i));
  file.insert(file.end(), header.begin(), header.end());
  for (const auto& v : views) {
    const auto* p = static_cast<const uint8_t*>(v.data);
    file.insert(file.end(), p, p + v.nbytes);
  }
  st::Header again = st::parse_header(file.data(), file.size(), file.size(), "fuzz-rewrite");
  if (again.tensors.size() != h.tensors.size() || again.metadata != h.metadata || again.data_size != h.data_size) abort();
  return 0;
}
