//! Listing every Jira user with `GET /rest/api/2/user/search`, on the versions that have no
//! `/user/list` ([`UserListing::PrefixSearch`](crate::config::UserListing::PrefixSearch)).
//!
//! Which versions use which path (the client picks it from `serverInfo` with
//! [`UserListing::Auto`](crate::config::UserListing::Auto)):
//! - **Jira 10.3 LTS, 11.x and later**: `/user/list` with a cursor, complete by design (the
//!   `Cursor` listing in `jira.rs`).
//! - **Jira 10.0 to 10.2**: only `/user/search`, which answers at most **100** users and
//!   ignores `startAt` (JRASERVER-78520, JRASERVER-78660: "intentional … use the new /list
//!   endpoint", which arrived in 10.3).
//! - **Jira 9.x and older**: only `/user/search`, at most 1,000 users a page and never past
//!   the first **1,000** users of a query (`startAt=1001` answers nothing; JRASERVER-65089).
//!
//! A search answers a plain array with no total, so a capped answer looks like a complete
//! one. Public clients treat a result set of exactly 10, 100 or 1,000 users as possibly cut
//! at a cap ([`CAPS`]); this module does the same and proves every listing complete, or fails
//! it:
//! 1. A query is asked with `startAt=0&maxResults=1000`. When it answers a cap-sized page, the
//!    client asks on with `startAt` for as long as pages bring users it has not seen; where
//!    `startAt` is ignored (10.x) or stops at the cap (9.x) that is one request more.
//! 2. The query `.` matches every user. When it ends at a cap-sized total that `startAt`
//!    could not page past, its first page's size is the server's page cap; otherwise its
//!    answer is the whole directory.
//! 3. Each capped query is refined by appending one character: first the ASCII letters,
//!    digits and other characters logins use and the lower-case Latin letters of U+00DF to
//!    U+017F (`é`, `ø`, `ł`, …), then for each capped prefix `p` every ASCII such character
//!    and every character the users found for `p` have after `p` in a searched field. A user
//!    whose login is exactly `p` matches no longer prefix, so `p` itself is looked up too.
//! 4. A query answered with fewer users than the page cap, or with a total that is not a cap,
//!    is complete. A prefix still capped at [`MAX_PREFIX_LEN`] characters fails the listing
//!    ([`Error::Incomplete`]): keysync never plans from part of a directory.
//!
//! Paging a query on with `startAt` stops when a page brings no user not seen before, and
//! fails the listing ([`Error::Incomplete`]) past `max_pages` pages, so a server that keeps
//! inventing users cannot keep the client paging; the refinement fails past `max_pages`
//! queries, so a server that caps every prefix cannot make it branch without end.
//!
//! Results are deduplicated by user key. What no search can reach (a user whose every
//! searched field starts with, or continues a capped prefix with, a character outside those
//! sets and who was in no capped sample) is found through the group memberships: `jira.rs`
//! reads every member missing from the listing by key.

use std::collections::{BTreeMap, BTreeSet};

use futures::StreamExt;

use super::{JiraClient, UserBean, UserBy};
use crate::http::ApiRequest;
use crate::{Error, Product, RemoteAccount};

/// Result-set sizes that may be a server's cap: 10, 100 (Jira 10.0 to 10.2) and 1,000
/// (Jira 9.x and older).
pub(crate) const CAPS: [usize; 3] = [10, 100, 1000];
/// What the client asks every search page for; Jira never answers more.
const MAX_RESULTS: usize = 1000;
/// The first character of a prefix search; `.` is left out because a lone `.` matches
/// everyone.
const FIRST_PREFIX_CHARS: &str = "abcdefghijklmnopqrstuvwxyz0123456789_-@+'";
/// Characters appended to a capped prefix, besides those the found users show.
const NEXT_PREFIX_CHARS: &str = "abcdefghijklmnopqrstuvwxyz0123456789._-@+' ";

