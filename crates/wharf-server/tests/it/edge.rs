//! The network edge: connection caps at their exact thresholds, running
//! out of descriptors under a low `ulimit -n`, and real client addresses
//! behind real proxies (Debian's nginx with `X-Forwarded-For`, haproxy with
//! the PROXY protocol), started here on free loopback ports with generated
//! configurations. Clients bind distinct loopback addresses (127.0.0.2,
//! 127.0.0.3, ...) so that each is a different client to the server.
//! `scripts/install-proxies` installs the proxies; a test that finds one
//! missing says so and passes.

use std::fs::File;
use std::io::Read as _;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use wharf::{ConnectErrorKind, Connector, Message};

use crate::util::{TempDir, Ws, config, next, start, within};

/// A TCP connection from loopback address `127.0.0.<host>`.
async fn tcp_from(host: u8, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from(([127, 0, 0, host], 0)))?;
    socket.connect(to).await
}

/// A WebSocket handshake from `127.0.0.<host>` with extra headers: the
/// connection, or the refusal's status, `Retry-After` and body (status 0
/// and the error if there was no answer).
async fn ws_from(
    host: u8,
    to: SocketAddr,
    headers: &[(&str, &str)],
) -> Result<Ws, (u16, Option<String>, String)> {
    let tcp = tcp_from(host, to).await.expect("connect");
    let mut connector = Connector::new();
    for (k, v) in headers {
        connector = connector.header(k, v);
    }
    let url = format!("ws://{to}/");
    match within("handshake", connector.connect_on(tcp, &url)).await {
        Ok((ws, _)) => Ok(ws),
        Err(e) if e.kind() == ConnectErrorKind::Refused => {
            let res = e.response().expect("a refusal has its response");
            let retry = res
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap_or_default().to_owned());
            let body = String::from_utf8_lossy(res.body()).into();
            Err((res.status().as_u16(), retry, body))
        }
        // Closed unanswered (a dropped handshake): status 0.
        Err(e) => Err((0, None, e.to_string())),
    }
}

/// One echo round trip.
async fn echo(ws: &mut Ws, text: &str) {
    within("send", ws.send(text)).await.expect("send");
    assert_eq!(next(ws).await, Message::from(text));
}

/// `GET /healthz` from `127.0.0.<host>`: the status and whether the server
/// asked to close the connection.
async fn healthz(host: u8, to: SocketAddr) -> (u16, bool) {
    within("healthz", async {
        let mut tcp = tcp_from(host, to).await.expect("connect");
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .expect("write");
        let mut buf = Vec::new();
        let mut chunk = [0; 1024];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = tcp.read(&mut chunk).await.expect("read");
            assert!(n > 0, "closed before a response");
            buf.extend_from_slice(&chunk[..n]);
        }
        let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
        let status = head[9..12].parse().expect("status");
        (status, head.contains("connection: close"))
    })
    .await
}

