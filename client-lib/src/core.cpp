// The client core (see core.h).
#include "client-lib/src/core.h"

#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <utility>
#include <system_error>
#include <vector>

namespace llmc::detail {
namespace {

constexpr auto kConnectRetry = std::chrono::milliseconds(10);

long ms_until(Clock::time_point at, Clock::time_point now) {
  if (at <= now) return 0;
  const auto us = std::chrono::duration_cast<std::chrono::microseconds>(at - now).count();
  const long long ms = (us + 999) / 1000;  // rounded up: a timer never fires before the deadline
  return ms > LONG_MAX ? LONG_MAX : static_cast<long>(ms);
}

}  // namespace

// Marks a user callback running: re-entrant calls are refused, llmc_close is deferred.
class Core::CallbackScope {
 public:
  explicit CallbackScope(Core& c) : c_(c) { ++c_.in_callback_; }
  ~CallbackScope() { --c_.in_callback_; }
  CallbackScope(const CallbackScope&) = delete;
  CallbackScope& operator=(const CallbackScope&) = delete;

 private:
  Core& c_;
};

Core::Core(std::string path) : path_(std::move(path)) {
  ep_ = ::epoll_create1(EPOLL_CLOEXEC);
  if (ep_ < 0) throw std::system_error(errno, std::generic_category(), "epoll_create1");
  wake_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake_ < 0) {
    const int err = errno;
    ::close(ep_);
    throw std::system_error(err, std::generic_category(), "eventfd");
  }
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = 0;  // request ids start at 1
  if (::epoll_ctl(ep_, EPOLL_CTL_ADD, wake_, &ev) != 0) {
    const int err = errno;
    ::close(wake_);
    ::close(ep_);
    throw std::system_error(err, std::generic_category(), "epoll_ctl");
  }
}

Core::~Core() {
  requests_.clear();  // closes their connections
  finished_.clear();
  ::close(wake_);
  ::close(ep_);
}

void Core::interrupt() noexcept {
  interrupted_.store(true);
  wake();
}

void Core::wake() noexcept {
  const std::uint64_t one = 1;
  [[maybe_unused]] const ssize_t n = ::write(wake_, &one, sizeof one);  // EAGAIN: already awake
}

void Core::drain_wakeups() noexcept {
  std::uint64_t n = 0;
  [[maybe_unused]] const ssize_t r = ::read(wake_, &n, sizeof n);
}

llmc_req_id Core::start(std::unique_ptr<Request> r, std::string request, Failure pre_failed) {
  const llmc_req_id id = next_id_++;
  r->id_ = id;
  r->exchange_ = std::make_unique<Exchange>(path_, std::move(request));
  r->deadline_ = Clock::now() + idle_;
  Request& ref = *r;
  requests_.emplace(id, std::move(r));
  if (!pre_failed && close_requested_) pre_failed = failure(LLMC_ERR_CANCELLED, "the client is closing");
  if (pre_failed) {
    complete(id, std::move(pre_failed));
  } else {
    ref.exchange_->connect();
    settle(ref);
  }
  update_loop();
  return id;
}

bool Core::cancel(llmc_req_id id, Failure why) {
  const bool found = complete(id, std::move(why));
  if (found) update_loop();
  return found;
}

void Core::settle(Request& r) {
  switch (r.exchange_->state()) {
    case Exchange::State::done: complete(r.id_, {}); return;
    case Exchange::State::failed: complete(r.id_, r.exchange_->error()); return;
    case Exchange::State::connect_later:
      unregister(r);
      r.retry_at_ = Clock::now() + kConnectRetry;
      return;
    default:
      if (!sync_epoll(r)) complete(r.id_, from_errno(errno, "watching the connection (epoll_ctl)"));
      return;
  }
}

