// Generations (see generation.h).
#include "client-lib/src/generation.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <new>

#include <nlohmann/json.hpp>

#include "client-lib/src/c_block.h"
#include "client-lib/src/text.h"

namespace llmc::detail {
namespace {

using nlohmann::json;

constexpr std::size_t kMaxStops = 64;
constexpr std::size_t kMaxParamsSize = 4096;  // a struct_size beyond this is garbage, not a newer header
// The struct of the first header (libllmclient.so.1.0): everything before json_schema.
constexpr std::size_t kParamsSizeV1 = offsetof(llmc_gen_params, json_schema);
static_assert(kParamsSizeV1 % alignof(llmc_gen_params) == 0, "1.0's struct ended right before json_schema");

Failure bad(std::string message) { return failure(LLMC_ERR_INVALID_ARGUMENT, std::move(message)); }

// The caller's params as this library knows them. An older header's smaller struct is taken with
// the fields it lacks at their defaults; a larger struct (a newer header) is accepted if the fields
// this library does not know are zero, as Linux's openat2(2) does with its struct.
Failure read_params(const llmc_gen_params* in, llmc_gen_params& p) {
  llmc_gen_params_init(&p);
  if (in == nullptr) return {};
  if (in->struct_size < kParamsSizeV1 || in->struct_size > kMaxParamsSize ||
      (in->struct_size < sizeof(llmc_gen_params) && in->struct_size != kParamsSizeV1)) {
    return bad("params->struct_size is " + std::to_string(in->struct_size) +
               ": initialise the params with llmc_gen_params_init");
  }
  const auto* bytes = reinterpret_cast<const unsigned char*>(in);
  for (std::size_t i = sizeof(llmc_gen_params); i < in->struct_size; ++i) {
    if (bytes[i] != 0) return bad("params has fields this libllmclient does not know (a newer header?)");
  }
  std::memcpy(&p, in, std::min(sizeof p, in->struct_size));
  p.struct_size = sizeof p;
  return {};
}

// params->json_schema or ->grammar as llmd's request fields (response_format, grammar).
Failure add_constraint(const llmc_gen_params& p, json& b) {
  if (p.json_schema == nullptr && p.grammar == nullptr) return {};
  const char* which = p.json_schema != nullptr ? "params->json_schema" : "params->grammar";
  if (p.session_id != nullptr) return bad(std::string(which) + " is for one-off chats (session turns do not take it yet)");
  if (p.mode == LLMC_MODE_COMPLETION) return bad(std::string(which) + " is for chats, not LLMC_MODE_COMPLETION");
  if (p.json_schema != nullptr && p.grammar != nullptr) return bad("params->json_schema and params->grammar do not go together");
  std::string_view text;
  if (auto f = check_text(p.json_schema != nullptr ? p.json_schema : p.grammar, which, text)) return f;
  if (p.grammar != nullptr) {
    if (text.empty()) return bad("params->grammar is empty");
    b["grammar"] = text;
    return {};
  }
  json schema = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!schema.is_object()) return bad("params->json_schema is not a JSON object (a JSON Schema, as text)");
  if (schema.empty()) {
    b["response_format"] = {{"type", "json_object"}};
  } else {
    b["response_format"] = {{"type", "json_schema"},
                            {"json_schema", {{"name", "llmc"}, {"schema", std::move(schema)}, {"strict", true}}}};
  }
  return {};
}

Failure check_number(double v, const char* what) {
  if (!std::isnan(v) && !std::isfinite(v)) return bad(std::string(what) + " must be a finite number (NaN: llmd's default)");
  return {};
}

Failure check_count(std::int64_t v, const char* what) {
  if (v < -1) return bad(std::string(what) + " must be -1 (llmd's default) or at least 0, not " + std::to_string(v));
  return {};
}

const json* first_choice(const json& j) {
  const auto c = j.find("choices");
  if (c == j.end() || !c->is_array() || c->empty() || !(*c)[0].is_object()) return nullptr;
  return &(*c)[0];
}

std::string string_at(const json& j, const char* key) {
  const auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

std::int32_t int_at(const json& j, const char* key) {
  const auto it = j.find(key);
  return it != j.end() && it->is_number_integer() ? it->get<std::int32_t>() : 0;
}

}  // namespace

Failure build_generation(const char* prompt_arg, const llmc_gen_params* params, GenHttp& out) {
  std::string_view prompt, session, system, app;
  if (auto f = check_text(prompt_arg, "prompt", prompt)) return f;
  llmc_gen_params p;
  if (auto f = read_params(params, p)) return f;
  if (auto f = check_text(p.session_id, "params->session_id", session, true, 256)) return f;
  if (auto f = check_text(p.system_prompt, "params->system_prompt", system, true)) return f;
  if (auto f = check_text(p.app, "params->app", app, true, 256)) return f;
  if (p.mode != LLMC_MODE_CHAT && p.mode != LLMC_MODE_COMPLETION) {
    return bad("params->mode must be LLMC_MODE_CHAT or LLMC_MODE_COMPLETION");
  }
  if (p.session_id != nullptr && session.empty()) return bad("params->session_id is empty");
  if (p.session_id != nullptr && p.mode == LLMC_MODE_COMPLETION) {
    return bad("a session is a chat: params->mode must be LLMC_MODE_CHAT with params->session_id");
  }
  if (p.system_prompt != nullptr && (p.session_id != nullptr || p.mode == LLMC_MODE_COMPLETION)) {
    return bad("params->system_prompt is for one-off chats (a session has its own)");
  }
  if (p.priority != LLMC_PRIORITY_INTERACTIVE && p.priority != LLMC_PRIORITY_BACKGROUND) {
    return bad("params->priority must be LLMC_PRIORITY_INTERACTIVE or LLMC_PRIORITY_BACKGROUND");
  }
  if (auto f = check_count(p.max_tokens, "params->max_tokens")) return f;
  if (auto f = check_count(p.top_k, "params->top_k")) return f;
  if (auto f = check_count(p.seed, "params->seed")) return f;
  if (auto f = check_number(p.temperature, "params->temperature")) return f;
  if (auto f = check_number(p.top_p, "params->top_p")) return f;
  if (p.n_stop > kMaxStops) return bad("params->n_stop is over " + std::to_string(kMaxStops));
  if (p.n_stop > 0 && p.stop == nullptr) return bad("params->stop is NULL but params->n_stop is not 0");

  json b = json::object();
  if (p.session_id != nullptr) {
    out.target = "/v1/sessions/" + path_segment(session) + "/messages";
    b["content"] = prompt;
  } else if (p.mode == LLMC_MODE_COMPLETION) {
    out.target = "/v1/completions";
    b["prompt"] = prompt;
  } else {
    out.target = "/v1/chat/completions";
    json messages = json::array();
    if (p.system_prompt != nullptr) messages.push_back({{"role", "system"}, {"content", system}});
    messages.push_back({{"role", "user"}, {"content", prompt}});
    b["messages"] = std::move(messages);
  }
  if (p.max_tokens != -1) b["max_tokens"] = p.max_tokens;
  if (!std::isnan(p.temperature)) b["temperature"] = p.temperature;
  if (!std::isnan(p.top_p)) b["top_p"] = p.top_p;
  if (p.top_k != -1) b["top_k"] = p.top_k;
  if (p.seed != -1) b["seed"] = p.seed;
  if (p.n_stop > 0) {
    json stops = json::array();
    for (std::size_t i = 0; i < p.n_stop; ++i) {
      std::string_view s;
      const std::string what = "params->stop[" + std::to_string(i) + "]";
      if (auto f = check_text(p.stop[i], what.c_str(), s, false, 4096)) return f;
      stops.push_back(s);
    }
    b["stop"] = std::move(stops);
  }
  if (p.priority == LLMC_PRIORITY_BACKGROUND) b["priority"] = "background";
  if (p.app != nullptr) b["app"] = app;
  if (p.ignore_eos != 0) b["ignore_eos"] = true;
  if (auto f = add_constraint(p, b)) return f;
  out.stream = p.stream != 0;
  b["stream"] = out.stream;
  out.body = b.dump();
  return {};
}

void GenDecoder::take(const std::string& raw, bool is_whole) {
  const json j = json::parse(raw, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return;
  last_json = raw;
  if (const auto e = j.find("error"); e != j.end() && e->is_object()) {
    has_error_ = true;
    error_ = from_error_event(string_at(*e, "code"), string_at(*e, "message"), string_at(*e, "param"));
    return;
  }
  if (const std::string s = string_at(j, "session"); !s.empty()) session_id = s;
  std::string piece;
  if (const json* c = first_choice(j)) {
    if (const std::string fr = string_at(*c, "finish_reason"); !fr.empty()) finish_reason = fr;
    if (const auto d = c->find("delta"); d != c->end() && d->is_object()) piece = string_at(*d, "content");
    else if (const auto m = c->find("message"); m != c->end() && m->is_object()) piece = string_at(*m, "content");
    else piece = string_at(*c, "text");
  } else if (is_whole) {  // a session turn's whole answer: {"session", "message", "finish_reason", ...}
    if (const auto m = j.find("message"); m != j.end() && m->is_object()) piece = string_at(*m, "content");
    if (const std::string fr = string_at(j, "finish_reason"); !fr.empty()) finish_reason = fr;
  }
  // The window: a "window" event's (before the text) or usage.window (at the end).
  auto window = [&](const json& w) {
    if (!w.is_object()) return;
    if (const auto m = w.find("moved"); m != w.end() && m->is_boolean()) window_moved = window_moved || m->get<bool>();
    if (!window_moved) return;
    if (const auto v = w.find("dropped_tokens"); v != w.end() && v->is_number_integer()) window_dropped_tokens = v->get<std::int64_t>();
    window_dropped_messages = int_at(w, "dropped_messages");
    if (const auto v = w.find("first_message"); v != w.end() && v->is_number_integer()) window_first_message = v->get<std::int64_t>();
  };
  if (const auto w = j.find("window"); w != j.end()) window(*w);
  if (const auto u = j.find("usage"); u != j.end() && u->is_object()) {
    if (const auto w = u->find("window"); w != u->end()) window(*w);
    prompt_tokens = int_at(*u, "prompt_tokens");
    completion_tokens = int_at(*u, "completion_tokens");
    if (const auto d = u->find("prompt_tokens_details"); d != u->end() && d->is_object()) {
      cached_tokens = int_at(*d, "cached_tokens");
    }
  }
  text += piece;
  last_piece_ = std::move(piece);
}

std::string GenDecoder::event(const std::string& data) {
  if (data == "[DONE]") {
    saw_done_ = true;
    return {};
  }
  last_piece_.clear();
  take(data, false);
  return last_piece_;
}

std::string GenDecoder::whole(const std::string& body) {
  last_piece_.clear();
  take(body, true);
  saw_done_ = true;
  return last_piece_;
}

Failure GenDecoder::outcome(Failure transport, const Answer& answer, bool stream) const {
  const int status = answer.status > 0 ? answer.status : 0;
  if (transport) {
    transport.http_status = status;
    return transport;
  }
  if (status < 200 || status > 299) return from_http(status, answer.body, answer.retry_after_s);
  if (has_error_) {
    Failure e = error_;
    e.http_status = status;
    return e;
  }
  Failure f;
  if (stream && !saw_done_) f = failure(LLMC_ERR_IO, "llmd closed the connection mid-answer");
  else if (finish_reason == "cancelled") f = failure(LLMC_ERR_CANCELLED, "llmd cancelled the generation");
  f.http_status = status;
  return f;
}

void GenRequest::token(const std::string& text) {
  if (on_token_ != nullptr && !text.empty()) on_token_(user_, id(), text.c_str(), text.size());
}

void GenRequest::on_event(const std::string& data) { token(decoder_.event(data)); }

void GenRequest::on_finish(Failure failure, Answer& answer) {
  if (!failure && answer.status >= 200 && answer.status <= 299 && !answer.event_stream) {
    token(decoder_.whole(answer.body));
  }
  const Failure f = decoder_.outcome(std::move(failure), answer, stream_);
  llmc_result* r = nullptr;
  try {
    r = make_result(id(), decoder_, f);
  } catch (const std::bad_alloc&) {
    r = nullptr;
  }
  if (r == nullptr) {  // out of memory: the app still hears about the end, once
    llmc_result oom{id(), LLMC_ERR_NOMEM, f.http_status, "out of memory", "", -1, "", "", "", 0, 0, 0, "", 0, 0, 0, 0};
    if (keep_ != nullptr) *keep_ = nullptr;
    else if (on_done_ != nullptr) on_done_(user_, &oom);
    return;
  }
  if (keep_ != nullptr) {
    *keep_ = r;
    return;
  }
  if (on_done_ != nullptr) on_done_(user_, r);
  std::free(r);
}

llmc_result* make_result(llmc_req_id id, const GenDecoder& d, const Failure& f) {
  BlockSize size;
  const std::size_t at = size.add<llmc_result>();
  for (const std::string* s : {&f.message, &f.param, &d.text, &d.finish_reason, &d.session_id, &d.last_json}) size.str(*s);
  Block b(size);
  auto* r = b.at<llmc_result>(at);
  r->id = id;
  r->code = f.code;
  r->http_status = f.http_status;
  r->message = b.str(f.message);
  r->error_param = b.str(f.param);
  r->retry_after_s = f.retry_after_s;
  r->text = b.str(d.text);
  r->finish_reason = b.str(d.finish_reason);
  r->session_id = b.str(d.session_id);
  r->prompt_tokens = d.prompt_tokens;
  r->completion_tokens = d.completion_tokens;
  r->cached_tokens = d.cached_tokens;
  r->json = b.str(d.last_json);
  r->window_moved = d.window_moved ? 1 : 0;
  r->window_dropped_tokens = d.window_dropped_tokens;
  r->window_dropped_messages = d.window_dropped_messages;
  r->window_first_message = d.window_first_message;
  return static_cast<llmc_result*>(b.release());
}

}  // namespace llmc::detail

extern "C" llmc_gen_params* llmc_gen_params_init(llmc_gen_params* p) {
  if (p == nullptr) return nullptr;
  std::memset(p, 0, sizeof *p);
  p->struct_size = sizeof *p;
  p->session_id = nullptr;
  p->mode = LLMC_MODE_CHAT;
  p->system_prompt = nullptr;
  p->max_tokens = -1;
  p->temperature = std::nan("");
  p->top_p = std::nan("");
  p->top_k = -1;
  p->seed = -1;
  p->stop = nullptr;
  p->n_stop = 0;
  p->priority = LLMC_PRIORITY_INTERACTIVE;
  p->app = nullptr;
  p->stream = 1;
  p->ignore_eos = 0;
  p->json_schema = nullptr;
  p->grammar = nullptr;
  return p;
}