/// The first characters searched: [`FIRST_PREFIX_CHARS`] and the lower-case Latin letters
/// of U+00DF to U+017F.
fn first_chars() -> impl Iterator<Item = char> {
    FIRST_PREFIX_CHARS
        .chars()
        .chain(('\u{df}'..='\u{17f}').filter(|c| c.is_lowercase()))
}
/// A prefix still capped at this many characters fails the listing.
pub(crate) const MAX_PREFIX_LEN: usize = 12;

/// What one query found, across the pages `startAt` could reach.
struct Found {
    users: Vec<UserBean>,
    /// The size of the first page.
    first_page: usize,
}

impl Found {
    /// Whether a cap may have cut this answer, given the server's page cap (`None` before
    /// it is known, for the query `.`).
    fn truncated(&self, page_cap: Option<usize>) -> bool {
        let reached_page_cap = match page_cap {
            None => CAPS.contains(&self.first_page),
            Some(cap) => self.first_page >= cap,
        };
        reached_page_cap && CAPS.contains(&self.users.len())
    }

    /// The characters the found users have right after `prefix` in a searched field (login,
    /// email, display name or one of its words), lower case.
    fn next_chars(&self, prefix: &str) -> BTreeSet<char> {
        let mut chars = BTreeSet::new();
        for user in &self.users {
            for field in searched_fields(user) {
                if let Some(rest) = field.strip_prefix(prefix)
                    && let Some(next) = rest.chars().next()
                {
                    chars.insert(next);
                }
            }
        }
        chars
    }
}

/// The lower-case fields a user search matches the start of.
fn searched_fields(user: &UserBean) -> Vec<String> {
    let mut fields = vec![user.name.to_lowercase()];
    fields.extend(user.email_address.as_deref().map(str::to_lowercase));
    if let Some(display_name) = &user.display_name {
        let display_name = display_name.to_lowercase();
        fields.extend(display_name.split_whitespace().map(str::to_owned));
        fields.push(display_name);
    }
    fields
}

impl JiraClient {
    /// One `/user/search` page.
    async fn search_page(&self, query: &str, start_at: usize) -> Result<Vec<UserBean>, Error> {
        let request = ApiRequest::get("rest/api/2/user/search")
            .query("username", query)
            .query("startAt", start_at.to_string())
            .query("maxResults", MAX_RESULTS.to_string())
            .query("includeActive", "true")
            .query("includeInactive", "true");
        self.core.send_ok(&request).await?.json("user search")
    }

    /// A query's users: the first page and, when it reached the page cap (any of [`CAPS`]
    /// while `page_cap` is unknown), the pages after it for as long as they bring new users.
    async fn search(&self, query: &str, page_cap: Option<usize>) -> Result<Found, Error> {
        let first = self.search_page(query, 0).await?;
        let first_page = first.len();
        let mut seen: BTreeSet<String> = first.iter().map(user_key).collect();
        let mut found = Found {
            users: first,
            first_page,
        };
        let may_be_capped = match page_cap {
            None => CAPS.contains(&first_page),
            Some(cap) => first_page >= cap,
        };
        if !may_be_capped {
            return Ok(found);
        }
        let mut start_at = first_page;
        // The first page is one; a server that keeps bringing new users stops at the ceiling.
        for _ in 1..self.core.max_pages() {
            let page = self.search_page(query, start_at).await?;
            let page_len = page.len();
            let new: Vec<UserBean> = page
                .into_iter()
                .filter(|user| seen.insert(user_key(user)))
                .collect();
            if new.is_empty() {
                return Ok(found);
            }
            found.users.extend(new);
            start_at = start_at
                .checked_add(page_len)
                .ok_or_else(|| Error::Incomplete {
                    product: Product::Jira,
                    message: format!("user search for {query:?}: startAt overflows"),
                })?;
        }
        Err(Error::Incomplete {
            product: Product::Jira,
            message: format!(
                "user search for {query:?} brings new users on every page past {} pages \
                 (`max_pages`); the listing is not read on",
                self.core.max_pages()
            ),
        })
    }

