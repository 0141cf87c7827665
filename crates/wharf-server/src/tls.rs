//! `--tls-cert` and `--tls-key`: TLS on the server's one port, and the two
//! files reloaded on SIGHUP. A reload that fails (a missing or malformed
//! file, a key that does not match) is logged and the certificate in use
//! stays; open connections keep their sessions either way.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use tokio::task::JoinHandle;
use wharf::Server;
use wharf::tls::Tls;

use crate::Config;

/// `server` with TLS if `config` names the files, and the task that
/// reloads them on SIGHUP (to abort when the server stops).
///
/// # Errors
/// If the files cannot be read or do not make a certificate and its key.
pub(crate) fn configure(
    server: Server,
    config: &Config,
) -> anyhow::Result<(Server, Option<JoinHandle<()>>)> {
    let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) else {
        return Ok((server, None));
    };
    let tls = Tls::from_pem_files(cert, key).with_context(|| {
        format!(
            "cannot use the TLS certificate {} with the key {}",
            cert.display(),
            key.display()
        )
    })?;
    let reloads = reload_on_hangup(tls.clone(), cert.clone(), key.clone());
    Ok((server.tls(Some(tls)), reloads))
}

/// Reloads the certificate and key on every SIGHUP, in a task; the
/// signal is watched from before this returns.
fn reload_on_hangup(tls: Tls, cert: PathBuf, key: PathBuf) -> Option<JoinHandle<()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGHUP: the TLS certificate will not be reloaded");
                return None;
            }
        };
        Some(tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                reload(&tls, &cert, &key);
            }
        }))
    }
    #[cfg(not(unix))]
    {
        let _ = (tls, cert, key);
        None
    }
}

fn reload(tls: &Tls, cert: &Path, key: &Path) {
    match tls.reload_pem_files(cert, key) {
        Ok(()) => tracing::info!(cert = %cert.display(), "SIGHUP: TLS certificate reloaded"),
        Err(e) => tracing::error!(
            cert = %cert.display(),
            key = %key.display(),
            error = format!("{:#}", anyhow::Error::from(e)),
            "SIGHUP: TLS reload failed; keeping the certificate in use"
        ),
    }
}
