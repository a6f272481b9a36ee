"""Runs bench/lora_step's two sides (lora_step.lua in moonforge, peft_step.py
in transformers + PEFT) at once, each in its own process under
/usr/bin/time -v, and times them in turns: two steps of moonforge, then two
of PEFT, and again. A shared machine's load drifts over a run of minutes;
taken in turns, both sides meet the same drift, so their ratio varies far
less than two runs one after the other. Each side is idle while the other
steps. Only the second step of a turn is timed: the first runs on caches
the other side has just filled with its own data, which a training run
that steps without pause never meets. Each side's figure is its median
timed step, which a burst of load does not move.

    python3 alternate.py --steps N --seq S --batch B --moonforge 'CMD' --peft 'CMD'

Prints "key value" lines: tokens/s (batch x seq over the median timed
step), last loss and peak resident KiB of each side, and the timed steps'
seconds in order.
"""
import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile


def start(name, cmd, timings):
    proc = subprocess.Popen(["/usr/bin/time", "-v", "-o", timings] + cmd, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    return {"name": name, "proc": proc, "timings": timings, "seconds": [], "loss": None}


def read_line(side):
    line = side["proc"].stdout.readline()
    if not line:
        side["proc"].wait()
        sys.exit(f"alternate: the {side['name']} side stopped (exit status {side['proc'].returncode})")
    return line.split()


def wait_ready(side):
    while read_line(side)[:1] != ["ready"]:
        pass


def step(side, timed):
    side["proc"].stdin.write("step\n")
    side["proc"].stdin.flush()
    fields = read_line(side)
    while fields[:1] != ["step"]:
        fields = read_line(side)
    if timed:
        side["seconds"].append(float(fields[1]))
    side["loss"] = float(fields[2])


def peak_kib(timings):
    with open(timings) as f:
        for line in f:
            if "Maximum resident set size" in line:
                return int(line.split(":")[1])
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, required=True, help="timed steps a side")
    ap.add_argument("--seq", type=int, required=True)
    ap.add_argument("--batch", type=int, required=True)
    ap.add_argument("--moonforge", required=True, help="command line of moonforge's side")
    ap.add_argument("--peft", required=True, help="command line of PEFT's side")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sides = [start("moonforge", shlex.split(a.moonforge), os.path.join(tmp, "mf.time")),
                 start("peft", shlex.split(a.peft), os.path.join(tmp, "peft.time"))]
        for side in sides:
            wait_ready(side)
        for _ in range(a.steps):
            for side in sides:
                step(side, False)
                step(side, True)
        for side in sides:
            side["proc"].stdin.close()
            side["proc"].stdout.read()
            if side["proc"].wait() != 0:
                sys.exit(f"alternate: the {side['name']} side failed (exit status {side['proc'].returncode})")
            median = statistics.median(side["seconds"])
            print(f"{side['name']}_tokens_per_s {a.seq * a.batch / median:.2f}")
            print(f"{side['name']}_loss {side['loss']:.4f}")
            print(f"{side['name']}_peak_kib {peak_kib(side['timings'])}")
            print(f"{side['name']}_step_s " + ",".join(f"{s:.3f}" for s in side["seconds"]))


if __name__ == "__main__":
    main()
