// Scenario "switch": the kvstore's context switch. A session with 512 / 1024 / 2048 tokens of
// history is swapped out of the only slot by another session, then gets a new turn; measured:
//   - time to first token (client side, over the socket) when its KV comes back from T1 (RAM),
//     from T2 (disk; restart with kv-ram-mib=0, page cache warm) and by re-prefilling it
//     (restore=recompute, the baseline) — all in the same run;
//   - the restore itself (read + decode + install) vs llama-server's manual /slots restore of the
//     same history (its state file, f16), vs a plain memcpy of the T1 bytes, and the T2 read vs a
//     plain read of the chunk files;
//   - the T1 restore under the kivi4 and uniform q8_0 policies against the exact one, and LLMS's
//     metric for each: how many sessions of each length can be switched in under 10 ms with a T1
//     budget of 256 MiB and 1 GiB, from the measured restore time and bytes (kivi4 vs q8_0).
// Model: smollm2-135m q8_0 (and llama-3.2-1b q8_0 with LLMD_BENCH_BIG=1), one slot, f16 KV;
// LLMD_BENCH_SWITCH_ARGS adds llmd settings (e.g. "--chunk-tokens 16") to compare.
#pragma once

#include "bench/bench_env.h"
#include "bench/report.h"

namespace llmd::bench {

Status run_switch_scenario(const BenchEnv& env, Report& report);

}  // namespace llmd::bench
