//! The client-credentials access token: requested on first use, shared by every request,
//! and requested again at 80 % of its `expires_in` (Keycloak issues no refresh token for
//! this grant), or at once when Keycloak rejects it with a 401.
//!
//! The lifetime is the server's word, so it is never trusted with arithmetic that can
//! overflow: it is cut to [`MAX_TOKEN_LIFETIME`] (one day; a negative `expires_in` is zero,
//! see `client::token_lifetime`), 80 % of it is taken in integer arithmetic, and the
//! renewal instant is a checked addition (on overflow the token is renewed at once).

use std::{
    fmt,
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::sync::Mutex;

use crate::client::MAX_TOKEN_LIFETIME;

/// A bearer token; its `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct AccessToken(Arc<str>);

impl AccessToken {
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("AccessToken([redacted])")
    }
}

/// The cached token and when to replace it.
#[derive(Default)]
pub(crate) struct TokenCache {
    current: Mutex<Option<(AccessToken, Instant)>>,
}

impl TokenCache {
    /// The cached token, or a new one from `request` (which answers the token and its
    /// lifetime). Concurrent callers wait for one request instead of each sending one.
    pub(crate) async fn get<F, Fut, E>(&self, request: F) -> Result<AccessToken, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(String, Duration), E>>,
    {
        let mut current = self.current.lock().await;
        if let Some((token, renew_at)) = current.as_ref()
            && Instant::now() < *renew_at
        {
            return Ok(token.clone());
        }
        let requested_at = Instant::now();
        let (value, lifetime) = request().await?;
        let token = AccessToken(Arc::from(value));
        let renew_after = lifetime.min(MAX_TOKEN_LIFETIME) / 5 * 4;
        let renew_at = requested_at
            .checked_add(renew_after)
            .unwrap_or(requested_at);
        *current = Some((token.clone(), renew_at));
        Ok(token)
    }

    /// Drops `rejected` so the next [`TokenCache::get`] requests a new token; a token
    /// that another request already replaced stays.
    pub(crate) async fn invalidate(&self, rejected: &AccessToken) {
        let mut current = self.current.lock().await;
        if current.as_ref().is_some_and(|(token, _)| token == rejected) {
            *current = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    async fn issue(counter: &AtomicU32, lifetime: Duration) -> Result<(String, Duration), ()> {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        Ok((format!("token-{n}"), lifetime))
    }

    #[tokio::test]
    async fn token_is_reused_until_80_percent_of_its_lifetime() {
        let cache = TokenCache::default();
        let issued = AtomicU32::new(0);
        let long = Duration::from_secs(300);
        let first = cache.get(|| issue(&issued, long)).await.expect("token");
        let second = cache.get(|| issue(&issued, long)).await.expect("token");
        assert_eq!(first, second);
        assert_eq!(issued.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn expired_token_is_requested_again() {
        let cache = TokenCache::default();
        let issued = AtomicU32::new(0);
        // A zero lifetime is past its renewal point at once.
        let first = cache
            .get(|| issue(&issued, Duration::ZERO))
            .await
            .expect("token");
        let second = cache
            .get(|| issue(&issued, Duration::ZERO))
            .await
            .expect("token");
        assert_ne!(first, second);
        assert_eq!(issued.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn the_longest_lifetime_neither_panics_nor_outlives_a_day() {
        let cache = TokenCache::default();
        let issued = AtomicU32::new(0);
        let first = cache
            .get(|| issue(&issued, Duration::MAX))
            .await
            .expect("token");
        let second = cache
            .get(|| issue(&issued, Duration::MAX))
            .await
            .expect("token");
        assert_eq!(first, second);
        let renew_at = cache.current.lock().await.as_ref().map(|(_, at)| *at);
        let day = Instant::now() + MAX_TOKEN_LIFETIME;
        assert!(renew_at.is_some_and(|at| at < day), "{renew_at:?}");
    }

    #[tokio::test]
    async fn rejected_token_is_replaced_once() {
        let cache = TokenCache::default();
        let issued = AtomicU32::new(0);
        let long = Duration::from_secs(300);
        let first = cache.get(|| issue(&issued, long)).await.expect("token");
        cache.invalidate(&first).await;
        let second = cache.get(|| issue(&issued, long)).await.expect("token");
        assert_ne!(first, second);
        // A second request that still holds the first token does not drop the new one.
        cache.invalidate(&first).await;
        let third = cache.get(|| issue(&issued, long)).await.expect("token");
        assert_eq!(second, third);
        assert_eq!(format!("{third:?}"), "AccessToken([redacted])");
    }
}
