// Generation over D-Bus: Generate, Cancel and the request objects whose signals carry the answer
// (see dbus_api.h).
#include <charconv>
#include <cstring>
#include <set>

#include "ipc/dbus_api.h"
#include "ipc/dbus_errors.h"
#include "ipc/dbus_values.h"
#include "ipc/json_fields.h"
#include "ipc/turn_options.h"

namespace llmd::ipc {
namespace {

// The options Generate takes (turn_options.h, plus raw).
const std::set<std::string>& known_options() {
  static const std::set<std::string> names = {"max_tokens", "temperature", "top_p",    "top_k",
                                              "min_p",      "seed",        "stop",     "repeat_penalty",
                                              "ignore_eos", "priority",    "app",      "raw",
                                              "overflow",   "json_schema", "grammar"};
  return names;
}

std::string request_path(std::uint64_t n) { return std::string(kBusRequestPrefix) + "/" + std::to_string(n); }

// N of /org/llmd/LLM1/request/N.
std::optional<std::uint64_t> request_number(const char* path) {
  const std::string_view p(path);
  const std::string_view prefix = std::string_view(kBusRequestPrefix);
  if (p.size() <= prefix.size() + 1 || p.substr(0, prefix.size()) != prefix || p[prefix.size()] != '/') {
    return std::nullopt;
  }
  const std::string_view digits = p.substr(prefix.size() + 1);
  std::uint64_t n = 0;
  const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), n);
  if (ec != std::errc() || end != digits.data() + digits.size()) return std::nullopt;
  return n;
}

VarDict stats_of(const core::TurnResult& res) {
  const auto& u = res.usage;
  const auto& t = res.timings;
  const auto count = [](std::int32_t v) { return static_cast<std::uint32_t>(std::max(v, 0)); };
  const double tps = t.decode > 0.0 && u.completion_tokens > 1 ? (u.completion_tokens - 1) * 1000.0 / t.decode : 0.0;
  VarDict d;
  d.add("prompt_tokens", count(u.prompt_tokens))
      .add("completion_tokens", count(u.completion_tokens))
      .add("cached_tokens", count(u.cached_tokens))
      .add("loaded_tokens", count(u.loaded_tokens))
      .add("restored_tokens", count(u.restored_tokens))
      .add("seed", res.seed)
      .add("queue_ms", t.queue)
      .add("restore_ms", t.restore)
      .add("restore_read_ms", t.restore_read)
      .add("restore_decode_ms", t.restore_decode)
      .add("restore_recompute_ms", t.restore_recompute)
      .add("prefill_ms", t.prefill)
      .add("decode_ms", t.decode)
      .add("ttft_ms", t.ttft)
      .add("decode_tokens_per_second", tps)
      .add("window_moved", res.window.moved)
      .add("window_dropped_tokens", static_cast<std::int64_t>(res.window.dropped_tokens))
      .add("window_dropped_messages", res.window.dropped_messages)
      .add("window_first_message", static_cast<std::int64_t>(res.window.first_message));
  return d;
}

// The options json_schema (s: a JSON Schema object as text; {} = any JSON object) and grammar (s:
// GBNF): what a one-off chat's answer must follow (engine::ChatOptions). Anything else is refused
// here, naming the option, rather than answered as free text.
Status read_constraint(const nlohmann::json& options, core::TurnRequest& turn) {
  auto schema = opt_string(options, "json_schema");
  if (!schema) return schema.error();
  auto grammar = opt_string(options, "grammar");
  if (!grammar) return grammar.error();
  if (!*schema && !*grammar) return {};
  const char* name = *schema ? "json_schema" : "grammar";
  if (turn.kind == core::TurnRequest::Kind::session_message) {
    return Error(Errc::invalid_argument, std::string(name) + " is not supported in session turns yet").with_param(name);
  }
  if (turn.kind == core::TurnRequest::Kind::completion) {
    return Error(Errc::invalid_argument, std::string(name) + " is for chats; raw text generation takes none")
        .with_param(name);
  }
  if (*schema && *grammar) {
    return Error(Errc::invalid_argument, "json_schema and grammar do not go together; give one").with_param("grammar");
  }
  if (*schema) {
    const auto parsed = nlohmann::json::parse(**schema, nullptr, /*allow_exceptions=*/false);
    if (!parsed.is_object()) {
      return Error(Errc::invalid_argument, "json_schema must be a JSON Schema object (as text)").with_param("json_schema");
    }
    turn.chat.json_schema = parsed.empty() ? nlohmann::json{{"type", "object"}}.dump() : parsed.dump();
  } else {
    if ((*grammar)->empty()) return Error(Errc::invalid_argument, "grammar is empty").with_param("grammar");
    turn.chat.grammar = std::move(**grammar);
  }
  return {};
}

}  // namespace

