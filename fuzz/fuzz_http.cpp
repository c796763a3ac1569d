// Fuzz target: the HTTP request path. Raw bytes, as one client connection sends them, go through
// the server's Beast request parser with the server's limits (ipc/http_request_reader.h), then
// routing and the real API handlers (ipc::Api::handle) over a real core::Service: stories260K,
// a 128-cell context of 2 slots, a session store and a KV chunk store in a scratch state directory.
// A Responder that checks every answer stands in for the connection.
//
// Input: the bytes one client sends. Requests are read one after another as the server reads
// them (keep-alive; pipelined bytes wait for the previous answer), at most 16 per input. Where the
// server would end the connection (Connection: close, an event stream, a hang-up) the client goes
// on with the next request on a new connection; after a request the server refuses (400, 413,
// 431) it goes on with the bytes the server had not read yet. Two harness conveniences the API
// never sees:
//   - "$S" in a path or body is replaced by the id of the session created last in this input
//     (session ids are random, so the fuzzer could never name one);
//   - the query string (which the API ignores) picks the caller: "uid=0" (root, an admin) or
//     "uid=N" (1000 + N % 2; 1000 by default), and "hangup=K" makes the client hang up after K
//     streamed events (0: as soon as the handler returns), which cancels the turn; the client
//     goes on without waiting for the cancelled turn to end (so the next request may find its
//     session busy).
// LLMD_FUZZ_VERBOSE=1 prints every answer (to see what a corpus reaches); LLMD_FUZZ_LOG=1 lets
// the daemon core log.
//
// Findings (each aborts): a handler that throws (the server would answer 500), any 5xx answer but
// 507 (a full disk), an answer that is not JSON or not in the OpenAI error shape, a 405 without
// Allow, a 429 without Retry-After, an event stream that is malformed, a second answer to one
// request, a request left unanswered for a minute. Per-input state is bounded: every turn finishes
// or is cancelled before the next input, and the sessions an input created are deleted after it.
//
// The model: $LLMD_FUZZ_MODEL, else ../shared/models/stories260K.gguf beside the source tree.
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/buffer.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/read.hpp>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "engine/context.h"
#include "engine/model.h"
#include "engine/tokenizer.h"
#include "core/engine_worker.h"
#include "core/service.h"
#include "core/task_thread.h"
#include "fuzz/fuzz_util.h"
#include "ipc/api.h"
#include "ipc/http_request_reader.h"
#include "kvstore/chunk_store.h"
#include "kvstore/session_store.h"

namespace {

using namespace llmd;
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace fs = std::filesystem;

constexpr int kMaxRequests = 16;
const bool verbose = std::getenv("LLMD_FUZZ_VERBOSE") != nullptr;  // print each request's answer
constexpr auto kAnswerDeadline = std::chrono::seconds(60);

// The daemon's core, built once per process (LLVMFuzzerInitialize) and never torn down between
// inputs: what one input leaves behind is what the next one meets, as in a running daemon.
struct Daemon {
  fs::path state_dir;
  std::unique_ptr<engine::Model> model;
  std::unique_ptr<engine::Tokenizer> tokenizer;
  std::unique_ptr<engine::Context> context;
  std::unique_ptr<kvstore::SessionStore> store;
  std::unique_ptr<kvstore::ChunkStore> chunks;
  std::unique_ptr<core::EngineWorker> worker;
  std::unique_ptr<core::TaskThread> storage;
  asio::io_context io;
  std::unique_ptr<core::Service> service;
  std::unique_ptr<ipc::Api> api;
  ipc::HttpLimits limits;
};
Daemon* d = nullptr;

[[noreturn]] void setup_failed(const std::string& what) {
  std::fprintf(stderr, "fuzz_http: %s\n", what.c_str());
  std::exit(1);
}

// Runs the io_context until pred() holds; a finding if that takes longer than the deadline.
template <typename Pred>
void run_until(Pred pred, const char* what) {
  const auto deadline = std::chrono::steady_clock::now() + kAnswerDeadline;
  while (!pred()) {
    FUZZ_CHECK(std::chrono::steady_clock::now() < deadline, std::string("waited a minute for ") + what);
    d->io.run_one_for(std::chrono::milliseconds(10));
    if (d->io.stopped()) d->io.restart();
  }
}

bool is_error_shape(const nlohmann::json& j) {
  return j.is_object() && j.contains("error") && j["error"].is_object() && j["error"].contains("message") &&
         j["error"]["message"].is_string() && j["error"].contains("type") && j["error"]["type"].is_string() &&
         j["error"].contains("code") && j["error"]["code"].is_string();
}

// The connection as the API sees it, checking everything it is told.
class CheckingResponder final : public ipc::Responder {
 public:
  CheckingResponder(std::string request, std::optional<int> hangup_after)
      : request_(std::move(request)), hangup_after_(hangup_after) {}

