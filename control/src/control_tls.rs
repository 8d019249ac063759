//! The control port's own TLS: every surface (the APIs, the operator page, xDS, the state
//! feed, the replicas' questions) is served over one rustls server configuration, built from
//! the certificate, key and client CA files the operator names and rebuilt when they change.
//! A client may come without a certificate (the API's clients sign their calls instead); one
//! that presents a certificate its CA did not issue is refused at the handshake; one that
//! presents a verified one is marked [`PeerCertificate`], which the routes carrying key material
//! and the fleet's state require.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// How long a client has to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the files are looked at.
const RELOAD_CHECK: Duration = Duration::from_secs(1);
/// How long a stop waits for connections to finish before dropping them.
const STOP_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ControlTlsError {
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error("{0}")]
    Rejected(String),
}

/// The files of the control port's TLS.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The control service's certificate chain (PEM, leaf first).
    pub certificate: PathBuf,
    /// Its private key (PEM).
    pub private_key: PathBuf,
    /// The CA (PEM) that issues the certificates Envoys and replicas present.
    pub client_ca: PathBuf,
}

impl TlsFiles {
    fn paths(&self) -> [&Path; 3] {
        [&self.certificate, &self.private_key, &self.client_ca]
    }
}

/// Request extension: the peer presented a certificate the client CA issued.
#[derive(Debug, Clone, Copy)]
pub struct PeerCertificate;

/// What a file looked like when last read: a change reloads.
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let metadata = std::fs::metadata(path).ok()?;
    Some((metadata.modified().ok()?, metadata.len()))
}

/// The server configuration in force, and what rebuilds it.
pub struct ControlTls {
    files: TlsFiles,
    config: RwLock<Arc<ServerConfig>>,
    stamps: Mutex<[Stamp; 3]>,
}

fn file_error(path: &Path, reason: impl std::fmt::Display) -> ControlTlsError {
    ControlTlsError::File {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, ControlTlsError> {
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, e))?;
    if certificates.is_empty() {
        return Err(file_error(path, "holds no PEM certificate"));
    }
    Ok(certificates)
}

impl ControlTls {
    /// Reads the files; an error names the file at fault.
    pub fn load(files: TlsFiles) -> Result<Self, ControlTlsError> {
        let stamps = files.paths().map(stamp);
        let config = build(&files)?;
        Ok(Self {
            files,
            config: RwLock::new(Arc::new(config)),
            stamps: Mutex::new(stamps),
        })
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(Arc::clone(&self.config.read().unwrap_or_else(PoisonError::into_inner)))
    }

    /// Rebuilds the configuration if a file changed since it was read: `Ok(true)` when the new
    /// one is in force for the next connections; on an error the one in force stays.
    pub fn reload_if_changed(&self) -> Result<bool, ControlTlsError> {
        let now = self.files.paths().map(stamp);
        let mut stamps = self.stamps.lock().unwrap_or_else(PoisonError::into_inner);
        if *stamps == now {
            return Ok(false);
        }
        // Not retried until a file changes again (a half-written pair is retried then).
        *stamps = now;
        let config = build(&self.files)?;
        *self.config.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(config);
        Ok(true)
    }

    /// Looks at the files every second for as long as the service runs.
    pub async fn watch(self: Arc<Self>) {
        let mut tick = tokio::time::interval(RELOAD_CHECK);
        loop {
            tick.tick().await;
            match self.reload_if_changed() {
                Ok(true) => tracing::info!(certificate = %self.files.certificate.display(), "control TLS reloaded"),
                Ok(false) => {}
                Err(e) => tracing::error!(error = %e, "control TLS not reloaded; the previous one stays in force"),
            }
        }
    }

    /// A client for the other replicas: it trusts the client CA only and presents this
    /// service's certificate (issued for client authentication too).
    pub fn peer_client(&self) -> Result<reqwest::Client, ControlTlsError> {
        let mut identity =
            std::fs::read(&self.files.certificate).map_err(|e| file_error(&self.files.certificate, e))?;
        identity.push(b'\n');
        identity.extend(std::fs::read(&self.files.private_key).map_err(|e| file_error(&self.files.private_key, e))?);
        let identity = reqwest::Identity::from_pem(&identity).map_err(|e| file_error(&self.files.certificate, e))?;
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(1))
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .identity(identity);
        for ca in read_certificates(&self.files.client_ca)? {
            let ca = reqwest::Certificate::from_der(&ca).map_err(|e| file_error(&self.files.client_ca, e))?;
            builder = builder.add_root_certificate(ca);
        }
        builder.build().map_err(|e| ControlTlsError::Rejected(e.to_string()))
    }
}

fn build(files: &TlsFiles) -> Result<ServerConfig, ControlTlsError> {
    let chain = read_certificates(&files.certificate)?;
    let key = PrivateKeyDer::from_pem_file(&files.private_key).map_err(|e| file_error(&files.private_key, e))?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in read_certificates(&files.client_ca)? {
        roots.add(ca).map_err(|e| file_error(&files.client_ca, e))?;
    }
    // ring, as the uploaded certificates' checks (rustls deprecates it for lacking
    // post-quantum key exchange, which neither Envoy's nor the SDKs' TLS offer here).
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
        // The API's clients authenticate by signing; the routes that need a peer check for it.
        .allow_unauthenticated()
        .build()
        .map_err(|e| file_error(&files.client_ca, e))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ControlTlsError::Rejected(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| file_error(&files.private_key, format!("does not match the certificate: {e}")))?;
    // xDS is gRPC (HTTP/2); the feed and the APIs' clients speak either.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// HTTP/2 streams one connection may hold open: an Envoy's worker holds one state long-poll per
/// listener (1,022 load balancers in the default pool) on one connection, beside its xDS stream.
const STREAMS_PER_CONNECTION: u32 = 4_096;

/// Serves `router` over TLS on `listener` until `stop` completes, then lets the connections
/// in flight finish (at most [`STOP_GRACE`]).
pub async fn serve(listener: TcpListener, router: Router, tls: Arc<ControlTls>, stop: impl Future<Output = ()>) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(stop);
    loop {
        let (tcp, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors and the like: pause rather than spin.
                    tracing::warn!(error = %e, "accepting a control connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = tls.acceptor();
        let router = router.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::debug!(%remote, error = %e, "control TLS handshake refused");
                    return;
                }
                Err(_) => return,
            };
            let verified = stream.get_ref().1.peer_certificates().is_some_and(|c| !c.is_empty());
            let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
                if verified {
                    request.extensions_mut().insert(PeerCertificate);
                }
                tower::ServiceExt::oneshot(router.clone(), request)
            });
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder.http2().max_concurrent_streams(STREAMS_PER_CONNECTION);
            let connection = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .into_owned();
            let _ = watcher.watch(connection).await;
        });
    }
    drop(listener);
    if tokio::time::timeout(STOP_GRACE, graceful.shutdown()).await.is_err() {
        tracing::warn!("connections still open {STOP_GRACE:?} after the stop; dropped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_file_at_fault() {
        let dir = tempfile::tempdir().unwrap();
        let files = TlsFiles {
            certificate: dir.path().join("cert.pem"),
            private_key: dir.path().join("key.pem"),
            client_ca: dir.path().join("ca.pem"),
        };
        let error = ControlTls::load(files.clone()).err().unwrap().to_string();
        assert!(error.contains("cert.pem"), "{error}");
        std::fs::write(&files.certificate, "not a certificate").unwrap();
        let error = ControlTls::load(files).err().unwrap().to_string();
        assert!(
            error.contains("cert.pem") && error.contains("no PEM certificate"),
            "{error}"
        );
    }
}
