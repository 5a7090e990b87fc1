//! Bearer-token authentication of the control API: every call must carry
//! `authorization: Bearer <token>` with the configured token, else it is answered
//! `UNAUTHENTICATED`. Health and reflection are served without it.
//!
//! The token is kept only as its SHA-256, and a presented token is compared by digest in
//! constant time, so neither the comparison's timing nor its length tells anything about
//! the token. `Debug` prints no part of it.

use std::fmt;

use config::Secret;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::{Request, Status, service::Interceptor};

/// The tonic interceptor that checks the bearer token.
#[derive(Clone)]
pub struct BearerAuth {
    digest: [u8; 32],
}

impl BearerAuth {
    pub fn new(token: &Secret) -> BearerAuth {
        BearerAuth {
            digest: Sha256::digest(token.expose().as_bytes()).into(),
        }
    }

    /// Whether `presented` is the token.
    fn accepts(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        digest.ct_eq(&self.digest).into()
    }
}

impl fmt::Debug for BearerAuth {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("BearerAuth([redacted])")
    }
}

impl Interceptor for BearerAuth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(value) = request.metadata().get("authorization") else {
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
        match presented {
            Some(token) if self.accepts(token) => Ok(request),
            Some(_) => Err(Status::unauthenticated("invalid bearer token")),
            None => Err(Status::unauthenticated(
                "the authorization header is not `Bearer <token>`",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(auth: &mut BearerAuth, header: Option<&str>) -> Result<(), Status> {
        let mut request = Request::new(());
        if let Some(header) = header {
            request
                .metadata_mut()
                .insert("authorization", header.parse().expect("ascii"));
        }
        auth.call(request).map(|_| ())
    }

    #[test]
    fn the_right_token_passes_in_any_case_of_the_scheme() {
        let mut auth = BearerAuth::new(&Secret::new("s3cret"));
        assert!(call(&mut auth, Some("Bearer s3cret")).is_ok());
        assert!(call(&mut auth, Some("bearer s3cret")).is_ok());
    }

    #[test]
    fn a_missing_wrong_or_malformed_token_is_unauthenticated() {
        let mut auth = BearerAuth::new(&Secret::new("s3cret"));
        for header in [
            None,
            Some("Bearer nope"),
            Some("s3cret"),
            Some("Basic s3cret"),
        ] {
            let status = call(&mut auth, header).expect_err("refused");
            assert_eq!(status.code(), tonic::Code::Unauthenticated, "{header:?}");
        }
    }

    #[test]
    fn debug_shows_nothing_of_the_token() {
        let auth = BearerAuth::new(&Secret::new("s3cret"));
        assert_eq!(format!("{auth:?}"), "BearerAuth([redacted])");
    }
}
