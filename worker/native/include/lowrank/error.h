// The core's one error type: a stable code plus a message that names what is wrong
// (the tensor, the field) and what to fix. The addon turns it into a JS Error with `.code`.
#pragma once
#include <stdexcept>
#include <string>

namespace lowrank {

class Error : public std::runtime_error {
 public:
  Error(std::string code, const std::string& message) : std::runtime_error(message), code_(std::move(code)) {}
  const std::string& code() const { return code_; }

 private:
  std::string code_;
};

}  // namespace lowrank
