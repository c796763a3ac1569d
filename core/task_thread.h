// A thread that runs posted tasks one after another: the daemon's storage worker (SQLite writes and
// reads, prompt formatting) runs on one, so that neither the io thread nor the engine thread ever
// waits for the disk.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <string>
#include <thread>

#include "common/mutex.h"

namespace llmd::core {

class TaskThread {
 public:
  explicit TaskThread(std::string name);
  ~TaskThread();  // stop()
  TaskThread(const TaskThread&) = delete;
  TaskThread& operator=(const TaskThread&) = delete;

  // Queues a task; false (and the task is dropped, unrun) once stop() has begun. Thread-safe.
  // The caller must answer whoever waits on the task another way then: a request arriving during
  // the shutdown drain gets "unavailable", never silence.
  [[nodiscard]] bool post(std::function<void()> task);
  // Runs what is queued, then ends the thread. Idempotent.
  void stop() LLMD_EXCLUDES(mu_);
  std::size_t queued() const LLMD_EXCLUDES(mu_);

 private:
  void run() LLMD_EXCLUDES(mu_);

  const std::string name_;
  mutable Mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> tasks_ LLMD_GUARDED_BY(mu_);
  bool stopping_ LLMD_GUARDED_BY(mu_) = false;
  std::thread thread_;  // the owner's: started by the constructor, joined by stop()
};

}  // namespace llmd::core
