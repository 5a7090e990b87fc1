//! How a [`Stack`](crate::Stack) starts: its NATS, emulators, configuration sections,
//! control API client and secret files.

use super::*;

/// The stack's TLS material (with `tls`: a CA and a server certificate, written into
/// `dir`) and its nats-server, which then requires TLS of every client.
pub(crate) fn start_nats(dir: &Path, tls: bool) -> anyhow::Result<(Option<StackTls>, NatsServer)> {
    let tls = if tls {
        let pki = tls::pki(&["127.0.0.1", "localhost"])?;
        let ca_file = dir.join("ca.pem");
        std::fs::write(&ca_file, &pki.ca)?;
        std::fs::write(dir.join("server.crt"), &pki.cert)?;
        write_secret(dir.join("server.key"), &pki.key)?;
        Some(StackTls {
            ca: pki.ca,
            ca_file,
            server_key: pki.key,
        })
    } else {
        None
    };
    let nats = match &tls {
        // nats-server with a `tls` block requires TLS of every client.
        Some(_) => NatsServer::start_with_config(
            &format!(
                "tls {{\n  cert_file: {:?}\n  key_file: {:?}\n}}\n",
                dir.join("server.crt").display().to_string(),
                dir.join("server.key").display().to_string(),
            ),
            &[],
        )?,
        None => NatsServer::start()?,
    };
    Ok((tls, nats))
}

/// Starts the three emulators with the stack's secrets, their seeds and extra flags, each
/// on a port it binds itself (`--port 0`) and then names on its first line. A port probed
/// free beforehand could be bound by a parallel test's server first, and the stack would
/// then talk to that test's emulator.
pub(crate) async fn start_emulators(
    bin: &Path,
    dir: &Path,
    secrets: &Secrets,
    seeds: &BTreeMap<Product, Value>,
    emulator_args: &BTreeMap<Product, Vec<String>>,
    prefix: &str,
) -> anyhow::Result<BTreeMap<Product, Emulator>> {
    let mut started = Vec::new();
    for product in PRODUCTS {
        let name = product_name(product);
        let mut args = vec![
            "--product".to_owned(),
            name.to_owned(),
            "--port".to_owned(),
            "0".to_owned(),
            "--token".to_owned(),
            secrets.product_token.clone(),
            "--user".to_owned(),
            BITBUCKET_USER.to_owned(),
            "--password".to_owned(),
            secrets.bitbucket_password.clone(),
        ];
        if let Some(seed) = seeds.get(&product) {
            let path = dir.join(format!("{name}-seed.json"));
            std::fs::write(&path, serde_json::to_vec(seed)?)?;
            args.extend(["--seed-file".to_owned(), path.display().to_string()]);
        }
        args.extend(emulator_args.get(&product).into_iter().flatten().cloned());
        let log = log_dir().join(format!("{prefix}-emulator-{name}.log"));
        let from = log_len(&log);
        let process = Tethered::spawn(&bin.join("emulator"), &args, &[], &log)?;
        started.push((product, from, process));
    }
    let mut emulators = BTreeMap::new();
    for (product, from, mut process) in started {
        let url = process
            .announced(from, EMULATOR_LISTENING, DEADLINE)
            .await?;
        emulators.insert(product, Emulator { url, process });
    }
    Ok(emulators)
}

/// The `[products.NAME]` sections: each emulator (or the proxy in front of it), its
/// credentials in the stack's secret files under `d`, and the test's extra keys.
pub(crate) fn product_sections(
    d: &str,
    emulators: &BTreeMap<Product, Emulator>,
    proxies: &BTreeMap<Product, proxy::FaultyProxy>,
    product_config: &BTreeMap<Product, String>,
) -> String {
    let mut sections = String::new();
    for product in PRODUCTS {
        let name = product_name(product);
        // Bitbucket refuses HTTP access tokens on its admin endpoints (BSERV-10482).
        let auth = match product {
            Product::Bitbucket => {
                format!("user = \"{BITBUCKET_USER}\"\npassword_file = \"{d}/bitbucket-password\"")
            }
            _ => format!("token_file = \"{d}/product-token\""),
        };
        let url = match proxies.get(&product) {
            Some(proxy) => proxy.url(),
            None => emulators[&product].url.clone(),
        };
        sections.push_str(&format!(
            "\n[products.{name}]\nendpoint = \"{url}\"\n{auth}\n{}\n",
            product_config
                .get(&product)
                .map(String::as_str)
                .unwrap_or_default(),
        ));
    }
    sections
}

/// A lazily connected client of the control API at `endpoint` that sends `token`; an
/// `https://` endpoint is verified against `ca` (PEM).
pub(crate) fn client_of(endpoint: &str, token: &str, ca: Option<&str>) -> anyhow::Result<Client> {
    let token: MetadataValue<Ascii> = format!("Bearer {token}").parse()?;
    let mut channel = Channel::from_shared(endpoint.to_owned())?;
    if let Some(ca) = ca {
        channel = channel.tls_config(
            ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca.as_bytes())),
        )?;
    }
    Ok(ControlServiceClient::with_interceptor(
        channel.connect_lazy(),
        BearerToken(token),
    ))
}

/// Writes a secret file readable by its owner only, as a Kubernetes Secret mount with
/// `defaultMode: 0400` would be.
pub(crate) fn write_secret(path: PathBuf, contents: impl AsRef<[u8]>) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(&path, contents)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
}
