//! The connection to the control plane: the endpoint (`https://` verified against
//! `--ca-file`, else the system's roots, presenting `--client-cert` and `--client-key`
//! when the control plane asks for a certificate), the bearer token read from its file,
//! and who the caller is (sent as `keysync-user`, recorded on the runs it starts).

use std::{path::Path, time::Duration};

use proto::v1::control_service_client::ControlServiceClient;
use tonic::{
    Request, Status,
    metadata::{Ascii, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
};

use crate::error::Error;

pub type Client = ControlServiceClient<InterceptedService<Channel, Credentials>>;

/// Adds the token and the caller's name to every call. `Debug` shows neither.
#[derive(Clone)]
pub struct Credentials {
    authorization: MetadataValue<Ascii>,
    user: Option<MetadataValue<Ascii>>,
}

impl Interceptor for Credentials {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let metadata = request.metadata_mut();
        metadata.insert("authorization", self.authorization.clone());
        if let Some(user) = &self.user {
            metadata.insert("keysync-user", user.clone());
        }
        Ok(request)
    }
}

/// The PEM files of an `https://` connection: the CA to trust, and the client certificate
/// and key for mutual TLS.
#[derive(Debug, Default, Clone, Copy)]
pub struct TlsFiles<'a> {
    pub ca: Option<&'a Path>,
    pub client_cert: Option<&'a Path>,
    pub client_key: Option<&'a Path>,
}

impl TlsFiles<'_> {
    /// The client configuration these files make.
    fn config(&self) -> Result<ClientTlsConfig, Error> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| Error::PemFile {
                path: path.to_owned(),
                source,
            })
        };
        let mut tls = match self.ca {
            Some(path) => ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(path)?)),
            None => ClientTlsConfig::new().with_enabled_roots(),
        };
        if let (Some(cert), Some(key)) = (self.client_cert, self.client_key) {
            tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        Ok(tls)
    }

    fn any(&self) -> bool {
        self.ca.is_some() || self.client_cert.is_some() || self.client_key.is_some()
    }
}

/// A connected client and where it is connected.
pub struct Connection {
    pub client: Client,
    pub endpoint: String,
}

impl Connection {
    /// Reads the token (and the TLS files, if any) and connects.
    pub async fn open(
        endpoint: &str,
        token_file: Option<&Path>,
        tls: &TlsFiles<'_>,
    ) -> Result<Connection, Error> {
        let path = token_file.ok_or(Error::NoToken)?;
        let token = std::fs::read_to_string(path).map_err(|source| Error::TokenFile {
            path: path.to_owned(),
            source,
        })?;
        let token = token.trim();
        let authorization: MetadataValue<Ascii> = format!("Bearer {token}")
            .parse()
            .ok()
            .filter(|_| !token.is_empty() && !token.contains(char::is_whitespace))
            .ok_or_else(|| Error::BadToken {
                path: path.to_owned(),
            })?;
        let user = std::env::var("USER")
            .or_else(|_| std::env::var("USERNAME"))
            .ok()
            .and_then(|user| format!("{user} (keysync cli)").parse().ok());
        let mut channel =
            Endpoint::from_shared(endpoint.to_owned()).map_err(|_| Error::Endpoint {
                endpoint: endpoint.to_owned(),
            })?;
        if endpoint.trim().starts_with("https://") {
            channel = channel
                .tls_config(tls.config()?)
                .map_err(|source| Error::Tls {
                    endpoint: endpoint.to_owned(),
                    source,
                })?;
        } else if tls.any() {
            return Err(Error::CaWithoutTls {
                endpoint: endpoint.to_owned(),
            });
        }
        let channel = channel
            .connect_timeout(Duration::from_secs(10))
            .connect()
            .await
            .map_err(|source| Error::Connect {
                endpoint: endpoint.to_owned(),
                source,
            })?;
        let client = ControlServiceClient::with_interceptor(
            channel,
            Credentials {
                authorization,
                user,
            },
        )
        .max_decoding_message_size(64 * 1024 * 1024);
        Ok(Connection {
            client,
            endpoint: endpoint.to_owned(),
        })
    }

    /// A client to call with (clients are cheap handles to one connection).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The error a person reads for a failed call.
    pub fn error(&self, status: Status) -> Error {
        let message = status.message().to_owned();
        match status.code() {
            tonic::Code::Unauthenticated => Error::Unauthenticated { message },
            tonic::Code::PermissionDenied => Error::PermissionDenied { message },
            tonic::Code::Unavailable => Error::Unavailable {
                endpoint: self.endpoint.clone(),
                message,
            },
            code => Error::Rpc { code, message },
        }
    }
}
