// A single-thread task queue (see task_thread.h).
#include "core/task_thread.h"

#include <pthread.h>

namespace llmd::core {

TaskThread::TaskThread(std::string name) : name_(std::move(name)) {
  thread_ = std::thread([this] { run(); });
  pthread_setname_np(thread_.native_handle(), name_.substr(0, 15).c_str());
}

TaskThread::~TaskThread() { stop(); }

bool TaskThread::post(std::function<void()> task) {
  {
    MutexLock lock(mu_);
    if (stopping_) return false;
    tasks_.push_back(std::move(task));
  }
  cv_.notify_one();
  return true;
}

void TaskThread::stop() {
  {
    MutexLock lock(mu_);
    stopping_ = true;
  }
  cv_.notify_one();
  if (thread_.joinable() && thread_.get_id() != std::this_thread::get_id()) thread_.join();
}

std::size_t TaskThread::queued() const {
  MutexLock lock(mu_);
  return tasks_.size();
}

void TaskThread::run() {
  while (true) {
    std::function<void()> task;
    {
      MutexLock lock(mu_);
      while (!stopping_ && tasks_.empty()) lock.wait(cv_);
      if (tasks_.empty()) return;  // stopping and drained
      task = std::move(tasks_.front());
      tasks_.pop_front();
    }
    task();
  }
}

}  // namespace llmd::core
