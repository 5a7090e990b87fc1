//! Who may call what on the control API. Every call must carry
//! `authorization: Bearer <token>`; the token says the caller's [`Role`], and [`ACCESS`],
//! the one table of every RPC, says which roles may make the call. A call without a known
//! token is answered `UNAUTHENTICATED`, a call the role may not make `PERMISSION_DENIED`.
//! Health and reflection are other services, served without a token.
//!
//! The tokens come from `[control_plane]`: `token` is the operator's (the CLI: every
//! call), `service_token` the other services' (the planner and the appliers: `GetRun` and
//! `ReportResults`), and `tokens_file` lists more, each with its role (for rotation). Each is kept only as its SHA-256, and a presented token is compared
//! by digest with every configured one in constant time, so neither the comparison's
//! timing nor its length tells anything about a token. `Debug` prints no part of them.
//!
//! [`BearerAuth::layer`] wraps the generated gRPC server, because the path of the call
//! (its method) is only known there: tonic's interceptors do not see it.
//!
//! Beneath the tokens, [`server_tls`] is the transport: TLS when `[control_plane]
//! tls_cert_file` and `tls_key_file` are set, and with `tls_client_ca_file` mutual TLS
//! (a client without a certificate of that CA cannot connect at all). Without TLS the
//! settings allow only a loopback `listen`, unless `allow_plaintext = true`.

use std::{
    convert::Infallible,
    fmt,
    sync::Arc,
    task::{Context, Poll},
};

use config::Secret;
use futures::future::Either;
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};
use tonic::{
    Status,
    codegen::{Service, http},
    server::NamedService,
    transport::{Certificate, Identity, ServerTlsConfig},
};

use crate::settings::{ApiRole, ControlPlaneSettings};

/// What a caller is, by its token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A person or a script with the operator token (`[control_plane] token`), through
    /// the CLI: every call.
    Operator,
    /// A keysync service with `[control_plane] service_token`: the appliers, which ask
    /// whether a run is cancelled and report results.
    Service,
}

/// Every RPC of `keysync.v1.ControlService` and the roles that may call it. A method
/// missing here is refused to everyone (a test checks that the table names exactly the
/// methods of the service).
pub const ACCESS: &[(&str, &[Role])] = &[
    ("StartSync", &[Role::Operator]),
    ("GetRun", &[Role::Operator, Role::Service]),
    ("WatchRun", &[Role::Operator]),
    ("ListRuns", &[Role::Operator]),
    ("ListChanges", &[Role::Operator]),
    ("ListDiagnostics", &[Role::Operator]),
    ("ApproveRun", &[Role::Operator]),
    ("CancelRun", &[Role::Operator]),
    ("TestConnection", &[Role::Operator]),
    ("ReportResults", &[Role::Operator, Role::Service]),
];

/// The roles that may call `method` (its name, as `GetRun`); none for an unknown one.
pub fn allowed(method: &str) -> &'static [Role] {
    ACCESS
        .iter()
        .find(|(name, _)| *name == method)
        .map_or(&[], |(_, roles)| *roles)
}

/// The configured tokens, by role, as their digests.
#[derive(Clone)]
pub struct BearerAuth {
    tokens: Arc<Vec<([u8; 32], Role)>>,
}

impl BearerAuth {
    /// The operator token alone (no service role).
    pub fn new(token: &Secret) -> BearerAuth {
        BearerAuth::with_tokens([(token, Role::Operator)])
    }

    /// Every token of `[control_plane]`: `token` (operator) and `service_token`.
    pub fn from_settings(settings: &ControlPlaneSettings) -> BearerAuth {
        let tokens = settings.role_tokens();
        BearerAuth::with_tokens(tokens.iter().map(|(role, token)| {
            let role = match role {
                ApiRole::Operator => Role::Operator,
                ApiRole::Service => Role::Service,
            };
            (token, role)
        }))
    }

    pub fn with_tokens<'a>(tokens: impl IntoIterator<Item = (&'a Secret, Role)>) -> BearerAuth {
        let tokens = tokens
            .into_iter()
            .map(|(token, role)| (digest(token.expose()), role))
            .collect();
        BearerAuth {
            tokens: Arc::new(tokens),
        }
    }

    /// The role of `presented`, if it is a configured token. Every configured token is
    /// compared, in constant time, whichever matches.
    fn role(&self, presented: &str) -> Option<Role> {
        let presented = digest(presented);
        let mut found = None;
        for (token, role) in self.tokens.iter() {
            let matches: Choice = presented.ct_eq(token);
            if bool::from(matches) {
                found = Some(*role);
            }
        }
        found
    }

    /// Checks the `authorization` header of a call of `path`
    /// (`/keysync.v1.ControlService/GetRun`): answers the caller's role, or the status
    /// to answer instead.
    pub fn authorize(&self, path: &str, headers: &http::HeaderMap) -> Result<Role, Status> {
        let Some(value) = headers.get(http::header::AUTHORIZATION) else {
            return Err(Status::unauthenticated(
                "missing bearer token: send `authorization: Bearer <token>`",
            ));
        };
        let presented = value.to_str().ok().and_then(|value| {
            let (scheme, token) = value.trim().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then_some(token.trim())
        });
        let role = match presented {
            Some(token) => match self.role(token) {
                Some(role) => role,
                None => return Err(Status::unauthenticated("invalid bearer token")),
            },
            None => {
                return Err(Status::unauthenticated(
                    "the authorization header is not `Bearer <token>`",
                ));
            }
        };
        let method = path.rsplit('/').next().unwrap_or_default();
        if allowed(method).contains(&role) {
            Ok(role)
        } else {
            Err(Status::permission_denied(format!(
                "the {role:?} role may not call {method}"
            )))
        }
    }

    /// `service` behind this check.
    pub fn layer<S>(self, service: S) -> Authorized<S> {
        Authorized {
            inner: service,
            auth: self,
        }
    }
}

