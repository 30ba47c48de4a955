// JSON tree on top of json::Reader (see jvalue.h).
#include "jvalue.h"

#include <cstdlib>

#include "../core/json.h"
#include "lowrank/error.h"

namespace lowrank::train {
namespace {

JValue read_value(json::Reader& r) {
  JValue v;
  switch (r.peek()) {
    case json::Kind::Object: {
      v.type = JValue::Type::Object;
      r.begin_object();
      std::string key;
      while (r.next_member(key)) {
        JValue child = read_value(r);
        v.members.emplace_back(key, std::move(child));
      }
      break;
    }
    case json::Kind::Array:
      v.type = JValue::Type::Array;
      r.begin_array();
      while (r.next_element()) v.items.push_back(read_value(r));
      break;
    case json::Kind::String:
      v.type = JValue::Type::String;
      v.string = r.read_string();
      break;
    case json::Kind::Number: {
      v.type = JValue::Type::Number;
      std::string text(r.read_number().text);
      v.number = std::strtod(text.c_str(), nullptr);
      break;
    }
    case json::Kind::Literal: {
      std::string_view lit = r.read_literal();
      if (lit == "null") {
        v.type = JValue::Type::Null;
      } else {
        v.type = JValue::Type::Bool;
        v.boolean = lit == "true";
      }
      break;
    }
  }
  return v;
}

}  // namespace

const JValue* JValue::get(const std::string& key) const {
  // Last one wins, as Python's json.load.
  const JValue* found = nullptr;
  for (const auto& [k, v] : members)
    if (k == key) found = &v;
  return found;
}

JValue parse_json(const std::string& text, const std::string& label) {
  json::Reader r(text.data(), text.size());
  try {
    JValue v = read_value(r);
    r.finish();
    return v;
  } catch (const json::SyntaxError& e) {
    throw Error("invalid_config", label + ": invalid JSON at byte " + std::to_string(e.offset) + ": " + e.what);
  }
}

}  // namespace lowrank::train
