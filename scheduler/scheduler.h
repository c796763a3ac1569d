// The scheduler: which requests run, and what each engine step carries — as pure logic. Clients,
// their pending requests and the running ones go in; a step plan comes out. No I/O, no llama.cpp,
// no clock of its own (time is passed in), so it is tested by simulation.
//
// Fair policy: virtual token counters (VTC, Sheng et al., OSDI'24). Each client's counter grows by
// the weighted tokens it is served — prompt tokens (w_input), generated tokens (w_output) and the
// swap-in work its requests cause (w_swap per restored token) — divided by the client's weight.
// The backlogged client with the smallest counter goes next; a client that becomes backlogged is
// lifted to the smallest counter among the backlogged ones, so idle time is not banked.
//
// Each step has two phases. Slots (schedule_slots): free slots admit pending requests by counter
// (within one step, a client's counter includes what its requests admitted in that step are about
// to be charged, so free slots spread over clients); with no slot free, a running request whose
// client is at least `preempt_gap` ahead of the next waiting client is preempted (the engine parks
// it; it resumes exactly later). With a gap of 0 a waiting client is never kept waiting behind a
// running client that is ahead of it — what keeps clients that think between requests (closed
// loops, which VTC's lifting puts level with the others when they come back) from queueing behind
// a flood. The engine protects a request's first steps (Running::preemptible) so that two
// backlogged clients do not swap a slot back and forth at every step. Tokens (schedule_tokens; continuous batching with chunked
// prefill): one decode token for every running generation, then prefill chunks for running
// requests that still have prompt left, by counter, within the step's token budget — a long prompt
// takes several steps and never holds the others' decoding back for more than one. With `pace`, a
// client too far ahead of the others running gets nothing in a step (token-level VTC). Interactive
// requests go before background ones, which are admitted only when no interactive one waits, and
// are preempted first.
// plan() runs both phases at once (for simulation: admitted requests prefill in the same step).
//
// FIFO policy (the baseline for measurements): admission and prefill in arrival order, no
// preemption.
//
// Thread-safety: none; one owner (the engine thread) calls it.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"

namespace llmd::scheduler {

using Clock = std::chrono::steady_clock;
using RequestId = std::uint64_t;
using ClientId = std::string;  // "uid:1000", or "uid:1000/app" when the app declared a name

enum class Policy { fair, fifo };
enum class Priority { interactive, background };

struct Weights {
  double input = 1.0;   // per prompt token prefilled (VTC's w_p)
  double output = 2.0;  // per generated token (VTC's w_q)
  double swap = 0.5;    // per history token restored for the request (loaded or recomputed)
};

struct Quotas {  // per client; 0 = unlimited
  std::uint32_t max_queued = 64;         // pending requests
  std::uint32_t max_running = 8;         // running requests
  std::uint32_t max_prompt_tokens = 0;   // one request's prompt
};

struct Options {
  Policy policy = Policy::fair;
  Weights weights;
  Quotas quotas;
  // How far a running client's counter must be ahead of a waiting client's for its generation to
  // be preempted (0: as soon as the waiting client is not ahead). None: no preemption for fairness.
  std::optional<double> preempt_gap;
  // Prompt tokens one step carries while generations decode in it (0: up to the step's budget). A
  // long prompt then takes several steps, each about as long as a decode step, instead of one step
  // that holds every generation's next token back (chunked prefill with a budget, as in
  // Sarathi-Serve); a step with nothing to decode still takes the whole budget.
  std::uint32_t prefill_chunk = 0;
  // Token-level pacing (fair only): a client whose counter is more than `pace` weighted tokens
  // ahead of the lowest counter among the clients running requests of its priority (or of any,
  // for background work) gets no tokens in a step — neither decode nor prompt — so the step is
  // only as long as the others' work, and the client behind catches up. Admission alone cannot do
  // this once every client's requests run: the one with more or longer requests would get more of
  // every step. None: off (every running generation decodes each step).
  std::optional<double> pace;
};

struct Request {
  RequestId id = 0;
  ClientId client;
  Priority priority = Priority::interactive;
  std::uint32_t prompt_tokens = 0;  // to prefill (after what the slot already holds)
  std::uint32_t swap_tokens = 0;    // history to bring back for it
};

// A running request as the engine sees it before a step.
struct Running {
  RequestId id = 0;
  std::uint32_t prefill_left = 0;  // prompt tokens not yet decoded; 0: it is generating
  bool preemptible = true;         // false while its session is being swapped in
  bool samples = true;             // finishing its prefill samples a token (false: only replaying)
};

struct StepInput {
  std::vector<Running> running;
  std::uint32_t free_slots = 0;  // slots a new request could take (free, or holding an idle session)
  std::uint32_t token_budget = 0;  // tokens one step may carry (n_batch)
};

struct SlotPlan {
  std::vector<RequestId> preempt;  // running -> pending again (swapped out), before anything else
  std::vector<RequestId> admit;    // pending -> running, in this order
};

struct TokenPlan {
  std::vector<RequestId> decode;                             // one generated token each
  std::vector<std::pair<RequestId, std::uint32_t>> prefill;  // prompt tokens this step, in order
};

struct StepPlan {
  std::vector<RequestId> preempt;  // running -> pending again (swapped out), before anything else
  std::vector<RequestId> admit;    // pending -> running, in this order
  std::vector<RequestId> decode;   // one generated token each
  std::vector<std::pair<RequestId, std::uint32_t>> prefill;  // prompt tokens this step
  bool empty() const { return admit.empty() && decode.empty() && prefill.empty() && preempt.empty(); }
};

struct ClientView {
  ClientId client;
  double weight = 1;
  double counter = 0;
  std::uint32_t queued = 0, running = 0;
  std::uint64_t input_tokens = 0, output_tokens = 0, swap_tokens = 0;  // served so far
  double service = 0;  // weighted tokens served (not divided by the weight)
  std::uint64_t preempted = 0;  // times one of its requests was preempted (fairness)
  std::uint64_t parked = 0;     // times one of its requests gave way because the KV pool was full
};

class Scheduler {
 public:
  explicit Scheduler(Options options);

