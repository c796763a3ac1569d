// The client's HTTP reader against a server that sends its answer in awkward pieces: a head split
// mid-line, chunk-size lines split from their data (what llama-server's chunked event streams do),
// a body one byte at a time. Everything must parse as if it came in one piece.
#include "tools/http_client/http_client.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "tests/support/test_env.h"

namespace llmd::client {
namespace {

// Accepts one connection, reads the request head, then sends `pieces` with a pause between them.
class PieceServer {
 public:
  PieceServer(std::string path, std::vector<std::string> pieces) : path_(std::move(path)) {
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, path_.c_str(), sizeof a.sun_path - 1);
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    EXPECT_EQ(::listen(fd_, 1), 0);
    thread_ = std::thread([this, pieces = std::move(pieces)] {
      const int c = ::accept(fd_, nullptr, nullptr);
      if (c < 0) return;
      std::string req;
      char buf[4096];
      while (req.find("\r\n\r\n") == std::string::npos) {
        const ssize_t n = ::recv(c, buf, sizeof buf, 0);
        if (n <= 0) break;
        req.append(buf, static_cast<std::size_t>(n));
      }
      for (const auto& p : pieces) {
        (void)::send(c, p.data(), p.size(), MSG_NOSIGNAL);
        std::this_thread::sleep_for(std::chrono::milliseconds(3));
      }
      ::close(c);
    });
  }
  ~PieceServer() {
    thread_.join();
    ::close(fd_);
  }

 private:
  std::string path_;
  int fd_ = -1;
  std::thread thread_;
};

std::vector<std::string> bytes_of(const std::string& s) {
  std::vector<std::string> out;
  for (char ch : s) out.emplace_back(1, ch);
  return out;
}

TEST(HttpClientPieces, HeadAndBodyOneByteAtATime) {
  const std::string sock = test::scratch_dir() + "/s.sock";
  PieceServer server(sock, bytes_of("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n"
                                    "{\"ok\":true}"));
  HttpClient c(sock);
  auto r = c.request("GET", "/v1/health");
  ASSERT_TRUE(r) << r.error().to_string();
  EXPECT_EQ(r->status, 200u);
  EXPECT_EQ(r->body, "{\"ok\":true}");
}

TEST(HttpClientPieces, ChunkedEventStreamSplitAnywhere) {
  const std::string sock = test::scratch_dir() + "/s.sock";
  PieceServer server(sock, {"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-", "Encoding: chunked\r\n\r\n",
                            "f\r", "\ndata: {\"a\":1}\n\n\r\n", "10", "\r\ndata: {\"bb\":2}\n\n\r\n", "e\r\ndata: [DONE]\n\n",
                            "\r\n0\r", "\n\r\n"});
  HttpClient c(sock);
  std::vector<std::string> events;
  auto r = c.request("POST", "/v1/completions", "{}", [&](const std::string& data) {
    events.push_back(data);
    return true;
  });
  ASSERT_TRUE(r) << r.error().to_string();
  EXPECT_EQ(r->status, 200u);
  EXPECT_EQ(events, (std::vector<std::string>{"{\"a\":1}", "{\"bb\":2}", "[DONE]"}));
}

TEST(HttpClientPieces, TruncatedAnswerIsAnErrorNotAHang) {
  const std::string sock = test::scratch_dir() + "/s.sock";
  PieceServer server(sock, {"HTTP/1.1 200 OK\r\nContent-Le"});
  HttpClient c(sock, nullptr, std::chrono::seconds(10));
  auto r = c.request("GET", "/v1/health");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::io_error) << r.error().to_string();
}

}  // namespace
}  // namespace llmd::client
