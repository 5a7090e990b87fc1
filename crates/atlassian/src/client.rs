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
//! An empty page always ends a listing, whatever it says, so a server that keeps answering
//! "there is more" with nothing in it cannot keep a client looping.

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
}

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
        Ok(ClientCore {
            http: Http::new(product, connection)?,
            settings,
            page_size,
            default_page_size,
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
    /// page, then for the next until a page says it is the last or is empty. `what` names a
    /// page in a decode error.
    pub(crate) async fn all_pages<P: Paged>(
        &self,
        listing: &ApiRequest,
        what: &'static str,
    ) -> Result<Vec<P::Item>, Error> {
        let page_size = P::page_size(self.page_size, self.default_page_size);
        let mut items = Vec::new();
        let mut position = P::first();
        loop {
            let request = position.request(listing, page_size);
            let page: P = self.send_ok(&request).await?.json(what)?;
            let (page_items, next) = page.split(&position);
            let empty = page_items.is_empty();
            items.extend(page_items);
            match next {
                Some(next) if !empty => position = next,
                _ => break,
            }
        }
        Ok(items)
    }
}

/// Where a page of a listing starts, and how a request asks for that page.
pub(crate) trait Position {
    /// `listing` with the query parameters that ask for `page_size` items from here on.
    fn request(&self, listing: &ApiRequest, page_size: u32) -> ApiRequest;
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
    /// `position`) says it is the last.
    fn split(self, position: &Self::Position) -> (Vec<Self::Item>, Option<Self::Position>);
}

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

    /// The page just past `n_items` items from here.
    pub(crate) fn after(self, n_items: usize) -> Offset {
        self.at(self.start + n_items as u64)
    }
}

impl Position for Offset {
    fn request(&self, listing: &ApiRequest, page_size: u32) -> ApiRequest {
        listing
            .clone()
            .query(self.start_name, self.start.to_string())
            .query(self.limit_name, page_size.to_string())
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
        let second = first.after(25);

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
    fn an_offset_uses_the_names_it_is_given() {
        let listing = ApiRequest::get("rest/api/2/group/member");

        let request = Offset::first("startAt", "maxResults")
            .after(3)
            .request(&listing, 50);

        assert_eq!(query(&request), [("startAt", "3"), ("maxResults", "50")]);
    }
}
