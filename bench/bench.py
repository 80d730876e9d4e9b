"""Runs the xfer benchmark; see bench/run. Prints a table and writes BENCHMARKS.md."""

import datetime
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
XFER = REPO / "target" / "release" / "xfer"
SIZE_MIB = int(os.environ.get("SIZE_MIB", "1024"))
RUNS = int(os.environ.get("RUNS", "3"))
# Tree runs take about half a second each, and their spread between rounds
# is wide (0.33-0.76 s for the same binary in one run): with five rounds,
# put -r came at 0.92 and 1.12 × the baseline build in two runs of the same
# two builds; nine give a steadier median for about a minute more.
TREE_RUNS = int(os.environ.get("TREE_RUNS", "9"))
LATENCY_RUNS = int(os.environ.get("LATENCY_RUNS", "50"))
TOKEN = "bench-token-0123456789abcdef0123456789"
# An older xfer binary to measure in the same run (XFER_BASELINE=path):
# rows "…, baseline" against its own server, e.g. the build before a change.
BASELINE = os.environ.get("XFER_BASELINE")
TREE = Path(os.environ.get("TREE", "/usr/include"))
# The same gets from a server that remembers no digests (--digest-cache 0),
# so it hashes every byte it sends, as on a first read.
COLD_GET = "xfer get, server hashing"
# A get written to /dev/null: what the transfer costs without this
# machine's disk, whose writeback made the get rows swing 2-10 s.
GET_NULL = "xfer get - > /dev/null"
COLD_GET_TREE = "xfer get -r, server hashing"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def run(cmd, **kw):
    subprocess.run(cmd, check=True, stdout=kw.pop("stdout", subprocess.DEVNULL), **kw)


def peak_rss_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def reset_peak_rss(pid):
    # Writing 5 to clear_refs resets VmHWM (Linux >= 4.0).
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def read_through(path):
    """Reads a file, or every file beneath a directory, so its pages are
    resident: this machine pages out file data left unread for a minute
    (DAMON), and a tool whose source had gone read it from disk (`fincore`:
    607 of 1,024 MiB of the source resident after a few idle minutes)."""
    buf = bytearray(1 << 20)
    files = [Path(d) / f for d, _, fs in os.walk(path) for f in fs] if path.is_dir() else [path]
    # Regular files only (a missing one is none): opening a FIFO would wait
    # for a writer. The tools skip special and unreadable files too.
    for f in filter(Path.is_file, files):
        try:
            with open(f, "rb", buffering=0) as r:
                while r.readinto(buf):
                    pass
        except OSError:
            pass


