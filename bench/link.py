"""The shaped-link benchmark (bench/run --link): run inside a network
namespace of its own (bench/run makes it), whose loopback it shapes with
tc's tbf, one rate after another. Uploads three
loads with each tool, alternating, and writes the "On a shaped link"
section of BENCHMARKS.md.

    python3 bench/link.py RATE RATE...   (RATE as tc says it: 100mbit, 1gbit)
"""

import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402

MIB = int(os.environ.get("LINK_MIB", "256"))
RUNS = int(os.environ.get("LINK_RUNS", "2"))
TREE = bench.TREE
SECTION = "## On a shaped link"


def log_like(path, size, seed=1):
    """A web-server log of `size` bytes, the same for the same seed."""
    rng = random.Random(seed)
    paths = [f"/api/v1/{w}/{rng.randrange(1000)}" for w in ("users", "orders", "items", "search")] + [
        "/static/app.js", "/static/site.css", "/", "/login", "/favicon.ico"]
    agents = ["Mozilla/5.0 (X11; Linux x86_64)", "curl/8.5.0", "Go-http-client/2.0", "python-requests/2.31"]
    def line():
        return '10.%d.%d.%d - - [02/Dec/2026:%02d:%02d:%02d +0000] "%s %s HTTP/1.1" %d %d "-" "%s"\n' % (
            rng.randrange(256), rng.randrange(256), rng.randrange(256), rng.randrange(24), rng.randrange(60),
            rng.randrange(60), rng.choice(("GET", "GET", "GET", "POST")), rng.choice(paths),
            rng.choice((200, 200, 200, 304, 404, 500)), rng.randrange(100, 50000), rng.choice(agents))

    # 65,536 distinct lines drawn in a seeded order: far more than one
    # 256 KiB stretch holds, and quick to write (one line at a time took
    # minutes for 256 MiB).
    pool = [line() for _ in range(1 << 16)]
    with open(path, "w") as f:
        written = 0
        while written < size:
            chunk = "".join(rng.choices(pool, k=8192))
            f.write(chunk)
            written += len(chunk)
        f.truncate(size)


