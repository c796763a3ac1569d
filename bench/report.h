// Benchmark results: rows of "llmd vs llama.cpp" measurements, printed as a table (ratio first)
// and written as JSON.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace llmd::bench {

struct Measurement {
  double mean = 0.0;
  double stddev = 0.0;
  int samples = 0;
  std::vector<double> values;  // every sample, for the JSON
};

// Mean and sample standard deviation.
Measurement summarize(const std::vector<double>& values);

// The p-th percentile (0 < p <= 100) by nearest rank; 0 for no values.
double percentile(std::vector<double> values, double p);

struct Row {
  std::string scenario;
  std::string metric;  // e.g. "pp512 tok/s"
  Measurement llmd;
  Measurement llama;   // llama.cpp's own tool, same source, same run
  bool higher_is_better = true;
  std::string baseline = "llama.cpp";  // what the second column is
  double ratio() const;  // llmd / llama.cpp for higher-is-better metrics, inverted otherwise
};

struct Report {
  std::vector<Row> rows;
  nlohmann::json context;  // machine, model, settings
};

void print_table(const Report& report);
nlohmann::json to_json(const Report& report);

}  // namespace llmd::bench