  void set_weight(const ClientId& client, double weight);  // > 0; default 1
  // Queues a request. Errors: resource_exhausted naming the quota (max_queued, max_running is
  // checked at admission, max_prompt_tokens), invalid_argument (duplicate id).
  Status submit(Request request, Clock::time_point now);
  // The request left (finished, failed, cancelled), pending or running.
  void remove(RequestId id);
  // Phase 1 of a step: preemptions and admissions (input.token_budget is not used).
  SlotPlan schedule_slots(const StepInput& input);
  // Phase 2: what one decode step carries for these running requests; charges their clients. A
  // generation not in `decode` gets no token this step (paced, or over the budget).
  TokenPlan schedule_tokens(const std::vector<Running>& running, std::uint32_t token_budget);
  // Charges a request's client for history brought back for it from stored KV.
  void charge_swap(RequestId id, std::uint32_t tokens);
  // Both phases; admitted requests prefill in the same step and are charged their swap_tokens.
  StepPlan plan(const StepInput& input, Clock::time_point now);
  // A request that was running comes back as pending with what is left of it (preempted, or it
  // could not be placed after all).
  void requeue(RequestId id, std::uint32_t prompt_tokens, std::uint32_t swap_tokens);
  // One of the request's generations was taken off its slot: preempted for fairness (a plan's
  // preempt), or parked because the KV pool was full. Charged to its client and to the totals.
  // (A plan's preempt is counted here, when it happens, not when it is planned.)
  void note_displaced(RequestId id, bool preempted);
  std::uint64_t preemptions() const { return preemptions_; }  // every client's, forgotten ones too
  std::uint64_t parks() const { return parks_; }
  // Forgets clients with nothing queued or running beyond the `keep` most recently active ones
  // (their counters would be lifted on return anyway).
  void forget_idle(std::size_t keep);

  std::vector<ClientView> clients() const;
  std::size_t pending() const { return pending_.size(); }
  const Options& options() const { return opt_; }

 private:
  struct Client {
    double weight = 1, counter = 0;
    std::uint32_t queued = 0, running = 0;
    std::uint64_t input = 0, output = 0, swap = 0;
    double service = 0;
    std::uint64_t preempted = 0, parked = 0;
    std::uint64_t last_active = 0;  // submit order of its latest request
  };
  struct Pending {
    Request req;
    Clock::time_point arrived;
    std::uint64_t seq = 0;  // arrival order
  };
  struct Admitted {
    ClientId client;
    Priority priority = Priority::interactive;
    std::uint64_t seq = 0;
    std::uint32_t prompt_tokens = 0, swap_tokens = 0;  // as submitted (or requeued)
  };

  bool backlogged(const Client& c) const { return c.queued + c.running > 0; }
  std::optional<double> min_backlogged_counter(const ClientId* except) const;
  void charge(Client& c, double input, double output, double swap);
  // The pending request to admit next, if any: by counter (fair) or arrival (fifo), interactive first.
  // `projected`: counter increments expected from this round's admissions.
  std::optional<std::size_t> next_pending(const std::map<ClientId, double>& projected) const;
  std::vector<bool> paced(const std::vector<Running>& running) const;

  Options opt_;
  std::map<ClientId, Client> clients_;
  std::vector<Pending> pending_;
  std::map<RequestId, Admitted> running_;
  std::uint64_t next_seq_ = 0;
  std::uint64_t preemptions_ = 0, parks_ = 0;
};

std::string_view policy_name(Policy p);
Result<Policy> policy_from_name(std::string_view name);

}  // namespace llmd::scheduler