class Bench:
    def __init__(self, work):
        self.work = work
        self.env = dict(os.environ, XFER_TOKEN=TOKEN)
        self.procs = []
        self.big = work / "big.bin"
        self.results = {}  # name -> list of seconds
        self.rss = {}  # name -> (client KiB, server KiB)

    # ---- set-up ----
    def make_file(self):
        with open(self.big, "wb") as f:
            left = SIZE_MIB << 20
            while left:
                n = min(left, 8 << 20)
                f.write(os.urandom(n))
                left -= n
        run(["cat", str(self.big)])  # warm the page cache

    def start(self, cmd, port, **kw):
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)
        self.procs.append(p)
        wait_port(port)
        return p

    def start_xfer(self):
        self.xfer_port = free_port()
        self.xfer_root = self.work / "xfer-root"
        key = ["--key-file", str(self.work / "server-key.pem")]
        self.xfer_server = self.start(
            [str(XFER), "serve", "--listen", f"127.0.0.1:{self.xfer_port}", "--root", str(self.xfer_root), "--allow-exec"]
            + key,
            self.xfer_port,
            env=self.env,
        )
        self.xfer_addr = f"127.0.0.1:{self.xfer_port}"
        # The same root served without remembered digests: what a get costs
        # when the server must hash the file (first read, or changed).
        self.cold_port = free_port()
        self.cold_server = self.start(
            [str(XFER), "serve", "--listen", f"127.0.0.1:{self.cold_port}", "--root", str(self.xfer_root),
             "--digest-cache", "0"] + key,
            self.cold_port,
            env=self.env,
        )
        self.cold_addr = f"127.0.0.1:{self.cold_port}"
        self.base_server = None
        if BASELINE:
            self.base_port = free_port()
            self.base_root = self.work / "base-root"
            self.base_server = self.start(
                [BASELINE, "serve", "--listen", f"127.0.0.1:{self.base_port}", "--root", str(self.base_root),
                 "--allow-exec"],
                self.base_port,
                env=self.env,
            )
            self.base = [BASELINE, "-q", "-s", f"127.0.0.1:{self.base_port}"]

    def start_sshd(self):
        d = self.work / "ssh"
        d.mkdir()
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "host")])
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "id")])
        shutil.copy(d / "id.pub", d / "authorized_keys")
        os.chmod(d / "authorized_keys", 0o600)
        self.ssh_port = free_port()
        (d / "sshd_config").write_text(
            f"Port {self.ssh_port}\nListenAddress 127.0.0.1\nHostKey {d / 'host'}\n"
            f"AuthorizedKeysFile {d / 'authorized_keys'}\nPidFile {d / 'sshd.pid'}\n"
            "StrictModes no\nUsePAM no\nPasswordAuthentication no\nPermitRootLogin yes\n"
            "Subsystem sftp internal-sftp\n"
        )
        Path("/run/sshd").mkdir(exist_ok=True)
        self.start(["/usr/sbin/sshd", "-D", "-f", str(d / "sshd_config")], self.ssh_port)
        self.ssh = [
            "-i", str(d / "id"), "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "BatchMode=yes", "-o", "LogLevel=ERROR",
        ]

    def start_rsyncd(self):
        d = self.work / "rsyncd"
        d.mkdir()
        self.rsync_port = free_port()
        (d / "rsyncd.conf").write_text(
            f"pid file = {d / 'pid'}\nuse chroot = no\n[bench]\npath = {d}\nread only = no\nuid = root\ngid = root\n"
        )
        self.rsync_dir = d
        self.start(
            ["rsync", "--daemon", "--no-detach", f"--config={d / 'rsyncd.conf'}", f"--port={self.rsync_port}", "--address=127.0.0.1"],
            self.rsync_port,
        )

    def stop(self):
        for p in self.procs:
            p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()

    # ---- the contenders: name -> (prepare, command) ----
    def cases(self):
        w, big = self.work, str(self.big)
        x = [str(XFER), "-q", "-s", self.xfer_addr]
        cold = [str(XFER), "-q", "-s", self.cold_addr]
        ssh_e = "ssh -p %d %s" % (self.ssh_port, " ".join(self.ssh))
        rs = f"rsync://127.0.0.1:{self.rsync_port}/bench"
        out = w / "out.bin"
        nc_port = free_port()

        def rm(*paths):
            return lambda: [Path(p).unlink(missing_ok=True) for p in paths]

        def rmtree(*paths):
            return lambda: [shutil.rmtree(p, ignore_errors=True) for p in paths]

        counter = iter(range(1_000_000))

        def fresh(stem):
            return f"{stem}-{next(counter)}"

        def nc_put():
            rm(out)()
            recv = subprocess.Popen(["nc", "-l", "127.0.0.1", str(nc_port)], stdout=open(out, "wb"))
            wait_port_or_listen(nc_port)
            return recv

        base = []
        if BASELINE:
            base = [
                ("put", ("xfer put, baseline", rm(self.base_root / "big.bin"), self.base + ["put", big])),
                ("get", ("xfer get, baseline", rm(out), self.base + ["get", "seed.bin", str(out)])),
                ("get", (f"{GET_NULL}, baseline", None, self.base + ["get", "seed.bin", "-"])),
                ("tree", ("xfer put -r, baseline", None, lambda: self.base + ["put", "-r", str(TREE), fresh("tree")])),
                ("tree", ("xfer get -r, baseline", None, lambda: self.base + ["get", "-r", "seed", str(w / fresh("back"))])),
                ("tree", ("xfer put -r, nothing changed, baseline", None, self.base + ["put", "-r", str(TREE) + "/", "seed"])),
            ]
        cases = {
            "put": [
                ("xfer put", rm(self.xfer_root / "big.bin"), x + ["put", big]),
                ("xfer put --md5", rm(self.xfer_root / "big.bin"), x + ["put", "--md5", big]),
                ("scp put", rm(out), ["scp", "-q", "-P", str(self.ssh_port)] + self.ssh + [big, f"127.0.0.1:{out}"]),
                ("rsync over ssh put", rm(out), ["rsync", "-e", ssh_e, big, f"127.0.0.1:{out}"]),
                ("rsync daemon put (xxh128)", rm(self.rsync_dir / "big.bin"), ["rsync", big, f"{rs}/"]),
                ("rsync daemon put (md5)", rm(self.rsync_dir / "big.bin"), ["rsync", "--checksum-choice=md5", big, f"{rs}/"]),
                ("nc put (no verification)", None, ["sh", "-c", f"nc -N 127.0.0.1 {nc_port} < {big}"], nc_put),
                ("md5sum (hashing ceiling)", None, ["md5sum", big]),
            ],
            "get": [
                ("xfer get", rm(out), x + ["get", "seed.bin", str(out)]),
                ("xfer get --md5", rm(out), x + ["get", "--md5", "seed.bin", str(out)]),
                (GET_NULL, None, x + ["get", "seed.bin", "-"]),
                (COLD_GET, rm(out), cold + ["get", "seed.bin", str(out)]),
                ("scp get", rm(out), ["scp", "-q", "-P", str(self.ssh_port)] + self.ssh + [f"127.0.0.1:{big}", str(out)]),
                ("rsync over ssh get", rm(out), ["rsync", "-e", ssh_e, f"127.0.0.1:{big}", str(out)]),
                ("rsync daemon get (xxh128)", rm(out), ["rsync", f"{rs}/big.bin", str(out)]),
                ("rsync daemon get (md5)", rm(out), ["rsync", "--checksum-choice=md5", f"{rs}/big.bin", str(out)]),
                ("xfer exec cat > /dev/null", None, x + ["exec", "-n", f"cat {big}"]),
            ],
            "tree": [
                # Each run writes a tree into a directory of its own, never
                # deleted until the end: creating files where thousands were
                # just deleted costs ext4 seconds (its recently-deleted inode
                # check), which would swamp what is measured.
                ("xfer put -r", None, lambda: x + ["put", "-r", str(TREE), fresh("tree")]),
                ("rsync daemon put -a", None, lambda: ["rsync", "-a", f"{TREE}/", f"{rs}/{fresh('t')}/"]),
                ("rsync over ssh put -a", None, lambda: ["rsync", "-a", "-e", ssh_e, f"{TREE}/", f"127.0.0.1:{w / fresh('s')}/"]),
                ("xfer get -r", None, lambda: x + ["get", "-r", "seed", str(w / fresh("back"))]),
                (COLD_GET_TREE, None, lambda: cold + ["get", "-r", "seed", str(w / fresh("back"))]),
                ("rsync daemon get -a", None, lambda: ["rsync", "-a", f"{rs}/seed/", f"{w / fresh('back')}/"]),
                ("rsync over ssh get -a", None, lambda: ["rsync", "-a", "-e", ssh_e, f"127.0.0.1:{TREE}/", f"{w / fresh('back')}/"]),
                ("xfer put -r, nothing changed", None, x + ["put", "-r", str(TREE) + "/", "seed"]),
                ("rsync daemon put -a, nothing changed", None, ["rsync", "-a", f"{TREE}/", f"{rs}/seed/"]),
            ],
        }
        for group, case in base:
            cases[group].insert(1, case)
        return cases

    def settle(self, group):
        """Brings every tool's run to the same start, untimed: what it reads
        resident in the page cache."""
        base = [self.base_root] if BASELINE else []
        if group == "tree":
            sources = [TREE] + [root / "seed" for root in [self.xfer_root, self.rsync_dir] + base]
        else:
            sources = [self.big, self.xfer_root / "seed.bin", self.rsync_dir / "big.bin"]
            sources += [root / "seed.bin" for root in base]
        for src in sources:
            read_through(src)

    def time_case(self, group, name, prepare, cmd, background=None):
        # Trees: xfer exits 1 when it skipped unreadable or special files,
        # as rsync exits 23; both still moved the rest.
        check = not name.startswith(("xfer put -r", "xfer get -r", "rsync"))
        if prepare:
            prepare()
        if callable(cmd):
            cmd = cmd()
        recv = background() if background else None
        client_rss_file = self.work / "rss"
        server = self.cold_server if name in (COLD_GET, COLD_GET_TREE) else self.xfer_server
        if name.endswith("baseline"):
            server = self.base_server
        if name.startswith("xfer"):
            reset_peak_rss(server.pid)
        # Every tool starts from the same writeback state: rsync's put took
        # 0.6 s after a sync and 1.4 s behind another tool's dirty gigabyte.
        os.sync()
        self.settle(group)
        t = time.perf_counter()
        subprocess.run(
            ["/usr/bin/time", "-f", "%M", "-o", str(client_rss_file)] + cmd,
            env=self.env, check=check, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        if recv:
            recv.wait()
        secs = time.perf_counter() - t
        self.results.setdefault(name, []).append(secs)
        if name.startswith("xfer"):
            out = client_rss_file.read_text().split()
            if not out:
                # time(1) writes nothing when it could not run the command
                # or write its report (a full disk, as trees pile up).
                sys.exit(f"bench: no peak memory reported for {' '.join(map(str, cmd))}; is the disk full?")
            client = int(out[-1])
            server = peak_rss_kib(server.pid)
            old = self.rss.get(name, (0, 0))
            self.rss[name] = (max(old[0], client), max(old[1], server))

    def latency(self):
        x = [str(XFER), "-q", "-s", self.xfer_addr, "exec", "-n", "true"]
        s = ["ssh", "-p", str(self.ssh_port)] + self.ssh + ["-n", "127.0.0.1", "true"]
        ssh_runs = min(LATENCY_RUNS, 20)
        tools = [("xfer exec true", x), ("ssh 127.0.0.1 true", s)]
        if BASELINE:
            tools.insert(1, ("xfer exec true, baseline", self.base + ["exec", "-n", "true"]))
        for i in range(LATENCY_RUNS):
            k = i % len(tools)
            for name, cmd in tools[k:] + tools[:k]:
                if name.startswith("ssh") and i >= ssh_runs:
                    continue
                t = time.perf_counter()
                run(cmd, env=self.env)
                self.results.setdefault(name, []).append(time.perf_counter() - t)

    def go(self):
        self.make_file()
        self.start_xfer()
        self.start_sshd()
        self.start_rsyncd()
        cases = self.cases()
        # Warm-up: one run of each xfer direction, not counted; and the tree
        # each tool fetches back ("seed") on both servers.
        # What xfer fetches is put once and fetched once here, so the
        # server has its digests for every counted run (the cold server
        # never does); `xfer put` replaces big.bin in every round.
        x = [str(XFER), "-q", "-s", self.xfer_addr]
        run(x + ["put", "-f", str(self.big)], env=self.env)
        run(x + ["put", "-f", str(self.big), "seed.bin"], env=self.env)
        if BASELINE:
            run(self.base + ["put", "-f", str(self.big)], env=self.env)
            run(self.base + ["put", "-f", str(self.big), "seed.bin"], env=self.env)
        if TREE.is_dir():
            run(x + ["put", "-r", str(TREE) + "/", "seed"], env=self.env, stderr=subprocess.DEVNULL)
            if BASELINE:
                run(self.base + ["put", "-r", str(TREE) + "/", "seed"], env=self.env, stderr=subprocess.DEVNULL)
        # Digests are remembered only for files unchanged for a second.
        time.sleep(1.5)
        run(x + ["get", "seed.bin", str(self.work / "out.bin")], env=self.env)
        (self.work / "out.bin").unlink()
        if BASELINE:
            run(self.base + ["get", "seed.bin", str(self.work / "out.bin")], env=self.env)
            (self.work / "out.bin").unlink()
        if TREE.is_dir():
            subprocess.run(x + ["get", "-r", "seed", str(self.work / "warm")], env=self.env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if BASELINE:
                subprocess.run(self.base + ["get", "-r", "seed", str(self.work / "warm-base")], env=self.env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            run(["rsync", "-a", f"{TREE}/", f"rsync://127.0.0.1:{self.rsync_port}/bench/seed/"])
        else:
            cases.pop("tree")
        rounds = max(RUNS, TREE_RUNS)
        for r in range(rounds):
            print(f"round {r + 1}/{rounds}", file=sys.stderr)
            for group in cases:
                if r >= (TREE_RUNS if group == "tree" else RUNS):
                    continue
                # Each round runs the group in another order (shuffled, the
                # same for every run of the bench), so no tool always runs
                # right after the same one and its page-cache and writeback
                # leftovers: turning the list round would keep every
                # neighbour.
                order = list(cases[group])
                random.Random(f"{group} {r}").shuffle(order)
                for case in order:
                    self.time_case(group, *case)
        self.latency()


def wait_port_or_listen(port):
    # nc -l has no readiness signal; a short pause is enough on loopback and
    # is outside the timed region's meaning only for nc itself.
    time.sleep(0.2)


def fmt_table(b):
    mib = SIZE_MIB
    lines = []
    def row(name, ref, sized):
        t = statistics.median(b.results[name])
        rate = f"{mib / t:.0f}" if sized else ""
        ratio = f"{t / ref:.2f}" if ref else ""
        rss = b.rss.get(name)
        rss_s = f"{rss[0] / 1024:.1f} / {rss[1] / 1024:.1f}" if rss else ""
        def secs(v):
            return f"{v:.3f}" if t >= 0.1 else f"{v * 1000:.2f} ms"
        spread = f"{secs(min(b.results[name]))} – {secs(max(b.results[name]))}"
        return f"| {name} | {secs(t)} | {spread} | {rate} | {ratio} | {rss_s} |"
    head = ("| tool | median (s) | fastest – slowest | MiB/s | ratio to xfer | peak RSS client / server (MiB) |\n"
            "|---|---|---|---|---|---|")
    # Only the rows that move the SIZE_MIB file have a rate.
    for group, ref_name, names, sized in [
        ("Put (upload) of %d MiB" % mib, "xfer put",
         ["xfer put", "xfer put --md5", "xfer put, baseline", "md5sum (hashing ceiling)", "nc put (no verification)", "rsync daemon put (xxh128)",
          "rsync daemon put (md5)", "rsync over ssh put", "scp put"], True),
        ("Get (download) of %d MiB" % mib, "xfer get",
         ["xfer get", "xfer get --md5", "xfer get, baseline", GET_NULL, f"{GET_NULL}, baseline", COLD_GET, "md5sum (hashing ceiling)", "rsync daemon get (xxh128)", "rsync daemon get (md5)",
          "rsync over ssh get", "scp get", "xfer exec cat > /dev/null"], True),
        ("Command latency (whole client process)", "xfer exec true", ["xfer exec true", "xfer exec true, baseline", "ssh 127.0.0.1 true"], False),
        (f"Tree put: {TREE}", "xfer put -r", ["xfer put -r", "xfer put -r, baseline", "rsync daemon put -a", "rsync over ssh put -a"], False),
        (f"Tree get: {TREE}", "xfer get -r", ["xfer get -r", "xfer get -r, baseline", COLD_GET_TREE, "rsync daemon get -a", "rsync over ssh get -a"], False),
        (f"Tree put again, nothing changed: {TREE}", "xfer put -r, nothing changed",
         ["xfer put -r, nothing changed", "xfer put -r, nothing changed, baseline", "rsync daemon put -a, nothing changed"], False),
    ]:
        if ref_name not in b.results:
            continue
        ref = statistics.median(b.results[ref_name])
        lines += [f"### {group}", "", head] + [row(n, ref, sized) for n in names if n in b.results] + [""]
    return "\n".join(lines)


def fmt_targets(b):
    """The performance targets xfer is held to, judged on this run's medians."""
    med = {name: statistics.median(v) for name, v in b.results.items()}
    lines = ["### Targets, judged on this run", "",
             "| target | measured | holds | rounds it held in |", "|---|---|---|---|"]

    def ratio(ours, peer, limit, label):
        if ours in med and peer in med:
            r = med[ours] / med[peer]
            # The verdict is on the medians; the count of rounds (each
            # tool's run in round k against the other's) shows how near
            # the line the target is from one round to the next.
            mine, theirs = b.results[ours], b.results[peer]
            count = sum(x / y <= limit for x, y in zip(mine, theirs))
            held = f"{count} of {len(mine)}" if len(mine) == len(theirs) else ""
            lines.append(f"| {label} | {med[ours]:.3f} / {med[peer]:.3f} = {r:.2f} | {'yes' if r <= limit else 'no'} | {held} |")

    for op in ["put", "get"]:
        ours = f"xfer {op}"
        ratio(ours, f"xfer {op}, baseline", 1.1, f"{op} ≤ 1.1 × the baseline build")
        if op == "get":
            ratio(GET_NULL, f"{GET_NULL}, baseline", 1.1, "get to /dev/null ≤ 1.1 × the baseline build")
        ratio(ours, "md5sum (hashing ceiling)", 0.5, f"{op} ≤ 0.5 × md5sum")
        ratio(ours, f"rsync daemon {op} (xxh128)", 1.25, f"{op} ≤ 1.25 × rsync daemon (its default xxh128)")
        ratio(ours, f"scp {op}", 0.3, f"{op} ≤ 0.3 × scp")
        ratio(f"xfer {op} --md5", "md5sum (hashing ceiling)", 1.1, f"{op} --md5 ≤ 1.1 × md5sum")
    ratio(COLD_GET, "md5sum (hashing ceiling)", 0.5, "get, server hashing, ≤ 0.5 × md5sum")
    ratio(COLD_GET, "rsync daemon get (xxh128)", 1.25, "get, server hashing, ≤ 1.25 × rsync daemon (xxh128)")
    ratio(COLD_GET, "scp get", 0.3, "get, server hashing, ≤ 0.3 × scp")
    ratio("xfer exec cat > /dev/null", "md5sum (hashing ceiling)", 0.7, "`xfer exec 'cat FILE'` ≤ 0.7 × md5sum")
    ours = {k: v for k, v in b.rss.items() if not k.endswith("baseline")}
    if ours:
        worst = max(ours.items(), key=lambda kv: max(kv[1]))
        client = max(r[0] for r in ours.values()) / 1024
        server = max(r[1] for r in ours.values()) / 1024
        ok = client <= 32 and server <= 32
        lines.append(f"| peak RSS ≤ 32 MiB each, every xfer row | client {client:.1f}, server {server:.1f} MiB (most: {worst[0]}) | {'yes' if ok else 'no'} | |")
    if "xfer exec true" in med:
        ms = med["xfer exec true"] * 1000
        runs = b.results["xfer exec true"]
        count = sum(t <= 0.005 for t in runs)
        lines.append(f"| `xfer exec true` ≤ 5 ms | {ms:.2f} ms | {'yes' if ms <= 5 else 'no'} | {count} of {len(runs)} runs |")
    for op, daemon, ssh in [("put", "rsync daemon put -a", "rsync over ssh put -a"),
                            ("get", "rsync daemon get -a", "rsync over ssh get -a")]:
        ratio(f"xfer {op} -r", daemon, 1.0, f"{op} -r ≤ 1.0 × rsync daemon")
        ratio(f"xfer {op} -r", f"xfer {op} -r, baseline", 1.0, f"{op} -r ≤ 1.0 × the baseline build")
        ratio(f"xfer {op} -r", ssh, 0.5, f"{op} -r ≤ 0.5 × rsync over ssh")
    ratio(COLD_GET_TREE, "rsync daemon get -a", 1.0, "get -r, server hashing every file, ≤ 1.0 × rsync daemon")
    ratio("xfer put -r, nothing changed", "rsync daemon put -a, nothing changed", 1.0,
          "put -r again, nothing changed, ≤ 1.0 × rsync daemon")
    return "\n".join(lines) + "\n"


def machine():
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return f"{os.cpu_count()} cores, {cpu}, Linux {platform.release()}"


def versions():
    def first(cmd):
        try:
            r = subprocess.run(cmd, capture_output=True, text=True)
            return (r.stdout or r.stderr).strip().splitlines()[0]
        except Exception:
            return "?"
    return [
        first([str(XFER), "--version"]),
        first(["ssh", "-V"]),
        first(["rsync", "--version"]),
        first(["md5sum", "--version"]),
    ]


def main():
    work = Path(tempfile.mkdtemp(prefix="xfer-bench-"))
    b = Bench(work)
    try:
        b.go()
    finally:
        b.stop()
        shutil.rmtree(work, ignore_errors=True)
    table = fmt_table(b) + "\n" + fmt_targets(b)
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    doc = f"""# Benchmarks

Reproduce with `bench/run` (installs the peers from Debian packages,
starts sshd and an rsync daemon on loopback with throwaway keys and
config, and stops them after). Every tool moves the same {SIZE_MIB} MiB
random file over 127.0.0.1, page cache warm, tools alternating in each
of {RUNS} rounds ({TREE_RUNS} for trees), each round in its own shuffled
order; the table shows medians. Command latency is the median
of {LATENCY_RUNS} runs of `xfer exec true` and {min(LATENCY_RUNS, 20)} of
`ssh 127.0.0.1 true`, each the whole client process. Every timed run
starts after a `sync` (untimed), so no tool pays for another's writeback,
and after every file the tools read is read through (untimed): this
machine pages out file data left unread for a minute, and a tool that
came after such a pause read its source from disk.
Rows marked "baseline" (when run with `XFER_BASELINE=path`) are an older
xfer build against its own server, in the same rounds. "xfer get - >
/dev/null" writes what it fetches nowhere: the transfer's own cost,
without the disk's writeback, which on this machine made the get rows of
every tool swing between 2 and 10 s from one round to the next.
Peak RSS: client from `/usr/bin/time`, server from its VmHWM (reset
before each run). The targets are judged on the medians; beside each,
the rounds in which it held, each tool's run of a round against the
other's of the same round: how far from the line a target is when the
machine's write costs move.

- Date: {when}
- Machine: {machine()} (client and server share the cores)
- Versions: {"; ".join(versions())}

{table}
Notes: `nc` verifies nothing; `rsync` daemon's default checksum is
xxh128, with `--checksum-choice=md5` it verifies with MD5 as xfer does;
`md5sum` only hashes the file (the ceiling for a tool that must hash it
on both ends); `xfer exec cat` streams through a pipe and hashes on both
ends, writing to /dev/null.

`xfer get` and `xfer get -r` fetch files the server has sent before,
unchanged since: it sends the digests it remembered (README, "Remembered
digests") and only the client hashes, checking every byte as always.
The rows marked "server hashing" are the same fetches from a second
server on the same root started with `--digest-cache 0`, which hashes
every byte it sends, as on a first read or after a change.

Since protocol version 4 a file travels as 128 KiB parts, each behind
its own MD5, which both ends hash 32 at a time in AVX-512 lanes (16 with
AVX2): hashing, which held a put and a get at about md5sum's time (one
sequential MD5, 1.4 CPU-s per GiB on each end), costs about 0.2 CPU-s per
GiB. Where the time goes now (perf, a 1 GiB get from a server that
remembers the file's part digests): on the client, MD5 lanes 20 % of its
samples, the kernel's copy into the page cache 17 %, memmove 7 %, AES-GCM
6 %; on the server, the copies out of the page cache and into the socket
(`_copy_to_iter`, memmove) about 28 %, AES-GCM 12 %, TCP transmit 12 %.
The rest of a put's and a get's time is the disk's writeback of the
gigabyte, which moves every tool's rows from one round to the next.
`--md5` adds one sequential MD5 of the whole file on a thread of the
sender's (the receiver trusts its verified parts), so `put --md5` cannot
be faster than md5sum; it hashes each batch of parts once it is sent,
from the buffer the parts were read into (not a second read of the
file), and holds that buffer until then, so the parts are sent at most
two batches (8 MiB) ahead of it and the rest of the work shares the
cores with it instead of finishing first and leaving it to end alone
(1 GiB put --md5, medians of 8 alternating: 2.06 s with a second read
of the file, 1.91 hashing the sent buffers). Its floor on two cores: a
put --md5 costs the client 2.25 CPU-s (1.42 of them the whole MD5) and
the server 0.95, 3.2 CPU-s for two cores, 1.6 s at best (1.72-1.78 s
measured alone, 3 runs; a plain put is 1.75 CPU-s in 0.95 s).
`get --md5` costs what a get does once the
server remembers the file's whole MD5 (from the first such get on).
Every put and get here writes a new name (the old copy is removed,
untimed). Replacing a 1 GiB file costs more on this machine's ext4: its
rename over an existing file starts the new file's writeback first (the
`auto_da_alloc` safeguard, kept: it stops a crash from leaving an empty
file where the old one was), 0.37 s; freeing the old file's blocks
(0.22 s with `discard`) happens after the answer, off its path.

`xfer exec cat`: the command's pipes hold 1 MiB, which the server takes
in one read and hashes as 16 chunks of 64 KiB together in lanes, and the
client writes to a file or /dev/null with `write(2)` from its own thread
(a pipe or a terminal goes through tokio's). Where a 1 GiB run's time
goes (perf): `cat` itself 0.3-0.4 CPU-s; the server 1.0-1.1 CPU-s, two
thirds of it in the kernel (pipe reads, TCP transmit on loopback), the
rest MD5 lanes and AES-GCM; the client 0.55-0.6 CPU-s, MD5 lanes 24 % of
its samples, memmove 14 %, AES-GCM 11 %, the socket's copies 9 %. On two
cores that is about 0.95 s of work for the three processes.

Run it a few minutes after deleting many files (after `cargo test`, say):
on ext4 without a journal, as on this machine, creating files where
thousands were deleted within the last 1-6 minutes is several times
slower for every tool (ext4's recently-deleted inode check), which would
swamp the tree timings.
"""
    print(table)
    # The shaped-link section (bench/run --link) stays as that run left it.
    old = (REPO / "BENCHMARKS.md").read_text() if (REPO / "BENCHMARKS.md").exists() else ""
    link = "## On a shaped link"
    if link in old:
        doc = doc.rstrip("\n") + "\n\n" + old[old.index(link):]
    (REPO / "BENCHMARKS.md").write_text(doc)
    print("wrote BENCHMARKS.md", file=sys.stderr)


if __name__ == "__main__":
    main()
