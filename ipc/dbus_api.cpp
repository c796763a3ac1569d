// The D-Bus object: its vtables, the name, callers' identities, sessions, status and properties
// (see dbus_api.h). Generation requests are in dbus_requests.cpp.
#include "ipc/dbus_api.h"

#include <cstring>
#include <type_traits>

#include <boost/asio/post.hpp>

#include "ipc/api_errors.h"
#include "ipc/dbus_errors.h"
#include "ipc/dbus_values.h"
#include "ipc/turn_options.h"

namespace llmd::ipc {
namespace asio = boost::asio;

namespace {

constexpr auto kUnprivileged = SD_BUS_VTABLE_UNPRIVILEGED;  // llmd decides per uid, not sd-bus

}  // namespace

// The vtables are static: sd-bus keeps pointers to them.
const sd_bus_vtable* DbusApi::manager_vtable() {
  static const sd_bus_vtable vtable[] = {
      SD_BUS_VTABLE_START(0),
      SD_BUS_METHOD_WITH_ARGS("CreateSession", SD_BUS_ARGS("s", system_prompt, "s", app), SD_BUS_RESULT("s", id),
                              on_create_session, kUnprivileged),
      SD_BUS_METHOD_WITH_ARGS("CreateSessionWithOptions",
                              SD_BUS_ARGS("s", system_prompt, "s", app, "a{sv}", options), SD_BUS_RESULT("s", id),
                              on_create_session_with_options, kUnprivileged),
      SD_BUS_METHOD_WITH_ARGS("DeleteSession", SD_BUS_ARGS("s", id), SD_BUS_NO_RESULT, on_delete_session,
                              kUnprivileged),
      SD_BUS_METHOD_WITH_ARGS("ForkSession", SD_BUS_ARGS("s", id), SD_BUS_RESULT("s", new_id), on_fork_session,
                              kUnprivileged),
      SD_BUS_METHOD_WITH_ARGS("RewindSession", SD_BUS_ARGS("s", id, "a{sv}", options),
                              SD_BUS_RESULT("u", messages, "u", tokens), on_rewind_session, kUnprivileged),
      SD_BUS_METHOD_WITH_ARGS("PrewarmSession", SD_BUS_ARGS("s", id),
                              SD_BUS_RESULT("u", tokens, "u", resident, "u", loaded, "u", restored),
                              on_prewarm_session, kUnprivileged),
      SD_BUS_METHOD_WITH_ARGS("ListSessions", SD_BUS_NO_ARGS, SD_BUS_RESULT("aa{sv}", sessions), on_list_sessions,
                              kUnprivileged),
      SD_BUS_METHOD_WITH_ARGS("Generate", SD_BUS_ARGS("s", session, "s", prompt, "a{sv}", options),
                              SD_BUS_RESULT("o", request), on_generate, kUnprivileged),
      SD_BUS_METHOD_WITH_ARGS("Cancel", SD_BUS_ARGS("o", request), SD_BUS_NO_RESULT, on_cancel, kUnprivileged),
      SD_BUS_METHOD_WITH_ARGS("GetStatus", SD_BUS_NO_ARGS, SD_BUS_RESULT("s", json), on_get_status, kUnprivileged),
      SD_BUS_PROPERTY("Model", "s", on_get_property, 0, SD_BUS_VTABLE_PROPERTY_CONST),
      SD_BUS_PROPERTY("Version", "s", on_get_property, 0, SD_BUS_VTABLE_PROPERTY_CONST),
      SD_BUS_PROPERTY("Slots", "u", on_get_property, 0, SD_BUS_VTABLE_PROPERTY_CONST),
      SD_BUS_PROPERTY("ActiveSessions", "u", on_get_property, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
      SD_BUS_VTABLE_END};
  return vtable;
}

const sd_bus_vtable* DbusApi::request_vtable() {
  static const sd_bus_vtable vtable[] = {
      SD_BUS_VTABLE_START(0),
      SD_BUS_SIGNAL_WITH_ARGS("WindowMoved",
                              SD_BUS_ARGS("t", dropped_tokens, "u", dropped_messages, "x", first_message), 0),
      SD_BUS_SIGNAL_WITH_ARGS("Token", SD_BUS_ARGS("s", text), 0),
      SD_BUS_SIGNAL_WITH_ARGS("Finished", SD_BUS_ARGS("s", finish_reason, "a{sv}", stats), 0),
      SD_BUS_SIGNAL_WITH_ARGS("Failed", SD_BUS_ARGS("s", error_name, "s", message), 0),
      SD_BUS_VTABLE_END};
  return vtable;
}

DbusApi::DbusApi(asio::io_context& io, core::Service& service, const Api& api, DbusConfig config, DbusEvents events)
    : io_(io), service_(service), api_(api), config_(std::move(config)), events_(std::move(events)) {}

DbusApi::~DbusApi() {
  service_.set_in_flight_observer(nullptr);
  // Pending calls are dropped unanswered; the bus daemon answers their callers when we leave.
  creds_queries_.clear();
  slots_held_.clear();
  conn_.reset();
}

Status DbusApi::start(const std::string& bus) {
  bus_ = bus;
  auto conn = BusConnection::open(io_, bus);
  if (!conn) return conn.error();
  conn_ = std::move(*conn);
  conn_->set_on_lost([this](const std::string& why) { give_up(why); });
  sd_bus* b = conn_->bus();
  sd_bus_slot* slot = nullptr;
  // Keeps the slot a registration returned (its lifetime is the registration's).
  auto hold = [&](int r, const char* what) -> Status {
    if (r < 0) return errno_error(-r, what);
    slots_held_.emplace_back(slot);
    slot = nullptr;
    return {};
  };
  int r = sd_bus_add_object_vtable(b, &slot, kBusPath, kBusInterface, manager_vtable(), this);
  LLMD_TRY_STATUS(hold(r, "publishing /org/llmd/LLM1"));
  r = sd_bus_add_fallback_vtable(b, &slot, kBusRequestPrefix, kBusRequestInterface, request_vtable(), on_find_request,
                                 this);
  LLMD_TRY_STATUS(hold(r, "publishing the request objects"));
  // Clients leaving. Asked for before the name (the bus daemon handles our calls in order), so
  // nobody can reach llmd by name before the match is in place.
  r = sd_bus_match_signal_async(b, &slot, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                                "NameOwnerChanged", on_name_owner_changed, on_match_installed, this);
  LLMD_TRY_STATUS(hold(r, "watching for clients leaving the bus"));
  r = sd_bus_request_name_async(b, &slot, kBusName, 0, on_name_reply, this);
  LLMD_TRY_STATUS(hold(r, "asking for the name org.llmd.LLM1"));
  service_.set_in_flight_observer([this] { publish_active(); });
  conn_->wake();
  return {};
}

void DbusApi::stop_accepting() { stopping_ = true; }

bool DbusApi::flushed() const { return !conn_ || conn_->flushed(); }

void DbusApi::close() {
  service_.set_in_flight_observer(nullptr);
  creds_queries_.clear();
  slots_held_.clear();
  if (conn_) conn_->close();
}

void DbusApi::wake() {
  if (conn_) conn_->wake();
}

void DbusApi::give_up(const std::string& why) {
  if (gave_up_) return;
  gave_up_ = true;
  asio::post(io_, [this, alive = std::weak_ptr<char>(alive_), why] {
    if (alive.expired()) return;
    // Nobody can receive these requests' signals any more.
    for (const auto& [n, q] : requests_) service_.cancel(q.id);
    close();
    if (events_.unavailable) events_.unavailable(why);
  });
}

int DbusApi::on_match_installed(sd_bus_message* m, void* self, sd_bus_error*) {
  const sd_bus_error* e = sd_bus_message_get_error(m);
  if (e != nullptr) {
    static_cast<DbusApi*>(self)->give_up(std::string("cannot watch for clients leaving the bus: ") +
                                         (e->message != nullptr ? e->message : e->name));
  }
  return 0;
}

int DbusApi::on_name_reply(sd_bus_message* m, void* self_ptr, sd_bus_error*) {
  auto* self = static_cast<DbusApi*>(self_ptr);
  const std::string where = std::string(kBusName) + " on " + describe_bus(self->bus_);
  if (const sd_bus_error* e = sd_bus_message_get_error(m); e != nullptr) {
    self->give_up("cannot own " + where + ": " + (e->message != nullptr ? e->message : e->name) +
                  " (the D-Bus policy file org.llmd.LLM1.conf lets user llmd and root own it)");
    return 0;
  }
  std::uint32_t reply = 0;
  if (sd_bus_message_read(m, "u", &reply) < 0) {
    self->give_up("cannot own " + where + ": the bus sent a malformed answer");
    return 0;
  }
  if (reply == 1 || reply == 4) {  // DBUS_REQUEST_NAME_REPLY_PRIMARY_OWNER, _ALREADY_OWNER
    if (self->events_.serving) self->events_.serving(where);
    return 0;
  }
  self->give_up("cannot own " + where + ": another connection owns it (another llmd?)");
  return 0;
}

int DbusApi::on_name_owner_changed(sd_bus_message* m, void* self, sd_bus_error*) {
  const char* name = nullptr;
  const char* old_owner = nullptr;
  const char* new_owner = nullptr;
  if (sd_bus_message_read(m, "sss", &name, &old_owner, &new_owner) < 0) return 0;
  // A unique name that loses its owner is a connection that left.
  if (name[0] == ':' && new_owner[0] == '\0') {
    try {
      static_cast<DbusApi*>(self)->client_left(name);
    } catch (...) {
    }
  }
  return 0;
}

void DbusApi::client_left(const std::string& name) {
  callers_.erase(name);
  for (const auto& [n, q] : requests_) {
    if (q.owner == name) service_.cancel(q.id);
  }
}

void DbusApi::with_caller(sd_bus_message* call, CallerFn then) {
  const char* sender = sd_bus_message_get_sender(call);
  if (sender == nullptr) {
    reply_bus_error(call, Error(Errc::permission_denied, "the call has no sender: llmd serves bus clients only"));
    return;
  }
  if (auto it = callers_.find(sender); it != callers_.end()) return then(MessageRef(call), it->second);
  auto& query = creds_queries_[sender];
  if (query) {  // already asking about this client
    query->waiting.emplace_back(MessageRef(call), std::move(then));
    return;
  }
  query = std::make_unique<CredsQuery>();
  query->api = this;
  query->sender = sender;
  query->waiting.emplace_back(MessageRef(call), std::move(then));
  sd_bus_slot* slot = nullptr;
  const int r = sd_bus_call_method_async(conn_->bus(), &slot, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                                         "org.freedesktop.DBus", "GetConnectionCredentials", on_creds, query.get(),
                                         "s", sender);
  if (r < 0) {
    auto q = std::move(query);
    creds_queries_.erase(sender);
    for (auto& [c, fn] : q->waiting) reply_bus_error(c.get(), errno_error(-r, "asking the bus who is calling"));
    return;
  }
  query->slot.reset(slot);
}

int DbusApi::on_creds(sd_bus_message* m, void* query_ptr, sd_bus_error*) {
  auto* query = static_cast<CredsQuery*>(query_ptr);
  DbusApi* self = query->api;
  auto node = self->creds_queries_.extract(query->sender);  // owns the query (and its slot) from now on
  const auto caller = [&]() -> Result<core::Caller> {
    if (const sd_bus_error* e = sd_bus_message_get_error(m); e != nullptr) {
      return Error(Errc::permission_denied, std::string("the bus does not say who is calling: ") +
                                                (e->message != nullptr ? e->message : e->name));
    }
    std::optional<std::uint32_t> uid;
    std::uint32_t pid = 0;
    std::vector<std::uint32_t> groups;
    int r = sd_bus_message_enter_container(m, 'a', "{sv}");
    while (r >= 0 && (r = sd_bus_message_enter_container(m, 'e', "sv")) > 0) {
      const char* key = nullptr;
      if ((r = sd_bus_message_read_basic(m, 's', &key)) < 0) break;
      if (std::strcmp(key, "UnixUserID") == 0) {
        std::uint32_t v = 0;
        if ((r = sd_bus_message_read(m, "v", "u", &v)) >= 0) uid = v;
      } else if (std::strcmp(key, "ProcessID") == 0) {
        r = sd_bus_message_read(m, "v", "u", &pid);
      } else if (std::strcmp(key, "UnixGroupIDs") == 0) {
        const void* data = nullptr;
        std::size_t size = 0;
        if ((r = sd_bus_message_enter_container(m, 'v', "au")) < 0) break;
        if ((r = sd_bus_message_read_array(m, 'u', &data, &size)) < 0) break;
        const auto* g = static_cast<const std::uint32_t*>(data);
        groups.assign(g, g + size / sizeof(std::uint32_t));
        r = sd_bus_message_exit_container(m);
      } else {
        r = sd_bus_message_skip(m, "v");
      }
      if (r >= 0) r = sd_bus_message_exit_container(m);
    }
    if (r < 0 || !uid) return Error(Errc::permission_denied, "the bus does not say which uid is calling");
    // The bus reports the set of groups (the primary one included) but not which is primary.
    return core::caller_from(*uid, core::kNoGid, static_cast<std::int32_t>(pid), groups, self->config_.admin_gid);
  }();
  if (caller) self->callers_[node.key()] = *caller;
  for (auto& waiter : node.mapped()->waiting) {
    // Named, not a structured binding: clang before 16 (the fuzz build) cannot capture those.
    auto& call = waiter.first;
    auto& then = waiter.second;
    guarded(call.get(), [&] {
      if (!caller) return reply_bus_error(call.get(), caller.error());
      then(call, *caller);
      return 1;
    });
  }
  self->wake();
  return 0;
}

int DbusApi::on_create_session(sd_bus_message* m, void* self_ptr, sd_bus_error*) {
  auto* self = static_cast<DbusApi*>(self_ptr);
  return guarded(m, [&] {
    const char* system_prompt = nullptr;
    const char* app = nullptr;
    if (int r = sd_bus_message_read(m, "ss", &system_prompt, &app); r < 0) return r;
    std::optional<std::string> sp;
    if (*system_prompt != '\0') sp = system_prompt;
    self->with_caller(m, [self, sp = std::move(sp), app = std::string(app)](MessageRef call, const core::Caller& c) {
      self->service_.create_session(c, sp, app, [self, call](Result<core::SessionInfo> s) {
        if (!s) {
          reply_bus_error(call.get(), s.error());
        } else {
          sd_bus_reply_method_return(call.get(), "s", s->id.c_str());
        }
        self->wake();
      });
    });
    return 1;
  });
}

// CreateSession with options: overflow ("error" | "drop_oldest" | "sliding"); any other key is
// invalid_argument.
int DbusApi::on_create_session_with_options(sd_bus_message* m, void* self_ptr, sd_bus_error*) {
  auto* self = static_cast<DbusApi*>(self_ptr);
  return guarded(m, [&] {
    const char* system_prompt = nullptr;
    const char* app = nullptr;
    if (int r = sd_bus_message_read(m, "ss", &system_prompt, &app); r < 0) return r;
    auto options = read_vardict(m);
    if (!options) return reply_bus_error(m, options.error());
    std::optional<core::Overflow> overflow;
    for (const auto& [key, value] : options->items()) {
      if (key != "overflow") {
        return reply_bus_error(m, Error(Errc::invalid_argument, "unknown option " + bus_text(key) + " (options: overflow)"));
      }
      if (!value.is_string()) {
        return reply_bus_error(m, Error(Errc::invalid_argument, "overflow must be a string").with_param("overflow"));
      }
      auto o = core::parse_overflow(value.get<std::string>());
      if (!o) return reply_bus_error(m, o.error());
      overflow = *o;
    }
    std::optional<std::string> sp;
    if (*system_prompt != '\0') sp = system_prompt;
    self->with_caller(m, [self, sp = std::move(sp), app = std::string(app), overflow](MessageRef call,
                                                                                     const core::Caller& c) {
      self->service_.create_session(c, sp, app, overflow, [self, call](Result<core::SessionInfo> s) {
        if (!s) {
          reply_bus_error(call.get(), s.error());
        } else {
          sd_bus_reply_method_return(call.get(), "s", s->id.c_str());
        }
        self->wake();
      });
    });
    return 1;
  });
}

template <typename R, typename Start, typename Reply>
int DbusApi::on_session_method(sd_bus_message* m, Start start, Reply reply) {
  return guarded(m, [&] {
    const char* id = nullptr;
    if (int r = sd_bus_message_read(m, "s", &id); r < 0) return r;
    with_caller(m, [this, start, reply, id = std::string(id)](MessageRef call, const core::Caller& c) {
      start(c, id, [this, call, reply](R result) {
        if (!result) {
          reply_bus_error(call.get(), result.error());
        } else if constexpr (std::is_same_v<R, Status>) {
          reply(call.get());
        } else {
          reply(call.get(), *result);
        }
        wake();
      });
    });
    return 1;
  });
}

int DbusApi::on_delete_session(sd_bus_message* m, void* self_ptr, sd_bus_error*) {
  auto* self = static_cast<DbusApi*>(self_ptr);
  return self->on_session_method<Status>(
      m, [self](const core::Caller& c, const std::string& id, auto done) { self->service_.delete_session(c, id, done); },
      [](sd_bus_message* call) { sd_bus_reply_method_return(call, ""); });
}

int DbusApi::on_fork_session(sd_bus_message* m, void* self_ptr, sd_bus_error*) {
  auto* self = static_cast<DbusApi*>(self_ptr);
  return self->on_session_method<Result<core::SessionInfo>>(
      m, [self](const core::Caller& c, const std::string& id, auto done) { self->service_.fork_session(c, id, done); },
      [](sd_bus_message* call, const core::SessionInfo& s) { sd_bus_reply_method_return(call, "s", s.id.c_str()); });
}

int DbusApi::on_prewarm_session(sd_bus_message* m, void* self_ptr, sd_bus_error*) {
  auto* self = static_cast<DbusApi*>(self_ptr);
  return self->on_session_method<Result<core::PrewarmResult>>(
      m, [self](const core::Caller& c, const std::string& id, auto done) { self->service_.prewarm_session(c, id, done); },
      [](sd_bus_message* call, const core::PrewarmResult& p) {
        sd_bus_reply_method_return(call, "uuuu", p.tokens, p.resident, p.loaded, p.restored);
      });
}

int DbusApi::on_rewind_session(sd_bus_message* m, void* self_ptr, sd_bus_error*) {
  auto* self = static_cast<DbusApi*>(self_ptr);
  return guarded(m, [&] {
    const char* id = nullptr;
    if (int r = sd_bus_message_read(m, "s", &id); r < 0) return r;
    auto options = read_vardict(m);
    if (!options) return reply_bus_error(m, options.error());
    auto how = read_rewind(*options);  // the HTTP API's names and checks
    if (!how) return reply_bus_error(m, how.error());
    self->with_caller(m, [self, id = std::string(id), how = *how](MessageRef call, const core::Caller& c) {
      self->service_.rewind_session(c, id, how, [self, call](Result<core::SessionDetail> d) {
        if (!d) {
          reply_bus_error(call.get(), d.error());
        } else {
          sd_bus_reply_method_return(call.get(), "uu", d->info.n_messages, d->info.n_tokens);
        }
        self->wake();
      });
    });
    return 1;
  });
}

int DbusApi::on_list_sessions(sd_bus_message* m, void* self_ptr, sd_bus_error*) {
  auto* self = static_cast<DbusApi*>(self_ptr);
  return guarded(m, [&] {
    self->with_caller(m, [self](MessageRef call, const core::Caller& c) {
      self->service_.list_sessions(c, [self, call](Result<std::vector<core::SessionInfo>> list) {
        guarded(call.get(), [&] {
          if (!list) return reply_bus_error(call.get(), list.error());
          sd_bus_message* reply = nullptr;
          int r = sd_bus_message_new_method_return(call.get(), &reply);
          if (r < 0) return r;
          const MessageRef hold = MessageRef::adopt(reply);
          r = sd_bus_message_open_container(reply, 'a', "a{sv}");
          for (const auto& s : *list) {
            if (r < 0) break;
            r = VarDict()
                    .add("id", s.id)
                    .add("uid", s.uid)
                    .add("app", s.app)
                    .add("system_prompt", s.system_prompt.value_or(""))
                    .add("created_ms", static_cast<std::int64_t>(s.created_ms))
                    .add("updated_ms", static_cast<std::int64_t>(s.updated_ms))
                    .add("tokens", s.n_tokens)
                    .add("messages", s.n_messages)
                    .add("busy", s.busy)
                    .add("resident", s.resident)
                    .add("overflow", std::string(core::overflow_name(s.window.overflow)))
                    .add("window_first_message", static_cast<std::int64_t>(s.window.first_message))
                    .add("dropped_messages", s.window.dropped_messages)
                    .add("dropped_tokens", static_cast<std::int64_t>(s.window.dropped_tokens))
                    .append_to(reply);
          }
          if (r >= 0) r = sd_bus_message_close_container(reply);
          if (r >= 0) r = sd_bus_send(nullptr, reply, nullptr);
          if (r < 0) reply_bus_error(call.get(), errno_error(-r, "building the session list"));
          return 1;
        });
        self->wake();
      });
    });
    return 1;
  });
}

int DbusApi::on_get_status(sd_bus_message* m, void* self_ptr, sd_bus_error*) {
  auto* self = static_cast<DbusApi*>(self_ptr);
  return guarded(m, [&] {
    self->with_caller(m, [self](MessageRef call, const core::Caller& c) {
      const std::string json = bus_text(to_wire(self->api_.status_json(c)));
      sd_bus_reply_method_return(call.get(), "s", json.c_str());
    });
    return 1;
  });
}

int DbusApi::on_get_property(sd_bus*, const char*, const char*, const char* property, sd_bus_message* reply,
                             void* self_ptr, sd_bus_error* error) {
  auto* self = static_cast<DbusApi*>(self_ptr);
  try {
    if (std::strcmp(property, "Model") == 0) {
      return sd_bus_message_append(reply, "s", bus_text(self->api_.model_id()).c_str());
    }
    if (std::strcmp(property, "Version") == 0) return sd_bus_message_append(reply, "s", self->config_.version.c_str());
    if (std::strcmp(property, "Slots") == 0) return sd_bus_message_append(reply, "u", self->service_.slots());
    if (std::strcmp(property, "ActiveSessions") == 0) {
      return sd_bus_message_append(reply, "u", static_cast<std::uint32_t>(self->service_.counts().in_flight));
    }
  } catch (const std::exception& e) {
    return sd_bus_error_set(error, kBusErrorFailed, e.what());
  }
  return sd_bus_error_setf(error, SD_BUS_ERROR_UNKNOWN_PROPERTY, "no property %s", property);
}

void DbusApi::publish_active() {
  if (active_posted_ || !conn_ || !conn_->is_open()) return;
  active_posted_ = true;
  // Coalesced: one PropertiesChanged for the changes of one io turn, if the count differs.
  asio::post(io_, [this, alive = std::weak_ptr<char>(alive_)] {
    if (alive.expired()) return;
    active_posted_ = false;
    if (!conn_ || !conn_->is_open()) return;
    const auto now = static_cast<std::uint32_t>(service_.counts().in_flight);
    if (now == active_published_) return;
    active_published_ = now;
    (void)sd_bus_emit_properties_changed(conn_->bus(), kBusPath, kBusInterface, "ActiveSessions", nullptr);
    wake();
  });
}

}  // namespace llmd::ipc
