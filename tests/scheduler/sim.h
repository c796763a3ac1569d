// A simulated engine for the scheduler's tests: it carries out each step plan as the engine would
// (prefill chunks, one token per generation, preemption = the request back in the queue with its
// KV to swap in) on an injected clock. Clients keep `depth` requests outstanding while active;
// with a think time they are closed loops (each of their `depth` threads waits for its answer,
// thinks, and sends the next), the pattern of apps and people. Like the engine, it can protect a
// request's first steps from preemption (`quantum`).
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <map>
#include <set>
#include <utility>
#include <vector>

#include "scheduler/scheduler.h"

namespace llmd::scheduler::testing_sim {

struct Shape {
  std::uint32_t prompt = 0, output = 0;
  Priority priority = Priority::interactive;
  std::uint32_t think = 0;  // steps between an answer and the next request of the same thread
};

class Sim {
 public:
  // quantum: steps a (re)admitted request runs before it may be preempted (the engine's
  // kPreemptQuantum); 0: any time.
  // resident: a preempted request's KV stays resident (nothing to swap in when it resumes).
  Sim(Options o, std::uint32_t slots, std::uint32_t budget, std::uint32_t quantum = 0, bool resident = false)
      : s_(std::move(o)), slots_(slots), budget_(budget), quantum_(quantum), resident_(resident) {}

  void client(const ClientId& id, Shape shape, std::uint32_t depth, double weight = 1.0) {
    clients_[id] = {shape, depth, true};
    s_.set_weight(id, weight);
    top_up(id);
  }
  void stop(const ClientId& id) { clients_[id].active = false; }
  void resume(const ClientId& id) {
    clients_[id].active = true;
    top_up(id);
  }

  // One engine step; returns the plan it carried out.
  StepPlan step() {
    for (auto it = thinking_.begin(); it != thinking_.end() && it->first <= steps_;) {
      const ClientId who = it->second;
      it = thinking_.erase(it);
      --outstanding_[who];
      top_up(who);
    }
    StepInput in;
    for (RequestId id : running_) in.running.push_back({id, reqs_[id].prefill_left, ran_[id] >= quantum_});
    in.free_slots = slots_ - static_cast<std::uint32_t>(running_.size());
    in.token_budget = budget_;
    StepPlan p = s_.plan(in, now_);
    for (RequestId id : p.preempt) {
      running_.erase(id);
      ++preemptions_;
      ++preempted_[reqs_[id].client];
      s_.note_displaced(id, /*preempted=*/true);  // as the engine does once it parked the job
      // Parked with its KV: nothing to prefill again; its history to swap back in, unless its KV
      // stays resident (the engine's spare slots) and it resumes where it stopped.
      s_.requeue(id, reqs_[id].prefill_left, resident_ ? 0 : reqs_[id].shape.prompt + reqs_[id].generated);
    }
    for (RequestId id : p.admit) {
      running_.insert(id);
      ran_[id] = 0;
    }
    double prefilled = 0;
    for (auto [id, n] : p.prefill) {
      prefilled += n;
      reqs_[id].prefill_left -= n;
      service_[reqs_[id].client] += 1.0 * n;
      tokens_ += n;
    }
    for (RequestId id : running_) ++ran_[id];
    for (RequestId id : p.decode) {
      Req& r = reqs_[id];
      ++r.generated;
      service_[r.client] += 2.0;
      ++tokens_;
      if (r.generated == r.shape.output) {
        running_.erase(id);
        ran_.erase(id);
        s_.remove(id);
        ++finished_[r.client];
        latency_[r.client].push_back(steps_ + 1 - r.sent);
        time_latency_[r.client].push_back(time_ + step_cost(p, prefilled) - r.sent_time);
        if (r.shape.think > 0) {
          thinking_.emplace(steps_ + 1 + r.shape.think, r.client);  // still outstanding while it thinks
        } else {
          --outstanding_[r.client];
          top_up(r.client);
        }
      }
    }
    time_ += step_cost(p, prefilled);
    now_ += std::chrono::milliseconds(10);
    ++steps_;
    return p;
  }

