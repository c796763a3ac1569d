// The bytes of one HTTP/1.1 request to llmd, as every client writes it (libllmclient and the
// blocking HttpClient): one request per connection ("Connection: close"), a JSON body.
#pragma once

#include <string>
#include <string_view>

namespace llmd::client {

std::string format_request(std::string_view method, std::string_view target, std::string_view body);

}  // namespace llmd::client