    /// Every user, by prefix searches proven complete (see the module doc).
    pub(super) async fn list_accounts_by_prefix(&self) -> Result<Vec<RemoteAccount>, Error> {
        let mut by_key: BTreeMap<String, RemoteAccount> = BTreeMap::new();
        let everyone = self.search(".", None).await?;
        let truncated = everyone.truncated(None);
        let page_cap = everyone.first_page;
        add(&mut by_key, everyone.users);
        if !truncated {
            return Ok(by_key.into_values().collect());
        }
        let mut queries: Vec<String> = first_chars().map(String::from).collect();
        let mut asked: usize = 1;
        while !queries.is_empty() {
            asked = asked.saturating_add(queries.len());
            if asked > self.core.max_pages() {
                return Err(Error::Incomplete {
                    product: Product::Jira,
                    message: format!(
                        "the user search caps so many prefixes that listing every user would \
                         take more than {} queries (`max_pages`)",
                        self.core.max_pages()
                    ),
                });
            }
            let results: Vec<(String, Result<Found, Error>)> =
                futures::stream::iter(queries.drain(..).map(|prefix| async move {
                    let result = self.search(&prefix, Some(page_cap)).await;
                    (prefix, result)
                }))
                .buffer_unordered(self.core.max_concurrency())
                .collect()
                .await;
            let mut next_queries = BTreeSet::new();
            for (prefix, result) in results {
                let found = result?;
                if !found.truncated(Some(page_cap)) {
                    add(&mut by_key, found.users);
                    continue;
                }
                if prefix.chars().count() >= MAX_PREFIX_LEN {
                    return Err(Error::Incomplete {
                        product: Product::Jira,
                        message: format!(
                            "user search stops at {} users for the prefix {prefix:?} and no longer \
                             prefix can be searched; the listing cannot be proven complete",
                            found.users.len()
                        ),
                    });
                }
                if let Some(user) = self.find_user(UserBy::Name(&prefix), false).await? {
                    add(&mut by_key, vec![user]);
                }
                let chars = NEXT_PREFIX_CHARS.chars().chain(found.next_chars(&prefix));
                next_queries.extend(chars.map(|c| format!("{prefix}{c}")));
                add(&mut by_key, found.users);
            }
            queries = next_queries.into_iter().collect();
        }
        Ok(by_key.into_values().collect())
    }
}

fn user_key(user: &UserBean) -> String {
    user.key.clone().unwrap_or_else(|| user.name.clone())
}

fn add(by_key: &mut BTreeMap<String, RemoteAccount>, users: Vec<UserBean>) {
    for user in users {
        let account = user.into_account();
        by_key.insert(account.id.clone(), account);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn users(n: usize) -> Vec<UserBean> {
        (0..n)
            .map(|idx| {
                serde_json::from_value(json!({
                    "name": format!("user{idx:04}"),
                    "key": format!("JIRAUSER{idx}"),
                    "displayName": format!("User Ünal {idx}"),
                    "emailAddress": format!("u{idx}@example.com"),
                    "active": true,
                }))
                .unwrap()
            })
            .collect()
    }

    #[test]
    fn an_answer_is_truncated_only_at_a_cap_the_page_reached() {
        let found = |n: usize, first_page: usize| Found {
            users: users(n),
            first_page,
        };
        // Before the page cap is known: any of 10, 100, 1,000 that paging did not pass.
        assert!(found(100, 100).truncated(None));
        assert!(found(1000, 1000).truncated(None));
        assert!(!found(99, 99).truncated(None));
        assert!(!found(250, 100).truncated(None), "paging got past the cap");
        // Once it is known, a smaller answer is complete, even of a cap's size.
        assert!(!found(10, 10).truncated(Some(100)));
        assert!(found(100, 100).truncated(Some(100)));
    }

    #[test]
    fn the_next_characters_come_from_every_searched_field() {
        let found = Found {
            users: users(2),
            first_page: 2,
        };

        assert_eq!(found.next_chars("user"), BTreeSet::from(['0', ' ']));
        assert_eq!(found.next_chars("u"), BTreeSet::from(['0', '1', 's']));
        assert!(found.next_chars("ü").contains(&'n'));
    }
}
