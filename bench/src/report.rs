//! Results: medians and spread over rounds, ratios to the `wharf` binary
//! (or, in a run without it, the library; in older runs, `wharf`), printed as
//! Markdown tables, saved as JSON, and drawn as an SVG bar chart written by
//! hand (no plotting dependency).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// One run of one scenario against one configuration.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub(crate) struct Sample {
    pub(crate) scenario: String,
    pub(crate) config: String,
    pub(crate) round: usize,
    pub(crate) metrics: BTreeMap<String, f64>,
}

impl Sample {
    pub(crate) fn new(
        scenario: &str,
        config: &str,
        round: usize,
        metrics: Vec<(&'static str, f64)>,
    ) -> Self {
        Self {
            scenario: scenario.to_owned(),
            config: config.to_owned(),
            round,
            metrics: metrics
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
        }
    }
}

/// Which way is better.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
enum Better {
    Higher,
    Lower,
    Neither,
}

struct Col {
    key: &'static str,
    label: &'static str,
    better: Better,
}

struct Spec {
    scenario: &'static str,
    title: &'static str,
    cols: &'static [Col],
    /// Columns that get a ratio to the base; the first is charted.
    ratios: &'static [&'static str],
}

const fn col(key: &'static str, label: &'static str, better: Better) -> Col {
    Col { key, label, better }
}

const ECHO_COLS: &[Col] = &[
    col("msg_per_s", "msg/s", Better::Higher),
    col("mib_per_s", "MiB/s", Better::Higher),
    col("server_cpu_ns_per_msg", "server CPU ns/msg", Better::Lower),
    col("allocs_per_msg", "allocs/msg", Better::Lower),
    col("server_cpu_pct", "server core %", Better::Neither),
    col("client_cpu_pct", "loadgen core %", Better::Neither),
];

const SPECS: &[Spec] = &[
    Spec {
        scenario: "echo-latency",
        title: "Echo latency: 1 connection, 32 B ping-pong",
        cols: &[
            col("p50_us", "p50 µs", Better::Lower),
            col("p99_us", "p99 µs", Better::Lower),
            col("server_cpu_us_per_msg", "server CPU µs/msg", Better::Lower),
            col("allocs_per_msg", "allocs/msg", Better::Lower),
        ],
        ratios: &["p50_us", "p99_us"],
    },
    Spec {
        scenario: "echo-small",
        title: "Echo: 100 connections × 32 B, 16 in flight each",
        cols: ECHO_COLS,
        ratios: &["msg_per_s", "server_cpu_ns_per_msg"],
    },
    Spec {
        scenario: "echo-1k",
        title: "Echo: 100 connections × 1 KiB, 4 in flight each",
        cols: ECHO_COLS,
        ratios: &["msg_per_s", "server_cpu_ns_per_msg"],
    },
    Spec {
        scenario: "echo-64k",
        title: "Echo: 10 connections × 64 KiB, 4 in flight each",
        cols: ECHO_COLS,
        ratios: &["msg_per_s", "server_cpu_ns_per_msg"],
    },
    Spec {
        scenario: "broadcast",
        title: "Broadcast: 1 sender → 1,000 receivers, 4,000 msg/s of 64 B",
        cols: &[
            col("deliveries_per_s", "deliveries/s", Better::Higher),
            col("zero_loss", "zero loss", Better::Higher),
            col("stable", "no backlog growth", Better::Higher),
            col("p50_ms", "p50 ms", Better::Lower),
            col("p99_ms", "p99 ms", Better::Lower),
            col("max_ms", "max ms", Better::Lower),
            col(
                "server_cpu_ns_per_delivery",
                "server CPU ns/delivery",
                Better::Lower,
            ),
            col("allocs_per_delivery", "allocs/delivery", Better::Lower),
            col("server_cpu_pct", "server core %", Better::Neither),
            col("client_cpu_pct", "loadgen core %", Better::Neither),
        ],
        ratios: &["server_cpu_ns_per_delivery", "p99_ms"],
    },
    Spec {
        scenario: "broadcast-max",
        title: "Broadcast: highest sustained rate (1 → 1,000, zero loss, no backlog growth)",
        cols: &[
            col("max_rate", "msg/s", Better::Higher),
            col("max_deliveries_per_s", "deliveries/s", Better::Higher),
            col("trials", "trials", Better::Neither),
        ],
        ratios: &["max_rate"],
    },
    Spec {
        scenario: "memory",
        title: "Server memory per idle connection, 10,000 connections",
        cols: &[
            col("bytes_per_conn", "RSS bytes/conn", Better::Lower),
            col("heap_bytes_per_conn", "live heap bytes/conn", Better::Lower),
            col(
                "heap_blocks_per_conn",
                "live heap blocks/conn",
                Better::Lower,
            ),
            col("rss_before_mib", "RSS before MiB", Better::Neither),
            col("rss_after_mib", "RSS after MiB", Better::Neither),
            col("deflate_pct", "deflate agreed %", Better::Neither),
        ],
        ratios: &["bytes_per_conn"],
    },
    Spec {
        scenario: "handshake",
        title: "Handshakes: 32 concurrent connect + upgrade + reset",
        cols: &[
            col("handshakes_per_s", "handshakes/s", Better::Higher),
            col(
                "server_cpu_us_per_hs",
                "server CPU µs/handshake",
                Better::Lower,
            ),
            col("allocs_per_hs", "allocs/handshake", Better::Lower),
            col("server_cpu_pct", "server core %", Better::Neither),
            col("client_cpu_pct", "loadgen core %", Better::Neither),
        ],
        ratios: &["server_cpu_us_per_hs", "handshakes_per_s"],
    },
    Spec {
        scenario: "compression",
        title: "permessage-deflate on chat-like JSON (100-300 B), wharf-proto",
        cols: &[
            col("payload_bytes", "mean payload B", Better::Neither),
            col("wire_bytes", "mean frame B", Better::Lower),
            col("wire_ratio", "frame / payload", Better::Lower),
            col("deflate_ratio", "deflated / payload", Better::Lower),
        ],
        ratios: &["wire_ratio"],
    },
];

