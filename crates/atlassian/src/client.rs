//! What the three product clients share above the HTTP layer: the client type itself with
//! its constructor and observer ([`product_client!`], over a [`ClientCore`] built from the
//! [`Connection`]), sending, and reading a listing page by page ([`ClientCore::all_pages`]).
//!
//! Paging is one loop for every product; each listing says only how its pages work, through
//! the type its pages decode as ([`Paged`]):
//! - where the listing starts, and how a request asks for the page at a [`Position`]: an
//!   [`Offset`] (Confluence and Bitbucket `start` and `limit`, Jira `startAt` and
//!   `maxResults`) or Jira's `cursor` (in `jira.rs`);
//! - the page size, where the endpoint's differs from the product's default;
//! - whether a page is the last and where the next one starts (Jira `isLast` and
//!   `nextCursor`, Confluence `_links.next`, Bitbucket `isLastPage` and `nextPageStart`).
//!
//! A listing that cannot be proven complete fails ([`Error::Incomplete`], with the reason);
//! it never ends early and never loops forever. The loop proves progress:
//! - a page that says there is more must say where the next one starts, and each product
//!   checks its page against the request (Jira `startAt`, Confluence `start` and `size`,
//!   Bitbucket `start` and `nextPageStart`): [`Paged::split`] answers the reason when they
//!   disagree;
//! - the next position must differ from every one already asked for (a repeated Jira
//!   `nextCursor`) and, for offsets, lie strictly after the current one (a `start` or
//!   `nextPageStart` that does not advance); offsets are added with checked arithmetic;
//! - more than [`MAX_EMPTY_PAGES`] empty pages in a row that say there is more, or more than
//!   [`Connection::max_pages`] pages in all, fail the listing.
//!
//! An empty page that says there is more does not end a listing: at a Confluence or Jira
//! offset it cannot advance and fails; a Bitbucket `nextPageStart` past it or a new Jira
//! cursor may move on, and counts towards [`MAX_EMPTY_PAGES`].

use std::collections::HashSet;
use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::config::Connection;
use crate::http::{ApiRequest, ApiResponse, Http};
use crate::{Error, Product, RequestObserver};

