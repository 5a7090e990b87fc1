//! TLS of the control API (`[control_plane] tls_cert_file`, `tls_key_file`, and
//! `tls_client_ca_file` for mutual TLS), with certificates made here: a client that
//! trusts the CA is answered; one that trusts another CA, or speaks plaintext, is not.

use proto::v1;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use tempfile::TempDir;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use crate::helpers::{Options, TOKEN, connect, connect_tls, spawn_app_with};

/// A certificate authority made for one test.
struct Ca(CertifiedIssuer<'static, KeyPair>);

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("a CA key");
        Ca(CertifiedIssuer::self_signed(params, key).expect("a CA certificate"))
    }

    fn pem(&self) -> String {
        self.0.pem()
    }

    /// A certificate and its key (PEM) for `name`, a server's or a client's.
    fn issue(&self, name: &str, purpose: ExtendedKeyUsagePurpose) -> (String, String) {
        let mut params = CertificateParams::new(vec![name.to_owned()]).expect("parameters");
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![purpose];
        let key = KeyPair::generate().expect("a key");
        let certificate = params.signed_by(&key, &self.0).expect("a certificate");
        (certificate.pem(), key.serialize_pem())
    }
}

/// The files of a TLS control plane: its certificate and key from `ca`, and the
/// `[control_plane]` keys that name them (and `client_ca`, for mutual TLS).
fn tls_keys(dir: &TempDir, ca: &Ca, client_ca: Option<&Ca>) -> String {
    let (cert, key) = ca.issue("localhost", ExtendedKeyUsagePurpose::ServerAuth);
    let write = |name: &str, content: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, content).expect("writes a PEM file");
        path.display().to_string()
    };
    let mut keys = format!(
        "endpoint = \"https://localhost:50051\"\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
        write("tls.crt", &cert),
        write("tls.key", &key)
    );
    if let Some(client_ca) = client_ca {
        keys.push_str(&format!(
            "tls_client_ca_file = \"{}\"\n",
            write("client-ca.crt", &client_ca.pem())
        ));
    }
    keys
}

fn trusting(ca: &Ca) -> ClientTlsConfig {
    ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca.pem()))
        .domain_name("localhost")
}

#[tokio::test]
async fn a_tls_control_plane_answers_a_client_that_trusts_its_ca_and_no_other() {
    let (ca, other) = (Ca::new("keysync test CA"), Ca::new("another CA"));
    let dir = tempfile::tempdir().expect("a temporary directory");
    let app = spawn_app_with(Options {
        control_plane: tls_keys(&dir, &ca, None),
        client_tls: Some(trusting(&ca)),
        ..Options::default()
    })
    .await;
    app.client
        .clone()
        .list_runs(v1::ListRunsRequest::default())
        .await
        .expect("a client with the CA is answered");

    for (what, tls) in [
        ("another CA", trusting(&other)),
        ("no CA", ClientTlsConfig::new().domain_name("localhost")),
    ] {
        let refused = match connect_tls(app.address, Some(TOKEN), tls).await {
            Err(_) => true,
            Ok(mut client) => client
                .list_runs(v1::ListRunsRequest::default())
                .await
                .is_err(),
        };
        assert!(refused, "a client that trusts {what} was answered");
    }

    let mut plaintext = connect(app.address, Some(TOKEN)).await;
    let status = plaintext
        .list_runs(v1::ListRunsRequest::default())
        .await
        .expect_err("a plaintext client is not answered");
    assert_ne!(status.code(), tonic::Code::Ok);
    app.stop().await;
}

#[tokio::test]
async fn with_a_client_ca_only_clients_with_its_certificates_connect() {
    let (ca, clients) = (Ca::new("keysync test CA"), Ca::new("keysync clients"));
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (cert, key) = clients.issue("keysync-cli", ExtendedKeyUsagePurpose::ClientAuth);
    let app = spawn_app_with(Options {
        control_plane: tls_keys(&dir, &ca, Some(&clients)),
        client_tls: Some(trusting(&ca).identity(Identity::from_pem(&cert, &key))),
        ..Options::default()
    })
    .await;
    app.client
        .clone()
        .list_runs(v1::ListRunsRequest::default())
        .await
        .expect("a client with a certificate of the client CA is answered");

    let (stranger_cert, stranger_key) = ca.issue("stranger", ExtendedKeyUsagePurpose::ClientAuth);
    for (what, tls) in [
        ("no certificate", trusting(&ca)),
        (
            "a certificate of another CA",
            trusting(&ca).identity(Identity::from_pem(&stranger_cert, &stranger_key)),
        ),
    ] {
        let refused = match connect_tls(app.address, Some(TOKEN), tls).await {
            Err(_) => true,
            Ok(mut client) => client
                .list_runs(v1::ListRunsRequest::default())
                .await
                .is_err(),
        };
        assert!(refused, "a client with {what} was answered");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_key_that_does_not_parse_stops_the_start_before_anything_is_connected() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (cert, _) =
        Ca::new("keysync test CA").issue("localhost", ExtendedKeyUsagePurpose::ServerAuth);
    let write = |name: &str, content: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, content).expect("writes a file");
        path.display().to_string()
    };
    let config = format!(
        "[bus]\nnats_url = \"nats://127.0.0.1:9\"\n\n[control_plane]\nlisten = \"127.0.0.1:0\"\n\
         token_file = \"{}\"\nendpoint = \"https://localhost:50051\"\ntls_cert_file = \"{}\"\n\
         tls_key_file = \"{}\"\n",
        write("token", TOKEN),
        write("tls.crt", &cert),
        write(
            "tls.key",
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
        ),
    );
    let file = write("keysync.toml", &config);
    let settings = control_plane::Settings::load(Some(std::path::Path::new(&file)))
        .expect("the settings look right: the PEM is parsed at the start");
    let error = control_plane::App::build(settings)
        .await
        .err()
        .expect("a key that does not parse stops the start");
    assert!(
        matches!(error, control_plane::Error::Tls(_)),
        "{}",
        telemetry::error_chain(&error)
    );
}
