// The generation options shared by the front ends (see turn_options.h).
#include "ipc/turn_options.h"

#include "ipc/json_fields.h"

namespace llmd::ipc {

Status read_turn_options(const nlohmann::json& fields, const core::ServiceLimits& limits,
                         std::uint32_t max_session_tokens, core::TurnRequest& turn) {
  turn.params.max_tokens = limits.default_max_tokens;
  LLMD_TRY_STATUS(read_generate_params(fields, static_cast<std::int32_t>(max_session_tokens), turn.params));
  auto priority = opt_string(fields, "priority");
  if (!priority) return priority.error();
  if (*priority) {
    if (**priority == "background") {
      turn.priority = scheduler::Priority::background;
    } else if (**priority != "interactive") {
      return Error(Errc::invalid_argument, "priority must be \"interactive\" or \"background\"").with_param("priority");
    }
  }
  auto app = opt_string(fields, "app");
  if (!app) return app.error();
  if (*app) turn.app = std::move(**app);  // checked by Service::start_turn
  auto overflow = opt_string(fields, "overflow");
  if (!overflow) return overflow.error();
  if (*overflow) {
    auto o = core::parse_overflow(**overflow);
    if (!o) return o.error();
    turn.overflow = *o;  // which requests may set it: Service::start_turn
  }
  return {};
}

Result<core::Service::Rewind> read_rewind(const nlohmann::json& fields) {
  for (const auto& [key, value] : fields.items()) {
    if (key != "drop_last" && key != "keep") {
      return Error(Errc::invalid_argument, "a rewind takes drop_last or keep; \"" + key + "\" is not supported")
          .with_param(key);
    }
  }
  core::Service::Rewind how;
  auto drop_last = opt_int(fields, "drop_last", 1, 0xFFFFFFFF);
  if (!drop_last) return drop_last.error();
  auto keep = opt_int(fields, "keep", 0, 0xFFFFFFFF);
  if (!keep) return keep.error();
  if (drop_last->has_value() == keep->has_value()) {
    return Error(Errc::invalid_argument, "a rewind takes exactly one of drop_last (messages to drop from the end) "
                                         "and keep (messages to keep from the start)")
        .with_param(*drop_last ? "drop_last" : "keep");
  }
  if (*drop_last) how.drop_last = static_cast<std::uint32_t>(**drop_last);
  if (*keep) how.keep = static_cast<std::uint32_t>(**keep);
  return how;
}

}  // namespace llmd::ipc
