//! `keysync` and the transport and access rules of the control API. Against a control
//! plane that serves TLS, `--ca-file` (or `KEYSYNC_CA_FILE`) names the CA to trust;
//! without it the system's roots (`SSL_CERT_FILE`) do not know a private CA. `config
//! check` refuses an `https://` endpoint the control plane would not serve, and the
//! services' token gets a clear error for an operator's call.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

use crate::helpers::{describe, spawn_app_configured};

/// A CA, and a server certificate and key for `localhost` that it signed (all PEM).
fn certificates() -> (String, String, String) {
    let (ca, cert, key, _, _) = certificates_with_client();
    (ca, cert, key)
}

/// As [`certificates`], and a client certificate and key the same CA signed.
fn certificates_with_client() -> (String, String, String, String, String) {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "keysync test CA");
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("a key"))
        .expect("a CA certificate");
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).expect("parameters");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate().expect("a key");
    let certificate = params.signed_by(&key, &ca).expect("a certificate");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("parameters");
    params
        .distinguished_name
        .push(DnType::CommonName, "keysync operator");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client_key = KeyPair::generate().expect("a key");
    let client = params
        .signed_by(&client_key, &ca)
        .expect("a client certificate");
    (
        ca.pem(),
        certificate.pem(),
        key.serialize_pem(),
        client.pem(),
        client_key.serialize_pem(),
    )
}

#[tokio::test]
async fn the_cli_reaches_a_tls_control_plane_with_its_ca_file_and_not_without() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (ca, cert, key) = certificates();
    let write = |name: &str, content: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, content).expect("writes a PEM file");
        path
    };
    let (ca_file, cert_file, key_file) = (
        write("ca.crt", &ca),
        write("tls.crt", &cert),
        write("tls.key", &key),
    );
    let app = spawn_app_configured(
        &format!(
            "endpoint = \"https://localhost:50051\"\ntls_cert_file = \"{}\"\n\
             tls_key_file = \"{}\"\n",
            cert_file.display(),
            key_file.display()
        ),
        "",
    )
    .await;
    assert!(app.endpoint.starts_with("https://"), "{}", app.endpoint);

    let output = app
        .keysync(&["runs"])
        .arg("--ca-file")
        .arg(&ca_file)
        .output()
        .await
        .expect("keysync runs");
    assert!(output.status.success(), "{}", describe(&output));

    let output = app
        .keysync(&["runs"])
        .env("KEYSYNC_CA_FILE", &ca_file)
        .output()
        .await
        .expect("keysync runs");
    assert!(output.status.success(), "{}", describe(&output));

    // Without --ca-file, the system's roots, which SSL_CERT_FILE replaces (as it does
    // for the appliers).
    let output = app
        .keysync(&["runs"])
        .env_remove("KEYSYNC_CA_FILE")
        .env("SSL_CERT_FILE", &ca_file)
        .output()
        .await
        .expect("keysync runs");
    assert!(output.status.success(), "{}", describe(&output));

    let output = app
        .keysync(&["runs"])
        .env_remove("KEYSYNC_CA_FILE")
        .env_remove("SSL_CERT_FILE")
        .output()
        .await
        .expect("keysync runs");
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
}

#[tokio::test]
async fn with_mutual_tls_the_cli_needs_its_client_certificate() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (ca, cert, key, client_cert, client_key) = certificates_with_client();
    let write = |name: &str, content: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, content).expect("writes a PEM file");
        path
    };
    let ca_file = write("ca.crt", &ca);
    let (cert_file, key_file) = (write("tls.crt", &cert), write("tls.key", &key));
    let (client_cert_file, client_key_file) = (
        write("client.crt", &client_cert),
        write("client.key", &client_key),
    );
    let app = spawn_app_configured(
        &format!(
            "endpoint = \"https://localhost:50051\"\ntls_cert_file = \"{}\"\n\
             tls_key_file = \"{}\"\ntls_client_ca_file = \"{}\"\n",
            cert_file.display(),
            key_file.display(),
            ca_file.display()
        ),
        "",
    )
    .await;

    let output = app
        .keysync(&["runs"])
        .arg("--ca-file")
        .arg(&ca_file)
        .arg("--client-cert")
        .arg(&client_cert_file)
        .arg("--client-key")
        .arg(&client_key_file)
        .output()
        .await
        .expect("keysync runs");
    assert!(output.status.success(), "{}", describe(&output));

    // The same call without a client certificate: the handshake is refused.
    let output = app
        .keysync(&["runs"])
        .arg("--ca-file")
        .arg(&ca_file)
        .env_remove("KEYSYNC_CLIENT_CERT_FILE")
        .env_remove("KEYSYNC_CLIENT_KEY_FILE")
        .output()
        .await
        .expect("keysync runs");
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));

    // A certificate without its key is a usage error, before any connection.
    let output = app
        .keysync(&["runs"])
        .arg("--ca-file")
        .arg(&ca_file)
        .arg("--client-cert")
        .arg(&client_cert_file)
        .output()
        .await
        .expect("keysync runs");
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("--client-key"),
        "{}",
        describe(&output)
    );
}

#[tokio::test]
async fn config_check_refuses_an_https_endpoint_without_tls_and_plaintext_beyond_loopback() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let token = dir.path().join("token");
    std::fs::write(&token, "t-0123456789abcdef-0123456789abcdef\n").expect("writes");
    for (keys, key) in [
        (
            "endpoint = \"https://keysync:50051\"\n",
            "control_plane.endpoint",
        ),
        ("listen = \"0.0.0.0:50051\"\n", "control_plane.listen"),
        ("", "control_plane.token"),
    ] {
        let token_line = if key == "control_plane.token" {
            "token = \"too-short\"\n".to_owned()
        } else {
            format!("token_file = \"{}\"\n", token.display())
        };
        let file = dir.path().join("keysync.toml");
        std::fs::write(&file, format!("[control_plane]\n{token_line}{keys}")).expect("writes");
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_keysync"))
            .arg("config")
            .arg("check")
            .arg(&file)
            .output()
            .await
            .expect("keysync runs");
        assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(&format!("`{key}`")), "{key}: {stderr}");
    }
}

#[tokio::test]
async fn the_services_token_is_refused_for_an_operators_call_with_a_clear_error() {
    let service_token = "cli-service-token-0123456789abcdef-0123";
    let app = spawn_app_configured(&format!("service_token = \"{service_token}\"\n"), "").await;
    let token_file = app.dir.path().join("service-token");
    std::fs::write(&token_file, format!("{service_token}\n")).expect("writes the token");
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_keysync"))
        .arg("--endpoint")
        .arg(&app.endpoint)
        .arg("--token-file")
        .arg(&token_file)
        .args([
            "approve",
            "01JD000000000000000000000",
            "--reason",
            "a compromised pod",
        ])
        .env_remove("KEYSYNC_CA_FILE")
        .output()
        .await
        .expect("keysync runs");
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("ApproveRun") && stderr.contains("operator token"),
        "{stderr}"
    );
}