/// Median, min and max of one metric over rounds.
#[derive(Clone, Copy, Debug, Serialize)]
pub(crate) struct Stat {
    pub(crate) median: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
    pub(crate) sum: f64,
    pub(crate) n: usize,
}

fn stat(values: &mut [f64]) -> Option<Stat> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    let median = if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    };
    Some(Stat {
        median,
        min: values[0],
        max: values[n - 1],
        sum: values.iter().sum(),
        n,
    })
}

/// The configurations ratios are taken to, in order of preference: the
/// binary, the library, and `wharf` (the library, in runs before the binary
/// was a target).
const BASES: [&str; 3] = ["wharf-binary", "wharf-lib", "wharf"];

/// A scenario's summary: configurations in order of first appearance.
#[derive(Debug, Serialize)]
pub(crate) struct Summary {
    pub(crate) scenario: String,
    /// The configuration the ratios are relative to, if any ran.
    pub(crate) base: Option<String>,
    pub(crate) configs: Vec<ConfigSummary>,
}

/// One configuration's statistics in a scenario.
#[derive(Debug, Serialize)]
pub(crate) struct ConfigSummary {
    pub(crate) config: String,
    /// Median, min and max of each metric over rounds.
    pub(crate) stats: BTreeMap<String, Stat>,
    /// Each metric relative to the base's: the median over rounds of the
    /// ratio within a round (paired, so that drift in the machine between
    /// rounds cancels out).
    pub(crate) vs_base: BTreeMap<String, f64>,
}

