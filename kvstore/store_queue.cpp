// The chunk store's queue (see store_queue.h).
#include "kvstore/store_queue.h"

namespace llmd::kvstore {

std::uint64_t StoreOp::bytes() const {
  if (kind != Kind::write_back) return 0;
  return state.size() + tokens.size() * sizeof(engine::Token) + attention.size() * sizeof(float);
}

void StoreQueue::push(StoreOp op) {
  bytes_ += op.bytes();
  ops_.push_back(std::move(op));
}

std::optional<StoreOp> StoreQueue::pop() {
  if (ops_.empty()) return std::nullopt;
  StoreOp op = std::move(ops_.front());
  ops_.pop_front();
  bytes_ -= op.bytes();
  return op;
}

std::vector<std::string> StoreQueue::shed(std::uint64_t bound, const std::set<std::string>& in_use) {
  std::vector<std::string> dropped;
  for (auto it = ops_.begin(); bytes_ > bound && it != ops_.end();) {
    if (it->kind != StoreOp::Kind::write_back || in_use.count(it->session) > 0) {
      ++it;
      continue;
    }
    bytes_ -= it->bytes();
    dropped.push_back(std::move(it->session));
    it = ops_.erase(it);
  }
  return dropped;
}

}  // namespace llmd::kvstore