  Scheduler& scheduler() { return s_; }
  const ClientId& client_of(RequestId id) const { return reqs_.at(id).client; }
  double service(const ClientId& c) { return service_[c]; }
  std::uint64_t finished(const ClientId& c) { return finished_[c]; }
  std::uint64_t preempted(const ClientId& c) { return preempted_[c]; }
  // Steps from each finished request's submission to its last token, in order.
  const std::vector<std::uint64_t>& latencies(const ClientId& c) { return latency_[c]; }
  // The same in simulated time (step_cost units: a lone decode step is about 1.15).
  const std::vector<double>& time_latencies(const ClientId& c) { return time_latency_[c]; }
  double time() const { return time_; }
  // What a step costs on a CPU, in units of about one decode step: a fixed part, a little per
  // generation in the batch, and a prompt token about a twentieth of a decode step (roughly
  // smollm2-135m on 2 threads). Deterministic: tests compare simulated time, never wall-clock.
  static double step_cost(const StepPlan& p, double prefilled) {
    if (p.decode.empty() && prefilled == 0) return 0.0;
    return 1.0 + 0.15 * static_cast<double>(p.decode.size()) + 0.05 * prefilled;
  }
  std::size_t running() const { return running_.size(); }
  std::set<ClientId> running_clients() const {
    std::set<ClientId> out;
    for (RequestId id : running_) out.insert(reqs_.at(id).client);
    return out;
  }
  std::uint64_t preemptions() const { return preemptions_; }
  bool backlogged() const { return !running_.empty() || s_.pending() > 0; }
  std::uint64_t tokens() const { return tokens_; }
  std::uint64_t steps() const { return steps_; }
  // Running requests of `c` that the next step may preempt.
  std::size_t preemptible(const ClientId& c) const {
    std::size_t n = 0;
    for (RequestId id : running_) n += reqs_.at(id).client == c && ran_.at(id) >= quantum_ ? 1 : 0;
    return n;
  }

 private:
  struct Req {
    ClientId client;
    Shape shape;
    std::uint32_t prefill_left = 0, generated = 0;
    std::uint64_t sent = 0;
    double sent_time = 0;
  };
  struct ClientState {
    Shape shape;
    std::uint32_t depth = 0;
    bool active = false;
  };
  void top_up(const ClientId& id) {
    ClientState& c = clients_[id];
    while (c.active && outstanding_[id] < c.depth) {
      const RequestId rid = next_id_++;
      reqs_[rid] = {id, c.shape, c.shape.prompt, 0, steps_, time_};
      ASSERT_TRUE(s_.submit({rid, id, c.shape.priority, c.shape.prompt, 0}, now_));
      ++outstanding_[id];
    }
  }

  Scheduler s_;
  std::uint32_t slots_, budget_, quantum_;
  bool resident_;
  Clock::time_point now_{};
  std::map<ClientId, ClientState> clients_;
  std::map<RequestId, Req> reqs_;
  std::set<RequestId> running_;
  std::map<RequestId, std::uint32_t> ran_;  // steps since (re)admission
  std::multimap<std::uint64_t, ClientId> thinking_;  // step it sends again -> client
  std::map<ClientId, std::uint32_t> outstanding_;     // in flight or thinking
  std::map<ClientId, double> service_;
  std::map<ClientId, std::uint64_t> finished_, preempted_;
  std::map<ClientId, std::vector<std::uint64_t>> latency_;
  std::map<ClientId, std::vector<double>> time_latency_;
  double time_ = 0;
  RequestId next_id_ = 1;
  std::uint64_t steps_ = 0, preemptions_ = 0, tokens_ = 0;
};

inline Options with_policy(Policy p) {
  Options o;
  o.policy = p;
  o.quotas.max_queued = 0;
  o.quotas.max_running = 0;
  return o;
}

}  // namespace llmd::scheduler::testing_sim
