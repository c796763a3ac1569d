// The scheduler (see scheduler.h).
#include "scheduler/scheduler.h"

#include <algorithm>
#include <limits>
#include <tuple>

namespace llmd::scheduler {

std::string_view policy_name(Policy p) { return p == Policy::fair ? "fair" : "fifo"; }

Result<Policy> policy_from_name(std::string_view name) {
  if (name == "fair") return Policy::fair;
  if (name == "fifo") return Policy::fifo;
  return Error(Errc::invalid_argument, "unknown scheduler '" + std::string(name) + "' (fair, fifo)");
}

Scheduler::Scheduler(Options options) : opt_(std::move(options)) {}

void Scheduler::set_weight(const ClientId& client, double weight) {
  if (weight > 0) clients_[client].weight = weight;
}

std::optional<double> Scheduler::min_backlogged_counter(const ClientId* except) const {
  std::optional<double> m;
  for (const auto& [id, c] : clients_) {
    if ((except != nullptr && id == *except) || !backlogged(c)) continue;
    if (!m || c.counter < *m) m = c.counter;
  }
  return m;
}

void Scheduler::charge(Client& c, double input, double output, double swap) {
  const double w = opt_.weights.input * input + opt_.weights.output * output + opt_.weights.swap * swap;
  c.service += w;
  c.counter += w / c.weight;
  c.input += static_cast<std::uint64_t>(input);
  c.output += static_cast<std::uint64_t>(output);
  c.swap += static_cast<std::uint64_t>(swap);
}

Status Scheduler::submit(Request r, Clock::time_point now) {
  if (running_.count(r.id) != 0 ||
      std::any_of(pending_.begin(), pending_.end(), [&](const Pending& p) { return p.req.id == r.id; })) {
    return Error(Errc::invalid_argument, "request " + std::to_string(r.id) + " is already queued");
  }
  const Quotas& q = opt_.quotas;
  if (q.max_prompt_tokens != 0 && r.prompt_tokens > q.max_prompt_tokens) {
    return Error(Errc::resource_exhausted, "the prompt has " + std::to_string(r.prompt_tokens) +
                                               " tokens; the limit per request is " +
                                               std::to_string(q.max_prompt_tokens) + " (max_prompt_tokens)");
  }
  Client& c = clients_[r.client];
  if (q.max_queued != 0 && c.queued >= q.max_queued) {
    return Error(Errc::resource_exhausted, "client " + r.client + " has " + std::to_string(c.queued) +
                                               " requests queued already (max_queued)");
  }
  if (!backlogged(c)) {
    // VTC lifting: a client that comes back does not get to spend the time it was away.
    if (auto m = min_backlogged_counter(&r.client)) c.counter = std::max(c.counter, *m);
  }
  ++c.queued;
  pending_.push_back({std::move(r), now, next_seq_++});
  return {};
}

void Scheduler::remove(RequestId id) {
  if (auto it = running_.find(id); it != running_.end()) {
    auto c = clients_.find(it->second.client);
    if (c != clients_.end() && c->second.running > 0) --c->second.running;
    running_.erase(it);
    return;
  }
  auto it = std::find_if(pending_.begin(), pending_.end(), [&](const Pending& p) { return p.req.id == id; });
  if (it == pending_.end()) return;
  auto c = clients_.find(it->req.client);
  if (c != clients_.end() && c->second.queued > 0) --c->second.queued;
  pending_.erase(it);
}

void Scheduler::requeue(RequestId id, std::uint32_t prompt_tokens, std::uint32_t swap_tokens) {
  auto it = running_.find(id);
  if (it == running_.end()) return;
  Admitted a = it->second;
  running_.erase(it);
  Client& c = clients_[a.client];
  if (c.running > 0) --c.running;
  ++c.queued;
  // Back at its original place in the arrival order.
  pending_.push_back({Request{id, a.client, a.priority, prompt_tokens, swap_tokens}, Clock::time_point{}, a.seq});
}

std::optional<std::size_t> Scheduler::next_pending(bool skip_running_quota) const {
  std::optional<std::size_t> best;
  auto key = [&](const Pending& p) {
    const double counter = opt_.policy == Policy::fair ? clients_.at(p.req.client).counter : 0.0;
    return std::tuple(p.req.priority == Priority::interactive ? 0 : 1, counter, p.seq);
  };
  for (std::size_t i = 0; i < pending_.size(); ++i) {
    const Pending& p = pending_[i];
    if (!skip_running_quota && opt_.quotas.max_running != 0 &&
        clients_.at(p.req.client).running >= opt_.quotas.max_running) {
      continue;
    }
    if (!best || key(p) < key(pending_[*best])) best = i;
  }
  return best;
}

StepPlan Scheduler::plan(const StepInput& input, Clock::time_point /*now*/) {
  StepPlan plan;
  std::uint32_t budget = input.token_budget;
  std::uint32_t slots = input.free_slots;
  std::vector<Running> running;
  for (const Running& r : input.running) {
    if (running_.count(r.id) != 0) running.push_back(r);
  }

  // 1. Preemption: no slot free, and a waiting client is far behind a running one (or an
  //    interactive request waits behind background work).
  if (opt_.policy == Policy::fair && slots == 0 && !running.empty()) {
    if (auto next = next_pending(false)) {
      const Pending& waiting = pending_[*next];
      const double waiting_counter = clients_.at(waiting.req.client).counter;
      std::optional<std::size_t> victim;
      auto victim_key = [&](const Running& r) {
        const Admitted& a = running_.at(r.id);
        return std::tuple(a.priority == Priority::background ? 1 : 0, clients_.at(a.client).counter);
      };
      for (std::size_t i = 0; i < running.size(); ++i) {
        const Admitted& a = running_.at(running[i].id);
        if (a.client == waiting.req.client) continue;
        const bool background_blocks = a.priority == Priority::background &&
                                       waiting.req.priority == Priority::interactive;
        const bool far_ahead = opt_.preempt_gap > 0 && clients_.at(a.client).counter - waiting_counter > opt_.preempt_gap;
        if (!background_blocks && !far_ahead) continue;
        if (!victim || victim_key(running[i]) > victim_key(running[*victim])) victim = i;
      }
      if (victim) {
        plan.preempt.push_back(running[*victim].id);
        running.erase(running.begin() + static_cast<std::ptrdiff_t>(*victim));
        slots = 1;
      }
    }
  }

  // 2. One token for every generation.
  auto order = [&](const Running& r) {
    const Admitted& a = running_.at(r.id);
    const double counter = opt_.policy == Policy::fair ? clients_.at(a.client).counter : 0.0;
    return std::tuple(a.priority == Priority::interactive ? 0 : 1, counter, a.seq);
  };
  std::sort(running.begin(), running.end(), [&](const Running& a, const Running& b) { return order(a) < order(b); });
  for (const Running& r : running) {
    if (r.prefill_left != 0 || budget == 0) continue;
    plan.decode.push_back(r.id);
    --budget;
    charge(clients_[running_.at(r.id).client], 0, 1, 0);
  }
  // 3. Prompt chunks for running requests, by counter.
  for (const Running& r : running) {
    if (r.prefill_left == 0 || budget == 0) continue;
    const std::uint32_t n = std::min(r.prefill_left, budget);
    plan.prefill.emplace_back(r.id, n);
    budget -= n;
    charge(clients_[running_.at(r.id).client], n, 0, 0);
  }
  // 4. Admission into free slots: interactive first; background only when no interactive waits.
  while (slots > 0) {
    auto next = next_pending(false);
    if (!next) break;
    Pending p = std::move(pending_[*next]);
    pending_.erase(pending_.begin() + static_cast<std::ptrdiff_t>(*next));
    Client& c = clients_[p.req.client];
    if (c.queued > 0) --c.queued;
    ++c.running;
    running_[p.req.id] = {p.req.client, p.req.priority, p.seq};
    plan.admit.push_back(p.req.id);
    charge(c, 0, 0, p.req.swap_tokens);
    const std::uint32_t n = std::min(p.req.prompt_tokens, budget);
    if (n > 0) {
      plan.prefill.emplace_back(p.req.id, n);
      budget -= n;
      charge(c, n, 0, 0);
    }
    --slots;
  }
  return plan;
}

std::vector<ClientView> Scheduler::clients() const {
  std::vector<ClientView> out;
  for (const auto& [id, c] : clients_) {
    out.push_back({id, c.weight, c.counter, c.queued, c.running, c.input, c.output, c.swap, c.service});
  }
  return out;
}

}  // namespace llmd::scheduler