/// The TLS the API serves, when `[control_plane] tls_cert` and `tls_key` are set; with
/// `tls_client_ca`, clients must present a certificate that CA signed. The PEM is parsed
/// when the server is built ([`tonic::transport::Server::tls_config`]).
pub fn server_tls(settings: &ControlPlaneSettings) -> Option<ServerTlsConfig> {
    let (cert, key) = (settings.tls_cert.as_ref()?, settings.tls_key.as_ref()?);
    let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(cert, key.expose()));
    if let Some(client_ca) = &settings.tls_client_ca {
        tls = tls.client_ca_root(Certificate::from_pem(client_ca));
    }
    Some(tls)
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl fmt::Debug for BearerAuth {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("BearerAuth([redacted])")
    }
}

/// A gRPC service behind [`BearerAuth`]: a refused call never reaches it. The caller's
/// [`Role`] is put in the request's extensions.
#[derive(Clone, Debug)]
pub struct Authorized<S> {
    inner: S,
    auth: BearerAuth,
}

impl<S: NamedService> NamedService for Authorized<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> Service<http::Request<B>> for Authorized<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>, Error = Infallible>,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Either<std::future::Ready<Result<Self::Response, Infallible>>, S::Future>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        match self.auth.authorize(request.uri().path(), request.headers()) {
            Ok(role) => {
                request.extensions_mut().insert(role);
                Either::Right(self.inner.call(request))
            }
            Err(status) => Either::Left(std::future::ready(Ok(status.into_http()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    const OPERATOR: &str = "operator-token-0123456789abcdef-0123";
    const SERVICE: &str = "service-token-0123456789abcdef-01234";

    fn auth() -> BearerAuth {
        let (operator, service) = (Secret::new(OPERATOR), Secret::new(SERVICE));
        BearerAuth::with_tokens([(&operator, Role::Operator), (&service, Role::Service)])
    }

    fn call(auth: &BearerAuth, method: &str, header: Option<&str>) -> Result<Role, tonic::Code> {
        let mut headers = http::HeaderMap::new();
        if let Some(header) = header {
            headers.insert("authorization", header.parse().expect("ascii"));
        }
        auth.authorize(&format!("/keysync.v1.ControlService/{method}"), &headers)
            .map_err(|status| status.code())
    }

    #[test]
    fn the_right_token_passes_in_any_case_of_the_scheme() {
        let auth = auth();
        for header in [format!("Bearer {OPERATOR}"), format!("bearer {OPERATOR}")] {
            assert_eq!(call(&auth, "ListRuns", Some(&header)), Ok(Role::Operator));
        }
        assert_eq!(
            call(&auth, "GetRun", Some(&format!("Bearer {SERVICE}"))),
            Ok(Role::Service)
        );
    }

    #[test]
    fn a_missing_wrong_or_malformed_token_is_unauthenticated() {
        let auth = auth();
        for header in [
            None,
            Some("Bearer nope"),
            Some(OPERATOR),
            Some(&format!("Basic {OPERATOR}")),
        ] {
            let code = call(&auth, "GetRun", header).expect_err("refused");
            assert_eq!(code, tonic::Code::Unauthenticated, "{header:?}");
        }
    }

    #[test]
    fn the_service_role_may_only_read_runs_and_report_results() {
        let auth = auth();
        let service = format!("Bearer {SERVICE}");
        let operator = format!("Bearer {OPERATOR}");
        for (method, _) in ACCESS {
            assert_eq!(
                call(&auth, method, Some(&operator)),
                Ok(Role::Operator),
                "the operator may call everything: {method}"
            );
            let answer = call(&auth, method, Some(&service));
            if ["GetRun", "ReportResults"].contains(method) {
                assert_eq!(answer, Ok(Role::Service), "{method}");
            } else {
                assert_eq!(answer, Err(tonic::Code::PermissionDenied), "{method}");
            }
        }
        assert_eq!(
            call(&auth, "Unknown", Some(&operator)),
            Err(tonic::Code::PermissionDenied),
            "a method not in the table"
        );
    }

    #[test]
    fn the_table_names_every_method_of_the_control_service_once() {
        let files = prost_types::FileDescriptorSet::decode(proto::FILE_DESCRIPTOR_SET)
            .expect("the descriptor set decodes");
        let mut methods: Vec<String> = files
            .file
            .iter()
            .filter(|file| file.package() == "keysync.v1")
            .flat_map(|file| &file.service)
            .filter(|service| service.name() == "ControlService")
            .flat_map(|service| &service.method)
            .map(|method| method.name().to_owned())
            .collect();
        methods.sort();
        let mut table: Vec<String> = ACCESS.iter().map(|(name, _)| (*name).to_owned()).collect();
        table.sort();
        assert_eq!(table, methods);
    }

    #[test]
    fn debug_shows_nothing_of_the_tokens() {
        assert_eq!(format!("{:?}", auth()), "BearerAuth([redacted])");
    }
}
