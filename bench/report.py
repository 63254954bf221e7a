#!/usr/bin/python3
"""Turns the RESULT/IDLE/CHURN/SCALE/SPEED lines of one bench/run.sh run into the Markdown
section appended to docs/BENCHMARKS.md: the figures, the ratios to the better peer and the
issue's targets, each marked met or missed.

usage: report.py RESULTS-FILE "metadata line" [--note TEXT]
"""
import statistics
import sys

PEERS = ["nginx", "nginx-stream", "haproxy"]
# the order of the rows of one cell; servers not named here come after, by name
ORDER = ["gatehouse-epoll", "gatehouse-io_uring", "gatehouse", "nginx", "nginx-stream",
         "haproxy", "floor-epoll", "floor-io_uring"]
SESSION_WORKS = ["smtp", "handoff", "tls-full", "tls-resumed", "starttls"]
RELAY_WORKS = {"relay-plain": "plain → backend", "relay": "TLS → backend",
               "relay-tls": "TLS → TLS backend"}
TLS_WORKS = {"tls-full", "tls-resumed", "starttls"}


def parse(path):
    rows = []
    for line in open(path):
        parts = line.split()
        if not parts:
            continue
        kv = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
        kv["_type"] = parts[0]
        server, work, conc = (kv.get("label", "-::").split(":") + ["", ""])[:3]
        kv["_server"], kv["_work"], kv["_conc"] = server, work, conc
        rows.append(kv)
    return rows


def pool(rows):
    """Several passes of one cell as one: counts and seconds added, rates recomputed, the
    worst latency quantiles kept."""
    if len(rows) == 1:
        return rows[0]
    out = dict(rows[0])
    for key in ("ops", "errors", "reused", "bytes", "secs", "server_cpu_s", "client_cpu_s"):
        if key in out:
            out[key] = str(sum(num(r.get(key)) for r in rows))
    for key in list(out):
        if key.startswith("err_"):
            out[key] = str(int(sum(num(r.get(key)) for r in rows)))
        if key.endswith("_us"):
            out[key] = str(max(num(r.get(key)) for r in rows))
    secs, cpu, ops = num(out.get("secs")), num(out.get("server_cpu_s")), num(out.get("ops"))
    out["rate"] = str(ops / secs if secs else 0)
    out["ops_per_server_cpu_s"] = str(ops / cpu if cpu else 0)
    if "bytes" in out:
        out["mbytes_per_s"] = str(num(out["bytes"]) / 1e6 / secs if secs else 0)
        out["mbytes_per_server_cpu_s"] = str(num(out["bytes"]) / 1e6 / cpu if cpu else 0)
    out["_passes"] = len(rows)
    return out


def num(v, default=0.0):
    try:
        return float(v)
    except (TypeError, ValueError):
        return default


def concs_of(res, work):
    return sorted({k[2] for k in res if k[1] == work}, key=lambda c: int(c or 0))


def ordered(cell):
    return sorted(cell, key=lambda s: (ORDER.index(s) if s in ORDER else len(ORDER), s))


def fmt(v, unit=""):
    if v is None:
        return "—"
    if v >= 100:
        return f"{v:,.0f}{unit}"
    return f"{v:.2f}{unit}" if v < 10 else f"{v:.1f}{unit}"


def ratio(a, b):
    return f"{a / b:.2f}×" if a and b else "—"


def by_pass(grouped, work, conc, key):
    """{server: {pass: figure}} for one cell."""
    return {s: {r.get("pass", str(i + 1)): num(r.get(key)) for i, r in enumerate(rows)}
            for (s, wk, c), rows in grouped.items() if wk == work and c == conc}


def pass_ratio(passes, server, others):
    """The median over passes of the server's figure over the best of the others' in the same
    pass: this machine's speed drifts over tens of seconds for every program alike, so cells
    seconds apart compare well and cells minutes apart do not."""
    ratios = []
    for p, v in passes.get(server, {}).items():
        best = max([passes[o][p] for o in others if p in passes.get(o, {})] or [0])
        if v and best:
            ratios.append(v / best)
    return statistics.median(ratios) if ratios else None


