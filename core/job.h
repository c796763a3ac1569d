// What the engine thread runs (EngineWorker::submit): a Job, and what comes back for it, a
// JobResult (through Job::on_done, exactly once, on the engine thread). Plain values: a job is
// built on the caller's thread, moved to the engine thread by submit() and owned by it from then
// on; only `cancelled` is shared (an atomic anyone may set).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"
#include "engine/generation.h"
#include "engine/tokenizer.h"
#include "scheduler/scheduler.h"

namespace llmd::core {

using Clock = std::chrono::steady_clock;

struct Timings {  // milliseconds
  double queue = 0;    // submitted -> admitted to a slot
  double restore = 0;  // bringing back history that was not resident: read + decode + recompute
  double restore_read = 0;       // reading KV chunks from disk
  double restore_decode = 0;     // checking, decoding and installing KV chunks into the slot
  double restore_recompute = 0;  // recomputing history no chunk covered
  double prefill = 0;  // the request's own prompt tokens, until the first token
  double decode = 0;   // first token -> end
  double ttft = 0;     // submitted -> first token
};

// OpenAI's rules: prompt_tokens counts every token the answer is conditioned on (a session's
// history included), cached_tokens those of them reused rather than computed (resident in a slot,
// or loaded from KV chunks), so cached_tokens <= prompt_tokens. llmd's extensions split the rest.
struct Usage {
  std::int32_t prompt_tokens = 0;      // history (held or restored) + the request's own tokens
  std::int32_t completion_tokens = 0;  // generated tokens
  std::int32_t cached_tokens = 0;      // of prompt_tokens: reused, not computed (resident + loaded)
  std::int32_t restored_tokens = 0;    // history recomputed (incl. tokens replayed after a preemption)
  std::int32_t loaded_tokens = 0;      // history restored from KV chunks (T1/T2); part of cached_tokens
};

// What a KV audit job captured (see Job::audit_of): the KV of the session's history recomputed
// from nothing in a scratch slot, and what the session's own slot held when the job was placed.
struct AuditCapture {
  std::vector<std::uint8_t> reference;  // llama.cpp's sequence state of the recomputed history
  bool resident = false;                // the session was in a slot
  std::uint32_t slot = 0;
  std::vector<engine::Token> resident_tokens;  // what the engine says that slot holds
  std::vector<std::uint8_t> resident_state;    // and what it really holds
};

struct JobResult {
  engine::FinishReason finish = engine::FinishReason::none;
  std::vector<engine::Token> generated;
  std::vector<engine::TokenLogprob> logprobs;  // per generated token, when params.top_logprobs >= 0
  std::string text;
  Usage usage;
  Timings timings;
  std::uint32_t seed = 0;
  std::optional<Error> error;  // set when finish is error (or the job could not run)
  std::optional<AuditCapture> audit;  // audit jobs
};

// A session turn whose window slides (Overflow::sliding): the session's KV held `from` (under
// `from_lineage`); the turn's history is from[0, head) + from[cut, end). Where that KV can be had
// (resident in the session's slot, or loaded from chunks), the engine removes positions
// [head, cut) and shifts the rest down by cut - head (llama.cpp's K-shift) instead of recomputing
// them; the result is KV of the job's lineage. Where it cannot, the history is recomputed.
struct Slide {
  std::vector<engine::Token> from;
  std::uint64_t from_lineage = 0;
  std::size_t head = 0;
  std::size_t cut = 0;
};

struct Job {
  std::uint64_t id = 0;
  std::string session_id;                // empty: no slot affinity (a one-off completion)
  std::vector<engine::Token> history;    // what the sequence must hold before `input`
  // How many of history's last tokens never had KV: a session's last generated token (sampled,
  // never decoded) and the template's closing of that answer. They are this turn's own work, not
  // a restore (not counted in restored_tokens). 0: only the lone last token of a resident session
  // is taken as such.
  std::size_t history_new = 0;
  std::vector<engine::Token> input;      // the request's tokens; not empty
  engine::GenerateParams params;
  std::string client;  // who is served and charged: "1000" (a uid) or "1000/app"; empty: "anonymous"
  // Whose KV this is: a session's owner, or the caller of a stateless request. Chunks of that
  // uid's other keys with the same token prefix may be loaded for it (never another uid's).
  std::optional<std::uint32_t> uid;
  // A stateless request (chat, completion) with a uid: placed as the continuation of that uid's
  // prefix entry whose KV (in a slot or in chunks) covers the longest prefix of `input`, or of a
  // new one; its KV is kept and written back under that entry (EngineWorker::adopt_prefix).
  bool anonymous = false;
  // What the history's KV is: 0, what a prefill gives; else a shifted lineage (ChunkStore::
  // lineage_seed). Resident KV and chunks of another lineage are never reused for it.
  std::uint64_t lineage = 0;
  std::optional<Slide> slide;  // the window slides before this turn (see Slide)
  scheduler::Priority priority = scheduler::Priority::interactive;
  std::shared_ptr<std::atomic<bool>> cancelled;  // set by anyone; the job ends within one step
  std::function<void(const std::string& text)> on_text;  // text as it becomes showable
  // Each sampled token's log-probabilities (params.top_logprobs >= 0), before on_text of its text.
  std::function<void(const engine::TokenLogprob&)> on_logprob;
  // Once, when the first token is sampled: the prompt's KV is complete (a request with n > 1
  // starts its other choices then, so that they share it: EngineWorker::adopt_prefix).
  std::function<void()> on_first_token;
  std::function<void(JobResult)> on_done;                 // exactly once
  Clock::time_point submitted = Clock::now();
  // Non-empty: a KV audit of this session. The job has no session (session_id empty: it never
  // reuses or writes back anything); `input` is the session's whole token sequence, recomputed in
  // a scratch slot with max_tokens 1. When it is placed, the session's own slot (if idle) is
  // captured; when it ends, the recomputed state: JobResult::audit.
  std::string audit_of;
};

}  // namespace llmd::core
