// A small JSON tree for trusted, small documents (config.json, the shard index), built on
// the core's strict pull reader. Not for untrusted multi-megabyte headers (use the reader).
#pragma once
#include <string>
#include <utility>
#include <vector>

namespace lowrank::train {

struct JValue {
  enum class Type { Null, Bool, Number, String, Array, Object } type = Type::Null;
  bool boolean = false;
  double number = 0;
  std::string string;
  std::vector<JValue> items;
  std::vector<std::pair<std::string, JValue>> members;

  /** The member named key, or nullptr (also when this is not an object). */
  const JValue* get(const std::string& key) const;
  bool is_null() const { return type == Type::Null; }
};

/** Parses text; Error("invalid_config") with `label` and the byte offset on bad JSON. */
JValue parse_json(const std::string& text, const std::string& label);

}  // namespace lowrank::train