Status DbusApi::read_generate(sd_bus_message* m, core::TurnRequest& turn) const {
  const char* session = nullptr;
  const char* prompt = nullptr;
  if (int r = sd_bus_message_read(m, "ss", &session, &prompt); r < 0) return errno_error(-r, "reading the arguments");
  auto options = read_vardict(m);
  if (!options) return options.error();
  for (const auto& [key, value] : options->items()) {
    if (known_options().count(key) == 0) {
      std::string known;
      for (const auto& name : known_options()) known += (known.empty() ? "" : ", ") + name;
      return Error(Errc::invalid_argument, "unknown option " + bus_text(key) + " (options: " + known + ")");
    }
  }
  auto raw = opt_bool(*options, "raw");
  if (!raw) return raw.error();
  if (*session != '\0') {
    if (raw->value_or(false)) {
      return Error(Errc::invalid_argument, "raw is for one-off generations (session \"\"); a session turn is a chat");
    }
    turn.kind = core::TurnRequest::Kind::session_message;
    turn.session_id = session;
    turn.content = prompt;
  } else if (raw->value_or(false)) {
    turn.kind = core::TurnRequest::Kind::completion;
    turn.prompt = prompt;
  } else {
    turn.kind = core::TurnRequest::Kind::chat;
    turn.messages.push_back({"user", prompt});
  }
  LLMD_TRY_STATUS(read_constraint(*options, turn));
  return read_turn_options(*options, service_.limits(), service_.max_session_tokens(), turn);
}

int DbusApi::on_generate(sd_bus_message* m, void* self_ptr, sd_bus_error*) {
  auto* self = static_cast<DbusApi*>(self_ptr);
  return guarded(m, [&] {
    core::TurnRequest turn;
    if (auto st = self->read_generate(m, turn); !st) return reply_bus_error(m, st.error());
    self->with_caller(m, [self, turn = std::move(turn)](MessageRef call, const core::Caller& c) mutable {
      self->generate(std::move(call), c, std::move(turn));
    });
    return 1;
  });
}