  void reply(unsigned status, std::string body, std::string content_type, std::vector<ipc::Header> headers) override {
    if (closed_) return;
    FUZZ_CHECK(state_ == State::waiting, "a second answer (" + std::to_string(status) + ") to " + request_);
    state_ = State::replied;
    status_ = status;
    if (verbose) std::fprintf(stderr, "%s\n  -> %u %.300s\n", request_.c_str(), status, body.c_str());
    // 507 is the one server-side answer that is no bug: the state directory's disk is full.
    FUZZ_CHECK(status < 500 || status == 507, std::to_string(status) + " " + body + "\nfor " + request_);
    FUZZ_CHECK(content_type == "application/json", "content type " + content_type + " for " + request_);
    const auto j = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
    FUZZ_CHECK(!j.is_discarded() && j.is_object(), "an answer that is not a JSON object: " + body);
    if (status >= 400) {
      FUZZ_CHECK(is_error_shape(j), "an error without the error shape: " + body);
    } else {
      FUZZ_CHECK(status == 200 || status == 201, "status " + std::to_string(status));
      if (status == 201 && j.contains("id") && j["id"].is_string()) created_ = j["id"].get<std::string>();
    }
    auto has_header = [&](const char* name) {
      for (const auto& h : headers) {
        if (h.first == name) return true;
      }
      return false;
    };
    FUZZ_CHECK(status != 405 || has_header("Allow"), "405 without Allow for " + request_);
    FUZZ_CHECK(status != 429 || has_header("Retry-After"), "429 without Retry-After for " + request_);
  }
  void start_events() override {
    if (closed_) return;
    FUZZ_CHECK(state_ == State::waiting, "an event stream after an answer to " + request_);
    state_ = State::streaming;
  }
  void named_event(const std::string& name, const std::string& data) override {
    if (closed_) return;
    FUZZ_CHECK(name == "window", "an unknown named event " + name + " for " + request_);
    FUZZ_CHECK(!done_marker_, "a named event after [DONE]: " + data);
    event(data);  // the data is a chunk like the others
  }
  void event(const std::string& data) override {
    if (closed_) return;
    FUZZ_CHECK(state_ == State::streaming, "an event outside an event stream: " + data);
    FUZZ_CHECK(!done_marker_, "an event after [DONE]: " + data);
    if (verbose) std::fprintf(stderr, "%s\n  -> event %.300s\n", request_.c_str(), data.c_str());
    if (data == "[DONE]") {
      done_marker_ = true;
    } else {
      const auto j = nlohmann::json::parse(data, nullptr, /*allow_exceptions=*/false);
      FUZZ_CHECK(!j.is_discarded() && j.is_object(), "an event that is not a JSON object: " + data);
      if (j.contains("error")) {
        FUZZ_CHECK(is_error_shape(j), "an error event without the error shape: " + data);
        FUZZ_CHECK(j["error"]["type"] != "server_error", "a server error in an event stream: " + data + "\nfor " + request_);
      } else {
        FUZZ_CHECK(j.contains("choices") && j["choices"].is_array(), "an event without choices: " + data);
      }
    }
    ++events_;
    if (hangup_after_ && events_ >= *hangup_after_) hang_up();
  }
  void end_events() override {
    if (closed_) return;
    FUZZ_CHECK(state_ == State::streaming, "end_events without an event stream for " + request_);
    FUZZ_CHECK(done_marker_, "an event stream ended without [DONE] for " + request_);
    state_ = State::ended;
  }
  bool closed() const override { return closed_; }
  void on_close(std::function<void()> cb) override {
    if (closed_ && !complete()) return cb();
    on_close_.push_back(std::move(cb));
  }