/// Summarises samples per scenario, in order of first appearance.
pub(crate) fn summarize(samples: &[Sample]) -> Vec<Summary> {
    let mut scenarios: Vec<&str> = Vec::new();
    for s in samples {
        if !scenarios.contains(&s.scenario.as_str()) {
            scenarios.push(&s.scenario);
        }
    }
    scenarios
        .into_iter()
        .map(|scenario| {
            let of = |config: &str| -> Vec<&Sample> {
                samples
                    .iter()
                    .filter(|s| s.scenario == scenario && s.config == config)
                    .collect()
            };
            let mut configs: Vec<&str> = Vec::new();
            for s in samples.iter().filter(|s| s.scenario == scenario) {
                if !configs.contains(&s.config.as_str()) {
                    configs.push(&s.config);
                }
            }
            let base = BASES
                .into_iter()
                .find(|b| configs.contains(b))
                .map(str::to_owned);
            let wharf = base.as_deref().map(&of).unwrap_or_default();
            let configs = configs
                .into_iter()
                .map(|config| {
                    let runs = of(config);
                    let mut stats = BTreeMap::new();
                    let mut vs_base = BTreeMap::new();
                    for key in runs[0].metrics.keys() {
                        let mut v: Vec<f64> = runs
                            .iter()
                            .filter_map(|r| r.metrics.get(key))
                            .copied()
                            .collect();
                        if let Some(st) = stat(&mut v) {
                            stats.insert(key.clone(), st);
                        }
                        let mut ratios: Vec<f64> = runs
                            .iter()
                            .filter_map(|r| {
                                let w = wharf.iter().find(|w| w.round == r.round)?;
                                let (a, b) = (r.metrics.get(key)?, w.metrics.get(key)?);
                                (*b != 0.0).then(|| a / b)
                            })
                            .collect();
                        if let Some(st) = stat(&mut ratios) {
                            vs_base.insert(key.clone(), st.median);
                        }
                    }
                    ConfigSummary {
                        config: config.to_owned(),
                        stats,
                        vs_base,
                    }
                })
                .collect();
            Summary {
                scenario: scenario.to_owned(),
                base,
                configs,
            }
        })
        .collect()
}

fn spec(scenario: &str) -> Option<&'static Spec> {
    SPECS.iter().find(|s| s.scenario == scenario)
}

fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 0.01 || v == 0.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    }
}

fn spread(st: &Stat) -> String {
    if st.n < 2 || st.median == 0.0 {
        return String::new();
    }
    format!(
        " ±{:.0}%",
        (st.max - st.min) / 2.0 / st.median.abs() * 100.0
    )
}

/// The Markdown tables of every scenario.
pub(crate) fn markdown(summaries: &[Summary]) -> String {
    let mut out = String::new();
    for summary in summaries {
        let Some(spec) = spec(&summary.scenario) else {
            continue;
        };
        let _ = writeln!(out, "#### {} (`{}`)\n", spec.title, spec.scenario);
        let mut head = String::from("| target |");
        let mut rule = String::from("|---|");
        for c in spec.cols {
            let arrow = match c.better {
                Better::Higher => " ↑",
                Better::Lower => " ↓",
                Better::Neither => "",
            };
            let _ = write!(head, " {}{arrow} |", c.label);
            rule.push_str("---:|");
        }
        for r in spec.ratios {
            let label = spec
                .cols
                .iter()
                .find(|c| c.key == *r)
                .map_or(*r, |c| c.label);
            let base = summary.base.as_deref().unwrap_or("wharf");
            let _ = write!(head, " {label} vs {base} |");
            rule.push_str("---:|");
        }
        let _ = writeln!(out, "{head}\n{rule}");
        for cs in &summary.configs {
            let _ = write!(out, "| {} |", cs.config);
            for c in spec.cols {
                let cell = match cs.stats.get(c.key) {
                    None => "–".to_owned(),
                    Some(st) if matches!(c.key, "zero_loss" | "stable") => {
                        format!("{}/{}", st.sum.round(), st.n)
                    }
                    Some(st) if spec.ratios.first() == Some(&c.key) => {
                        format!("{}{}", fmt_num(st.median), spread(st))
                    }
                    Some(st) => fmt_num(st.median),
                };
                let _ = write!(out, " {cell} |");
            }
            for r in spec.ratios {
                let cell = cs
                    .vs_base
                    .get(*r)
                    .map_or_else(|| "–".to_owned(), |x| format!("{x:.2}×"));
                let _ = write!(out, " {cell} |");
            }
            out.push('\n');
        }
        out.push('\n');
    }
    out
}

fn find<'a>(summaries: &'a [Summary], scenario: &str) -> Option<&'a Summary> {
    summaries.iter().find(|s| s.scenario == scenario)
}

fn is_peer(config: &str) -> bool {
    !config.starts_with("wharf") && config != "raw-tcp"
}

/// The base's metric over the best peer's (paired), given which way is
/// better: `None` without peers.
fn vs_best_peer(summary: &Summary, key: &str, better: Better) -> Option<f64> {
    let ratios = summary
        .configs
        .iter()
        .filter(|c| is_peer(&c.config))
        .filter_map(|c| c.vs_base.get(key).copied());
    let best = match better {
        Better::Lower => ratios.fold(None, |m: Option<f64>, r| Some(m.map_or(r, |m| m.min(r)))),
        _ => ratios.fold(None, |m: Option<f64>, r| Some(m.map_or(r, |m| m.max(r)))),
    }?;
    Some(1.0 / best)
}

