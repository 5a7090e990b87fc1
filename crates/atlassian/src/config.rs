//! Client settings: where the product is, how to authenticate, how hard to push it, and
//! each product's own choices (Jira's user-listing flavour, Confluence's long-task wait,
//! Bitbucket's default group).
//!
//! Defaults live in one place, [`Connection::new`]; `validate` does no IO.

use std::time::Duration;

use ::config::Secret;
use url::Url;

use crate::{Error, Product};

/// Settings for [`crate::Client::new`]: the connection plus the product's own settings,
/// whose variant also chooses the product.
#[derive(Clone, Debug)]
pub struct Settings {
    pub connection: Connection,
    pub product: ProductSettings,
}

/// Settings every product shares.
#[derive(Clone, Debug)]
pub struct Connection {
    /// The product's base URL including any context path, e.g. `https://host/jira`.
    pub endpoint: Url,
    /// How to authenticate; prefer a personal access token for service accounts.
    pub auth: Auth,
    /// The most requests in flight at once.
    pub max_concurrency: usize,
    /// A client-side ceiling in requests per second, on top of the pace the product's
    /// `X-RateLimit-*` headers ask for; `None` for no ceiling of our own.
    pub max_requests_per_second: Option<f64>,
    /// The whole request, from connect to the last body byte.
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// Retries after the first attempt, for 429, 502, 503, 504 and transport errors.
    pub max_retries: u32,
    /// The first wait of the exponential backoff when the product sends no `Retry-After`.
    pub initial_backoff: Duration,
    /// The longest wait between two attempts, whatever `Retry-After` says.
    pub max_backoff: Duration,
    /// Page size for listings; `None` uses each endpoint's documented default.
    pub page_size: Option<u32>,
    /// PEM certificates (a CA bundle) trusted as roots besides the system's, for a product
    /// whose certificate a private CA signed (the `ca_file` setting); `None` for the system's
    /// roots only.
    pub ca: Option<String>,
    /// The largest response body read, in bytes; a larger one is
    /// [`Error::ResponseTooLarge`], read chunk by chunk and never buffered whole.
    pub max_body_bytes: usize,
    /// The most pages one listing reads; a listing with more fails as
    /// [`Error::Incomplete`] instead of paging on forever.
    pub max_pages: usize,
}

/// [`Connection::max_body_bytes`] by default: 64 MiB, far above any page keysync asks for.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 << 20;
/// [`Connection::max_pages`] by default: 100,000 pages, 5 million group members at Jira's
/// 50 a page.
pub const DEFAULT_MAX_PAGES: usize = 100_000;

impl Connection {
    /// A connection with the default limits: 16 requests in flight, no rate ceiling of our
    /// own, 30 s request and 10 s connect timeouts, 8 retries starting at 250 ms and capped
    /// at 60 s, documented page sizes, bodies of at most [`DEFAULT_MAX_BODY_BYTES`] and
    /// listings of at most [`DEFAULT_MAX_PAGES`] pages.
    pub fn new(endpoint: Url, auth: Auth) -> Connection {
        Connection {
            endpoint,
            auth,
            max_concurrency: 16,
            max_requests_per_second: None,
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            max_retries: 8,
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(60),
            page_size: None,
            ca: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_pages: DEFAULT_MAX_PAGES,
        }
    }

    /// The certificates of [`Connection::ca`], none when it is not set, or why it is not a
    /// PEM bundle (for an error that names `ca_file`).
    pub fn ca_certificates(&self) -> Result<Vec<reqwest::Certificate>, String> {
        let Some(pem) = &self.ca else {
            return Ok(Vec::new());
        };
        let certificates = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
            .map_err(|error| format!("not a PEM certificate bundle: {error}"))?;
        if certificates.is_empty() {
            return Err("holds no PEM certificate (`-----BEGIN CERTIFICATE-----`)".to_owned());
        }
        Ok(certificates)
    }

