// JSON answers to C structs (see records.h).
#include "client-lib/src/records.h"

#include <optional>
#include <vector>

#include <nlohmann/json.hpp>

#include "client-lib/src/c_block.h"

namespace llmc::detail {
namespace {

using nlohmann::json;

Failure unexpected(const char* what) {
  return failure(LLMC_ERR_PROTOCOL, std::string("unexpected answer from llmd: ") + what);
}

std::string str(const json& j, const char* key) {
  const auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

template <typename T>
T num(const json& j, const char* key) {
  const auto it = j.find(key);
  return it != j.end() && it->is_number() ? it->get<T>() : T{};
}

bool flag(const json& j, const char* key) {
  const auto it = j.find(key);
  return it != j.end() && it->is_boolean() && it->get<bool>();
}

struct SessionRecord {
  std::string id, app;
  std::optional<std::string> system_prompt;
  std::uint32_t owner_uid = 0;
  std::int64_t created = 0, updated = 0;
  std::int32_t n_tokens = 0, n_messages = 0;
  bool busy = false, resident = false;
  std::string overflow;
  std::int64_t window_first_message = 0, dropped_tokens = 0;
  std::int32_t dropped_messages = 0;

  explicit SessionRecord(const json& j) : id(str(j, "id")), app(str(j, "app")) {
    if (const auto w = j.find("window"); w != j.end() && w->is_object()) {
      overflow = str(*w, "overflow");
      window_first_message = num<std::int64_t>(*w, "first_message");
      dropped_messages = num<std::int32_t>(*w, "dropped_messages");
      dropped_tokens = num<std::int64_t>(*w, "dropped_tokens");
    }
    if (const auto it = j.find("system_prompt"); it != j.end() && it->is_string()) system_prompt = it->get<std::string>();
    owner_uid = num<std::uint32_t>(j, "owner_uid");
    created = num<std::int64_t>(j, "created");
    updated = num<std::int64_t>(j, "updated");
    n_tokens = num<std::int32_t>(j, "n_tokens");
    n_messages = num<std::int32_t>(j, "n_messages");
    busy = flag(j, "busy");
    resident = flag(j, "resident");
  }
  void count(BlockSize& size) const {
    size.str(id);
    size.str(app);
    if (system_prompt) size.str(*system_prompt);
    size.str(overflow);
  }
  void fill(llmc_session& s, Block& b) const {
    s.id = b.str(id);
    s.app = b.str(app);
    s.system_prompt = system_prompt ? b.str(*system_prompt) : nullptr;
    s.owner_uid = owner_uid;
    s.created = created;
    s.updated = updated;
    s.n_tokens = n_tokens;
    s.n_messages = n_messages;
    s.busy = busy ? 1 : 0;
    s.resident = resident ? 1 : 0;
    s.overflow = b.str(overflow);
    s.window_first_message = window_first_message;
    s.dropped_messages = dropped_messages;
    s.dropped_tokens = dropped_tokens;
  }
};

json parse_object(const std::string& body) {
  json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  return j.is_object() ? j : json();
}

}  // namespace

Failure session_id_from(const std::string& body, char** out) {
  const json j = parse_object(body);
  const std::string id = j.is_object() ? str(j, "id") : std::string();
  if (id.empty()) return unexpected("a created session without an id");
  BlockSize size;
  size.str(id);
  Block b(size);
  b.str(id);
  *out = static_cast<char*>(b.release());
  return {};
}

Failure session_list_from(const std::string& body, llmc_sessions** out) {
  const json j = parse_object(body);
  const auto data = j.is_object() ? j.find("data") : j.end();
  if (!j.is_object() || data == j.end() || !data->is_array()) return unexpected("a session list without \"data\"");
  std::vector<SessionRecord> sessions;
  for (const auto& s : *data) {
    if (s.is_object()) sessions.emplace_back(s);
  }
  const std::size_t n = sessions.size();
  BlockSize size;
  const std::size_t at_list = size.add<llmc_sessions>();
  const std::size_t at_ptrs = size.add<const llmc_session*>(n);
  const std::size_t at_items = size.add<llmc_session>(n);
  for (const auto& s : sessions) s.count(size);
  size.str(body);
  Block b(size);
  auto* list = b.at<llmc_sessions>(at_list);
  auto** ptrs = b.at<const llmc_session*>(at_ptrs);
  auto* items = b.at<llmc_session>(at_items);
  for (std::size_t i = 0; i < n; ++i) {
    sessions[i].fill(items[i], b);
    ptrs[i] = &items[i];
  }
  list->count = n;
  list->items = ptrs;
  list->json = b.str(body);
  *out = static_cast<llmc_sessions*>(b.release());
  return {};
}

Failure session_detail_from(const std::string& body, llmc_session_detail** out) {
  const json j = parse_object(body);
  if (!j.is_object() || str(j, "id").empty()) return unexpected("a session without an id");
  const SessionRecord session(j);
  struct Message {
    std::string role, content;
    std::int64_t created;
  };
  std::vector<Message> messages;
  if (const auto m = j.find("messages"); m != j.end() && m->is_array()) {
    for (const auto& x : *m) {
      if (x.is_object()) messages.push_back({str(x, "role"), str(x, "content"), num<std::int64_t>(x, "created")});
    }
  }
  const std::size_t n = messages.size();
  BlockSize size;
  const std::size_t at_detail = size.add<llmc_session_detail>();
  const std::size_t at_session = size.add<llmc_session>();
  const std::size_t at_ptrs = size.add<const llmc_message*>(n);
  const std::size_t at_items = size.add<llmc_message>(n);
  session.count(size);
  for (const auto& m : messages) {
    size.str(m.role);
    size.str(m.content);
  }
  size.str(body);
  Block b(size);
  auto* d = b.at<llmc_session_detail>(at_detail);
  auto* s = b.at<llmc_session>(at_session);
  auto** ptrs = b.at<const llmc_message*>(at_ptrs);
  auto* items = b.at<llmc_message>(at_items);
  session.fill(*s, b);
  for (std::size_t i = 0; i < n; ++i) {
    items[i].role = b.str(messages[i].role);
    items[i].content = b.str(messages[i].content);
    items[i].created = messages[i].created;
    ptrs[i] = &items[i];
  }
  d->session = s;
  d->n_messages = n;
  d->messages = ptrs;
  d->json = b.str(body);
  *out = static_cast<llmc_session_detail*>(b.release());
  return {};
}

Failure daemon_status_from(const std::string& body, llmc_daemon_status** out) {
  const json j = parse_object(body);
  if (!j.is_object()) return unexpected("a status that is not a JSON object");
  static const json kEmpty = json::object();
  auto section = [&](const char* key) -> const json& {
    const auto it = j.find(key);
    return it != j.end() && it->is_object() ? *it : kEmpty;
  };
  const std::string version = str(j, "version"), state = str(j, "status"), model = str(section("model"), "id");
  BlockSize size;
  const std::size_t at = size.add<llmc_daemon_status>();
  for (const std::string* s : {&version, &state, &model, &body}) size.str(*s);
  Block b(size);
  auto* st = b.at<llmc_daemon_status>(at);
  st->version = b.str(version);
  st->state = b.str(state);
  st->model = b.str(model);
  if (const auto slots = j.find("slots"); slots != j.end() && slots->is_array()) {
    st->slots = static_cast<std::int32_t>(slots->size());
    for (const auto& s : *slots) st->slots_busy += s.is_object() && flag(s, "busy") ? 1 : 0;
  }
  st->running = num<std::int32_t>(section("queue"), "running");
  st->queued = num<std::int32_t>(section("queue"), "queued");
  st->in_flight = num<std::int32_t>(section("queue"), "in_flight");
  st->sessions = num<std::int64_t>(section("sessions"), "total");
  st->uptime_s = num<double>(j, "uptime_s");
  st->json = b.str(body);
  *out = static_cast<llmc_daemon_status*>(b.release());
  return {};
}

}  // namespace llmc::detail
