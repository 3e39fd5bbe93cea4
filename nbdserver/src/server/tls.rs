//! TLS for NBD over TCP (the protocol's STARTTLS upgrade, rustls with the
//! ring provider): an X.509 certificate chain and key for the server, and
//! optionally a CA whose client certificates are required.
//!
//! Policy: with TLS configured, a TCP client must upgrade before anything
//! else (the spec's FORCEDTLS mode: options other than STARTTLS and ABORT
//! get `NBD_REP_ERR_TLS_REQD`), unless the server allows plain clients
//! too (SELECTIVETLS: STARTTLS is offered, nothing requires it). Unix
//! socket clients are local and never need TLS.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio_rustls::TlsAcceptor;

use crate::error::{Error, ErrorKind, Result, invalid};

/// Where the certificates come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain of the server (leaf first).
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM CA certificates; when given, clients must present a
    /// certificate signed by one of them.
    pub client_ca: Option<PathBuf>,
    /// Refuse plain (non-TLS) TCP clients.
    pub required: bool,
}

/// A loaded TLS configuration, shared by all connections.
#[derive(Clone)]
pub struct Tls {
    pub acceptor: TlsAcceptor,
    pub required: bool,
    /// Clients must present a certificate of the client CA.
    pub verifies_clients: bool,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("required", &self.required)
            .field("verifies_clients", &self.verifies_clients)
            .finish_non_exhaustive()
    }
}

fn tls_err(what: String) -> impl FnOnce(rustls::Error) -> Error {
    move |e| Error::with_source(ErrorKind::InvalidInput, what, e)
}

fn certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let shown = path.display();
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<std::result::Result<Vec<_>, _>>())
        .map_err(|e| invalid(format!("{what} {shown}: {e}")))?;
    if certs.is_empty() {
        return Err(invalid(format!("{what} {shown}: no PEM certificate in it")));
    }
    Ok(certs)
}

impl Tls {
    pub fn load(files: &TlsFiles) -> Result<Tls> {
        let chain = certs(&files.cert, "TLS certificate")?;
        let key = PrivateKeyDer::from_pem_file(&files.key)
            .map_err(|e| invalid(format!("TLS key {}: {e}", files.key.display())))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(tls_err("TLS protocol versions".into()))?;
        let builder = match &files.client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in certs(ca, "TLS client CA")? {
                    roots.add(c).map_err(tls_err(format!("TLS client CA {}", ca.display())))?;
                }
                let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .map_err(|e| {
                        Error::with_source(
                            ErrorKind::InvalidInput,
                            format!("TLS client CA {}", ca.display()),
                            e,
                        )
                    })?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let config = builder.with_single_cert(chain, key).map_err(tls_err(format!(
            "TLS certificate {} with key {}",
            files.cert.display(),
            files.key.display()
        )))?;
        Ok(Tls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            required: files.required,
            verifies_clients: files.client_ca.is_some(),
        })
    }
}