/// The base's metric over raw TCP's (paired).
fn vs_raw(summary: &Summary, key: &str) -> Option<f64> {
    summary
        .configs
        .iter()
        .find(|c| c.config == "raw-tcp")
        .and_then(|c| c.vs_base.get(key))
        .map(|r| 1.0 / r)
}

/// The base's statistic of `key`.
fn wharf_stat<'a>(summary: &'a Summary, key: &str) -> Option<&'a Stat> {
    let base = summary.base.as_deref()?;
    summary
        .configs
        .iter()
        .find(|c| c.config == base)
        .and_then(|c| c.stats.get(key))
}

/// Issue 6's goals, judged from the summaries: a Markdown table.
pub(crate) fn goals(summaries: &[Summary]) -> String {
    let mut rows: Vec<(String, String, Option<bool>)> = Vec::new();
    let mut row = |goal: &str, measured: Option<String>, met: Option<bool>| {
        rows.push((
            goal.to_owned(),
            measured.unwrap_or_else(|| "not run".to_owned()),
            met,
        ));
    };
    let x = |v: f64| format!("{v:.2}×");
    for (scenario, label, min_raw) in [
        ("echo-small", "echo 100 × 32 B", 0.8),
        ("echo-1k", "echo 100 × 1 KiB", 0.9),
        ("echo-64k", "echo 10 × 64 KiB", 0.95),
    ] {
        let Some(sm) = find(summaries, scenario) else {
            row(&format!("{label} ≥ {min_raw}× raw TCP"), None, None);
            continue;
        };
        if scenario == "echo-small" {
            let r = vs_best_peer(sm, "msg_per_s", Better::Higher);
            row(
                &format!("{label} ≥ 1.5× best peer (msg/s)"),
                r.map(x),
                r.map(|r| r >= 1.5),
            );
        }
        let r = vs_raw(sm, "msg_per_s");
        let cpu = vs_raw(sm, "server_cpu_ns_per_msg").map(|c| 1.0 / c);
        row(
            &format!("{label} ≥ {min_raw}× raw TCP (msg/s)"),
            r.map(|r| {
                format!(
                    "{} (by server CPU per message: {})",
                    x(r),
                    cpu.map_or_else(|| "–".to_owned(), x)
                )
            }),
            r.map(|r| r >= min_raw),
        );
    }
    match find(summaries, "broadcast") {
        Some(sm) => {
            let zl = wharf_stat(sm, "zero_loss");
            row(
                "broadcast 1 → 1,000: zero loss at 4,000 msg/s",
                zl.map(|s| format!("{}/{} rounds", s.sum.round(), s.n)),
                zl.map(|s| s.min == 1.0),
            );
            let r = vs_best_peer(sm, "server_cpu_ns_per_delivery", Better::Lower);
            row(
                "broadcast: server CPU per delivery ≤ 0.5× best peer",
                r.map(x),
                r.map(|r| r <= 0.5),
            );
        }
        None => row("broadcast 1 → 1,000", None, None),
    }
    let mem = find(summaries, "memory").and_then(|sm| wharf_stat(sm, "bytes_per_conn"));
    row(
        "memory per idle connection ≤ 1,000 B (RSS)",
        mem.map(|s| format!("{:.0} B", s.median)),
        mem.map(|s| s.median <= 1000.0),
    );
    let hs = find(summaries, "handshake")
        .and_then(|sm| vs_best_peer(sm, "server_cpu_us_per_hs", Better::Lower));
    row(
        "server CPU per handshake ≤ best peer's",
        hs.map(x),
        hs.map(|r| r <= 1.0),
    );
    // The binary counts no allocations: the library's figure stands in.
    let allocs: Vec<(String, f64)> = ["echo-small", "echo-1k", "echo-64k"]
        .iter()
        .filter_map(|s| {
            let sm = find(summaries, s)?;
            let (config, st) = BASES.iter().find_map(|c| {
                let st = sm
                    .configs
                    .iter()
                    .find(|x| x.config == *c)?
                    .stats
                    .get("allocs_per_msg")?;
                Some((*c, st))
            })?;
            Some((format!("{s} ({config})"), st.max))
        })
        .collect();
    row(
        "no allocation per message in steady-state echo (worst round)",
        (!allocs.is_empty()).then(|| {
            allocs
                .iter()
                .map(|(s, v)| format!("{s} {v:.4}"))
                .collect::<Vec<_>>()
                .join(", ")
        }),
        (!allocs.is_empty()).then(|| allocs.iter().all(|(_, v)| *v < 0.01)),
    );
    let base = summaries
        .iter()
        .find_map(|s| s.base.as_deref())
        .unwrap_or("wharf");
    let mut out =
        format!("| goal | measured ({base} ÷ other, paired by round) | met |\n|---|---|---|\n");
    for (goal, measured, met) in rows {
        let met = match met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "–",
        };
        let _ = writeln!(out, "| {goal} | {measured} | {met} |");
    }
    out
}

