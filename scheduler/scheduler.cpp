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
  c.last_active = next_seq_;
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

void Scheduler::note_displaced(RequestId id, bool preempted) {
  auto it = running_.find(id);
  if (it == running_.end()) return;
  Client& c = clients_[it->second.client];
  if (preempted) {
    ++c.preempted;
    ++preemptions_;
  } else {
    ++c.parked;
    ++parks_;
  }
}

void Scheduler::forget_idle(std::size_t keep) {
  std::vector<std::pair<std::uint64_t, ClientId>> idle;
  for (const auto& [id, c] : clients_) {
    if (!backlogged(c)) idle.emplace_back(c.last_active, id);
  }
  if (clients_.size() <= keep || idle.empty()) return;
  std::sort(idle.begin(), idle.end());
  std::size_t excess = clients_.size() - keep;
  for (std::size_t i = 0; i < idle.size() && excess > 0; ++i, --excess) clients_.erase(idle[i].second);
}

std::optional<std::size_t> Scheduler::next_pending(const std::map<ClientId, double>& projected) const {
  std::optional<std::size_t> best;
  auto key = [&](const Pending& p) {
    double counter = 0;
    if (opt_.policy == Policy::fair) {
      counter = clients_.at(p.req.client).counter;
      if (auto it = projected.find(p.req.client); it != projected.end()) counter += it->second;
    }
    return std::tuple(p.req.priority == Priority::interactive ? 0 : 1, counter, p.seq);
  };
  for (std::size_t i = 0; i < pending_.size(); ++i) {
    const Pending& p = pending_[i];
    if (opt_.quotas.max_running != 0 && clients_.at(p.req.client).running >= opt_.quotas.max_running) continue;
    if (!best || key(p) < key(pending_[*best])) best = i;
  }
  return best;
}

SlotPlan Scheduler::schedule_slots(const StepInput& input) {
  SlotPlan plan;
  std::uint32_t slots = input.free_slots;
  const std::map<ClientId, double> none;

  // Preemption: no slot free, and a waiting client is not ahead of a running one by the gap (or an
  // interactive request waits behind background work).
  if (opt_.policy == Policy::fair && slots == 0 && !input.running.empty()) {
    if (auto next = next_pending(none)) {
      const Pending& waiting = pending_[*next];
      const double waiting_counter = clients_.at(waiting.req.client).counter;
      std::optional<std::size_t> victim;
      auto victim_key = [&](const Running& r) {
        const Admitted& a = running_.at(r.id);
        return std::tuple(a.priority == Priority::background ? 1 : 0, clients_.at(a.client).counter);
      };
      for (std::size_t i = 0; i < input.running.size(); ++i) {
        const Running& r = input.running[i];
        auto a = running_.find(r.id);
        if (!r.preemptible || a == running_.end() || a->second.client == waiting.req.client) continue;
        const bool background_blocks = a->second.priority == Priority::background &&
                                       waiting.req.priority == Priority::interactive;
        const bool far_ahead =
            opt_.preempt_gap && clients_.at(a->second.client).counter - waiting_counter >= *opt_.preempt_gap;
        if (!background_blocks && !far_ahead) continue;
        if (!victim || victim_key(r) > victim_key(input.running[*victim])) victim = i;
      }
      if (victim) {
        const RequestId id = input.running[*victim].id;
        plan.preempt.push_back(id);
        slots = 1;
      }
    }
  }

  // Admission into free slots: interactive first; background only when no interactive waits.
  // Within the round, a client's counter counts what its admitted requests are about to be charged
  // for their prompts and swap-ins, so the slots do not all go to whoever was behind.
  std::map<ClientId, double> projected;
  while (slots > 0) {
    auto next = next_pending(projected);
    if (!next) break;
    Pending p = std::move(pending_[*next]);
    pending_.erase(pending_.begin() + static_cast<std::ptrdiff_t>(*next));
    Client& c = clients_[p.req.client];
    if (c.queued > 0) --c.queued;
    ++c.running;
    projected[p.req.client] +=
        std::max(1.0, opt_.weights.input * p.req.prompt_tokens + opt_.weights.swap * p.req.swap_tokens) / c.weight;
    running_[p.req.id] = {p.req.client, p.req.priority, p.seq, p.req.prompt_tokens, p.req.swap_tokens};
    plan.admit.push_back(p.req.id);
    --slots;
  }
  return plan;
}