def times(r):
    return f"{r:.2f}×" if r else "—"


def main():
    path, meta = sys.argv[1], sys.argv[2]
    note = sys.argv[4] if len(sys.argv) > 4 and sys.argv[3] == "--note" else ""
    rows = parse(path)
    grouped = {}
    for r in rows:
        if r["_type"] == "RESULT":
            grouped.setdefault((r["_server"], r["_work"], r["_conc"]), []).append(r)
    res = {k: pool(v) for k, v in grouped.items()}
    passes = max((len(v) for v in grouped.values()), default=1)
    idle = {(r["_server"], r["_work"]): r for r in rows if r["_type"] == "IDLE"}
    churn = {r["_work"]: r for r in rows if r["_type"] == "CHURN"}
    scale = [r for r in rows if r["_type"] == "SCALE"]
    speed = next((r for r in rows if r["_type"] == "SPEED"), {})
    syscalls = {}
    for r in rows:
        if r["_type"] == "SYSCALLS" and num(r.get("ops")):
            per = num(r.get("calls")) / num(r.get("ops"))
            syscalls[(r["_server"], r["_work"], r["_conc"])] = f"{per:.1f}"
    out = []
    w = out.append
    w(f"### Run of {meta}")
    w("")
    if note:
        w(f"Note: {note}")
        w("")
    for r in rows:
        if r["_type"] == "NOTE":
            w(f"**Note: {r.get('text', '').replace('_', ' ')}.**")
            w("")

    # -- sessions, handshakes and hand-offs (absent in a relay-only run) --
    has_sessions = any(k[1] in SESSION_WORKS for k in res)
    targets = []
    if has_sessions:
        w("Rates are completed sessions (or handshakes) per second of wall time; **per CPU-s** is the")
        w("same count divided by the CPU seconds the server's processes used (user + system, from")
        w("/proc), which does not depend on how much CPU the load client and other programs took.")
        w("**× peers**: per CPU-s against the better of nginx (mail or stream) and HAProxy in the")
        w("same cell. **× io_uring floor**: per CPU-s against the io_uring floor (bench/floor.c).")
        w("**System calls per session**: `perf stat -e raw_syscalls:sys_enter` on the server's")
        w("processes (every thread) during a separate one-second cell, over the sessions it completed.")
        if passes > 1:
            w(f"Each cell pools up to {passes} passes, the servers taken in the opposite order each")
            w("time; p99 is the worse of the passes. The ratios (× peers, × io_uring floor) are the")
            w("median over the passes of the ratio within each pass.")
        w("")
        w("| workload | clients | server | sessions/s | per CPU-s | × peers | × io_uring floor "
          "| system calls per session | p99 ms | errors |")
        w("|---|---|---|---|---|---|---|---|---|---|")
        for work in SESSION_WORKS:
            for conc in concs_of(res, work):
                cell = {s: r for (s, wk, c), r in res.items() if wk == work and c == conc}
                passes_of = by_pass(grouped, work, conc, "ops_per_server_cpu_s")
                for server in ordered(cell):
                    r = cell[server]
                    v = num(r.get("ops_per_server_cpu_s"))
                    r_peer = pass_ratio(passes_of, server, PEERS)
                    r_floor = None if server.startswith("floor") else \
                        pass_ratio(passes_of, server, ["floor-io_uring"])
                    vs_floor = ""
                    if r_floor:
                        side = "below" if r_floor < 1 else "above"
                        vs_floor = f"{r_floor:.2f}× ({abs(1 - r_floor):.0%} {side})"
                    calls = syscalls.get((server, work, conc))
                    w(f"| {work} | {conc} | {server} | {fmt(num(r.get('rate')))} | {fmt(v)} "
                      f"| {times(r_peer)} | {vs_floor} | {calls or ''} "
                      f"| {fmt(num(r.get('lat_p99_us')) / 1000)} | {int(num(r.get('errors')))} |")
                    if server.startswith("gatehouse") and conc != "1":
                        fr = pass_ratio(passes_of, "floor-io_uring", PEERS)
                        targets.append(("sessions", work, conc, server, r_peer or 0, r_floor, fr))
        w("")
    shares = []
    for server in ("gatehouse", "nginx", "nginx-stream", "haproxy"):
        parts = []
        for k, r in sorted(res.items(), key=lambda kv: int(kv[0][2] or 0)):
            if k[0] == server and k[1] == "tls-resumed" and num(r.get("ops")):
                share = min(1.0, num(r.get("reused")) / num(r.get("ops")))
                parts.append(f"{share:.0%} at {k[2]}")
        if parts:
            shares.append(f"{server} {', '.join(parts)}")
    if shares:
        w("Share of the tls-resumed handshakes that really resumed: " + "; ".join(shares) + ".")
        w("")

    # -- relay throughput --
    relay = {k: r for k, r in res.items() if k[1] in RELAY_WORKS}
    if relay:
        w("Relay: each client reads the greeting of the backend behind the server (a sink that")
        w("reads and discards), then writes 16 KB for the whole run. Megabytes per second written")
        w("through the relay, and per server CPU-second; × peers against the better of nginx stream")
        w("and HAProxy in the same pass (the median over the passes). `TLS → backend`: TLS 1.3 to")
        w("the server, a plain backend leg. `TLS → TLS backend`: the backend leg is TLS too")
        w("(Gatehouse `tls: implicit`, nginx `proxy_ssl`, HAProxy `ssl`), verified against the")
        w("sink's certificate. `plain → backend`: no TLS on either leg, which Gatehouse moves with")
        w("`splice` once a relay has carried 64 KiB.")
        w("")
        w("| relay | clients | server | MB/s | MB per CPU-s | × peers | errors |")
        w("|---|---|---|---|---|---|---|")
        for work, label in RELAY_WORKS.items():
            for conc in concs_of(relay, work):
                cell = {s: r for (s, wk, c), r in relay.items() if wk == work and c == conc}
                passes_of = by_pass(grouped, work, conc, "mbytes_per_server_cpu_s")
                for server in ordered(cell):
                    r = cell[server]
                    v = num(r.get("mbytes_per_server_cpu_s"))
                    r_peer = pass_ratio(passes_of, server, PEERS)
                    w(f"| {label} | {conc} | {server} | {fmt(num(r.get('mbytes_per_s')))} "
                      f"| {fmt(v)} | {times(r_peer)} | {int(num(r.get('errors')))} |")
                    if server.startswith("gatehouse") and conc != "1":
                        targets.append(("relay", label, conc, server, r_peer or 0,
                                        1.0 if work in ("relay", "relay-tls") else 1.2))
        w("")

    # -- crypto bound --
    sign, x = num(speed.get("sign_per_s")), num(speed.get("x25519_per_s"))
    has_handshakes = any(k[1] in ("tls-full", "tls-resumed") for k in res)
    if sign and x and has_handshakes:  # a --targets run has no handshake cells
        full = 1 / (1 / sign + 2 / x)
        resumed = x / 2
        w(f"Crypto bound for one core (`openssl speed`): ECDSA P-256 {sign:,.0f} signatures/s, "
          f"X25519 {x:,.0f} operations/s. A full TLS 1.3 handshake costs the server one signature "
          f"and two X25519 operations (key generation and agreement): **{full:,.0f} handshakes/s "
          f"per core**; a resumed one (PSK with ECDHE) two X25519 operations: "
          f"**{resumed:,.0f}/s per core**.")
        w("")
        if has_sessions:
            w("| handshake | clients | server | per CPU-s | bound per core | share of the bound |")
            w("|---|---|---|---|---|---|")
            for work, bound in (("tls-full", full), ("tls-resumed", resumed)):
                for conc in sorted({k[2] for k in res if k[1] == work},
                                   key=lambda c: int(c or 0)):
                    for server in ordered({k[0] for k in res if k[1] == work and k[2] == conc}):
                        if server.startswith("gatehouse"):
                            v = num(res[(server, work, conc)].get("ops_per_server_cpu_s"))
                            w(f"| {work} | {conc} | {server} | {fmt(v)} | {fmt(bound)} "
                              f"| {v / bound:.0%} |")
            w("")

    # -- memory per idle connection --
    if any(k[1].startswith("idle-") for k in idle):
        w("Memory per idle connection: the servers' resident memory (VmRSS, all processes) after")
        w("the connections were opened and greeted (and, for TLS, handshaken), minus before, per")
        w("connection held. Each server is started fresh for each measurement. Kernel socket")
        w("memory is not included (it is the same for all).")
        w("")
        w("| connections | Gatehouse B/conn | nginx B/conn | HAProxy B/conn | ratio | held G/n/H "
          "| Gatehouse accepts/s while opening |")
        w("|---|---|---|---|---|---|---|")
        works = {k[1] for k in idle if k[1].startswith("idle-")}
        for work in sorted(works, key=lambda s: (s.split("-")[1], int(s.split("-")[2]))):
            g, n, h = (idle.get((s, work)) for s in ("gatehouse", "nginx", "haproxy"))
            vals = [num(x.get("bytes_per_conn")) if x else None for x in (g, n, h)]
            peers = [v for v in vals[1:] if v]
            best = min(peers) if peers else 0
            held = "/".join(f"{int(num(x.get('held'))):,}" if x else "-" for x in (g, n, h))
            failed = sum(int(num(x.get("failed"))) for x in (g, n, h) if x)
            if failed:
                held += f" ({failed} failed)"
            wanted = int(num((g or n or h or {}).get("wanted")))
            w(f"| {work} | {fmt(vals[0])} | {fmt(vals[1])} | {fmt(vals[2])} "
              f"| {ratio(vals[0], best)} | {held} of {wanted:,} "
              f"| {fmt(num(g.get('accepts_per_s')) if g else None)} |")
            if vals[0] and best:
                targets.append(("memory", work, vals[0] / best))
        w("")

    # -- JMAP --
    jm = [r for k, r in res.items() if k[1] == "jmap-get"]
    if jm:
        w("| JMAP `x:NetworkListener/get`, keep-alive | clients | requests/s | p50 ms | p99 ms "
          "| errors |")
        w("|---|---|---|---|---|---|")
        for r in sorted(jm, key=lambda r: int(r["_conc"])):
            w(f"| Gatehouse | {r['_conc']} | {fmt(num(r['rate']))} "
              f"| {num(r['lat_p50_us']) / 1000:.2f} | {num(r['lat_p99_us']) / 1000:.2f} "
              f"| {r['errors']} |")
        w("")

    # -- live changes --
    if churn:
        w("Live changes. Each cycle: create a listener (then connect to it at once: the time from")
        w("the /set response to its greeting, and any refused attempt), add a second address,")
        w("update the probed listener's maxConnections, destroy the new listener.")
        w("")
        w("| run | cycles | /set p50 ms | /set p99 ms | response → greeting p50 ms | p99 ms "
          "| max ms | refused tries | failed |")
        w("|---|---|---|---|---|---|---|---|---|")
        for work, c in churn.items():
            w(f"| {work} | {c['cycles']} | {num(c['set_p50_us']) / 1000:.2f} "
              f"| {num(c['set_p99_us']) / 1000:.2f} | {num(c['ready_p50_us']) / 1000:.2f} "
              f"| {num(c['ready_p99_us']) / 1000:.2f} | {num(c['ready_max_us']) / 1000:.2f} "
              f"| {c['refused_tries']} | {int(num(c['ready_fail'])) + int(num(c['set_errors']))} |")
        w("")
        for k, r in res.items():
            if k[1].startswith("changes-under"):
                first99 = num(r.get("first_p99_us")) / 1000
                if not num(r.get("ops")) or num(r.get("err_refused")):
                    first99 = float("inf")  # no session, or a refused one: not met
                w(f"While {r.get('idle_held', '?')} idle sessions stayed open on another listener "
                  f"(dropped: {r.get('idle_dropped', '?')}), {r['conc']} clients connected to the "
                  f"listener being updated: {num(r['rate']):,.0f} sessions/s, connect + greeting "
                  f"p99 **{first99:.2f} ms** (max {num(r.get('first_max_us')) / 1000:.1f} ms), "
                  f"refused connections: **{r.get('err_refused', '0')}**, other errors: "
                  f"{int(num(r['errors'])) - int(num(r.get('err_refused', 0)))}.")
                targets.append(("changes", first99))
                w("")

    # -- scale --
    sc = res.get(("gatehouse", "scale-1000-listeners", "64"))
    si = idle.get(("gatehouse", "scale-1000-listeners"))
    for s in scale:
        w(f"Scale: {s['created']} listeners created through the API in {num(s['secs']):.1f} s "
          f"(10 requests of 100); then the daemon held {num(s['rss_kb']) / 1024:.1f} MB resident and "
          f"{s['fds']} descriptors.")
    if si:
        w(f"{int(num(si['held'])):,} of {int(num(si['wanted'])):,} idle connections opened over "
          f"those listeners ({si['failed']} failed, {si['dropped']} dropped) at "
          f"{num(si['accepts_per_s']):,.0f} accepts/s (connect + greeting, 1,024 in flight), "
          f"{num(si['bytes_per_conn']):,.0f} B resident per connection.")
    if sc:
        w(f"Sessions spread over the 1,000 listeners with those connections open: "
          f"{num(sc['rate']):,.0f}/s at 64 clients, errors: {sc['errors']}.")
    if scale or si or sc:
        w("")

    # -- targets --
    if not targets and not has_sessions:
        print("\n".join(out))
        return
    w("Performance targets, in this run:")
    w("")
    for t in targets:
        if t[0] == "sessions":
            _, work, conc, server, r_peer, r_floor, floor_peer = t
            if work in TLS_WORKS:
                want, met = "at least 1.0× the better peer", r_peer >= 1.0
            else:
                want = "at least 1.2× the better peer, or within 5% of the io_uring floor where " \
                       "that floor is not 1.2× ahead"
                met = r_peer >= 1.2 or (floor_peer is not None and floor_peer < 1.2 and
                                        r_floor is not None and r_floor >= 0.95)
            floor_text = f", {r_floor:.2f}× the io_uring floor" if r_floor else ""
            w(f"- {work} at {conc} clients, {server}, {want}: {r_peer:.2f}× per server "
              f"CPU-second{floor_text}: **{'met' if met else 'missed'}**")
        elif t[0] == "relay":
            _, label, conc, server, r_peer, want = t
            w(f"- relay {label} at {conc} clients, {server}, at least {want:.1f}× the better peer "
              f"per server CPU-second: {r_peer:.2f}×: **{'met' if r_peer >= want else 'missed'}**")
        elif t[0] == "memory":
            w(f"- {t[1]}: memory at most 0.8× the better peer: {t[2]:.2f}×: "
              f"**{'met' if t[2] <= 0.8 else 'missed'}**")
        elif t[0] == "changes":
            w(f"- connect + greeting p99 under 10 ms while changes are applied: {t[1]:.2f} ms: "
              f"**{'met' if t[1] < 10 else 'missed'}**")
    best_full = max((num(r.get("ops_per_server_cpu_s")) for k, r in res.items()
                     if k[0].startswith("gatehouse") and k[1] == "tls-full"), default=0)
    if sign and x and best_full:  # a run without TLS cells (--relay-only, --targets) has none
        share = best_full / full if full else 0
        w(f"- full handshakes within 15% of the crypto bound per core: {share:.0%} of it: "
          f"**{'met' if share >= 0.85 else 'missed'}**")
    print("\n".join(out))


if __name__ == "__main__":
    main()