/// Defines a product's client type: a [`ClientCore`] with the product's settings and default
/// page size, plus the listed fields of the product's own, which start out as their
/// `Default`; and its `new` and `with_observer`, the same for every product.
macro_rules! product_client {
    (
        $(#[$attr:meta])*
        pub struct $client:ident($product:expr, $settings:ty, $default_page_size:expr) {
            $($(#[$field_attr:meta])* $field:ident: $field_type:ty,)*
        }
    ) => {
        $(#[$attr])*
        #[derive(Debug)]
        pub struct $client {
            core: $crate::client::ClientCore<$settings>,
            $($(#[$field_attr])* $field: $field_type,)*
        }

        impl $client {
            /// Builds the client; validates the settings and does no IO.
            pub fn new(
                connection: $crate::config::Connection,
                settings: $settings,
            ) -> Result<$client, $crate::Error> {
                Ok($client {
                    core: $crate::client::ClientCore::new(
                        $product,
                        connection,
                        settings,
                        $default_page_size,
                    )?,
                    $($field: Default::default(),)*
                })
            }

            /// Tells `observer` of every HTTP attempt this client makes.
            pub fn with_observer(
                mut self,
                observer: std::sync::Arc<dyn $crate::RequestObserver>,
            ) -> $client {
                self.core.set_observer(observer);
                self
            }
        }
    };
}

pub(crate) use product_client;

/// The HTTP layer, the product's own settings and its page sizes: everything a product client
/// holds apart from what is its alone.
#[derive(Debug)]
pub(crate) struct ClientCore<S> {
    http: Http,
    /// The product's own settings.
    pub(crate) settings: S,
    /// [`Connection::page_size`]; `None` uses each endpoint's default.
    page_size: Option<u32>,
    /// The product's default page size, for the listings that do not set their own.
    default_page_size: u32,
    /// [`Connection::max_pages`].
    max_pages: usize,
}

/// Empty pages in a row that say there is more before a listing fails: a server that keeps
/// answering "more" with nothing in it must not keep a client paging.
pub(crate) const MAX_EMPTY_PAGES: usize = 10;

impl<S> ClientCore<S> {
    /// Validates `connection` and builds the HTTP layer for `product`, whose listings ask for
    /// `default_page_size` items a page unless the connection or the listing says otherwise;
    /// does no IO.
    pub(crate) fn new(
        product: Product,
        connection: Connection,
        settings: S,
        default_page_size: u32,
    ) -> Result<ClientCore<S>, Error> {
        let page_size = connection.page_size;
        let max_pages = connection.max_pages;
        Ok(ClientCore {
            http: Http::new(product, connection)?,
            settings,
            page_size,
            default_page_size,
            max_pages,
        })
    }

    /// Tells `observer` of every HTTP attempt from now on.
    pub(crate) fn set_observer(&mut self, observer: Arc<dyn RequestObserver>) {
        self.http.set_observer(observer);
    }

    /// The most requests in flight at once, for callers that fan out.
    pub(crate) fn max_concurrency(&self) -> usize {
        self.http.max_concurrency()
    }

    /// [`Connection::max_pages`]: the most pages one listing reads.
    pub(crate) fn max_pages(&self) -> usize {
        self.max_pages
    }

    /// Whether requests carry a bearer token rather than Basic credentials.
    pub(crate) fn uses_bearer_token(&self) -> bool {
        self.http.uses_bearer_token()
    }

    /// Sends `request` (with the HTTP layer's retries) and answers whatever status came back.
    pub(crate) async fn send(&self, request: &ApiRequest) -> Result<ApiResponse, Error> {
        self.http.send(request).await
    }

    /// Sends `request`; any status but 2xx is the error that status means.
    pub(crate) async fn send_ok(&self, request: &ApiRequest) -> Result<ApiResponse, Error> {
        let response = self.http.send(request).await?;
        if !response.is_success() {
            return Err(response.into_error());
        }
        Ok(response)
    }

    /// Every item of the listing `listing`, whose pages decode as `P`: asks for the first
    /// page, then for the next until a page says it is the last; fails as
    /// [`Error::Incomplete`] when the pages do not prove progress (see the module
    /// documentation). `what` names a page in errors.
    pub(crate) async fn all_pages<P: Paged>(
        &self,
        listing: &ApiRequest,
        what: &'static str,
    ) -> Result<Vec<P::Item>, Error> {
        let page_size = P::page_size(self.page_size, self.default_page_size);
        let incomplete = |reason: String| Error::Incomplete {
            product: self.http.product(),
            message: format!("{what}s: {reason}"),
        };
        let mut items = Vec::new();
        let mut asked: HashSet<String> = HashSet::new();
        let mut empty_in_a_row = 0;
        let mut position = P::first();
        for _ in 0..self.max_pages {
            asked.insert(position.key());
            let request = position.request(listing, page_size);
            let page: P = self.send_ok(&request).await?.json(what)?;
            let (page_items, next) = page.split(&position).map_err(incomplete)?;
            let Some(next) = next else {
                items.extend(page_items);
                return Ok(items);
            };
            empty_in_a_row = if page_items.is_empty() {
                empty_in_a_row + 1
            } else {
                0
            };
            if empty_in_a_row > MAX_EMPTY_PAGES {
                return Err(incomplete(format!(
                    "{empty_in_a_row} empty pages in a row say there is more"
                )));
            }
            if !next.advances_from(&position) {
                return Err(incomplete(format!(
                    "the page at {} points to {} next, which does not advance",
                    position.key(),
                    next.key()
                )));
            }
            if asked.contains(&next.key()) {
                return Err(incomplete(format!(
                    "the page at {} points back to {}, which was already read",
                    position.key(),
                    next.key()
                )));
            }
            items.extend(page_items);
            position = next;
        }
        Err(incomplete(format!(
            "more than {} pages (`max_pages`); the listing is not read on",
            self.max_pages
        )))
    }
}

/// Where a page of a listing starts, and how a request asks for that page.
pub(crate) trait Position {
    /// `listing` with the query parameters that ask for `page_size` items from here on.
    fn request(&self, listing: &ApiRequest, page_size: u32) -> ApiRequest;

    /// The position as it appears in errors, such as `start=200`; two positions with the
    /// same key ask for the same page.
    fn key(&self) -> String;

    /// Whether a listing that was at `previous` moves on by going here; a repeated key is
    /// caught apart from this.
    fn advances_from(&self, previous: &Self) -> bool {
        let _ = previous;
        true
    }
}

/// One page of a listing, as a product answers it, and so the listing's paging rules.
pub(crate) trait Paged: DeserializeOwned {
    type Item;
    type Position: Position + Default;

    /// The page size to ask for: the `configured` one ([`Connection::page_size`]), else the
    /// product's `default`.
    fn page_size(configured: Option<u32>, default: u32) -> u32 {
        configured.unwrap_or(default)
    }

    /// Where the listing starts.
    fn first() -> Self::Position {
        Self::Position::default()
    }

    /// The page's items, and where the next page starts; `None` when this page (found at
    /// `position`) says it is the last. `Err` holds why the page cannot be trusted: it
    /// disagrees with the request, or says there is more without saying where.
    fn split(self, position: &Self::Position) -> Result<Split<Self>, String>;
}

/// What [`Paged::split`] answers: the items of a page and where the next one starts.
pub(crate) type Split<P> = (Vec<<P as Paged>::Item>, Option<<P as Paged>::Position>);

/// Offset paging: the index of a page's first item and the page size, each in the query
/// parameter the product names it; by default `start` and `limit`, as most Atlassian REST
/// listings name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Offset {
    start_name: &'static str,
    limit_name: &'static str,
    start: u64,
}

impl Default for Offset {
    fn default() -> Offset {
        Offset::first("start", "limit")
    }
}

impl Offset {
    /// The first page, asked for as `{start_name}=0&{limit_name}={page size}`.
    pub(crate) fn first(start_name: &'static str, limit_name: &'static str) -> Offset {
        Offset {
            start_name,
            limit_name,
            start: 0,
        }
    }

    /// The page that starts at item `start`.
    pub(crate) fn at(self, start: u64) -> Offset {
        Offset { start, ..self }
    }

    /// The index of the page's first item.
    pub(crate) fn start(&self) -> u64 {
        self.start
    }

    /// The page just past `n_items` items from here; `Err` with the reason should that
    /// overflow.
    pub(crate) fn after(self, n_items: usize) -> Result<Offset, String> {
        u64::try_from(n_items)
            .ok()
            .and_then(|n_items| self.start.checked_add(n_items))
            .map(|start| self.at(start))
            .ok_or_else(|| {
                format!(
                    "{} {} plus {n_items} items overflows",
                    self.start_name, self.start
                )
            })
    }

    /// `Err` with the reason unless the page answered `answered` as its start, the one
    /// asked for.
    pub(crate) fn check_start(&self, answered: u64) -> Result<(), String> {
        if answered == self.start {
            return Ok(());
        }
        Err(format!(
            "asked for {}={} but the page says it starts at {answered}",
            self.start_name, self.start
        ))
    }
}

impl Position for Offset {
    fn request(&self, listing: &ApiRequest, page_size: u32) -> ApiRequest {
        listing
            .clone()
            .query(self.start_name, self.start.to_string())
            .query(self.limit_name, page_size.to_string())
    }

    fn key(&self) -> String {
        format!("{}={}", self.start_name, self.start)
    }

    /// Strictly after: an offset that stays or goes back cannot finish a listing.
    fn advances_from(&self, previous: &Offset) -> bool {
        self.start > previous.start
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(request: &ApiRequest) -> Vec<(&'static str, &str)> {
        request
            .query
            .iter()
            .map(|(name, value)| (*name, value.as_str()))
            .collect()
    }

    #[test]
    fn an_offset_asks_for_start_and_limit_after_the_listings_own_parameters() {
        let listing = ApiRequest::get("rest/api/group").query("expand", "status");

        let first = Offset::default();
        let second = first.after(25).unwrap();

        assert_eq!(
            query(&first.request(&listing, 25)),
            [("expand", "status"), ("start", "0"), ("limit", "25")]
        );
        assert_eq!(
            query(&second.request(&listing, 25)),
            [("expand", "status"), ("start", "25"), ("limit", "25")]
        );
        assert_eq!(second.at(7), first.at(7));
    }

    #[test]
    fn an_offset_advances_only_forward_and_never_overflows() {
        let first = Offset::default();

        assert!(first.at(1).advances_from(&first));
        assert!(!first.advances_from(&first));
        assert!(!first.advances_from(&first.at(5)));
        assert!(first.at(u64::MAX).after(1).is_err());
        assert!(first.at(3).check_start(3).is_ok());
        assert!(first.at(3).check_start(0).is_err());
    }

    #[test]
    fn an_offset_uses_the_names_it_is_given() {
        let listing = ApiRequest::get("rest/api/2/group/member");

        let request = Offset::first("startAt", "maxResults")
            .after(3)
            .unwrap()
            .request(&listing, 50);

        assert_eq!(query(&request), [("startAt", "3"), ("maxResults", "50")]);
    }
}
