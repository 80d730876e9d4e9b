//! TLS 1.3 under every connection: the server's identity (a self-signed
//! certificate made on first start and kept beside the token), both sides'
//! configurations, and the channel binding that the token proofs cover.
//!
//! The client accepts any certificate: who the server is gets proven by the
//! token, not by a certificate authority. What ties the two together is the
//! binding (RFC 5929 `tls-server-end-point`): the SHA-256 of the certificate
//! the server presented. Both proofs cover it, so a man in the middle who
//! ends TLS on each side with a certificate of its own has two different
//! bindings and can relay neither proof. The client still checks the
//! handshake's signature against that certificate, so nobody can present
//! the real server's certificate without its private key.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, ServerConfig, SignatureScheme};
use sha2::{Digest, Sha256};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use thiserror::Error;
use tokio::io::BufReader;
use tokio::net::TcpStream;

/// The ALPN protocol name both sides offer. A TLS server that is not xfer
/// (HTTPS, say) does not select it, so the client knows at once.
pub const ALPN: &[u8] = b"xfer/2";

/// Bytes read from the socket at a time under TLS. rustls asks for 4 KiB
/// per read, which would cost a `recvfrom` per 4 KiB; through this buffer
/// one call takes in many records. 1 GiB get, client system time (median
/// of 6 alternating): 0.54 s without TLS, 1.05 s with 64 KiB here, 0.76 s
/// with 256 KiB. One per connection: 64 MiB for 256 connections at most.
const SOCKET_READ_BUF: usize = 256 * 1024;

/// Bytes of records rustls holds for sending (its default: 64 KiB). Each
/// socket write sends what it holds, so this sets the write size: a 1 GiB
/// get to /dev/null, medians of 8 shuffled with 1 MiB here and rustls's
/// default: 0.935 s and 0.84 / 0.85 CPU-s client / server at 64 KiB, 0.870
/// s and 0.77 / 0.80 at 256 KiB, the same at 1 MiB (24,602 writev calls per
/// GiB at 64 KiB). Filled only while the socket is full: at most 64 MiB for
/// 256 connections, as the read buffer.
pub const SEND_BUFFER: usize = 256 * 1024;

/// What TLS runs over: the socket, read through a buffer (writes pass
/// straight through).
pub type Socket = BufReader<TcpStream>;

/// A TLS connection, either side's.
pub type Stream = tokio_rustls::TlsStream<Socket>;

/// The 32-byte channel binding: SHA-256 of the server's certificate (DER).
pub type Binding = [u8; 32];

/// Wraps a connected socket for TLS.
pub fn socket(stream: TcpStream) -> Socket {
    BufReader::with_capacity(SOCKET_READ_BUF, stream)
}

/// The crypto in use: ring for key exchange and signatures (0.3 ms per
/// handshake; aws-lc-rs spent 25-30 ms initialising on its first one,
/// which alone would break `xfer exec true`'s 5 ms), aws-lc-rs for the
/// record ciphers (AES-128-GCM encrypt and decrypt of 1 GiB: 0.10 CPU-s
/// each here, ring 0.19). Measured with rustls in memory, both in one run.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            use rustls::crypto::aws_lc_rs::cipher_suite as aws;
            let mut p = rustls::crypto::ring::default_provider();
            p.cipher_suites = vec![
                aws::TLS13_AES_128_GCM_SHA256,
                aws::TLS13_AES_256_GCM_SHA384,
                aws::TLS13_CHACHA20_POLY1305_SHA256,
            ];
            Arc::new(p)
        })
        .clone()
}

/// The server's certificate and private key.
#[derive(Clone)]
pub struct Identity {
    /// The self-signed certificate clients are shown.
    cert: CertificateDer<'static>,
    /// Its private key (PKCS#8, ECDSA P-256).
    key: Arc<PrivateKeyDer<'static>>,
    /// The certificate's SHA-256, hashed once: every handshake's proofs
    /// cover it.
    binding: Binding,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Identity({})", self.fingerprint())
    }
}

/// Why the server's identity could not be had.
#[derive(Debug, Error)]
pub enum IdentityError {
    #[error("cannot read the server key {}: {}", .0.display(), crate::plain::plain_io(.1))]
    Read(PathBuf, io::Error),
    #[error("cannot create the server key {}: {}", .0.display(), crate::plain::plain_io(.1))]
    Create(PathBuf, io::Error),
    #[error("the server key {} is not a private key and certificate in PEM ({}); move it away and a new one is made", .0.display(), .1)]
    Invalid(PathBuf, String),
    #[error("the server key {} is readable by others (mode {:04o}): run chmod 600 {}", .0.display(), .1, .0.display())]
    Loose(PathBuf, u32),
}

impl Identity {
    /// A new ECDSA P-256 key and a self-signed certificate for it.
    pub fn generate() -> Identity {
        Self::generate_with_pem().0
    }

    /// [`generate`](Self::generate), with the key and certificate as PEM
    /// text to keep.
    fn generate_with_pem() -> (Identity, String) {
        let key =
            rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("P-256 keys can be made");
        let mut params = rcgen::CertificateParams::new(vec!["xfer".to_string()]).expect("a valid name");
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(rcgen::DnType::CommonName, "xfer server");
        let cert = params.self_signed(&key).expect("a self-signed certificate can be made");
        let pem = format!("{}{}", key.serialize_pem(), cert.pem());
        let id = Identity::of(cert.der().clone(), PrivateKeyDer::Pkcs8(key.serialize_der().into()));
        (id, pem)
    }

