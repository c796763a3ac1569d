// Configure-time proof that clang's thread-safety analysis is on (cmake/CompilerFlags.cmake): this
// file writes a guarded member without its mutex, so with llmd's flags it must NOT compile.
#include "common/mutex.h"

struct Counter {
  llmd::Mutex mu;
  int n LLMD_GUARDED_BY(mu) = 0;
  void bump() { ++n; }  // the violation
};

int main() {
  Counter c;
  c.bump();
  return 0;
}
