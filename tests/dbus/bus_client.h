// A D-Bus client for the tests, on sd-bus: calls to org.llmd.LLM1 and the signals of its request
// objects. Each instance is one connection (so one unique name); create it in the process (a
// child dropped to another uid, say) that uses it.
#pragma once

#include <systemd/sd-bus.h>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace llmd::test {

inline constexpr const char* kName = "org.llmd.LLM1";
inline constexpr const char* kPath = "/org/llmd/LLM1";
inline constexpr const char* kInterface = "org.llmd.LLM1";
inline constexpr const char* kRequestInterface = "org.llmd.LLM1.Request";

// A method reply: the message, or the error's name and message.
struct Reply {
  sd_bus_message* msg = nullptr;  // owned
  std::string error_name, error_message;
  Reply() = default;
  Reply(Reply&& o) noexcept;
  Reply& operator=(Reply&& o) noexcept;
  ~Reply();
  bool ok() const { return msg != nullptr && error_name.empty(); }
  std::string str() const;     // a reply of one string ("s" or "o"), read from its start
  std::string error() const { return error_name + ": " + error_message; }
};

// What the signals of one request said, in order.
struct Answer {
  std::vector<std::string> signals;  // "WindowMoved", "Token", "Finished", "Failed"
  std::string text;                  // the Tokens, concatenated
  std::string finish_reason;         // Finished
  nlohmann::json stats = nlohmann::json::object();  // Finished's a{sv}
  std::string failed_name, failed_message;           // Failed
  bool ended() const { return !signals.empty() && (signals.back() == "Finished" || signals.back() == "Failed"); }
};

class BusClient {
 public:
  explicit BusClient(const std::string& address);  // a test failure if it cannot connect
  ~BusClient();
  BusClient(const BusClient&) = delete;
  BusClient& operator=(const BusClient&) = delete;

  bool connected() const { return bus_ != nullptr; }
  sd_bus* bus() const { return bus_; }
  std::string unique_name() const;

  // Calls a method of org.llmd.LLM1 on /org/llmd/LLM1 (or on `destination`, e.g. a unique name).
  Reply call(const char* method, const char* types = nullptr, ...);
  Reply call_on(const std::string& destination, const char* method, const char* types, ...);

  // Generate(session, prompt, options) with options given as JSON (bool -> b, integer -> x or t,
  // number -> d, string -> s, array of strings -> as).
  Reply generate(const std::string& session, const std::string& prompt, const nlohmann::json& options);
  // The signals received so far for a request path (this connection listens to every Request).
  const Answer& answer(const std::string& path) { return answers_[path]; }
  // Every request signal this connection received, whatever its path.
  std::size_t request_signals() const { return request_signals_; }
  // PropertiesChanged values of ActiveSessions seen so far.
  const std::vector<std::uint32_t>& active_changes() const { return active_changes_; }

  // Processes messages until pred() or `limit`; false on the limit or a broken connection.
  bool run_until(const std::function<bool()>& pred, std::chrono::seconds limit = std::chrono::seconds(300));
  // Runs until the request ends (Finished or Failed).
  bool wait_end(const std::string& path) { return run_until([&] { return answers_[path].ended(); }); }

  // Generate, then collect the answer to its end. The path is empty if Generate failed (see *reply).
  Answer generate_all(const std::string& session, const std::string& prompt, const nlohmann::json& options,
                      Reply* reply = nullptr);

  void close();  // leaves the bus now

 private:
  static int on_request_signal(sd_bus_message* m, void* self, sd_bus_error* error);
  static int on_properties_changed(sd_bus_message* m, void* self, sd_bus_error* error);

  sd_bus* bus_ = nullptr;
  sd_bus_slot* signals_slot_ = nullptr;
  sd_bus_slot* props_slot_ = nullptr;
  std::map<std::string, Answer> answers_;
  std::size_t request_signals_ = 0;
  std::vector<std::uint32_t> active_changes_;
};

// Waits until someone owns org.llmd.LLM1 on the bus; false after `limit`.
bool wait_for_name(const std::string& address, bool owned = true,
                   std::chrono::seconds limit = std::chrono::seconds(60));

// Reads a{sv} at the read position into JSON (b, integers, d, s; others skipped).
nlohmann::json read_dict(sd_bus_message* m);

}  // namespace llmd::test