    /// Loads the identity kept at `path`, or makes one and keeps it there
    /// (mode 0600, with its directory 0700). Returns whether it was made now.
    pub fn load_or_create(path: &Path) -> Result<(Identity, bool), IdentityError> {
        match Self::load(path) {
            Err(IdentityError::Read(_, e)) if e.kind() == io::ErrorKind::NotFound => {}
            other => return other.map(|id| (id, false)),
        }
        let (id, pem) = Self::generate_with_pem();
        match crate::private_file::write_new(path, pem.as_bytes()) {
            Ok(()) => Ok((id, true)),
            // Another server made it first: use theirs.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Self::load(path).map(|id| (id, false)),
            Err(e) => Err(IdentityError::Create(path.to_path_buf(), e)),
        }
    }

    /// Loads the identity kept at `path`, refusing a file others can read.
    pub fn load(path: &Path) -> Result<Identity, IdentityError> {
        let read_err = |e| IdentityError::Read(path.to_path_buf(), e);
        let mode = crate::private_file::mode(path).map_err(read_err)?;
        if crate::private_file::is_loose(mode) {
            return Err(IdentityError::Loose(path.to_path_buf(), mode));
        }
        let bytes = std::fs::read(path).map_err(read_err)?;
        let invalid = |what: &str| IdentityError::Invalid(path.to_path_buf(), what.to_string());
        let key = PrivateKeyDer::from_pem_slice(&bytes).map_err(|_| invalid("no private key"))?;
        let cert = CertificateDer::pem_slice_iter(&bytes)
            .next()
            .ok_or_else(|| invalid("no certificate"))?
            .map_err(|_| invalid("a damaged certificate"))?;
        let id = Identity::of(cert, key);
        // A key that does not match its certificate would fail every
        // handshake; say so now instead.
        server_config(&id).map_err(|e| invalid(&e.to_string()))?;
        Ok(id)
    }

    /// The channel binding of connections that present this certificate.
    pub fn binding(&self) -> Binding {
        self.binding
    }

    fn of(cert: CertificateDer<'static>, key: PrivateKeyDer<'static>) -> Identity {
        Identity { binding: binding_of(&cert), cert, key: Arc::new(key) }
    }

    /// The certificate's SHA-256 fingerprint as `openssl x509 -fingerprint
    /// -sha256` prints it: uppercase hex pairs joined by colons.
    pub fn fingerprint(&self) -> String {
        let hex = crate::protocol::hex(&self.binding()).to_uppercase();
        let pairs: Vec<&str> = (0..hex.len()).step_by(2).map(|i| &hex[i..i + 2]).collect();
        pairs.join(":")
    }
}

/// SHA-256 of a certificate's DER bytes.
pub fn binding_of(cert: &CertificateDer<'_>) -> Binding {
    Sha256::digest(cert.as_ref()).into()
}

/// The server side's configuration: TLS 1.3 only, ALPN `xfer/2`, no session
/// tickets (every connection proves the token anyway, and a resumed session
/// shows no certificate to bind to), and the greeting sent with the
/// server's handshake flight instead of a round trip later.
pub fn server_config(id: &Identity) -> Result<Arc<ServerConfig>, rustls::Error> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(vec![id.cert.clone()], id.key.clone_key())?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    config.send_tls13_tickets = 0;
    // The server's first frame (its greeting: a version and a nonce,
    // nothing secret) leaves with its handshake flight, before the
    // client's Finished: one round trip less per connection. `xfer exec
    // true` over the build before TLS, 100 alternating runs each: +1.06 ms
    // without this (5.69 against 4.63), +0.77 and +0.81 ms with it.
    config.send_half_rtt_data = true;
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    Ok(Arc::new(config))
}

/// The client side's configuration: TLS 1.3 only, ALPN `xfer/2`, any
/// certificate whose handshake signature checks out, no resumption.
pub fn client_config() -> Arc<ClientConfig> {
    static CONFIG: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = provider();
            let mut config = ClientConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(&[&rustls::version::TLS13])
                .expect("the provider supports TLS 1.3")
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(BoundByToken { provider }))
                .with_no_client_auth();
            config.alpn_protocols = vec![ALPN.to_vec()];
            config.resumption = rustls::client::Resumption::disabled();
            config.enable_sni = false;
            Arc::new(config)
        })
        .clone()
}

/// The name the client gives rustls; never sent (SNI is off) and never
/// checked (the token proof bound to the certificate is what counts).
pub fn server_name() -> ServerName<'static> {
    ServerName::try_from("xfer").expect("a valid DNS name")
}

/// The client's binding for an established connection: the SHA-256 of the
/// certificate the server presented.
pub fn peer_binding(conn: &rustls::ClientConnection) -> Option<Binding> {
    conn.peer_certificates()?.first().map(binding_of)
}

/// Accepts any server certificate, since the token proof bound to it is
/// what authenticates the server; still checks that the server signed the
/// handshake with that certificate's key.
#[derive(Debug)]
struct BoundByToken {
    /// Whose signature algorithms to check with.
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for BoundByToken {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // Only TLS 1.3 is configured; this is never reached.
        Err(rustls::Error::PeerIncompatible(rustls::PeerIncompatible::Tls13RequiredForQuic))
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
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_made_identity_is_kept_private_and_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cfg/xfer/server-key.pem");
        let (first, made) = Identity::load_or_create(&path).unwrap();
        assert!(made);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let (second, made) = Identity::load_or_create(&path).unwrap();
        assert!(!made);
        assert_eq!(first.fingerprint(), second.fingerprint());
        assert_eq!(first.fingerprint().len(), 32 * 3 - 1);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = Identity::load(&path).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
    }

    #[test]
    fn a_damaged_key_file_is_refused_with_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server-key.pem");
        crate::private_file::write_new(&path, b"not pem").unwrap();
        let err = Identity::load_or_create(&path).unwrap_err().to_string();
        assert!(err.contains("server-key.pem") && err.contains("not a private key"), "{err}");
    }
}