#[tokio::test]
async fn caps_admit_exactly_their_threshold_and_refuse_the_next_with_503() {
    let mut c = config(wharf_server::Mode::Echo);
    c.edge.max_connections = 3;
    c.edge.max_connections_per_ip = 2;
    let server = start(c).await;
    let addr = server.addr;
    let a1 = ws_from(2, addr, &[]).await.expect("first from .2");
    let mut a2 = ws_from(2, addr, &[]).await.expect("second from .2");
    let (status, retry, body) = ws_from(2, addr, &[]).await.expect_err("third from .2");
    assert_eq!((status, retry.as_deref()), (503, Some("5")));
    assert_eq!(body, "too many connections from your address; retry later");
    let b1 = ws_from(3, addr, &[]).await.expect("first from .3");
    let (status, retry, body) = ws_from(4, addr, &[]).await.expect_err("fourth in all");
    assert_eq!((status, retry.as_deref()), (503, Some("5")));
    assert_eq!(body, "server at its connection limit; retry later");
    // A plain request is still answered, and its connection not kept.
    assert_eq!(healthz(5, addr).await, (200, true));
    echo(&mut a2, "still served").await;
    // One leaves: one more is admitted.
    drop(a1);
    let mut again = None;
    for _ in 0..50 {
        if let Ok(ws) = ws_from(4, addr, &[]).await {
            again = Some(ws);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut again = again.expect("admitted once a slot is free");
    echo(&mut again, "hi").await;
    assert_eq!(healthz(5, addr).await.0, 200);
    drop((a2, b1, again));
    server.stop().await;
}

#[tokio::test]
async fn under_the_caps_plain_connections_are_kept_alive() {
    let mut c = config(wharf_server::Mode::Echo);
    c.edge.max_connections = 1;
    let server = start(c).await;
    assert_eq!(healthz(2, server.addr).await, (200, false));
    server.stop().await;
}

#[tokio::test]
async fn a_forged_x_forwarded_for_from_an_untrusted_peer_is_ignored() {
    // Trusted: 127.0.0.1 only. The client at 127.0.0.2 claims to be a
    // proxy's client; the per-address cap still counts it as 127.0.0.2.
    let mut c = config(wharf_server::Mode::Echo);
    c.edge.max_connections_per_ip = 1;
    c.edge.trusted_proxies = vec!["127.0.0.1".parse().expect("cidr")];
    let server = start(c).await;
    let forged = [("X-Forwarded-For", "198.51.100.1")];
    let one = ws_from(2, server.addr, &forged).await.expect("first");
    let forged = [("X-Forwarded-For", "198.51.100.2")];
    let refused = ws_from(2, server.addr, &forged).await.expect_err("capped");
    assert_eq!(refused.0, 503);
    // From the trusted peer, the header is believed.
    let x = ws_from(1, server.addr, &[("X-Forwarded-For", "198.51.100.3")])
        .await
        .expect("via trusted");
    let y = ws_from(1, server.addr, &[("X-Forwarded-For", "198.51.100.4")])
        .await
        .expect("another client via trusted");
    drop((one, x, y));
    server.stop().await;
}

/// A process this test started, killed (by its PID) when dropped; its
/// output goes to a log file.
struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(mut cmd: Command, log: PathBuf) -> Self {
        let out = File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        Self { child, log }
    }

    fn log(&self) -> String {
        let mut s = String::new();
        let _ = File::open(&self.log).and_then(|mut f| f.read_to_string(&mut s));
        s
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_none()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// The `wharf` binary on a free port with `args` (echo mode, info logs),
/// under a descriptor limit if given, once it answers `/healthz`.
async fn wharf(dir: &Path, args: &[&str], nofile: Option<u32>) -> (Proc, SocketAddr) {
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let bin = env!("CARGO_BIN_EXE_wharf");
    let mut cmd = match nofile {
        Some(n) => {
            let mut c = Command::new("prlimit");
            c.arg(format!("--nofile={n}:{n}")).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    cmd.args([
        "--listen",
        &addr.to_string(),
        "--mode",
        "echo",
        "--log-level",
        // Connections are logged at debug level, by the library (the echo
        // mode has no handler of its own).
        "info,wharf=debug",
    ])
    .args(args);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("WHARF_") {
            cmd.env_remove(k);
        }
    }
    let mut proc = Proc::spawn(cmd, dir.join("wharf.log"));
    wait_listening(&mut proc, addr, args.contains(&"--proxy-protocol")).await;
    (proc, addr)
}

/// Waits until `addr` answers (`/healthz`, or just accepts when every
/// connection must start with a PROXY header).
async fn wait_listening(proc: &mut Proc, addr: SocketAddr, accept_only: bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(proc.alive(), "exited at start: {}", proc.log());
        let up = match accept_only {
            true => TcpStream::connect(addr).await.is_ok(),
            false => probe(addr).await,
        };
        if up {
            return;
        }
        assert!(Instant::now() < deadline, "not listening: {}", proc.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether `GET /healthz` at `addr` answers 200 within a second.
async fn probe(addr: SocketAddr) -> bool {
    let exchange = async {
        let mut tcp = TcpStream::connect(addr).await.ok()?;
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut buf = Vec::new();
        tcp.read_to_end(&mut buf).await.ok()?;
        Some(buf.starts_with(b"HTTP/1.1 200"))
    };
    tokio::time::timeout(Duration::from_secs(1), exchange)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// The path of a Debian package's program, if installed.
fn program(name: &str) -> Option<PathBuf> {
    [format!("/usr/sbin/{name}"), format!("/usr/bin/{name}")]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// Waits until a log mentions `needle`.
async fn wait_log(proc: &Proc, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !proc.log().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in the log:\n{}",
            proc.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn behind_nginx_logs_and_caps_see_the_client_address() {
    let Some(nginx) = program("nginx") else {
        eprintln!("SKIPPED: nginx is not installed (scripts/install-proxies installs it)");
        return;
    };
    let dir = TempDir::new("nginx");
    let (wharf, upstream) = wharf(
        dir.path(),
        &[
            "--trusted-proxy",
            "127.0.0.1",
            "--max-connections-per-ip",
            "2",
        ],
        None,
    )
    .await;
    let port = free_port();
    let d = dir.path().display();
    let conf = format!(
        "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
           fastcgi_temp_path {d}/fcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
           map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}\n\
           server {{\n    listen 127.0.0.1:{port};\n    location / {{\n\
               proxy_pass http://{upstream};\n      proxy_http_version 1.1;\n\
               proxy_set_header Upgrade $http_upgrade;\n\
               proxy_set_header Connection $connection_upgrade;\n\
               proxy_set_header Host $host;\n\
               proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n\
               proxy_set_header X-Forwarded-Proto $scheme;\n    }}\n  }}\n}}\n"
    );
    let conf_path = dir.write("nginx.conf", &conf);
    let mut cmd = Command::new(nginx);
    cmd.arg("-p").arg(dir.path()).arg("-c").arg(&conf_path);
    let mut proxy = Proc::spawn(cmd, dir.path().join("nginx.out"));
    let front = SocketAddr::from(([127, 0, 0, 1], port));
    wait_listening(&mut proxy, front, false).await;

    // Two clients from .2 through nginx; a third is over the per-address
    // cap, though every connection comes from nginx's own address.
    let mut a1 = ws_from(2, front, &[]).await.expect("first from .2");
    let _a2 = ws_from(2, front, &[("X-Forwarded-For", "10.9.9.9")])
        .await
        .expect("second from .2 (a forged entry to the left is not read)");
    let (status, retry, body) = ws_from(2, front, &[]).await.expect_err("third from .2");
    assert_eq!((status, retry.as_deref()), (503, Some("5")), "{body}");
    let mut b = ws_from(3, front, &[]).await.expect("another client");
    echo(&mut a1, "via nginx").await;
    echo(&mut b, "via nginx").await;
    wait_log(&wharf, "peer=127.0.0.2:0").await;
    wait_log(&wharf, "peer=127.0.0.3:0").await;
    assert!(
        !wharf.log().contains("10.9.9.9"),
        "a forged address was believed"
    );
    // Straight to wharf from an untrusted address, the header is ignored.
    let _direct = ws_from(4, upstream, &[("X-Forwarded-For", "203.0.113.77")])
        .await
        .expect("direct");
    wait_log(&wharf, "peer=127.0.0.4:").await;
    assert!(!wharf.log().contains("203.0.113.77"));
}

#[tokio::test]
async fn behind_haproxy_the_proxy_protocol_gives_the_client_address() {
    let Some(haproxy) = program("haproxy") else {
        eprintln!("SKIPPED: haproxy is not installed (scripts/install-proxies installs it)");
        return;
    };
    let dir = TempDir::new("haproxy");
    let (wharf, upstream) = wharf(
        dir.path(),
        &["--proxy-protocol", "--max-connections-per-ip", "2"],
        None,
    )
    .await;
    let (v2, v1) = (free_port(), free_port());
    let conf = format!(
        "global\n  maxconn 64\n\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n\n\
         frontend v2\n  bind 127.0.0.1:{v2}\n  default_backend v2\n\
         backend v2\n  server wharf {upstream} send-proxy-v2\n\n\
         frontend v1\n  bind 127.0.0.1:{v1}\n  default_backend v1\n\
         backend v1\n  server wharf {upstream} send-proxy\n"
    );
    let conf_path = dir.write("haproxy.cfg", &conf);
    let mut cmd = Command::new(haproxy);
    cmd.arg("-db").arg("-f").arg(&conf_path);
    let mut proxy = Proc::spawn(cmd, dir.path().join("haproxy.out"));
    for port in [v2, v1] {
        wait_listening(&mut proxy, SocketAddr::from(([127, 0, 0, 1], port)), false).await;
    }
    let front = SocketAddr::from(([127, 0, 0, 1], v2));
    let mut a1 = ws_from(2, front, &[]).await.expect("first from .2");
    let _a2 = ws_from(2, front, &[]).await.expect("second from .2");
    let (status, retry, _) = ws_from(2, front, &[]).await.expect_err("third from .2");
    assert_eq!((status, retry.as_deref()), (503, Some("5")));
    echo(&mut a1, "via haproxy").await;
    wait_log(&wharf, "peer=127.0.0.2:").await;
    // Version 1 too.
    let mut c = ws_from(3, SocketAddr::from(([127, 0, 0, 1], v1)), &[])
        .await
        .expect("via send-proxy (v1)");
    echo(&mut c, "v1").await;
    wait_log(&wharf, "peer=127.0.0.3:").await;
    // Without a PROXY header, the connection is closed unanswered.
    let mut tcp = tcp_from(4, upstream).await.expect("connect");
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0; 64];
    let n = within("close", tcp.read(&mut buf)).await.unwrap_or(0);
    assert_eq!(n, 0, "answered without a PROXY header");
}

/// CPU time (user + system) a process has used.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: u64 =
        fields[11].parse::<u64>().unwrap_or(0) + fields[12].parse::<u64>().unwrap_or(0);
    // Clock ticks are 1/100 s on Linux.
    Duration::from_millis(ticks * 10)
}

#[tokio::test]
async fn at_a_low_descriptor_limit_idle_sockets_cannot_starve_healthz() {
    // The binary's defaults at `ulimit -n 64`: 16 handshakes in flight and
    // 16 connections. 60 idle sockets push the oldest out.
    let dir = TempDir::new("nofile-defaults");
    let (wharf, addr) = wharf(dir.path(), &[], Some(64)).await;
    let mut idle = Vec::new();
    for _ in 0..60 {
        idle.push(tcp_from(2, addr).await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t = Instant::now();
    assert_eq!(healthz(3, addr).await.0, 200);
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    let mut ws = ws_from(3, addr, &[]).await.expect("a client is served");
    echo(&mut ws, "ok").await;
    drop(wharf);
}

#[tokio::test]
async fn out_of_descriptors_accepting_pauses_without_spinning_or_flooding_the_log() {
    // Caps off, so that only the descriptor limit stops accepts.
    let dir = TempDir::new("nofile-emfile");
    let args = ["--max-connections", "off", "--max-handshakes", "1000"];
    let (mut wharf, addr) = wharf(dir.path(), &args, Some(48)).await;
    let mut clients = Vec::new();
    for i in 0..60u8 {
        match tokio::time::timeout(Duration::from_millis(500), ws_from(2 + i % 4, addr, &[])).await
        {
            Ok(Ok(ws)) => clients.push(ws),
            _ => break,
        }
    }
    assert!(clients.len() >= 20, "only {} connected", clients.len());
    assert!(clients.len() < 60, "the descriptor limit was not reached");
    // More arrive while none can be accepted: they wait in the backlog.
    let mut waiting = Vec::new();
    for _ in 0..5 {
        waiting.push(tcp_from(6, addr).await.expect("connect (backlog)"));
    }
    let pid = wharf.child.id();
    let cpu0 = cpu_time(pid);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let busy = cpu_time(pid) - cpu0;
    assert!(
        busy < Duration::from_millis(300),
        "{busy:?} of CPU in 2 s while paused"
    );
    assert!(wharf.alive());
    for ws in clients.iter_mut().take(3) {
        echo(ws, "still served").await;
    }
    let warnings = wharf.log().matches("WARN wharf::caps").count();
    eprintln!(
        "nofile 48: {} connections, {busy:?} CPU in 2 s paused, {warnings} warning(s)",
        clients.len()
    );
    assert!(
        (1..=2).contains(&warnings),
        "{warnings} warnings:\n{}",
        wharf.log()
    );
    // Room again: accepting resumes, within the longest pause.
    drop(waiting);
    clients.truncate(clients.len() - 5);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut ws = ws_from(7, addr, &[]).await.expect("accepted again");
    echo(&mut ws, "back").await;
}
