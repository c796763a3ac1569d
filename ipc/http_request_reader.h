// The request half of the HTTP server that does not touch a socket: the Beast parser set up with
// the server's limits, and the parsed message turned into the HttpRequest a handler gets. The
// server (http_server.cpp) reads every request through these; the HTTP fuzz target
// (fuzz/fuzz_http.cpp) feeds raw bytes through the same two, so what it finds is what a client
// could reach.
//
// Pure code; no I/O. Thread-safety: none needed (no shared state).
#pragma once

#include <boost/beast/http/message.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>

#include "ipc/http_server.h"

namespace llmd::ipc {

using RequestParser = boost::beast::http::request_parser<boost::beast::http::string_body>;
using RequestMessage = boost::beast::http::request<boost::beast::http::string_body>;

// Applies the body-size and header-size limits to a fresh parser (Beast then fails the read with
// body_limit / header_limit, answered 413 / 431).
void apply_limits(RequestParser& parser, const HttpLimits& limits);

// The request a handler sees: method, path and query split at the first '?', Content-Type, the
// body (moved out of `msg`; its headers stay, e.g. for keep_alive()), and the caller's credentials.
HttpRequest to_http_request(RequestMessage& msg, const PeerCredentials& peer);

}  // namespace llmd::ipc
