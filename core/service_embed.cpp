// Embeddings requests (see Service::embed in service.h): the io thread's side. The inputs are
// tokenized and embedded on the embed thread (EmbedWorker), and the answer comes back here.
#include <boost/asio/post.hpp>

#include "core/service.h"
#include "core/service_internal.h"

namespace llmd::core {
namespace asio = boost::asio;
using namespace detail;

Service::RequestId Service::embed(const Caller& caller, EmbedRequest request,
                                  std::function<void(Result<EmbedResult>)> done) {
  const RequestId id = ++next_id_;
  if (shutting_down_) {
    done(stopping());
    return id;
  }
  if (embed_thread_ == nullptr || embed_worker_ == nullptr) {
    done(Error(Errc::unavailable, "embeddings are not set up in this daemon"));
    return id;
  }
  if (in_flight_.size() >= limits_.max_in_flight) {
    done(over_limit("too many requests in flight; try again later", "max-in-flight", limits_.max_in_flight,
                    in_flight_.size()));
    return id;
  }
  const std::uint32_t may_run = limits_.max_running_per_client != 0 ? limits_.max_running_per_client : worker_.max_running();
  if (in_flight_of(caller.uid) >= may_run + limits_.max_queued_per_client) {
    done(over_limit("uid " + std::to_string(caller.uid) + " has " + std::to_string(in_flight_of(caller.uid)) +
                        " requests running or queued; try again later",
                    "max-queued-per-client", limits_.max_queued_per_client, in_flight_of(caller.uid)));
    return id;
  }
  if (request.inputs.empty()) {
    done(Error(Errc::invalid_argument, "input must name at least one text or token array").with_param("input"));
    return id;
  }
  if (request.inputs.size() > limits_.max_embed_inputs) {
    done(Error(Errc::invalid_argument, "input has " + std::to_string(request.inputs.size()) + " entries, more than the " +
                                           std::to_string(limits_.max_embed_inputs) + " one request may have")
             .with_limit("input", limits_.max_embed_inputs, request.inputs.size()));
    return id;
  }
  std::size_t text_bytes = 0;
  for (const auto& in : request.inputs) {
    if (const auto* text = std::get_if<std::string>(&in)) text_bytes += text->size();
  }
  if (text_bytes > limits_.max_message_bytes) {
    done(Error(Errc::invalid_argument, "the inputs' text is larger than " + std::to_string(limits_.max_message_bytes) +
                                           " bytes")
             .with_limit("input", limits_.max_message_bytes, text_bytes));
    return id;
  }

  auto cancelled = std::make_shared<std::atomic<bool>>(false);
  in_flight_.emplace(id, InFlight{cancelled, {}, std::string(), true, caller.uid, client_of(caller.uid, "")});
  embeds_.insert(id);
  if (in_flight_observer_) in_flight_observer_();
  // Called once, on the io thread: the entry goes, then the caller hears.
  auto finish = std::make_shared<std::function<void(Result<EmbedResult>)>>(
      [this, id, done = std::move(done)](Result<EmbedResult> r) {
        embeds_.erase(id);
        drop(id);
        // Stopped by the shutdown's grace running out: the daemon's reason, not the caller's.
        if (!r && r.error().code() == Errc::cancelled && shutting_down_) r = stopping();
        done(std::move(r));
      });
  const EmbedTokenLimits token_limits{limits_.max_embed_tokens, limits_.max_prompt_tokens};
  const bool queued = embed_thread_->post([this, finish, cancelled, token_limits, request = std::move(request)]() {
    Result<EmbedResult> r = cancelled->load() ? Result<EmbedResult>(Error(Errc::cancelled, "cancelled before it started"))
                                              : embed_worker_->run(request, token_limits, cancelled.get());
    asio::post(io_, [finish, r = std::move(r)]() mutable { (*finish)(std::move(r)); });
  });
  if (!queued) (*finish)(stopping());
  return id;
}

void Service::cancel_embeds_after(std::chrono::milliseconds grace) {
  auto cancel_all = [this] {
    for (RequestId id : embeds_) {
      if (auto it = in_flight_.find(id); it != in_flight_.end()) it->second.cancelled->store(true);
    }
  };
  if (grace.count() <= 0) return cancel_all();
  embed_grace_ = std::make_unique<asio::steady_timer>(io_, grace);
  embed_grace_->async_wait([cancel_all](boost::system::error_code ec) {
    if (!ec) cancel_all();
  });
}

}  // namespace llmd::core
