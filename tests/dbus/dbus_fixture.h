// The D-Bus tests' fixture: a private bus (private_bus.h) and the real llmd serving on it.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "tests/dbus/bus_client.h"
#include "tests/dbus/private_bus.h"
#include "tests/e2e/e2e_util.h"

namespace llmd::test {

// Starts llmd with `--bus ADDRESS` (plus args) and waits until it owns org.llmd.LLM1; null (and a
// test failure) otherwise.
inline std::unique_ptr<DaemonProcess> start_on_bus(const PrivateBus& bus, std::vector<std::string> args = {},
                                                   std::vector<std::string> env = {}) {
  DaemonOptions o;
  o.args = {"--bus", bus.address()};
  o.args.insert(o.args.end(), args.begin(), args.end());
  o.env = std::move(env);
  auto d = std::make_unique<DaemonProcess>(scratch_dir(), o);
  if (auto st = d->start(); !st) {
    ADD_FAILURE() << st.error().to_string();
    return nullptr;
  }
  if (!wait_for_name(bus.address())) {
    ADD_FAILURE() << "llmd did not take org.llmd.LLM1:\n" << d->log() << bus.describe();
    return nullptr;
  }
  return d;
}

class LlmdOnBus : public ::testing::Test {
 protected:
  void SetUp() override {
    auto st = bus_.start();
    ASSERT_TRUE(st) << st.error().to_string();
    llmd_ = start_on_bus(bus_, args());
    ASSERT_TRUE(llmd_);
  }
  virtual std::vector<std::string> args() const { return {}; }
  const std::string& address() const { return bus_.address(); }
  client::HttpClient http() const { return llmd_->client(); }

  PrivateBus bus_;
  std::unique_ptr<DaemonProcess> llmd_;
};

// Greedy generation options of n tokens.
inline nlohmann::json greedy(int n) { return {{"max_tokens", n}, {"temperature", 0.0}}; }

// Runs busctl against the private bus: (exit code, stdout, stderr).
inline ProgramResult busctl(const std::string& address, std::vector<std::string> args) {
  std::vector<std::string> argv = {"/usr/bin/busctl", "--address=" + address};
  argv.insert(argv.end(), args.begin(), args.end());
  return run_program(argv);
}

// The same, on org.llmd.LLM1's object and interface: busctl call ... METHOD [SIGNATURE ARGS...],
// with --json=short output.
inline ProgramResult busctl_call(const std::string& address, std::vector<std::string> method_and_args) {
  std::vector<std::string> a = {"--json=short", "call", kName, kPath, kInterface};
  a.insert(a.end(), method_and_args.begin(), method_and_args.end());
  return busctl(address, a);
}

}  // namespace llmd::test