  // The client goes away (the server's hang-up detection).
  void hang_up() {
    if (closed_) return;
    closed_ = true;
    if (complete()) return;
    auto cbs = std::move(on_close_);
    for (auto& cb : cbs) cb();
  }
  bool complete() const { return state_ == State::replied || state_ == State::ended; }
  bool streamed() const { return state_ == State::ended || state_ == State::streaming; }
  const std::optional<std::string>& created() const { return created_; }
  std::optional<int> hangup_after() const { return hangup_after_; }

 private:
  enum class State { waiting, replied, streaming, ended };
  std::string request_;
  std::optional<int> hangup_after_;
  State state_ = State::waiting;
  unsigned status_ = 0;
  bool closed_ = false;
  bool done_marker_ = false;
  int events_ = 0;
  std::optional<std::string> created_;
  std::vector<std::function<void()>> on_close_;
};

// The input as a socket delivers it: in pieces, then end of file (a SyncReadStream for Beast).
class InputStream {
 public:
  explicit InputStream(std::string_view bytes) : bytes_(bytes) {}

  template <typename MutableBuffers>
  std::size_t read_some(const MutableBuffers& buffers, boost::system::error_code& ec) {
    if (at_ == bytes_.size()) {
      ec = asio::error::eof;
      return 0;
    }
    ec = {};
    // Odd-sized pieces, so heads and bodies arrive split as they can from a socket.
    const std::size_t piece = std::min<std::size_t>(bytes_.size() - at_, 61);
    const std::size_t n = asio::buffer_copy(buffers, asio::buffer(bytes_.data() + at_, piece));
    at_ += n;
    return n;
  }
  bool at_end() const { return at_ == bytes_.size(); }

  template <typename MutableBuffers>
  std::size_t read_some(const MutableBuffers& buffers) {
    boost::system::error_code ec;
    const std::size_t n = read_some(buffers, ec);
    if (ec) throw boost::system::system_error(ec);
    return n;
  }

