// The swap-in thread (see kv_loader.h).
#include "core/kv_loader.h"

#include <pthread.h>

namespace llmd::core {

KvLoader::KvLoader(kvstore::ChunkStore& chunks, Deliver deliver) : chunks_(chunks), deliver_(std::move(deliver)) {}

KvLoader::~KvLoader() { stop(); }

void KvLoader::start() {
  thread_ = std::thread([this] { run(); });
  pthread_setname_np(thread_.native_handle(), "llmd-kvload");
}

void KvLoader::enqueue(Task task) {
  {
    MutexLock lock(mu_);
    queue_.push_back(std::move(task));
  }
  cv_.notify_one();
}

void KvLoader::release() {
  {
    MutexLock lock(mu_);
    busy_ = false;
  }
  cv_.notify_one();
}

void KvLoader::stop() {
  {
    MutexLock lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void KvLoader::run() {
  while (true) {
    Task task;
    {
      MutexLock lock(mu_);
      while (!stop_ && (queue_.empty() || busy_)) lock.wait(cv_);
      if (stop_) return;
      task = std::move(queue_.front());
      queue_.pop_front();
      busy_ = true;  // until the engine has installed the state
    }
    deliver_(task.seq, chunks_.load(task.session_id, task.history, task.target, buf_, task.uid, task.lineage));
  }
}

}  // namespace llmd::core
