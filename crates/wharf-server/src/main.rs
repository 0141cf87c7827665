//! `wharf`: parses arguments and calls [`wharf_server::run`].

use wharf_server::Config;

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
        .init();
    let mut config = Config::default();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => {
                let value = args
                    .next()
                    .ok_or_else(|| anyhow::anyhow!("--listen needs an address"))?;
                config.listen = value.parse()?;
            }
            "-h" | "--help" => {
                println!("usage: wharf [--listen ADDR]   (default 127.0.0.1:3400)");
                return Ok(());
            }
            other => anyhow::bail!("unknown argument {other:?}; try --help"),
        }
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(wharf_server::run(config))
}
