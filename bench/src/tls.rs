//! `wharf-bench tls`: what TLS costs the server. wharf plain, wharf over
//! TLS (its `tls` feature: rustls with *ring*) and tokio-tungstenite over
//! tokio-rustls (the same rustls configuration), each in its own process on
//! a current-thread runtime pinned to core 0; the clients (wharf's client,
//! `Connector::connect_on`, TLS by rustls with *ring*, keepalive off) run
//! here, pinned to core 1. For each target:
//!
//! - `handshake`: connections opened one after another by 8 clients at a
//!   time (TCP, TLS with a fresh session, upgrade, one echo, close): server
//!   CPU per connection and connections per second;
//! - `echo-64` and `echo-16k`: 50 connections each keeping 16 messages in
//!   flight: messages per second and server CPU per message.
//!
//! The certificate is self-signed (ECDSA P-256, made here with rcgen) and
//! trusted by the clients as their only root.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::CertificateDer;
use wharf::{CloseCode, Connection, Connector, Message};

use crate::proc;
use crate::runner::{CLIENT_CPU, SERVER_CPU};

const TARGETS: [&str; 4] = [
    "wharf-plain",
    "wharf-tls",
    "tungstenite-plain",
    "tungstenite-tls",
];

/// `wharf-bench tls-server TARGET CERT KEY`: one server, in the foreground.
pub(crate) fn server(args: &[String]) -> anyhow::Result<()> {
    let [target, cert, key] = args else {
        bail!("tls-server TARGET CERT KEY");
    };
    let tls = target
        .ends_with("-tls")
        .then(|| wharf::tls::Tls::from_pem_files(Path::new(cert), Path::new(key)))
        .transpose()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        println!("listening {}", listener.local_addr()?);
        std::io::stdout().flush()?;
        // Ends the process when the runner closes our stdin.
        std::thread::spawn(|| {
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
            std::process::exit(0);
        });
        if target.starts_with("wharf") {
            let server = wharf::Server::new().keepalive(None).tls(tls).on_connection(
                |mut conn| async move {
                    while let Some(m) = conn.recv().await {
                        let _ = conn.try_send(m);
                    }
                },
            );
            server.serve(listener).await?;
            return Ok(());
        }
        let acceptor = tls.map(|t| tokio_rustls::TlsAcceptor::from(t.config()));
        loop {
            let (tcp, _) = listener.accept().await?;
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                match acceptor {
                    Some(a) => {
                        if let Ok(s) = a.accept(tcp).await {
                            echo(s).await;
                        }
                    }
                    None => echo(tcp).await,
                }
            });
        }
    })
}

/// tokio-tungstenite's echo, as the benchmark's own peer runs it
/// (`servers::echo_sink`: feed, flush once nothing more is ready).
async fn echo<S: AsyncRead + AsyncWrite + Unpin>(s: S) {
    if let Ok(ws) = tokio_tungstenite::accept_async(s).await {
        crate::servers::echo_sink(ws, |m: &tokio_tungstenite::tungstenite::Message| {
            m.is_binary() || m.is_text()
        })
        .await;
    }
}

struct Proc {
    child: Child,
    pid: String,
    addr: SocketAddr,
}

impl Proc {
    fn start(target: &str, cert: &Path, key: &Path) -> anyhow::Result<Self> {
        let mut child = Command::new("taskset")
            .arg("-c")
            .arg(SERVER_CPU.to_string())
            .arg(std::env::current_exe()?)
            .arg("tls-server")
            .arg(target)
            .arg(cert)
            .arg(key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("spawn taskset (util-linux)")?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
        let addr = line
            .trim()
            .strip_prefix("listening ")
            .with_context(|| format!("{target} did not start: {line:?}"))?
            .parse()?;
        let pid = child.id().to_string();
        Ok(Self { child, pid, addr })
    }

    fn cpu(&self) -> anyhow::Result<f64> {
        proc::cpu_seconds(&self.pid)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // Our own child, by its handle.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A connection to `addr`; over TLS (the connector's configuration) when
/// `tls` is set.
async fn connect(addr: SocketAddr, client: &Connector, tls: bool) -> anyhow::Result<Connection> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let url = if tls {
        "wss://localhost/"
    } else {
        "ws://localhost/"
    };
    let (ws, _) = client.connect_on(tcp, url).await?;
    Ok(ws)
}

/// One result line.
struct Row {
    target: &'static str,
    test: &'static str,
    rate: f64,
    unit: &'static str,
    cpu_us: f64,
}

/// `wharf-bench tls [--scale F]`: every target, every test; prints a table.
pub(crate) fn bench(args: &[String]) -> anyhow::Result<()> {
    let mut scale = 1.0f64;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        match (flag.as_str(), it.next()) {
            ("--scale", Some(v)) => scale = v.parse()?,
            ("-h" | "--help", _) => {
                println!("usage: wharf-bench tls [--scale F]");
                return Ok(());
            }
            _ => bail!("usage: wharf-bench tls [--scale F]"),
        }
    }
    proc::pin_to_cpu(CLIENT_CPU.min(proc::cpus() - 1))?;
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench/tls");
    std::fs::create_dir_all(&dir)?;
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])?;
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, made.cert.pem())?;
    std::fs::write(&key, made.signing_key.serialize_pem())?;
    let connector = client(made.cert.der().clone())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut rows = Vec::new();
    for target in TARGETS {
        let server = Proc::start(target, &cert, &key)?;
        let tls = target.ends_with("-tls");
        let n = (2000.0 * scale) as usize;
        rows.push(rt.block_on(handshakes(target, &server, &connector, tls, n.max(16)))?);
        for (test, size) in [("echo-64", 64), ("echo-16k", 16 << 10)] {
            let secs = Duration::from_secs_f64(5.0 * scale);
            rows.push(rt.block_on(echoes(target, test, &server, &connector, tls, size, secs))?);
        }
    }
    println!("\n| target | test | rate | server CPU |\n|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {:.0} {} | {:.1} µs |",
            r.target, r.test, r.rate, r.unit, r.cpu_us
        );
    }
    Ok(())
}

