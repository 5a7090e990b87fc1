//! `[bus]` TLS against a real nats-server that requires it: the server's certificate is
//! trusted only through `tls_ca_file`, and a client certificate (`tls_cert_file`,
//! `tls_key_file`) is presented when the server asks for one.

use std::path::{Path, PathBuf};

use bus::{Bus, BusSettings, Error};
use config::Secret;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use test_support::nats::NatsServer;

/// A CA, and a certificate with its key signed by it.
struct Pki {
    ca: String,
    cert: String,
    key: String,
}

fn pki(names: &[&str]) -> Pki {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key"))
        .expect("CA certificate");
    let key = KeyPair::generate().expect("key");
    let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
    let cert = CertificateParams::new(names)
        .expect("params")
        .signed_by(&key, &ca)
        .expect("certificate");
    Pki {
        ca: ca.pem(),
        cert: cert.pem(),
        key: key.serialize_pem(),
    }
}

/// A temporary directory for one test's PEM files.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let dir = std::env::temp_dir().join(format!("keysync-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Dir(dir)
    }

    fn write(&self, name: &str, content: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, content).expect("writes");
        path
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// nats-server with TLS required; with `client_ca`, client certificates are verified too.
fn start(dir: &Dir, server: &Pki, client_ca: Option<&str>) -> NatsServer {
    let cert = dir.write("server.pem", &server.cert);
    let key = dir.write("server.key", &server.key);
    let verify = match client_ca {
        Some(ca) => format!(
            "  ca_file: {}\n  verify: true\n",
            quoted(&dir.write("client-ca.pem", ca))
        ),
        None => String::new(),
    };
    let config = format!(
        "tls {{\n  cert_file: {}\n  key_file: {}\n{verify}}}\n",
        quoted(&cert),
        quoted(&key)
    );
    NatsServer::start_with_config(&config, &[]).expect("nats-server starts with TLS")
}

fn quoted(path: &Path) -> String {
    format!("{:?}", path.display().to_string())
}

/// A connection refused because the server's certificate is not signed by a trusted CA.
fn assert_untrusted_server(result: Result<Bus, Error>, case: &str) {
    match result {
        Ok(_) => panic!("{case}: connected"),
        Err(error) => assert!(
            matches!(error, Error::Connect { .. })
                && format!("{error:?}").contains("InvalidCertificate"),
            "{case}: {error:?}"
        ),
    }
}

fn settings(nats: &NatsServer, prefix: &str) -> BusSettings {
    BusSettings {
        nats_url: nats.url(),
        prefix: prefix.to_owned(),
        require_tls: true,
        ..BusSettings::default()
    }
}

#[tokio::test]
async fn the_server_is_trusted_through_tls_ca_file_only() {
    let dir = Dir::new("ca");
    let server = pki(&["127.0.0.1", "localhost"]);
    let nats = start(&dir, &server, None);

    let trusted = BusSettings {
        tls_ca: Some(server.ca.clone()),
        ..settings(&nats, "tlsca")
    };
    let bus = Bus::connect_with(&trusted)
        .await
        .expect("connects with the CA");
    assert!(bus.jetstream().query_account().await.is_ok());

    let without_ca = settings(&nats, "tlsca");
    let refused = Bus::connect_with(&without_ca).await;
    assert_untrusted_server(refused, "the system's roots do not know the test CA");

    let other_ca = BusSettings {
        tls_ca: Some(pki(&["127.0.0.1"]).ca),
        ..settings(&nats, "tlsca")
    };
    let refused = Bus::connect_with(&other_ca).await;
    assert_untrusted_server(refused, "another CA");
}

#[tokio::test]
async fn a_server_that_verifies_clients_takes_the_client_certificate() {
    let dir = Dir::new("mtls");
    let server = pki(&["127.0.0.1"]);
    let client = pki(&["keysync-applier"]);
    let nats = start(&dir, &server, Some(&client.ca));

    let with_certificate = BusSettings {
        tls_ca: Some(server.ca.clone()),
        tls_cert: Some(client.cert.clone()),
        tls_key: Some(Secret::new(client.key.clone())),
        ..settings(&nats, "mtls")
    };
    Bus::connect_with(&with_certificate)
        .await
        .expect("connects with the client certificate");

    let without_certificate = BusSettings {
        tls_ca: Some(server.ca.clone()),
        ..settings(&nats, "mtls")
    };
    let refused = Bus::connect_with(&without_certificate).await;
    assert!(
        matches!(refused, Err(Error::Connect { .. })),
        "no client certificate: {:?}",
        refused.err()
    );
}
