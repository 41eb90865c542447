//! TLS and timeouts of the PostgreSQL link.
//!
//! `sslmode` in the connection string means what it means to libpq
//! (PostgreSQL docs, "libpq - SSL Support", table "SSL Mode Descriptions"):
//!
//! - `disable`: plain TCP;
//! - `prefer` (the default) and `require`: encrypted (`prefer` falls back
//!   to plain TCP if the server has no TLS), the certificate **not**
//!   checked: protection against eavesdropping, not against a
//!   man-in-the-middle;
//! - `verify-ca`: encrypted, the certificate chain checked against the
//!   trusted roots; `verify-full`: that, and the server name too.
//!
//! The trusted roots are the PEM file `sslrootcert=PATH` when given, else
//! the system's store. TLS is rustls (with its default crypto provider).
//!
//! The link also gets bounds, so that a database that stops answering (a
//! half-open TCP connection) fails a request instead of holding the point
//! thread: TCP keepalives and `tcp_user_timeout` (unacknowledged data),
//! and a server-side `statement_timeout`. Each applies unless the
//! connection string sets it.

use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

/// How long the server may run one statement.
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(20);
/// Idle time before TCP keepalive probes start, and between them.
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(15);
/// Longest data may stay unacknowledged before the link is given up (Linux).
pub const TCP_USER_TIMEOUT: Duration = Duration::from_secs(30);

/// What `sslmode` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    /// No TLS.
    Disable,
    /// TLS if the server offers it; certificate not checked.
    Prefer,
    /// TLS; certificate not checked.
    Require,
    /// TLS; chain checked, name not.
    VerifyCa,
    /// TLS; chain and name checked.
    VerifyFull,
}

/// The connection string with rdv's TLS options taken out, and them.
#[derive(Debug)]
pub struct TlsOptions {
    /// The connection string `postgres::Config` parses (it knows neither
    /// `verify-*` nor `sslrootcert`).
    pub url: String,
    /// The mode asked for (default `prefer`, as libpq).
    pub mode: SslMode,
    /// `sslrootcert`.
    pub root_cert: Option<String>,
}

/// Takes `sslmode` and `sslrootcert` out of a URL's query string.
pub fn split_options(url: &str) -> Result<TlsOptions, String> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        // A `key=value` string: the driver reads its own sslmode.
        return Ok(TlsOptions {
            url: url.to_string(),
            mode: SslMode::Prefer,
            root_cert: None,
        });
    }
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, q),
        None => (url, ""),
    };
    let mut mode = SslMode::Prefer;
    let mut root_cert = None;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "sslmode" => {
                mode = match value {
                    "disable" => SslMode::Disable,
                    "allow" | "prefer" => SslMode::Prefer,
                    "require" => SslMode::Require,
                    "verify-ca" => SslMode::VerifyCa,
                    "verify-full" => SslMode::VerifyFull,
                    other => {
                        return Err(format!(
                            "sslmode={other} is not one of disable, prefer, require, verify-ca, verify-full"
                        ));
                    }
                }
            }
            "sslrootcert" => root_cert = Some(value.to_string()),
            _ => kept.push(pair),
        }
    }
    let driver_mode = match mode {
        SslMode::Disable => "disable",
        SslMode::Prefer => "prefer",
        _ => "require",
    };
    kept.push(match driver_mode {
        "disable" => "sslmode=disable",
        "prefer" => "sslmode=prefer",
        _ => "sslmode=require",
    });
    Ok(TlsOptions {
        url: format!("{base}?{}", kept.join("&")),
        mode,
        root_cert,
    })
}

/// Sets the link's timeouts unless `url` sets them itself.
pub fn apply_timeouts(config: &mut postgres::Config, url: &str) {
    let has = |key: &str| url.contains(&format!("{key}="));
    if !has("keepalives_idle") {
        config.keepalives(true).keepalives_idle(KEEPALIVE_IDLE);
    }
    if !has("keepalives_interval") {
        config.keepalives_interval(KEEPALIVE_IDLE);
    }
    if !has("keepalives_retries") {
        config.keepalives_retries(3);
    }
    if !has("tcp_user_timeout") {
        config.tcp_user_timeout(TCP_USER_TIMEOUT);
    }
    let options = config.get_options().unwrap_or_default().to_string();
    if !options.contains("statement_timeout") {
        let ms = STATEMENT_TIMEOUT.as_millis();
        config.options(format!("{options} -c statement_timeout={ms}").trim());
    }
}

/// The TLS connector for `options`.
pub fn connector(options: &TlsOptions) -> Result<MakeRustlsConnect, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let config = match options.mode {
        SslMode::Disable | SslMode::Prefer | SslMode::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Unchecked(provider)))
            .with_no_client_auth(),
        SslMode::VerifyCa | SslMode::VerifyFull => {
            let roots = Arc::new(roots(options.root_cert.as_deref())?);
            let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
                roots,
                provider.clone(),
            )
            .build()
            .map_err(|e| e.to_string())?;
            if options.mode == SslMode::VerifyFull {
                builder.with_webpki_verifier(webpki).with_no_client_auth()
            } else {
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(ChainOnly(webpki)))
                    .with_no_client_auth()
            }
        }
    };
    Ok(MakeRustlsConnect::new(config))
}

fn roots(path: Option<&str>) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    match path {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("sslrootcert={path}: {e}"))?;
            for cert in certs {
                let cert = cert.map_err(|e| format!("sslrootcert={path}: {e}"))?;
                store
                    .add(cert)
                    .map_err(|e| format!("sslrootcert={path}: {e}"))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                let _ = store.add(cert);
            }
        }
    }
    if store.is_empty() {
        return Err("no trusted root certificates (give sslrootcert=PATH)".into());
    }
    Ok(store)
}

/// `prefer`/`require`: the certificate is not checked (libpq's meaning),
/// but the handshake signature is, so the session is with the holder of
/// the key the server presented.
#[derive(Debug)]
struct Unchecked(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain is checked, a name mismatch is not an error.
#[derive(Debug)]
struct ChainOnly(Arc<rustls::client::WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName))
            | Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn libpq_modes_are_taken_out_and_the_driver_gets_what_it_knows() {
        let o = split_options(
            "postgres://u@h/db?sslmode=verify-full&sslrootcert=/ca.pem&application_name=x",
        )
        .unwrap();
        assert_eq!(o.mode, SslMode::VerifyFull);
        assert_eq!(o.root_cert.as_deref(), Some("/ca.pem"));
        assert_eq!(
            o.url,
            "postgres://u@h/db?application_name=x&sslmode=require"
        );
        let o = split_options("postgres://u@h/db").unwrap();
        assert_eq!(o.mode, SslMode::Prefer);
        assert_eq!(o.url, "postgres://u@h/db?sslmode=prefer");
        assert!(split_options("postgres://u@h/db?sslmode=bogus").is_err());
    }
}
