#!/usr/bin/env bash
# Decode tokens/s on SmolLM2-135M-Instruct (Q4_1 GGUF): moonforge on the
# Q4_1 blocks as loaded, moonforge on f32 weights dequantized at load, and
# llama.cpp (llama-cpp-python) on the same file, same threads, same prompt,
# TOKENS greedy tokens each. ROUNDS rounds run the three back to back, so
# that each round's ratio compares runs made under the same machine load.
#   bash bench/decode/run.sh [BUILD_DIR]     # default build/; THREADS=2 TOKENS=128 ROUNDS=1
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${1:-build}
THREADS=${THREADS:-2}
TOKENS=${TOKENS:-128}
ROUNDS=${ROUNDS:-1}
MODEL=datasets/cache/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
# the ChatML prompt of chat case 3 in tests/reference/golden/gguf/smollm2_llama_cpp.json
# (system message + "What is the boiling point of water in Celsius?")
PROMPT="1 9690 198 2683 359 253 5356 5646 11173 3365 3511 308 34519 28 7018 411 407 19712 8182 2 198 1 4093 198 1780 314 260 16891 1225 282 913 281 20590 47 2 198 1 520 9531 198"

bash datasets/smollm2/fetch.sh >/dev/null
export MOONFORGE_THREADS=$THREADS
results=()
for _ in $(seq "$ROUNDS"); do
  results+=("$("$BUILD/moonforge" exec bench/decode/decode.lua "$MODEL" 1 "$PROMPT" "$TOKENS")")
  results+=("$("$BUILD/moonforge" exec bench/decode/decode.lua "$MODEL" 0 "$PROMPT" "$TOKENS")")
  results+=("$(python3 bench/decode/llama_cpp_decode.py "$MODEL" "$THREADS" "$PROMPT" "$TOKENS")")
done

python3 - "$THREADS" "${results[@]}" <<'PY'
import json, statistics, sys
runs = [json.loads(s) for s in sys.argv[2:]]
rounds = [runs[i:i + 3] for i in range(0, len(runs), 3)]
print(f"decode, SmolLM2-135M-Instruct Q4_1, {sys.argv[1]} threads, {runs[0]['tokens']} tokens greedy")
ratios = []
for n, (q4, f32, ref) in enumerate(rounds, 1):
    if len(rounds) > 1:
        print(f" round {n}")
    for name, r in (("moonforge Q4_1 blocks", q4), ("moonforge f32 (dequantized)", f32), ("llama.cpp Q4_1", ref)):
        print(f"  {name:30s} {r['tokens_per_s']:8.1f} tokens/s")
    ratios.append(q4["tokens_per_s"] / ref["tokens_per_s"])
    print(f"  ratio moonforge Q4_1 / llama.cpp: {ratios[-1]:.2f}x (target >= 1x)")
if len(rounds) > 1:
    print(f" median ratio over {len(rounds)} rounds: {statistics.median(ratios):.2f}x")
q4, ref = rounds[0][0], rounds[0][2]
same = next((i for i, (a, b) in enumerate(zip(q4["ids"], ref["ids"])) if a != b), len(q4["ids"]))
print(f"  greedy ids identical to llama.cpp for the first {same} of {len(q4['ids'])} tokens")
PY