fn client(root: CertificateDer<'static>) -> anyhow::Result<Connector> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    // A fresh full handshake every time: the cost of a new visitor.
    config.resumption = rustls::client::Resumption::disabled();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Connector::new()
        .keepalive(None)
        .tls_config(Arc::new(config)))
}

async fn handshakes(
    target: &'static str,
    server: &Proc,
    client: &Connector,
    tls: bool,
    n: usize,
) -> anyhow::Result<Row> {
    const AT_ONCE: usize = 8;
    let cpu0 = server.cpu()?;
    let t0 = Instant::now();
    let one = |_| async move {
        let mut ws = connect(server.addr, client, tls).await?;
        ws.send(Message::Binary(vec![7u8; 64].into())).await?;
        ws.recv().await.context("no echo")?;
        ws.close(CloseCode::NORMAL, "")?;
        while ws.recv().await.is_some() {}
        anyhow::Ok(())
    };
    let results: Vec<_> = futures_util::stream::iter(0..n)
        .map(one)
        .buffer_unordered(AT_ONCE)
        .collect()
        .await;
    for r in results {
        r?;
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = server.cpu()? - cpu0;
    println!("{target} handshake: {n} in {secs:.2} s");
    Ok(Row {
        target,
        test: "handshake",
        rate: n as f64 / secs,
        unit: "conn/s",
        cpu_us: cpu / n as f64 * 1e6,
    })
}

async fn echoes(
    target: &'static str,
    test: &'static str,
    server: &Proc,
    client: &Connector,
    tls: bool,
    size: usize,
    secs: Duration,
) -> anyhow::Result<Row> {
    const CONNS: usize = 50;
    const IN_FLIGHT: usize = 16;
    let mut conns = Vec::with_capacity(CONNS);
    for _ in 0..CONNS {
        conns.push(connect(server.addr, client, tls).await?);
    }
    let cpu0 = server.cpu()?;
    let t0 = Instant::now();
    let end = t0 + secs;
    let payload = bytes::Bytes::from(vec![0x5au8; size]);
    let runs = conns.into_iter().map(|mut ws| {
        let payload = payload.clone();
        async move {
            let mut count = 0u64;
            for _ in 0..IN_FLIGHT {
                ws.feed(Message::Binary(payload.clone())).await?;
            }
            ws.flush().await?;
            while Instant::now() < end {
                ws.recv().await.context("closed")?;
                count += 1;
                ws.send(Message::Binary(payload.clone())).await?;
            }
            for _ in 0..IN_FLIGHT {
                ws.recv().await.context("closed")?;
            }
            ws.close(CloseCode::NORMAL, "")?;
            anyhow::Ok(count)
        }
    });
    let counts = futures_util::future::try_join_all(runs).await?;
    let secs = t0.elapsed().as_secs_f64();
    let cpu = server.cpu()? - cpu0;
    let total: u64 = counts.iter().sum::<u64>() + (CONNS * IN_FLIGHT) as u64;
    println!("{target} {test}: {total} messages in {secs:.2} s");
    Ok(Row {
        target,
        test,
        rate: total as f64 / secs,
        unit: "msg/s",
        cpu_us: cpu / total as f64 * 1e6,
    })
}
