#!/usr/bin/env python
"""Run every kprune benchmark: `python benchmarks/run.py [--quick] [--only NAME[,NAME]]`.

Every `benchmarks/bench_<name>.py` runs in its own process (no TensorFlow
state is shared, and a crash in one does not stop the others), one after the
other; their progress is streamed here and saved to `<results>/logs/<name>.log`.
Each benchmark writes its own `<results>/<name>.json` and `<name>.md`
(`common.Run.write`): `benchmarks/results/` for a full run (committed),
`benchmarks/results/quick/` for `--quick` (ignored by git), so that a smoke
run never overwrites a full result. At the end a table gives each
benchmark's status and time.

The exit status is 1 if a benchmark failed (non-zero exit status, killed
after its time limit, or no fresh result written); missed goals are in the
results, not failures.
"""

import glob
import os
import subprocess
import sys
import threading
import time

import common

TIME_LIMIT_S = {"quick": 900, "full": 6 * 3600}


def benchmarks():
    """`{name: script}` for every `bench_<name>.py` beside this file."""
    scripts = sorted(glob.glob(os.path.join(common.HERE, "bench_*.py")))
    return {os.path.basename(s)[len("bench_"):-len(".py")]: s for s in scripts}


def run_one(name, script, quick, log):
    """Run one benchmark, echoing its output; `(status, seconds)`."""
    json_path = os.path.join(common.results_dir(quick), f"{name}.json")
    logs = os.path.join(common.results_dir(quick), "logs")
    os.makedirs(logs, exist_ok=True)
    cmd = [sys.executable, script] + (["--quick"] if quick else [])
    log(f"{name}: python {os.path.relpath(script, common.ROOT)}{' --quick' if quick else ''}")
    limit = TIME_LIMIT_S["quick" if quick else "full"]
    start, started = time.perf_counter(), time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=common.child_env(), cwd=common.ROOT)
    timer = threading.Timer(limit, proc.kill)
    timer.start()
    try:
        with open(os.path.join(logs, f"{name}.log"), "w") as log_file:
            for line in proc.stdout:
                sys.stdout.write(line)
                sys.stdout.flush()
                log_file.write(line)
        proc.wait()
    finally:
        timer.cancel()
    seconds = time.perf_counter() - start
    fresh = os.path.exists(json_path) and os.path.getmtime(json_path) >= started - 1
    if proc.returncode < 0:
        status = f"killed (signal {-proc.returncode}; time limit {limit} s)"
    elif not fresh:
        status = f"failed: exit status {proc.returncode}, no result written"
    elif proc.returncode:
        status = f"finished with errors (exit status {proc.returncode}; see its result)"
    else:
        status = "ok"
    log(f"{name}: {status} in {seconds:.0f} s")
    return status, seconds


def main(argv=None):
    parser = common.parser(__doc__, "every benchmark in its reduced form")
    found = benchmarks()
    parser.add_argument("--only", help="comma-separated subset of: " + ", ".join(found))
    args = parser.parse_args(argv)
    selected = list(found) if not args.only else [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = sorted(set(selected) - set(found))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {list(found)}")
    log = common.logger("run")
    start, runs = time.perf_counter(), {}
    for k, name in enumerate(selected, 1):
        log(f"[{k}/{len(selected)}] {name} ({'quick' if args.quick else 'full'})")
        runs[name] = run_one(name, found[name], args.quick, log)
    total = time.perf_counter() - start
    print("\n" + common.md_table(["benchmark", "status", "time (s):"],
                                 [[n, s, f"{t:.0f}"] for n, (s, t) in runs.items()] + [["total", "", f"{total:.0f}"]]))
    failed = [n for n, (s, _) in runs.items() if s != "ok"]
    log(f"{len(runs) - len(failed)} of {len(runs)} ok in {total:.0f} s; results in "
        f"{os.path.relpath(common.results_dir(args.quick), common.ROOT)}/" + (f"; failed: {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