bool Core::sync_epoll(Request& r) {
  const int fd = r.exchange_->fd();
  const std::uint32_t want = r.exchange_->wanted_events();
  if (r.reg_fd_ >= 0 && r.reg_fd_ != fd) unregister(r);
  if (fd < 0) return true;
  epoll_event ev{};
  ev.events = want;
  ev.data.u64 = r.id_;
  if (r.reg_fd_ < 0) {
    if (::epoll_ctl(ep_, EPOLL_CTL_ADD, fd, &ev) != 0) return false;
    r.reg_fd_ = fd;
  } else if (want != r.reg_events_) {
    if (::epoll_ctl(ep_, EPOLL_CTL_MOD, fd, &ev) != 0) return false;
  }
  r.reg_events_ = want;
  return true;
}

// Always before the connection is closed: a closed fd's number may be reused by the next socket.
void Core::unregister(Request& r) {
  if (r.reg_fd_ >= 0) ::epoll_ctl(ep_, EPOLL_CTL_DEL, r.reg_fd_, nullptr);
  r.reg_fd_ = -1;
  r.reg_events_ = 0;
}

bool Core::complete(llmc_req_id id, Failure f) {
  const auto it = requests_.find(id);
  if (it == requests_.end()) return false;
  std::unique_ptr<Request> r = std::move(it->second);
  requests_.erase(it);
  unregister(*r);
  r->exchange_->close();  // llmd cancels a request whose connection closes
  r->outcome_ = std::move(f);
  finished_.push_back(std::move(r));
  if (!processing_) wake();  // on_finish runs from the next process()
  return true;
}

void Core::deliver() {
  while (!finished_.empty()) {
    std::unique_ptr<Request> r = std::move(finished_.front());
    finished_.pop_front();
    if (r->done_flag_ != nullptr) *r->done_flag_ = true;
    CallbackScope scope(*this);
    r->on_finish(std::move(r->outcome_), r->exchange_->answer());
  }
}

void Core::step(llmc_req_id id, std::uint32_t events) {
  const auto it = requests_.find(id);
  if (it == requests_.end()) return;  // finished earlier in this round
  Request& r = *it->second;
  if ((events & (EPOLLIN | EPOLLHUP | EPOLLERR)) != 0) r.deadline_ = Clock::now() + idle_;
  std::vector<std::string> arrived;
  r.exchange_->on_ready(events, arrived);
  for (const auto& data : arrived) {
    {
      CallbackScope scope(*this);
      r.on_event(data);
    }
    if (r.exchange_->fd() < 0) return;  // the callback cancelled it (or closed the client)
  }
  settle(r);
}

void Core::expire(Clock::time_point now) {
  std::vector<llmc_req_id> late, retry;
  for (const auto& [id, r] : requests_) {
    if (r->deadline_ <= now) late.push_back(id);
    else if (r->exchange_->state() == Exchange::State::connect_later && r->retry_at_ <= now) retry.push_back(id);
  }
  for (const llmc_req_id id : late) {
    const auto it = requests_.find(id);
    const bool connecting = it != requests_.end() && it->second->exchange_->state() == Exchange::State::connect_later;
    const std::string ms = std::to_string(idle_.count());
    complete(id, failure(LLMC_ERR_TIMEOUT, connecting ? "llmd accepted no connection for " + ms + " ms (" + path_ + ")"
                                                      : "llmd sent nothing for " + ms + " ms (the client's timeout)"));
  }
  for (const llmc_req_id id : retry) {
    const auto it = requests_.find(id);
    if (it == requests_.end()) continue;
    it->second->exchange_->connect();
    settle(*it->second);
  }
}

void Core::process_ready() {
  processing_ = true;
  struct Reset {
    bool& flag;
    ~Reset() { flag = false; }
  } reset{processing_};
  rearm_ = true;  // the loop's one-shot timer may have fired (a little early, even): set it again
  drain_wakeups();
  epoll_event events[64];
  for (int round = 0; round < 64; ++round) {
    const int n = ::epoll_wait(ep_, events, 64, 0);
    if (n <= 0) break;
    for (int i = 0; i < n; ++i) {
      if (events[i].data.u64 == 0) drain_wakeups();
      else step(events[i].data.u64, events[i].events);
    }
  }
  expire(Clock::now());
  deliver();
}

