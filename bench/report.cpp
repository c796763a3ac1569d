// Table and JSON output of benchmark results (see report.h).
#include "bench/report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace llmd::bench {

Measurement summarize(const std::vector<double>& values) {
  Measurement m;
  m.samples = static_cast<int>(values.size());
  m.values = values;
  if (values.empty()) return m;
  double sum = 0.0;
  for (double v : values) sum += v;
  m.mean = sum / static_cast<double>(values.size());
  if (values.size() > 1) {
    double ss = 0.0;
    for (double v : values) ss += (v - m.mean) * (v - m.mean);
    m.stddev = std::sqrt(ss / static_cast<double>(values.size() - 1));
  }
  return m;
}

double percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0.0;
  std::sort(values.begin(), values.end());
  const auto rank = static_cast<std::size_t>(std::ceil(p / 100.0 * static_cast<double>(values.size())));
  return values[std::clamp<std::size_t>(rank, 1, values.size()) - 1];
}

double Row::ratio() const {
  if (llmd.mean <= 0.0 || llama.mean <= 0.0) return 0.0;
  return higher_is_better ? llmd.mean / llama.mean : llama.mean / llmd.mean;
}

void print_table(const Report& report) {
  std::printf("\n%-7s  %-13s  %-34s  %18s  %18s  %s\n", "ratio", "scenario", "metric", "llmd", "baseline", "baseline is");
  std::printf("%-7s  %-13s  %-34s  %18s  %18s  %s\n", "-------", "-------------", "----------------------------------",
              "------------------", "------------------", "-----------");
  for (const auto& r : report.rows) {
    char a[64], b[64];
    std::snprintf(a, sizeof a, "%.2f ± %.2f", r.llmd.mean, r.llmd.stddev);
    std::snprintf(b, sizeof b, "%.2f ± %.2f", r.llama.mean, r.llama.stddev);
    std::printf("%-7.3f  %-13s  %-34s  %18s  %18s  %s\n", r.ratio(), r.scenario.c_str(), r.metric.c_str(), a, b,
                r.baseline.c_str());
  }
  std::printf("\nratio = llmd / baseline, inverted where lower is better (>= 1.0: llmd is as fast or faster)\n");
}

nlohmann::json to_json(const Report& report) {
  nlohmann::json rows = nlohmann::json::array();
  for (const auto& r : report.rows) {
    auto m = [](const Measurement& x) {
      return nlohmann::json{{"mean", x.mean}, {"stddev", x.stddev}, {"samples", x.samples}, {"values", x.values}};
    };
    rows.push_back({{"ratio", r.ratio()},
                    {"scenario", r.scenario},
                    {"metric", r.metric},
                    {"llmd", m(r.llmd)},
                    {"llama_cpp", m(r.llama)},
                    {"baseline", r.baseline},
                    {"higher_is_better", r.higher_is_better}});
  }
  return {{"results", rows}, {"context", report.context}};
}

}  // namespace llmd::bench