/// Issue 16's goals (the binary, server on one core), judged from the
/// summaries: a Markdown table. "No scenario slower than before" needs the
/// previous run and is not judged here.
pub(crate) fn goals16(summaries: &[Summary]) -> String {
    let mut rows: Vec<(String, Option<String>, Option<bool>)> = Vec::new();
    let x = |v: f64| format!("{v:.2}×");
    for (scenario, label) in [
        ("echo-small", "echo 100 × 32 B"),
        ("echo-1k", "echo 100 × 1 KiB"),
        ("echo-64k", "echo 10 × 64 KiB"),
    ] {
        let r =
            find(summaries, scenario).and_then(|sm| vs_best_peer(sm, "msg_per_s", Better::Higher));
        rows.push((
            format!("{label}: msg/s ≥ best peer's"),
            r.map(x),
            r.map(|r| r >= 1.0),
        ));
    }
    let cpu = find(summaries, "echo-small").and_then(|sm| vs_raw(sm, "server_cpu_ns_per_msg"));
    rows.push((
        "echo 100 × 32 B: server CPU per message ≤ 1.3× raw TCP's".to_owned(),
        cpu.map(x),
        cpu.map(|r| r <= 1.3),
    ));
    let bmax = find(summaries, "broadcast-max");
    let r = bmax.and_then(|sm| vs_best_peer(sm, "max_rate", Better::Higher));
    rows.push((
        "broadcast 1 → 1,000: highest zero-loss rate ≥ 1.5× best peer's".to_owned(),
        r.map(x),
        r.map(|r| r >= 1.5),
    ));
    let lib = bmax.and_then(|sm| {
        let base = sm.base.as_deref()?;
        if base == "wharf-lib" {
            return None;
        }
        let ratio = sm
            .configs
            .iter()
            .find(|c| c.config == "wharf-lib")?
            .vs_base
            .get("max_rate")?;
        (*ratio != 0.0).then(|| 1.0 / ratio)
    });
    rows.push((
        "broadcast: highest zero-loss rate ≥ the library's (current-thread)".to_owned(),
        lib.map(x),
        lib.map(|r| r >= 1.0),
    ));
    let mem = find(summaries, "memory").and_then(|sm| wharf_stat(sm, "bytes_per_conn"));
    rows.push((
        "idle memory per connection ≤ 950 B (RSS, keepalive on)".to_owned(),
        mem.map(|s| format!("{:.0} B", s.median)),
        mem.map(|s| s.median <= 950.0),
    ));
    let hs = find(summaries, "handshake")
        .and_then(|sm| vs_best_peer(sm, "server_cpu_us_per_hs", Better::Lower));
    rows.push((
        "server CPU per handshake ≤ 0.9× best peer's".to_owned(),
        hs.map(x),
        hs.map(|r| r <= 0.9),
    ));
    let big = find(summaries, "echo-64k")
        .and_then(|sm| vs_best_peer(sm, "server_cpu_ns_per_msg", Better::Lower));
    rows.push((
        "echo 10 × 64 KiB: server CPU per message ≤ best peer's".to_owned(),
        big.map(x),
        big.map(|r| r <= 1.0),
    ));
    let base = summaries
        .iter()
        .find_map(|s| s.base.as_deref())
        .unwrap_or("wharf");
    let mut out =
        format!("| goal | measured ({base} ÷ other, paired by round) | met |\n|---|---|---|\n");
    for (goal, measured, met) in rows {
        let met = match met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "–",
        };
        let measured = measured.unwrap_or_else(|| "not run".to_owned());
        let _ = writeln!(out, "| {goal} | {measured} | {met} |");
    }
    out.push_str("| no scenario slower than before | compare with the previous run | – |\n");
    out
}