// Which of the running requests sit this step out: their client is more than `pace` ahead of the
// lowest counter among the clients running work of its priority (any priority, for background
// work). Decided on the counters before the step, so the order of charging within it does not
// matter; the client with the lowest counter always runs.
std::vector<bool> Scheduler::paced(const std::vector<Running>& running) const {
  std::vector<bool> held(running.size(), false);
  if (opt_.policy != Policy::fair || !opt_.pace) return held;
  std::optional<double> floor_interactive, floor_all;
  auto lower = [](std::optional<double>& f, double c) { f = f ? std::min(*f, c) : c; };
  for (const Running& r : running) {
    const Admitted& a = running_.at(r.id);
    const double c = clients_.at(a.client).counter;
    lower(floor_all, c);
    if (a.priority == Priority::interactive) lower(floor_interactive, c);
  }
  for (std::size_t i = 0; i < running.size(); ++i) {
    const Admitted& a = running_.at(running[i].id);
    const std::optional<double>& f = a.priority == Priority::interactive ? floor_interactive : floor_all;
    held[i] = clients_.at(a.client).counter > *f + *opt_.pace;
  }
  return held;
}

TokenPlan Scheduler::schedule_tokens(const std::vector<Running>& input, std::uint32_t token_budget) {
  TokenPlan plan;
  std::uint32_t budget = token_budget;
  std::vector<Running> running;
  for (const Running& r : input) {
    if (running_.count(r.id) != 0) running.push_back(r);
  }
  auto order = [&](const Running& r) {
    const Admitted& a = running_.at(r.id);
    const double counter = opt_.policy == Policy::fair ? clients_.at(a.client).counter : 0.0;
    return std::tuple(a.priority == Priority::interactive ? 0 : 1, counter, a.seq);
  };
  std::sort(running.begin(), running.end(), [&](const Running& a, const Running& b) { return order(a) < order(b); });
  const std::vector<bool> held = paced(running);
  // One token for every generation.
  for (std::size_t i = 0; i < running.size(); ++i) {
    const Running& r = running[i];
    if (r.prefill_left != 0 || budget == 0 || held[i]) continue;
    plan.decode.push_back(r.id);
    --budget;
    charge(clients_[running_.at(r.id).client], 0, 1, 0);
  }
  // Prompt chunks, by counter (fair) or arrival (fifo); fewer while generations decode.
  if (!plan.decode.empty() && opt_.prefill_chunk != 0) budget = std::min(budget, opt_.prefill_chunk);
  for (std::size_t i = 0; i < running.size(); ++i) {
    const Running& r = running[i];
    if (r.prefill_left == 0 || budget == 0 || held[i]) continue;
    const std::uint32_t n = std::min(r.prefill_left, budget);
    plan.prefill.emplace_back(r.id, n);
    budget -= n;
    // The step that ends a prompt also samples the first generated token.
    charge(clients_[running_.at(r.id).client], n, n == r.prefill_left && r.samples ? 1 : 0, 0);
  }
  return plan;
}

void Scheduler::charge_swap(RequestId id, std::uint32_t tokens) {
  auto it = running_.find(id);
  if (it != running_.end() && tokens > 0) charge(clients_[it->second.client], 0, 0, tokens);
}

StepPlan Scheduler::plan(const StepInput& input, Clock::time_point /*now*/) {
  StepPlan plan;
  SlotPlan slots = schedule_slots(input);
  std::vector<Running> running;
  for (const Running& r : input.running) {
    if (std::find(slots.preempt.begin(), slots.preempt.end(), r.id) == slots.preempt.end()) running.push_back(r);
  }
  // The requests admitted now: their swap-in is charged, and they prefill in this step already.
  for (RequestId id : slots.admit) {
    const Admitted& a = running_.at(id);
    charge_swap(id, a.swap_tokens);
    running.push_back({id, a.prompt_tokens, true, true});
  }
  TokenPlan tokens = schedule_tokens(running, input.token_budget);
  plan.preempt = std::move(slots.preempt);
  plan.admit = std::move(slots.admit);
  plan.decode = std::move(tokens.decode);
  plan.prefill = std::move(tokens.prefill);
  return plan;
}

std::vector<ClientView> Scheduler::clients() const {
  std::vector<ClientView> out;
  for (const auto& [id, c] : clients_) {
    out.push_back({id, c.weight, c.counter, c.queued, c.running, c.input, c.output, c.swap, c.service, c.preempted, c.parked});
  }
  return out;
}

}  // namespace llmd::scheduler
