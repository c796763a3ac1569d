// The client core: a handle on llmd that runs any number of requests at once, each on its own
// connection (exchange.h), all watched through one epoll fd that an application's event loop (or
// a blocking call's own poll) watches. Callbacks run only inside process(), a blocking run() or
// shutdown() (llmclient.h, "Conventions"). One thread at a time, except interrupt().
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <string>

#include "client-lib/src/exchange.h"
#include "client-lib/src/failure.h"
#include "llmclient/llmclient.h"

namespace llmc::detail {

using Clock = std::chrono::steady_clock;

// What a request does with its answer. Subclasses: a generation (tokens, result) and a plain call.
class Request {
 public:
  virtual ~Request() = default;
  // Each complete Server-Sent Event of the answer, in order.
  virtual void on_event(const std::string& data) { (void)data; }
  // Exactly once, last. `failure` is set when no whole answer arrived (cancelled, timed out,
  // connection failed); `answer` holds whatever did arrive.
  virtual void on_finish(Failure failure, Answer& answer) = 0;

  llmc_req_id id() const { return id_; }

 private:
  friend class Core;
  llmc_req_id id_ = 0;
  std::unique_ptr<Exchange> exchange_;
  Clock::time_point deadline_;  // no byte from llmd until then: timed out
  Clock::time_point retry_at_;  // connect_later: when to try again
  int reg_fd_ = -1;             // as registered in the epoll set
  std::uint32_t reg_events_ = 0;
  Failure outcome_;
  bool* done_flag_ = nullptr;   // a blocking run's "finished" flag
};

class Core {
 public:
  // A client for the socket at `path`; throws std::system_error if the kernel refuses an fd.
  explicit Core(std::string path);
  ~Core();
  Core(const Core&) = delete;
  Core& operator=(const Core&) = delete;

  // Starts a request (`request`: its HTTP bytes). A connection that fails at once still reports
  // through on_finish, from the next process(). `pre_failed` set: finish with it, send nothing.
  llmc_req_id start(std::unique_ptr<Request> r, std::string request, Failure pre_failed = {});
  // Closes a request's connection; its on_finish runs with `why` from the next process().
  bool cancel(llmc_req_id id, Failure why);
  // Runs `r` to its end (blocking), serving the other requests meanwhile; cancelled by interrupt().
  Failure run(std::unique_ptr<Request> r, std::string request);
  // Does what is ready, delivers what finished. Never blocks.
  void process();
  // Blocks until there is work (or timeout_ms, -1: none), then process(). Cancelled: interrupted.
  Failure wait(long timeout_ms);
  // Cancels everything (their on_finish run now), detaches the loop hooks. Requests started from
  // then on (by a callback) finish at once, cancelled.
  void shutdown();

  void interrupt() noexcept;
  void clear_interrupt() noexcept { interrupted_.store(false); }
  void set_hooks(const llmc_loop_hooks* hooks);
  void set_idle_timeout(std::chrono::milliseconds t) { idle_ = t; }

  int fd() const { return ep_; }
  long timeout_ms() const;  // until process() must run, -1: never
  std::size_t pending() const { return requests_.size() + finished_.size(); }
  const std::string& path() const { return path_; }
  bool in_callback() const { return in_callback_ > 0; }
  // llmc_close from inside a callback: everything is cancelled now (their on_finish run before
  // the current process() returns) and the entry point that ran the callback frees the client.
  void request_close();
  bool close_requested() const { return close_requested_; }

  Failure last_error;  // of the last failed call (llmc_last_error)

 private:
  class CallbackScope;

  void process_ready();
  void step(llmc_req_id id, std::uint32_t events);
  void settle(Request& r);  // after I/O: finish, schedule a retry, or (re)register
  bool complete(llmc_req_id id, Failure f);
  void deliver();
  bool sync_epoll(Request& r);
  void unregister(Request& r);
  void expire(Clock::time_point now);
  bool next_deadline(Clock::time_point& at) const;
  void update_loop();
  void wake() noexcept;
  void drain_wakeups() noexcept;

  std::string path_;
  int ep_ = -1;    // the epoll set: every request's connection + wake_
  int wake_ = -1;  // eventfd: interrupts and finished requests wake the loop
  std::chrono::milliseconds idle_{600000};
  llmc_req_id next_id_ = 1;
  std::map<llmc_req_id, std::unique_ptr<Request>> requests_;  // in flight
  std::deque<std::unique_ptr<Request>> finished_;             // on_finish not yet run
  std::atomic<bool> interrupted_{false};
  int in_callback_ = 0;
  bool processing_ = false;
  bool close_requested_ = false;
  llmc_loop_hooks hooks_{};
  bool watching_ = false;       // the loop watches the fd
  bool timer_on_ = false;       // the loop has a timer for timer_at_
  bool rearm_ = false;          // set the timer again even if the deadline did not change
  Clock::time_point timer_at_;
};

}  // namespace llmc::detail

// The C handle.
struct llmc_client {
  explicit llmc_client(std::string path) : core(std::move(path)) {}
  llmc::detail::Core core;
};
