//! A trigram index over each account's name, display name and email address, lower-cased,
//! for Bitbucket's `filter` ("only users with usernames, display names or email addresses
//! containing the supplied string", the 8.14 OpenAPI document's `getUsers_1`): the
//! applier looks a user up by name before every write, and scanning 100,000 accounts per
//! lookup made the emulator, not keysync, the pace of a sync at scale.
//!
//! The index only narrows: every account that contains the filter holds each of its
//! trigrams, so the candidates are a superset, and the caller still checks each one. A
//! filter shorter than three bytes has no trigram and is answered by a scan.

use std::collections::{BTreeSet, HashMap};

use crate::store::Account;

type Trigram = [u8; 3];

/// Accounts by the trigrams of their searchable text.
#[derive(Debug, Default)]
pub(crate) struct Search {
    postings: HashMap<Trigram, BTreeSet<u64>>,
}

impl Search {
    /// Indexes `account` (not indexed before).
    pub(crate) fn insert(&mut self, account: &Account) {
        for trigram in trigrams_of(account) {
            self.postings.entry(trigram).or_default().insert(account.id);
        }
    }

    /// Forgets `account` as it was indexed.
    pub(crate) fn remove(&mut self, account: &Account) {
        for trigram in trigrams_of(account) {
            if let Some(ids) = self.postings.get_mut(&trigram) {
                ids.remove(&account.id);
                if ids.is_empty() {
                    self.postings.remove(&trigram);
                }
            }
        }
    }

    /// The ids, ascending, of the accounts that may contain `lowered` (already lower-cased);
    /// `None` when the filter is too short to narrow anything.
    pub(crate) fn candidates(&self, lowered: &str) -> Option<Vec<u64>> {
        let wanted: BTreeSet<Trigram> = trigrams(lowered.as_bytes()).collect();
        if wanted.is_empty() {
            return None;
        }
        let mut lists = Vec::with_capacity(wanted.len());
        for trigram in &wanted {
            match self.postings.get(trigram) {
                Some(ids) => lists.push(ids),
                None => return Some(Vec::new()),
            }
        }
        lists.sort_by_key(|ids| ids.len());
        let (smallest, rest) = lists.split_first()?;
        Some(
            smallest
                .iter()
                .copied()
                .filter(|id| rest.iter().all(|ids| ids.contains(id)))
                .collect(),
        )
    }
}

/// The trigrams of an account's lower-cased name, display name and email, each text on
/// its own (no trigram spans two of them).
fn trigrams_of(account: &Account) -> BTreeSet<Trigram> {
    [&account.name, &account.display_name, &account.email]
        .into_iter()
        .flat_map(|text| {
            let lowered = text.to_lowercase();
            trigrams(lowered.as_bytes()).collect::<Vec<_>>()
        })
        .collect()
}

fn trigrams(bytes: &[u8]) -> impl Iterator<Item = Trigram> + '_ {
    bytes
        .windows(3)
        .map(|window| [window[0], window[1], window[2]])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(id: u64, name: &str, display_name: &str, email: &str) -> Account {
        Account {
            id,
            key: name.to_lowercase(),
            name: name.to_owned(),
            display_name: display_name.to_owned(),
            email: email.to_owned(),
            active: true,
            read_only: false,
        }
    }

    #[test]
    fn candidates_hold_every_account_containing_the_filter_and_follow_changes() {
        let mut search = Search::default();
        let alice = account(1, "alice", "Alice Ärger", "alice@example.com");
        let malice = account(2, "Malice", "M", "m@example.org");
        let bob = account(3, "bob", "Bob", "bob@example.com");
        for account in [&alice, &malice, &bob] {
            search.insert(account);
        }
        assert_eq!(search.candidates("alice"), Some(vec![1, 2]));
        assert_eq!(search.candidates("ärger"), Some(vec![1]));
        assert_eq!(search.candidates("example.com"), Some(vec![1, 3]));
        assert_eq!(search.candidates("zed"), Some(vec![]));
        assert_eq!(search.candidates("al"), None, "too short to narrow");
        search.remove(&malice);
        let renamed = account(2, "mallory", "M", "m@example.org");
        search.insert(&renamed);
        assert_eq!(search.candidates("alice"), Some(vec![1]));
        assert_eq!(search.candidates("mallory"), Some(vec![2]));
    }
}
