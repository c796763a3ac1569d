// libllmclient from C++: an answer streamed token by token, then a conversation kept in a session.
//
//   c++ -std=c++20 streaming.cpp $(pkg-config --cflags --libs llmclient) -o streaming
//   ./streaming "Tell me a story about a robot"
#include <iostream>
#include <string>

#include <llmclient/llmclient.hpp>

int main(int argc, char** argv) try {
  const std::string prompt = argc > 1 ? argv[1] : "Tell me a story.";
  llmc::Client llmd;  // $LLMD_SOCKET, else llmd's default socket; throws llmc::Error if llmd is not running

  llmc::GenParams params;
  params.max_tokens = 48;

  // The tokens as a range: each arrives as llmd generates it.
  auto tokens = llmd.stream(prompt, params);
  for (const std::string& token : tokens) std::cout << token << std::flush;
  std::cout << "\n(" << tokens.result().completion_tokens << " tokens, " << tokens.result().finish_reason << ")\n";

  // A session remembers the conversation (also across restarts of the app and of llmd); a
  // callback is the other way to stream.
  params.session = llmd.create_session("You tell short stories.");
  for (const char* turn : {"Tell me about a cat.", "What did the cat do next?"}) {
    std::cout << "> " << turn << "\n";
    llmd.generate(turn, params, [](std::string_view token) { std::cout << token << std::flush; });
    std::cout << "\n";
  }
  llmd.delete_session(params.session);
  return 0;
} catch (const llmc::Error& e) {
  std::cerr << "llmd: " << e.what() << "\n";
  return 1;
}