    /// Checks the settings without IO.
    pub fn validate(&self, product: Product) -> Result<(), Error> {
        let invalid = |message: &str| {
            Err(Error::Config {
                product,
                message: message.to_owned(),
            })
        };
        if !matches!(self.endpoint.scheme(), "http" | "https") {
            return invalid("endpoint must be an http or https URL");
        }
        if !self.endpoint.username().is_empty() || self.endpoint.password().is_some() {
            // It would be printed in errors, logs and `Debug`: credentials go in `auth`.
            return invalid("endpoint must not carry a user or password");
        }
        if self.endpoint.query().is_some() {
            return invalid("endpoint must not have a query");
        }
        if self.endpoint.cannot_be_a_base() {
            return invalid("endpoint must be a base URL");
        }
        if self.max_concurrency == 0 {
            return invalid("max_concurrency must be at least 1");
        }
        if let Some(rate) = self.max_requests_per_second
            && !(rate.is_finite() && rate > 0.0)
        {
            return invalid("max_requests_per_second must be a positive number");
        }
        if self.page_size == Some(0) {
            return invalid("page_size must be at least 1");
        }
        if self.max_body_bytes == 0 {
            return invalid("max_body_bytes must be at least 1");
        }
        if self.max_pages == 0 {
            return invalid("max_pages must be at least 1");
        }
        if let Err(reason) = self.ca_certificates() {
            return invalid(&format!("`ca_file` {reason}"));
        }
        match &self.auth {
            Auth::Bearer(token) if token.expose().is_empty() => invalid("the token is empty"),
            Auth::Basic { user, .. } if user.is_empty() => invalid("the user name is empty"),
            _ => Ok(()),
        }
    }
}

/// How requests authenticate.
#[derive(Clone, Debug)]
pub enum Auth {
    /// A personal access token (Jira 8.14+, Confluence 7.9+), sent as
    /// `Authorization: Bearer <token>`. Not for Bitbucket with an HTTP access token: its
    /// administrative endpoints, every one the Bitbucket client calls, refuse those (Atlassian
    /// KB "How to use OAuth2 tokens for administrative endpoints of Bitbucket Data Center",
    /// BSERV-10482); only an OAuth 2.0 access token works there as a bearer token.
    Bearer(Secret),
    /// `Authorization: Basic`; failed basic logins can put a CAPTCHA on the account.
    Basic { user: String, password: Secret },
}

/// The product-specific settings; the variant chooses the product.
#[derive(Clone, Debug)]
pub enum ProductSettings {
    Jira(JiraSettings),
    Confluence(ConfluenceSettings),
    Bitbucket(BitbucketSettings),
}

/// Jira's own settings.
#[derive(Clone, Debug)]
pub struct JiraSettings {
    /// How to list all users; see [`UserListing`].
    pub user_listing: UserListing,
}

/// How the Jira client lists every user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserListing {
    /// `GET /rest/api/2/user/list`, cursor paging: Jira 10.3 LTS, 11.x and later.
    Cursor,
    /// `GET /rest/api/2/user/search` with username prefixes, for the versions without
    /// `/user/list`: Jira 10.0 to 10.2, whose search answers at most 100 users and ignores
    /// `startAt` (JRASERVER-78660), and Jira 9.x and older, whose search stops at the first
    /// 1,000 users. A query that answers a cap-sized result set (10, 100 or 1,000 users) that
    /// `startAt` cannot page past is refined by prefix, results are deduplicated by user key,
    /// and a listing that cannot be proven complete fails.
    PrefixSearch,
    /// Reads `/rest/api/2/serverInfo` once and picks `Cursor` from 10.3 on, else
    /// `PrefixSearch`.
    Auto,
}

/// Confluence's own settings.
#[derive(Clone, Debug)]
pub struct ConfluenceSettings {
    /// How long a delete waits for its long task before failing.
    pub long_task_timeout: Duration,
    /// The first wait between two polls of a long task; it doubles up to one second.
    pub long_task_poll_interval: Duration,
}

impl ConfluenceSettings {
    /// The recommended settings: wait up to 5 minutes for a delete, polling from every
    /// 100 ms up to every second.
    pub fn recommended() -> ConfluenceSettings {
        ConfluenceSettings {
            long_task_timeout: Duration::from_secs(300),
            long_task_poll_interval: Duration::from_millis(100),
        }
    }
}

/// Bitbucket's own settings.
#[derive(Clone, Debug)]
pub struct BitbucketSettings {
    /// Adds new users to the default group (`addToDefaultGroup`), which usually grants the
    /// licence; Bitbucket answers 403 when that would exceed the licence.
    pub add_to_default_group: bool,
}