 private:
  std::string_view bytes_;
  std::size_t at_ = 0;
};

void replace_all(std::string& s, std::string_view what, const std::string& with) {
  for (std::size_t at = s.find(what); at != std::string::npos; at = s.find(what, at + with.size())) {
    s.replace(at, what.size(), with);
  }
}

struct Controls {
  ipc::PeerCredentials peer;
  std::optional<int> hangup_after;
};

Controls controls_of(const std::string& query) {
  Controls c;
  c.peer.uid = c.peer.gid = 1000;
  c.peer.pid = static_cast<std::int32_t>(::getpid());
  std::size_t at = 0;
  while (at <= query.size()) {
    const std::size_t end = std::min(query.find('&', at), query.size());
    const std::string_view kv(query.data() + at, end - at);
    auto number = [&](std::string_view prefix) -> std::optional<long> {
      if (kv.substr(0, prefix.size()) != prefix) return std::nullopt;
      const std::string digits(kv.substr(prefix.size()));
      if (digits.empty() || digits.size() > 6 || digits.find_first_not_of("0123456789") != std::string::npos) {
        return std::nullopt;
      }
      return std::stol(digits);
    };
    if (auto uid = number("uid=")) c.peer.uid = c.peer.gid = *uid == 0 ? 0 : 1000 + static_cast<std::uint32_t>(*uid % 2);
    if (auto h = number("hangup=")) c.hangup_after = static_cast<int>(*h % 64);
    at = end + 1;
  }
  return c;
}

// One request through the API; waits for its answer and for its turn (if any) to be over.
// False if the server would not read another request on this connection.
bool handle(ipc::HttpRequest req, bool keep_alive, std::optional<std::string>& last_session) {
  if (last_session) {
    replace_all(req.path, "$S", *last_session);
    replace_all(req.body, "$S", *last_session);
  }
  const Controls controls = controls_of(req.query);
  req.peer = controls.peer;
  const std::string what = req.method_name + " " + req.path + " " + req.body.substr(0, 512);
  auto r = std::make_shared<CheckingResponder>(what, controls.hangup_after);
  try {
    d->api->handle(std::move(req), r);
  } catch (const std::exception& e) {
    fuzz::fail(__FILE__, __LINE__, "handler threw", std::string(e.what()) + "\nfor " + what + " (the server answers 500)");
  }
  if (controls.hangup_after == 0) r->hang_up();
  run_until([&] { return r->closed() || (r->complete() && d->service->status().in_flight == 0); }, what.c_str());
  if (r->created()) last_session = r->created();
  return keep_alive && !r->closed() && !r->streamed();
}

// Every turn is over (finished, or cancelled after a hang-up).
void wait_idle() {
  run_until([] { return d->service->status().in_flight == 0; }, "the turns in flight to end");
}

// Deletes every session (as root) so that inputs do not accumulate state.
void delete_sessions() {
  if (d->service->status().sessions == 0) return;
  const core::Caller root{0, 0, static_cast<std::int32_t>(::getpid()), true};
  std::optional<Result<std::vector<core::SessionInfo>>> list;
  d->service->list_sessions(root, [&](Result<std::vector<core::SessionInfo>> l) { list = std::move(l); });
  run_until([&] { return list.has_value(); }, "the session list");
  FUZZ_CHECK(*list, "listing sessions failed: " + list->error().to_string());
  std::size_t pending = (*list)->size();
  for (const auto& s : **list) {
    d->service->delete_session(root, s.id, [&, id = s.id](Status st) {
      FUZZ_CHECK(st.ok(), "deleting " + id + " failed: " + st.error().to_string());
      --pending;
    });
  }
  run_until([&] { return pending == 0; }, "deleting sessions");
  FUZZ_CHECK(d->service->status().sessions == 0, "sessions left after deleting every listed one");
}

void shut_down() {
  if (!d) return;
  bool idle = false;
  d->service->begin_shutdown(std::chrono::milliseconds(0), [&] { idle = true; });
  while (!idle) {
    d->io.run_one_for(std::chrono::milliseconds(10));
    if (d->io.stopped()) d->io.restart();
  }
  d->api.reset();
  d->service.reset();
  d->worker.reset();
  d->storage.reset();
  d->chunks.reset();
  d->store.reset();
  std::error_code ec;
  fs::remove_all(d->state_dir, ec);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (!std::getenv("LLMD_FUZZ_LOG")) spdlog::set_level(spdlog::level::off);
  const char* env_model = std::getenv("LLMD_FUZZ_MODEL");
  const std::string model_path = env_model && *env_model ? env_model : LLMD_FUZZ_DEFAULT_MODEL;
  d = new Daemon;

  // In memory where there is a roomy tmpfs: the session store commits (fsyncs) every turn.
  const char* tmp = std::getenv("TMPDIR");
  std::error_code ec;
  const bool shm = fs::is_directory("/dev/shm", ec) && fs::space("/dev/shm", ec).available >= (1ull << 30);
  const std::string parent = shm ? "/dev/shm" : tmp && *tmp ? tmp : "/tmp";
  std::string dir = parent + "/llmd-fuzz-http-XXXXXX";
  if (::mkdtemp(dir.data()) == nullptr) setup_failed("cannot create a scratch state directory");
  d->state_dir = dir;

  auto model = engine::Model::load({model_path});
  if (!model) setup_failed("loading " + model_path + " (set LLMD_FUZZ_MODEL): " + model.error().to_string());
  d->model = std::move(*model);
  d->tokenizer = std::make_unique<engine::Tokenizer>(*d->model);
  engine::ContextParams cp;
  cp.n_ctx = 128;
  cp.n_slots = 2;
  cp.n_batch = 128;
  cp.n_ubatch = 128;
  cp.n_threads = 1;
  auto ctx = engine::Context::create(*d->model, cp);
  if (!ctx) setup_failed("creating the context: " + ctx.error().to_string());
  d->context = std::move(*ctx);
  auto store = kvstore::SessionStore::open((d->state_dir / "sessions.db").string());
  if (!store) setup_failed("opening the session store: " + store.error().to_string());
  d->store = std::move(*store);
  kvstore::ChunkStoreOptions co;
  co.dir = d->state_dir / "kv";
  co.chunk_tokens = 16;
  co.ram_budget = 1u << 20;
  co.disk_budget = 2u << 20;
  auto chunks = kvstore::ChunkStore::open(co, d->context->kv_layout(), d->model->info().fingerprint);
  if (!chunks) setup_failed("opening the chunk store: " + chunks.error().to_string());
  d->chunks = std::move(*chunks);

  core::WorkerOptions wo;
  wo.chunks = d->chunks.get();
  d->worker = std::make_unique<core::EngineWorker>(*d->context, *d->tokenizer, std::move(wo));
  d->storage = std::make_unique<core::TaskThread>("fuzz-storage");
  d->limits.max_body_bytes = 8192;  // small, so that the fuzzer reaches the limits
  d->limits.max_header_bytes = 1024;
  core::ServiceLimits sl;
  sl.default_max_tokens = 4;  // generating requests stay cheap unless they ask for more
  sl.max_message_bytes = d->limits.max_body_bytes;
  sl.max_sessions_per_user = 8;
  d->service = std::make_unique<core::Service>(d->io, *d->model, *d->tokenizer, d->context->max_seq_len(), *d->worker,
                                                 *d->storage, *d->store, sl);
  d->service->set_chunk_store(d->chunks.get());
  if (auto st = d->service->load(); !st) setup_failed("loading the service: " + st.error().to_string());
  d->worker->start();
  d->api = std::make_unique<ipc::Api>(*d->service, *d->model, ipc::ApiConfig{"fuzz", std::nullopt});
  std::atexit(shut_down);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  InputStream stream(std::string_view(reinterpret_cast<const char*>(data), size));
  std::optional<beast::flat_buffer> buffer;  // one per connection, as in the server
  std::optional<std::string> last_session;
  for (int i = 0; i < kMaxRequests && !(stream.at_end() && buffer && buffer->size() == 0); ++i) {
    if (!buffer) buffer.emplace();
    ipc::RequestParser parser;
    ipc::apply_limits(parser, d->limits);
    boost::system::error_code ec;
    beast::http::read(stream, *buffer, parser, ec);
    if (ec) {
      // At the end of the input the server waits for more and times out; otherwise it answers 413,
      // 431 or 400 (fixed texts) and closes the connection.
      if (stream.at_end()) break;
      buffer.reset();
      continue;
    }
    ipc::RequestMessage msg = parser.release();
    const bool keep_alive = msg.keep_alive();
    // Whether the connection stays open or the client reconnects makes no difference here: each
    // request brings its own caller, and the bytes read ahead are the client's next request.
    (void)handle(ipc::to_http_request(msg, {}), keep_alive, last_session);
  }
  wait_idle();
  delete_sessions();
  return 0;
}
