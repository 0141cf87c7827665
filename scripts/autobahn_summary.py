#!/usr/bin/env python3
"""Helper for scripts/autobahn.
  spec   OUT URL AGENT CASES EXCLUDE  write OUT/fuzzingclient.json
  spec-server OUT URL CASES EXCLUDE   write OUT/fuzzingserver.json (testing a client)
  report OUT AGENT EXPECTED UPDATE [PLANNED]
                                      summarize OUT/reports; write OUT/conformance.md and
                                      OUT/results.json; compare with / update EXPECTED.
                                      PLANNED: the number of cases that should have run
                                      (default: what wstest's fuzzingclient log says)
report exits 0 pass, 1 a case is not OK/INFORMATIONAL (UNIMPLEMENTED is allowed in
12.*/13.* only) or results differ from EXPECTED, 2 not every planned case ran."""
import collections, datetime, json, os, re, sys

COLS = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"]
# permessage-deflate groups; UNIMPLEMENTED there passes only when AUTOBAHN_ALLOW_NO_DEFLATE=1
# (wharf implements RFC 7692, so by default every 12.*/13.* case must be OK).
DEFLATE = ("12", "13") if os.environ.get("AUTOBAHN_ALLOW_NO_DEFLATE") == "1" else ()


def key(cid):
    return [int(p) if p.isdigit() else p for p in cid.split(".")]


def read_json(path, default=None):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def write_json(path, data):
    with open(path, "w") as f:
        f.write(json.dumps(data, indent=2, sort_keys=True) + "\n")


def spec(out, url, agent, cases, exclude):
    pats = lambda s: [p.strip() for p in s.split(",") if p.strip()]
    write_json(os.path.join(out, "fuzzingclient.json"), {
        "outdir": "./reports", "servers": [{"agent": agent, "url": url}],
        "cases": pats(cases) or ["*"], "exclude-cases": pats(exclude),
        "exclude-agent-cases": {},
        # Judge a case by what the server did, even if it then drops the TCP connection.
        "options": {"failByDrop": False}})
    return 0


def spec_server(out, url, cases, exclude):
    pats = lambda s: [p.strip() for p in s.split(",") if p.strip()]
    write_json(os.path.join(out, "fuzzingserver.json"), {
        "url": url, "outdir": "./reports",
        "cases": pats(cases) or ["*"], "exclude-cases": pats(exclude),
        "exclude-agent-cases": {}})
    return 0


def compare(got, path, update):
    """Diff results against the committed expectation (or write it); returns differing ids."""
    old = read_json(path)
    if update or old is None:
        merged = dict(old or {}, **got)  # cases not run this time are kept
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        write_json(path, merged)
        print("\n%s %s (%d cases)" % ("Created (it did not exist yet):" if old is None
                                      else "Updated", path, len(merged)))
        return []
    diff = sorted((c for c in got if old.get(c) != got[c]), key=key)
    print("\nCompared with %s: %s" % (path, "%d case(s) DIFFER" % len(diff) if diff else "same"))
    for c in diff:
        print("  %-9s expected %-44s got %s" % (
            c, json.dumps(old[c]) if c in old else "(not in file)", json.dumps(got[c])))
    if set(old) - set(got):
        print("  (%d expected case(s) not in this run, not compared)" % len(set(old) - set(got)))
    return diff


def report(out, agent, expected, update, planned=None):
    results = (read_json(os.path.join(out, "reports", "index.json")) or {}).get(agent, {})
    with open(os.path.join(out, "wstest.log"), errors="replace") as f:
        log = f.read()
    mode = "fuzzingclient"
    if planned is not None:
        mode = "fuzzingserver"
        planned = int(planned) if planned.isdigit() else None
    else:
        m = re.search(r"will run (\d+) test cases", log)
        planned = int(m.group(1)) if m else None
    if not results or len(results) != planned:
        print("INCOMPLETE: wstest planned %s case(s) but reported %d. End of wstest.log:"
              % (planned, len(results)))
        print("\n".join(log.strip().splitlines()[-8:]))
        return 2

    ids = sorted(results, key=key)
    behavior = {c: results[c]["behavior"] for c in ids}
    groups = collections.defaultdict(collections.Counter)
    for c in ids:
        groups[c.split(".")[0]][behavior[c]] += 1
    groups["all"] = sum(groups.values(), collections.Counter())
    head = ["group", "total"] + COLS + ["other"]
    table = [["%s.*" % g if g != "all" else g, sum(n.values())] + [n[b] for b in COLS]
             + [sum(v for b, v in n.items() if b not in COLS)] for g, n in groups.items()]
    print("\nPer group:")
    for row in [head] + table:
        print("  %-6s" % row[0] + "".join("%*s" % (len(h) + 2, v) for h, v in zip(head[1:], row[1:])))

    def why(c):  # the suite's own verdict text, from the per-case report
        d = read_json(os.path.join(out, "reports", results[c].get("reportfile", "")), {})
        return "%s | close: %s" % (d.get("result", "?"), d.get("resultClose", "?"))
    failing = [c for c in ids if behavior[c] not in ("OK", "INFORMATIONAL") and not (
        behavior[c] == "UNIMPLEMENTED" and c.split(".")[0] in DEFLATE)]
    # UNIMPLEMENTED deflate cases are counted, not listed (up to 216 of them).
    listed = [c for c in ids if behavior[c] != "OK" and not (
        behavior[c] == "UNIMPLEMENTED" and c not in failing)]
    print("\nNon-OK cases (%d listed; UNIMPLEMENTED in 12.*/13.* only counted above):" % len(listed))
    for c in listed:
        print("  %-9s %-14s %-5s %s" % (c, behavior[c], "FAIL" if c in failing else "ok", why(c)))
    close = collections.Counter(r["behaviorClose"] for r in results.values())
    close_text = ", ".join("%s %d" % kv for kv in sorted(close.items()))
    print("\nClose behavior: " + close_text)

    got = {c: {"behavior": behavior[c], "behaviorClose": results[c]["behaviorClose"]} for c in ids}
    write_json(os.path.join(out, "results.json"), got)
    diff = compare(got, expected, update)

    md = ["## Autobahn|Testsuite %s" % datetime.date.today().isoformat(), "",
          "Agent `%s`, %d cases (wstest %s). Strict verdict: **%s**." % (
              agent, len(ids), mode, "FAIL: " + ", ".join(failing) if failing else "PASS"), "",
          "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    md += ["| " + " | ".join(str(v or "") for v in row) + " |" for row in table]
    md += ["", "Close behavior: %s." % close_text, ""]
    md += ["- `%s` %s: %s" % (c, behavior[c], why(c)) for c in listed]
    with open(os.path.join(out, "conformance.md"), "w") as f:
        f.write("\n".join(md).rstrip() + "\n")

    ok = not failing and not diff
    print("\nRESULT: %s (%d cases; failing: %s%s)" % ("PASS" if ok else "FAIL", len(ids),
          " ".join(failing) or "none", "; %d differ from expected" % len(diff) if diff else ""))
    return 0 if ok else 1


if __name__ == "__main__":
    a = sys.argv[1:]
    if a[:1] == ["spec"] and len(a) == 6:
        sys.exit(spec(*a[1:]))
    if a[:1] == ["spec-server"] and len(a) == 5:
        sys.exit(spec_server(*a[1:]))
    if a[:1] == ["report"] and len(a) in (5, 6):
        sys.exit(report(a[1], a[2], a[3], a[4] == "1", *a[5:]))
    sys.exit(__doc__)