void Core::process() {
  process_ready();
  update_loop();
}

Failure Core::run(std::unique_ptr<Request> r, std::string request) {
  bool done = false;
  r->done_flag_ = &done;
  Failure pre;
  if (interrupted_.exchange(false)) pre = failure(LLMC_ERR_CANCELLED, "interrupted");
  const llmc_req_id id = start(std::move(r), std::move(request), std::move(pre));
  while (!done) {
    if (interrupted_.exchange(false)) cancel(id, failure(LLMC_ERR_CANCELLED, "interrupted"));
    const long t = timeout_ms();
    pollfd p{ep_, POLLIN, 0};
    ::poll(&p, 1, t < 0 || t > INT_MAX ? (t < 0 ? -1 : INT_MAX) : static_cast<int>(t));  // EINTR: look again
    process();
  }
  return {};
}

Failure Core::wait(long timeout_ms_arg) {
  if (interrupted_.exchange(false)) return failure(LLMC_ERR_CANCELLED, "interrupted");
  long t = timeout_ms();
  if (timeout_ms_arg >= 0 && (t < 0 || timeout_ms_arg < t)) t = timeout_ms_arg;
  pollfd p{ep_, POLLIN, 0};
  ::poll(&p, 1, t < 0 ? -1 : (t > INT_MAX ? INT_MAX : static_cast<int>(t)));
  process();
  if (interrupted_.exchange(false)) return failure(LLMC_ERR_CANCELLED, "interrupted");
  return {};
}

void Core::request_close() {
  close_requested_ = true;
  std::vector<llmc_req_id> ids;
  for (const auto& [id, r] : requests_) ids.push_back(id);
  for (const llmc_req_id id : ids) complete(id, failure(LLMC_ERR_CANCELLED, "the client was closed"));
}

void Core::shutdown() {
  processing_ = true;  // no wake-ups: everything is delivered here
  request_close();
  deliver();
  processing_ = false;
  set_hooks(nullptr);
}

bool Core::next_deadline(Clock::time_point& at) const {
  bool any = false;
  for (const auto& [id, r] : requests_) {
    Clock::time_point t = r->deadline_;
    if (r->exchange_->state() == Exchange::State::connect_later && r->retry_at_ < t) t = r->retry_at_;
    if (!any || t < at) at = t;
    any = true;
  }
  return any;
}

long Core::timeout_ms() const {
  if (!finished_.empty()) return 0;
  Clock::time_point at;
  if (!next_deadline(at)) return -1;
  return ms_until(at, Clock::now());
}

void Core::update_loop() {
  const bool active = pending() > 0;
  if (active != watching_) {
    watching_ = active;
    if (hooks_.watch != nullptr) hooks_.watch(hooks_.data, ep_, active ? LLMC_EV_READ : 0);
  }
  if (hooks_.set_timer == nullptr) return;
  Clock::time_point at;
  const bool timed = active && next_deadline(at);
  const bool rearm = std::exchange(rearm_, false);
  if (!timed) {
    if (timer_on_) hooks_.set_timer(hooks_.data, -1);
    timer_on_ = false;
    return;
  }
  // Deadlines only move later while data flows, so between two process() calls the timer is set
  // again only when a deadline comes earlier than the one the loop has.
  if (!timer_on_ || rearm || at < timer_at_) {
    hooks_.set_timer(hooks_.data, ms_until(at, Clock::now()));
    timer_on_ = true;
    timer_at_ = at;
  }
}

void Core::set_hooks(const llmc_loop_hooks* hooks) {
  const llmc_loop_hooks old = hooks_;
  hooks_ = llmc_loop_hooks{};
  if (old.cleanup != nullptr) old.cleanup(old.data);
  watching_ = false;
  timer_on_ = false;
  if (hooks != nullptr) hooks_ = *hooks;
  update_loop();
}

}  // namespace llmc::detail