class Link(bench.Bench):
    def loads(self):
        text, rand = self.work / "log.txt", self.work / "random.bin"
        log_like(text, MIB << 20)
        rng = random.Random(2)
        with open(rand, "wb") as f:
            for _ in range(MIB // 8):
                f.write(rng.randbytes(8 << 20))
        out = {"text": text, "random": rand}
        if TREE.is_dir():
            out["tree"] = TREE
        return out

    def tools(self, load, path):
        x = [str(bench.XFER), "-q", "-s", self.xfer_addr]
        rs = f"rsync://127.0.0.1:{self.rsync_port}/bench"
        ssh_e = "ssh -p %d %s" % (self.ssh_port, " ".join(self.ssh))
        tree = load == "tree"
        src = f"{path}/" if tree else str(path)
        n = iter(range(1_000_000))

        def dest(stem):
            return f"{stem}-{next(n)}"

        r = ["-a"] if tree else []
        scp_r = ["-r"] if tree else []
        return [
            ("xfer", lambda: x + ["put"] + (["-r"] if tree else []) + [src, dest("x")]),
            ("xfer -z", lambda: x + ["-z", "put"] + (["-r"] if tree else []) + [src, dest("z")]),
            ("rsync daemon -z zstd", lambda: ["rsync", *r, "-z", "--compress-choice=zstd", src, f"{rs}/{dest('rz')}" + ("/" if tree else "")]),
            ("rsync daemon -z lz4", lambda: ["rsync", *r, "-z", "--compress-choice=lz4", src, f"{rs}/{dest('rl')}" + ("/" if tree else "")]),
            ("rsync over ssh -z", lambda: ["rsync", *r, "-z", "-e", ssh_e, src, f"127.0.0.1:{self.work / dest('rs')}" + ("/" if tree else "")]),
            ("scp -C", lambda: ["scp", "-q", "-C", *scp_r, "-P", str(self.ssh_port)] + self.ssh + [str(path), f"127.0.0.1:{self.work / dest('sc')}"]),
        ]

    def clean(self):
        # What the runs wrote, so the disk never fills.
        for d in (self.xfer_root, self.rsync_dir, self.work):
            for p in d.iterdir():
                if p.name[:2] in ("x-", "z-", "rz", "rl", "rs", "sc") and "-" in p.name:
                    shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink()

    def go_link(self, rate, only_plain=False):
        results = {}
        loads = self.loads() if not hasattr(self, "_loads") else self._loads
        self._loads = loads
        for r in range(RUNS):
            for load, path in loads.items():
                tools = self.tools(load, path)
                if only_plain:
                    tools = [t for t in tools if t[0] in ("xfer", "xfer -z")]
                k = r % len(tools)
                for name, cmd in tools[k:] + tools[:k]:
                    print(f"{rate} round {r + 1}/{RUNS}: {load}: {name}", file=sys.stderr)
                    os.sync()
                    t = time.perf_counter()
                    subprocess.run(cmd(), env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    results.setdefault((load, name), []).append(time.perf_counter() - t)
                    self.clean()
        return results


def table(rate, results, loads):
    lines = [f"### {rate}", "", "| load | tool | median (s) | runs (s) | ratio to xfer -z |", "|---|---|---|---|---|"]
    for load in loads:
        ref = statistics.median(results[(load, "xfer -z")])
        for (l, name), times in results.items():
            if l != load:
                continue
            t = statistics.median(times)
            runs = ", ".join(f"{v:.2f}" for v in times)
            lines.append(f"| {load} | {name} | {t:.2f} | {runs} | {t / ref:.2f} |")
    return "\n".join(lines) + "\n"


def targets(slow, fast, loads, fast_rate_bytes):
    lines = ["### Targets, judged on this run", "", "| target | measured | holds |", "|---|---|---|"]

    def med(res, load, name):
        return statistics.median(res[(load, name)])

    for load in [l for l in ("text", "tree") if l in loads]:
        ours = med(slow, load, "xfer -z")
        best_name = min(("rsync daemon -z zstd", "rsync daemon -z lz4"), key=lambda n: med(slow, load, n))
        best = med(slow, load, best_name)
        lines.append(f"| {load}, 100 Mbit/s: xfer -z ≤ 0.8 × fastest rsync -z ({best_name}) | "
                     f"{ours:.2f} / {best:.2f} = {ours / best:.2f} | {'yes' if ours <= 0.8 * best else 'no'} |")
    z, plain = med(slow, "random", "xfer -z"), med(slow, "random", "xfer")
    lines.append(f"| random, 100 Mbit/s: xfer -z ≤ 1.05 × xfer | {z:.2f} / {plain:.2f} = {z / plain:.2f} | "
                 f"{'yes' if z <= 1.05 * plain else 'no'} |")
    if fast is not None:
        t = med(fast, "random", "xfer")
        share = (MIB << 20) / t / fast_rate_bytes
        lines.append(f"| random, 1 Gbit/s: xfer ≥ 90 % of the rate | {(MIB << 20) / t / 1e6:.1f} MB/s of "
                     f"{fast_rate_bytes / 1e6:.0f} = {share * 100:.0f} % | {'yes' if share >= 0.9 else 'no'} |")
    return "\n".join(lines) + "\n"


def rate_bytes(rate):
    units = {"kbit": 1e3, "mbit": 1e6, "gbit": 1e9}
    for u, f in units.items():
        if rate.endswith(u):
            return float(rate[: -len(u)]) * f / 8
    raise ValueError(rate)


def main():
    rates = sys.argv[1:]
    work = Path(tempfile.mkdtemp(prefix="xfer-link-"))
    b = Link(work)
    sections = []
    try:
        b.start_xfer()
        b.start_sshd()
        b.start_rsyncd()
        done = {}
        for i, rate in enumerate(rates):
            # Our own namespace's loopback: shaping it touches nothing else.
            subprocess.run(["tc", "qdisc", "replace", "dev", "lo", "root", "tbf", "rate", rate,
                            "burst", "256kb", "latency", "50ms"], check=True)
            done[rate] = b.go_link(rate, only_plain=i > 0)
        loads = list(b._loads)
        for rate in rates:
            sections.append(table(rate, done[rate], loads))
        fast = done[rates[1]] if len(rates) > 1 else None
        sections.append(targets(done[rates[0]], fast, loads, rate_bytes(rates[-1])))
    finally:
        b.stop()
        shutil.rmtree(work, ignore_errors=True)
    text = f"""{SECTION}

Reproduce with `bench/run --link`: a network namespace of its own whose
loopback tc's `tbf` shapes (rate as below, burst 256 KiB, latency 50 ms),
with `xfer serve`, sshd and an rsync daemon inside it on 127.0.0.1, and
the clients too; the namespace is removed after. Each tool uploads each
load {RUNS} times, alternating: the /usr/include tree, a {MIB} MiB
web-server log generated from a fixed seed, and {MIB} MiB of random
bytes. At the second rate only xfer and xfer -z run.

""" + "\n".join(sections)
    doc_path = bench.REPO / "BENCHMARKS.md"
    doc = doc_path.read_text() if doc_path.exists() else "# Benchmarks\n"
    if SECTION in doc:
        doc = doc[: doc.index(SECTION)]
    doc_path.write_text(doc.rstrip("\n") + "\n\n" + text)
    print(text)


if __name__ == "__main__":
    main()
