// A generation: llmc_gen_params checked and turned into llmd's request, and the answer (events as
// they stream, or one whole body) turned into token callbacks and an llmc_result.
#pragma once

#include <cstdint>
#include <string>

#include "client-lib/src/core.h"
#include "client-lib/src/failure.h"
#include "llmclient/llmclient.h"

namespace llmc::detail {

struct GenHttp {
  std::string target;  // the endpoint
  std::string body;    // its JSON
  bool stream = true;
};

// Checks the prompt and the parameters (NULL: defaults) and builds the request.
Failure build_generation(const char* prompt, const llmc_gen_params* params, GenHttp& out);

// What an answer said, event by event or whole.
class GenDecoder {
 public:
  // One event's data; returns the text it carries ("" if none).
  std::string event(const std::string& data);
  // A whole (stream=false) answer; returns its text.
  std::string whole(const std::string& body);
  // The outcome: `transport` (cancelled, timed out, connection lost) first, then llmd's HTTP
  // status, then an error event, then a stream that ended without its end marker.
  Failure outcome(Failure transport, const Answer& answer, bool stream) const;

  std::string text, finish_reason, session_id, last_json;  // last_json: the last event or the whole answer
  std::int32_t prompt_tokens = 0, completion_tokens = 0, cached_tokens = 0;
  bool window_moved = false;  // from the "window" event or usage.window
  std::int64_t window_dropped_tokens = 0, window_first_message = 0;
  std::int32_t window_dropped_messages = 0;

 private:
  void take(const std::string& raw, bool is_whole);
  std::string last_piece_;
  bool saw_done_ = false;
  bool has_error_ = false;
  Failure error_;
};

// A generation in flight: calls the app's callbacks. With `keep` (a blocking call), the result
// goes there instead of being freed after on_done.
class GenRequest : public Request {
 public:
  GenRequest(bool stream, llmc_token_fn on_token, llmc_done_fn on_done, void* user, llmc_result** keep = nullptr)
      : stream_(stream), on_token_(on_token), on_done_(on_done), user_(user), keep_(keep) {}

  void on_event(const std::string& data) override;
  void on_finish(Failure failure, Answer& answer) override;

 private:
  void token(const std::string& text);

  bool stream_;
  llmc_token_fn on_token_;
  llmc_done_fn on_done_;
  void* user_;
  llmc_result** keep_;
  GenDecoder decoder_;
};

// A whole llmc_result in one block (llmc_free), from a decoder and an outcome.
llmc_result* make_result(llmc_req_id id, const GenDecoder& d, const Failure& f);

}  // namespace llmc::detail