/// Writes `results.json` (samples and summaries) into `dir`.
///
/// # Errors
/// If the file cannot be written.
pub(crate) fn write_json(
    dir: &Path,
    env: &serde_json::Value,
    samples: &[Sample],
    summaries: &[Summary],
) -> anyhow::Result<std::path::PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join("results.json");
    let doc = serde_json::json!({
        "environment": env,
        "samples": samples,
        "summary": summaries,
    });
    std::fs::write(&path, serde_json::to_string_pretty(&doc)?)?;
    Ok(path)
}

fn color(config: &str) -> &'static str {
    match config.split(' ').next().unwrap_or_default() {
        "wharf" | "wharf-binary" | "wharf-lib" if config.contains("deflate") => "#6baed6",
        "wharf" | "wharf-binary" => "#08519c",
        "wharf-lib" => "#4292c6",
        "sockudo-ws" => "#d62728",
        "raw-tcp" => "#969696",
        "tokio-tungstenite" => "#e6550d",
        "fastwebsockets" => "#31a354",
        "tokio-websockets" => "#756bb1",
        _ => "#444444",
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// An SVG bar chart: one panel per scenario, showing the first ratio
/// metric's median per configuration with a min-max whisker.
pub(crate) fn svg(summaries: &[Summary], subtitle: &str) -> String {
    const W: f64 = 1100.0;
    const PANEL_W: f64 = 530.0;
    const LABEL_W: f64 = 190.0;
    const BAR_H: f64 = 16.0;
    const ROW_H: f64 = 22.0;
    let panels: Vec<(&Spec, &Summary)> = summaries
        .iter()
        .filter_map(|s| spec(&s.scenario).map(|sp| (sp, s)))
        .collect();
    let heights: Vec<f64> = panels
        .iter()
        .map(|(_, s)| 48.0 + ROW_H * s.configs.len() as f64)
        .collect();
    let mut rows_h = Vec::new();
    for pair in heights.chunks(2) {
        rows_h.push(pair.iter().copied().fold(0.0, f64::max));
    }
    let total_h = 70.0 + rows_h.iter().sum::<f64>();
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{total_h}" viewBox="0 0 {W} {total_h}" font-family="Helvetica, Arial, sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="20" y="28" font-size="18" font-weight="bold">wharf vs peers (medians; whiskers: min–max over rounds)</text>"#
    );
    let _ = writeln!(
        out,
        r##"<text x="20" y="48" fill="#555">{}</text>"##,
        escape(subtitle)
    );
    let mut y0 = 70.0;
    for (i, (spec, summary)) in panels.iter().enumerate() {
        let x0 = if i % 2 == 0 {
            20.0
        } else {
            20.0 + PANEL_W + 30.0
        };
        let Some(key) = spec.ratios.first() else {
            continue;
        };
        let col = spec.cols.iter().find(|c| c.key == *key);
        let (label, better) = col.map_or((*key, Better::Neither), |c| (c.label, c.better));
        let hint = match better {
            Better::Higher => "higher is better",
            Better::Lower => "lower is better",
            Better::Neither => "",
        };
        let _ = writeln!(
            out,
            r#"<text x="{x0}" y="{}" font-weight="bold">{}</text>"#,
            y0 + 14.0,
            escape(spec.title)
        );
        let _ = writeln!(
            out,
            r##"<text x="{x0}" y="{}" fill="#555">{} ({hint})</text>"##,
            y0 + 30.0,
            escape(label)
        );
        let max = summary
            .configs
            .iter()
            .filter_map(|cs| cs.stats.get(*key).map(|st| st.max))
            .fold(0.0, f64::max)
            .max(f64::MIN_POSITIVE);
        let scale = (PANEL_W - LABEL_W - 70.0) / max;
        for (j, cs) in summary.configs.iter().enumerate() {
            let (config, stats) = (&cs.config, &cs.stats);
            let y = y0 + 40.0 + ROW_H * j as f64;
            let _ = writeln!(
                out,
                r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
                x0 + LABEL_W - 6.0,
                y + BAR_H - 4.0,
                escape(config)
            );
            let Some(st) = stats.get(*key) else {
                continue;
            };
            let bx = x0 + LABEL_W;
            let w = (st.median * scale).max(1.0);
            let _ = writeln!(
                out,
                r#"<rect x="{bx}" y="{y}" width="{w:.1}" height="{BAR_H}" fill="{}"/>"#,
                color(config)
            );
            if st.n > 1 {
                let (a, b) = (bx + st.min * scale, bx + st.max * scale);
                let m = y + BAR_H / 2.0;
                let _ = writeln!(
                    out,
                    r##"<path d="M{a:.1} {m} H{b:.1} M{a:.1} {} V{} M{b:.1} {} V{}" stroke="#222" stroke-width="1" fill="none"/>"##,
                    m - 4.0,
                    m + 4.0,
                    m - 4.0,
                    m + 4.0
                );
            }
            let _ = writeln!(
                out,
                r#"<text x="{:.1}" y="{}">{}</text>"#,
                bx + st.max.max(st.median) * scale + 6.0,
                y + BAR_H - 4.0,
                fmt_num(st.median)
            );
        }
        if i % 2 == 1 || i + 1 == panels.len() {
            y0 += rows_h[i / 2];
        }
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(scenario: &str, config: &str, round: usize, v: f64) -> Sample {
        Sample::new(
            scenario,
            config,
            round,
            vec![("msg_per_s", v), ("zero_loss", 1.0)],
        )
    }

    #[test]
    fn summarizes_medians_and_ratios() {
        let samples = vec![
            sample("echo-small", "wharf", 1, 100.0),
            sample("echo-small", "raw-tcp", 1, 150.0),
            sample("echo-small", "wharf", 2, 120.0),
            sample("echo-small", "raw-tcp", 2, 250.0),
            sample("echo-small", "wharf", 3, 110.0),
            sample("echo-small", "raw-tcp", 3, 200.0),
        ];
        let summaries = summarize(&samples);
        assert_eq!(summaries.len(), 1);
        let wharf = &summaries[0].configs[0].stats["msg_per_s"];
        assert_eq!(
            (wharf.median, wharf.min, wharf.max, wharf.n),
            (110.0, 100.0, 120.0, 3)
        );
        let md = markdown(&summaries);
        assert!(md.contains("| raw-tcp | 200 ±25% |"), "{md}");
        // Paired: the median of 150/100, 250/120 and 200/110.
        assert!(md.contains("1.82×"), "{md}");
        let svg = svg(&summaries, "test");
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<rect").count(), 1 + 2);
    }

    #[test]
    fn judges_issue_16_goals_against_the_binary() {
        let m =
            |cfg: &str, rate: f64| Sample::new("broadcast-max", cfg, 1, vec![("max_rate", rate)]);
        let samples = vec![
            sample("echo-small", "wharf-binary", 1, 200.0),
            sample("echo-small", "wharf-lib", 1, 190.0),
            sample("echo-small", "raw-tcp", 1, 300.0),
            sample("echo-small", "sockudo-ws", 1, 210.0),
            m("wharf-binary", 6000.0),
            m("wharf-lib", 4000.0),
            m("sockudo-ws", 4000.0),
        ];
        let summaries = summarize(&samples);
        assert_eq!(summaries[0].base.as_deref(), Some("wharf-binary"));
        let g = goals16(&summaries);
        assert!(
            g.contains("| echo 100 × 32 B: msg/s ≥ best peer's | 0.95× | **no** |"),
            "{g}"
        );
        assert!(g.contains("≥ 1.5× best peer's | 1.50× | yes |"), "{g}");
        assert!(
            g.contains("≥ the library's (current-thread) | 1.50× | yes |"),
            "{g}"
        );
        assert!(
            g.contains("| echo 10 × 64 KiB: msg/s ≥ best peer's | not run | – |"),
            "{g}"
        );
        // wharf-lib is not a peer.
        assert!(markdown(&summaries).contains("msg/s vs wharf-binary"));
    }

    #[test]
    fn counts_zero_loss_rounds() {
        let samples = vec![
            sample("broadcast", "wharf", 1, 1.0),
            Sample::new("broadcast", "wharf", 2, vec![("zero_loss", 0.0)]),
            sample("broadcast", "wharf", 3, 1.0),
        ];
        let md = markdown(&summarize(&samples));
        assert!(md.contains("| 2/3 |"), "{md}");
    }
}