void DbusApi::generate(MessageRef call, const core::Caller& caller, core::TurnRequest turn) {
  if (stopping_) {
    reply_bus_error(call.get(), Error(Errc::unavailable, "the daemon is shutting down"));
    return;
  }
  const std::uint64_t n = ++next_request_;
  Request& q = requests_[n];
  q.owner = sd_bus_message_get_sender(call.get());
  q.uid = caller.uid;
  q.call = std::move(call);

  core::TurnCallbacks cb;
  cb.rejected = [this, n](const Error& e) {
    auto it = requests_.find(n);
    if (it == requests_.end()) return;
    reply_bus_error(it->second.call.get(), e);
    requests_.erase(it);
    wake();
  };
  cb.accepted = [this, n] {
    auto it = requests_.find(n);
    if (it == requests_.end()) return;
    // The reply goes out before any signal of the request: the caller knows the path first.
    const std::string path = request_path(n);
    sd_bus_reply_method_return(it->second.call.get(), "o", path.c_str());
    it->second.call = MessageRef();
    wake();
  };
  cb.window = [this, n](const core::WindowReport& w) {
    auto it = requests_.find(n);
    if (it == requests_.end()) return;
    emit(request_path(n), it->second.owner, "WindowMoved", [&](sd_bus_message* s) {
      return sd_bus_message_append(s, "tux", static_cast<std::uint64_t>(w.dropped_tokens), w.dropped_messages,
                                   static_cast<std::int64_t>(w.first_message));
    });
  };
  cb.text = [this, n](const std::string& text) {
    auto it = requests_.find(n);
    if (it == requests_.end()) return;
    const std::string piece = bus_text(text);
    emit(request_path(n), it->second.owner, "Token",
         [&](sd_bus_message* s) { return sd_bus_message_append(s, "s", piece.c_str()); });
  };
  // A constrained answer (json_schema, grammar) is parsed as it streams: its content is the text.
  cb.delta = [text = cb.text](const core::AnswerDelta& d) {
    if (!d.content.empty()) text(d.content);
  };
  cb.done = [this, n](const core::TurnResult& res) {
    auto it = requests_.find(n);
    if (it == requests_.end()) return;
    const std::string owner = std::move(it->second.owner);
    requests_.erase(it);  // the object is gone once its last signal is out
    const std::string path = request_path(n);
    if (res.error || res.finish == engine::FinishReason::cancelled) {
      const BusError e =
          to_bus_error(res.error ? *res.error : Error(Errc::cancelled, "the request was cancelled"));
      emit(path, owner, "Failed", [&](sd_bus_message* s) {
        return sd_bus_message_append(s, "ss", e.name.c_str(), e.message.c_str());
      });
    } else {
      const std::string reason = openai_finish_reason(res.finish);
      const VarDict stats = stats_of(res);
      emit(path, owner, "Finished", [&](sd_bus_message* s) {
        const int r = sd_bus_message_append(s, "s", reason.c_str());
        return r < 0 ? r : stats.append_to(s);
      });
    }
  };
  const auto id = service_.start_turn(caller, std::move(turn), std::move(cb));
  if (auto it = requests_.find(n); it != requests_.end()) it->second.id = id;  // not rejected at once
}

void DbusApi::emit(const std::string& path, const std::string& owner, const char* member,
                   const std::function<int(sd_bus_message*)>& append) {
  if (!conn_ || !conn_->is_open()) return;
  sd_bus_message* s = nullptr;
  if (sd_bus_message_new_signal(conn_->bus(), &s, path.c_str(), kBusRequestInterface, member) < 0) return;
  const MessageRef hold = MessageRef::adopt(s);
  // Unicast: only the caller's connection receives the answer.
  if (sd_bus_message_set_destination(s, owner.c_str()) < 0 || append(s) < 0) return;
  (void)sd_bus_send(nullptr, s, nullptr);
  wake();
}

int DbusApi::on_cancel(sd_bus_message* m, void* self_ptr, sd_bus_error*) {
  auto* self = static_cast<DbusApi*>(self_ptr);
  return guarded(m, [&] {
    const char* path = nullptr;
    if (int r = sd_bus_message_read(m, "o", &path); r < 0) return r;
    self->with_caller(m, [self, path = std::string(path)](MessageRef call, const core::Caller& c) {
      const auto n = request_number(path.c_str());
      auto it = n ? self->requests_.find(*n) : self->requests_.end();
      if (it == self->requests_.end() || (!c.admin && it->second.uid != c.uid)) {
        reply_bus_error(call.get(), Error(Errc::not_found, "no request " + path));
        return;
      }
      self->service_.cancel(it->second.id);
      sd_bus_reply_method_return(call.get(), "");
    });
    return 1;
  });
}

int DbusApi::on_find_request(sd_bus*, const char* path, const char*, void* self_ptr, void** found, sd_bus_error*) {
  auto* self = static_cast<DbusApi*>(self_ptr);
  const auto n = request_number(path);
  if (!n) return 0;
  const auto it = self->requests_.find(*n);
  // The object exists once the caller has its path (Generate answered) until its last signal.
  if (it == self->requests_.end() || it->second.call) return 0;
  *found = self;
  return 1;
}

}  // namespace llmd::ipc
