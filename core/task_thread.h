// A thread that runs posted tasks one after another: the daemon's storage worker (SQLite writes and
// reads, prompt formatting) runs on one, so that neither the io thread nor the engine thread ever
// waits for the disk.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

namespace llmd::core {

class TaskThread {
 public:
  explicit TaskThread(std::string name);
  ~TaskThread();  // stop()
  TaskThread(const TaskThread&) = delete;
  TaskThread& operator=(const TaskThread&) = delete;

  // Queues a task; false (and the task is dropped) once stop() has begun. Thread-safe.
  bool post(std::function<void()> task);
  // Runs what is queued, then ends the thread. Idempotent.
  void stop();
  std::size_t queued() const;

 private:
  void run();

  std::string name_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> tasks_;  // GUARDED_BY(mu_)
  bool stopping_ = false;                    // GUARDED_BY(mu_)
  std::thread thread_;
};

}  // namespace llmd::core
