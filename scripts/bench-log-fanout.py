#!/usr/bin/env python3
"""Issue 4 benchmark: how long a step's output line takes to reach a live reader.

Starts `gyre up` (machine executor), runs a job that prints its own clock in ms every
50 ms, and reads the task's log over SSE (/api/gyre/v1/tasks/{wf}/{task}/log). The lag of
a line is (time the reader got it) - (time the job printed it); both clocks are this
machine's. The baseline, in the same script, is the same print loop read straight from a
pipe by this process: the machine's own floor for "print, then read".

Usage (release builds; the helper next to gyre):
    cargo build --release -p gyre && scripts/build-helper.sh target/release
    scripts/bench-log-fanout.py [target/release/gyre]
"""
import json, os, socket, statistics, subprocess, sys, tempfile, time, urllib.request

GYRE = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "target/release/gyre")
TOKEN = "bench-token"
LINES = 100
LOOP = f'sleep 2; for i in $(seq {LINES}); do echo "t=$(date +%s%3N)"; sleep 0.05; done'


def now_ms():
    return time.time() * 1000


def stats(lags):
    lags = sorted(lags)
    return {"n": len(lags), "p50": statistics.median(lags),
            "p95": lags[int(len(lags) * 0.95) - 1], "max": lags[-1]}


def baseline():
    p = subprocess.Popen(["bash", "-c", LOOP.replace("sleep 2; ", "")],
                         stdout=subprocess.PIPE, text=True, bufsize=1)
    lags = [now_ms() - int(line.strip()[2:]) for line in p.stdout if line.startswith("t=")]
    p.wait()
    return stats(lags)


def api(port, method, path, body=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Circle-Token": TOKEN, "Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r:
        return json.loads(r.read() or b"null")


def gyre_lags(tmp):
    repo = os.path.join(tmp, "repo")
    os.makedirs(os.path.join(repo, ".circleci"))
    with open(os.path.join(repo, ".circleci/config.yml"), "w") as f:
        f.write("version: 2.1\njobs:\n  talk:\n    machine: true\n    steps:\n"
                f"      - run: '{LOOP}'\nworkflows:\n  main: {{jobs: [talk]}}\n")
    git = ["git", "-C", repo, "-c", "user.name=b", "-c", "user.email=b@example.invalid"]
    subprocess.run(git + ["init", "-q", "-b", "main"], check=True)
    subprocess.run(git + ["add", "-A"], check=True)
    subprocess.run(git + ["commit", "-qm", "bench"], check=True)
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
    env = dict(os.environ, GYRE_ADMIN_TOKEN=TOKEN)
    up = subprocess.Popen([GYRE, "up", "--data-dir", os.path.join(tmp, "data"),
                           "--listen", f"127.0.0.1:{port}"], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                api(port, "GET", "/api/v2/me"); break
            except OSError:
                time.sleep(0.1)
        api(port, "POST", "/api/gyre/v1/projects", {"slug": "gh/b/b", "repo_url": repo})
        p = api(port, "POST", "/api/v2/project/gh/b/b/pipeline", {})
        wf = api(port, "GET", f"/api/v2/pipeline/{p['id']}/workflow")["items"][0]["id"]
        wf_num = int(wf.split("-")[-1], 16)
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/gyre/v1/tasks/{wf_num}/0/log",
            headers={"Circle-Token": TOKEN})
        lags = []
        with urllib.request.urlopen(req) as r:
            for raw in r:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: end"):
                    break
                if not line.startswith("data: "):
                    continue
                ev = json.loads(line[6:])
                if ev["stream"] != "stdout":
                    continue
                got = now_ms()
                for part in ev["text"].split():
                    if part.startswith("t="):
                        lags.append(got - int(part[2:]))
        return stats(lags)
    finally:
        up.terminate()
        try:
            up.wait(timeout=5)
        except subprocess.TimeoutExpired:
            up.kill()


with tempfile.TemporaryDirectory() as tmp:
    b = baseline()
    g = gyre_lags(tmp)
print(f"baseline (pipe):   {b}")
print(f"gyre (agent->server->SSE): {g}")
print(f"p95 lag {g['p95']:.0f} ms (target <= 250 ms); p50 ratio to the pipe floor "
      f"{g['p50'] / max(b['p50'], 0.1):.0f}x")
