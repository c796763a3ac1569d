// Mutexes the compiler checks: clang's thread-safety analysis (-Wthread-safety, an error in every
// clang build: the fuzz tree CI builds compiles all of llmd's libraries with it) proves that a
// member marked LLMD_GUARDED_BY(mu_) is touched only with mu_ held, and that a function marked
// LLMD_REQUIRES(mu_) is called only with it held. GCC ignores the attributes.
//
// libstdc++'s std::mutex carries no annotations, so llmd's shared state uses llmd::Mutex (a
// std::mutex with them) and llmd::MutexLock (a scoped lock that can also wait on a condition
// variable). A thread-confined member is not annotated; its owning thread is written next to it.
#pragma once

#include <condition_variable>
#include <mutex>

#if defined(__clang__)
#define LLMD_THREAD_ANNOTATION(x) __attribute__((x))
#else
#define LLMD_THREAD_ANNOTATION(x)
#endif

#define LLMD_CAPABILITY(x) LLMD_THREAD_ANNOTATION(capability(x))
#define LLMD_SCOPED_CAPABILITY LLMD_THREAD_ANNOTATION(scoped_lockable)
#define LLMD_GUARDED_BY(x) LLMD_THREAD_ANNOTATION(guarded_by(x))
#define LLMD_PT_GUARDED_BY(x) LLMD_THREAD_ANNOTATION(pt_guarded_by(x))
#define LLMD_REQUIRES(...) LLMD_THREAD_ANNOTATION(requires_capability(__VA_ARGS__))
#define LLMD_EXCLUDES(...) LLMD_THREAD_ANNOTATION(locks_excluded(__VA_ARGS__))
#define LLMD_ACQUIRE(...) LLMD_THREAD_ANNOTATION(acquire_capability(__VA_ARGS__))
#define LLMD_RELEASE(...) LLMD_THREAD_ANNOTATION(release_capability(__VA_ARGS__))
#define LLMD_TRY_ACQUIRE(...) LLMD_THREAD_ANNOTATION(try_acquire_capability(__VA_ARGS__))
#define LLMD_RETURN_CAPABILITY(x) LLMD_THREAD_ANNOTATION(lock_returned(x))
#define LLMD_NO_THREAD_SAFETY_ANALYSIS LLMD_THREAD_ANNOTATION(no_thread_safety_analysis)

namespace llmd {

// A std::mutex the analysis knows about. Not recursive.
class LLMD_CAPABILITY("mutex") Mutex {
 public:
  Mutex() = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  void lock() LLMD_ACQUIRE() { m_.lock(); }
  void unlock() LLMD_RELEASE() { m_.unlock(); }
  bool try_lock() LLMD_TRY_ACQUIRE(true) { return m_.try_lock(); }

 private:
  friend class MutexLock;
  std::mutex m_;
};

// Holds a Mutex for its scope (like std::unique_lock); wait() blocks on a condition variable,
// releasing the mutex meanwhile and holding it again when it returns (the analysis treats the
// mutex as held throughout, which is what the caller's code sees). unlock()/lock() release and
// take it again within the scope, e.g. around work that must run without it.
class LLMD_SCOPED_CAPABILITY MutexLock {
 public:
  explicit MutexLock(Mutex& mu) LLMD_ACQUIRE(mu) : lock_(mu.m_) {}
  ~MutexLock() LLMD_RELEASE() = default;
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

  void lock() LLMD_ACQUIRE() { lock_.lock(); }
  void unlock() LLMD_RELEASE() { lock_.unlock(); }

  // Wait in a loop that tests the guarded condition in the caller's own code, where the analysis
  // sees the lock held (a predicate lambda would be analyzed on its own, without the lock):
  //   while (!ready_) lock.wait(cv_);
  void wait(std::condition_variable& cv) { cv.wait(lock_); }
  // False when `until` passed.
  template <class TimePoint>
  bool wait_until(std::condition_variable& cv, const TimePoint& until) {
    return cv.wait_until(lock_, until) == std::cv_status::no_timeout;
  }

 private:
  std::unique_lock<std::mutex> lock_;
};

}  // namespace llmd
