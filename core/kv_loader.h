// Swap-in on its own thread (`llmd-kvload`; restore=chunks only): the engine thread queues a load
// (a session's history for a reserved slot); the loader builds that sequence's state from the
// chunk store (ChunkStore::load: plan, read, checksum, decode) while the engine keeps decoding the
// other sequences, and hands the result to `deliver`. The engine installs the state from the
// staging buffer and releases it; only then does the loader start the next load.
//
// One load at a time into one staging buffer, reused (no page faults per restore). The buffer is
// handed over, not shared: the loader writes it from taking a task until it delivers; the engine
// reads it (staged()) from the delivery until release(). A task's history is the engine's (a
// restoring job's tokens) and must stay alive and unchanged until its result is delivered.
//
// Thread-safety: enqueue(), staged() and release() on the engine thread; start() and stop() on
// the thread that owns the EngineWorker. `deliver` runs on the loader thread and must not block
// (EngineWorker queues the result and wakes the engine).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "common/mutex.h"
#include "engine/context.h"
#include "engine/tokenizer.h"
#include "kvstore/chunk_store.h"

namespace llmd::core {

class KvLoader {
 public:
  struct Task {
    engine::SeqId seq = 0;
    std::string session_id;
    std::span<const engine::Token> history;
    kvstore::RestoreTarget target;
    std::optional<std::uint32_t> uid;  // whose other keys' chunks may serve it (ChunkStore::load)
    std::uint64_t lineage = 0;         // which KV (ChunkStore::lineage_seed)
  };
  using Deliver = std::function<void(engine::SeqId seq, kvstore::LoadResult result)>;

  KvLoader(kvstore::ChunkStore& chunks, Deliver deliver);
  ~KvLoader();  // stop()
  KvLoader(const KvLoader&) = delete;
  KvLoader& operator=(const KvLoader&) = delete;

  void start();
  // Queues a load; loads run in the order queued.
  void enqueue(Task task) LLMD_EXCLUDES(mu_);
  // The state the last delivered result built: its first `bytes` (LoadResult::state_bytes).
  // Valid from that delivery until release().
  std::span<const std::uint8_t> staged(std::size_t bytes) const { return {buf_.data(), bytes}; }
  // The engine is done with the staged state (installed or not): the next load may start.
  void release() LLMD_EXCLUDES(mu_);
  // Ends the thread once the load in progress (if any) is delivered; queued loads are dropped.
  // Idempotent.
  void stop() LLMD_EXCLUDES(mu_);

 private:
  void run() LLMD_EXCLUDES(mu_);

  kvstore::ChunkStore& chunks_;
  const Deliver deliver_;
  Mutex mu_;
  std::condition_variable cv_;
  std::deque<Task> queue_ LLMD_GUARDED_BY(mu_);
  bool busy_ LLMD_GUARDED_BY(mu_) = false;  // the staging buffer is the loader's or the engine's
  bool stop_ LLMD_GUARDED_BY(mu_) = false;
  // Handed over by busy_ (not guarded by mu_: its owner uses it without the lock): the loader's
  // from taking a task until it delivers, then the engine's until release().
  std::vector<std::uint8_t> buf_;
  std::thread thread_;
};

}  // namespace llmd::core
