//! The parts of a streamed fetch ([`crate::client::Client::fetch_streaming`]).
//!
//! At 100,000 users, reading the users' listing is most of a fetch (about 80 s of
//! Keycloak's time), and a first sync spends most of the rest creating accounts. A
//! streamed fetch reads the group tree and every group's members first, then hands on the
//! users as the listing reads them: every `size` new users become a part, a [`Snapshot`]
//! of those users, every group and those users' direct memberships, sent on a channel
//! while the listing goes on. A user is in one part at most (a user read twice, as an
//! offset listing can when users are added during it, is sent once); users read after
//! the last full part are in no part. The first part holds an eighth of `size` users, and
//! each next one twice the last, up to `size`: the appliers start as soon as a few users
//! are read, and stay busy since the listing reads faster than they write. The complete snapshot is still read, checked and
//! returned as by [`crate::client::Client::fetch`]: a part is never a substitute for it,
//! and what may be done with one is the planner's rule (`model::plan::plan_part`).

use std::collections::{HashMap, HashSet};

use futures::channel::mpsc;
use model::snapshot::{GroupId, KeycloakGroup, KeycloakMembership, KeycloakUser, Snapshot, UserId};

/// One part: some users, every group, those users' memberships.
pub struct Part {
    pub snapshot: Snapshot,
    /// How many users `/users/count` counted when the fetch began.
    pub realm_users: u64,
}

/// Where a streamed fetch sends its parts, and how large they are.
pub struct Parts {
    size: usize,
    sender: mpsc::UnboundedSender<Part>,
    realm_users: u64,
    groups: Vec<KeycloakGroup>,
    /// Every group's direct member ids, as the tree read them.
    members: Vec<(GroupId, Vec<String>)>,
    pending: Vec<UserId>,
    /// Parts sent so far.
    sent: usize,
}

impl Parts {
    /// Parts of `size` users (at least 1), and the receiving end of their channel, which
    /// ends when the fetch does.
    pub fn new(size: usize) -> (Parts, mpsc::UnboundedReceiver<Part>) {
        let (sender, receiver) = mpsc::unbounded();
        let parts = Parts {
            size: size.max(1),
            sender,
            realm_users: 0,
            groups: Vec::new(),
            members: Vec::new(),
            pending: Vec::new(),
            sent: 0,
        };
        (parts, receiver)
    }

    /// The group tree and its members, read before any user is offered, and the users
    /// counted.
    pub(crate) fn know_tree(
        &mut self,
        groups: &[KeycloakGroup],
        members: Vec<(GroupId, Vec<String>)>,
        realm_users: u64,
    ) {
        self.realm_users = realm_users;
        self.groups = groups.to_vec();
        self.members = members;
    }

    /// The members [`Parts::know_tree`] was given, once the users are read.
    pub(crate) fn give_back_members(&mut self) -> Vec<(GroupId, Vec<String>)> {
        std::mem::take(&mut self.members)
    }

    /// How many users the next part holds: an eighth of `size` first, then twice the last
    /// part up to `size`, so the appliers start within a second or two of the first users
    /// and the listing, faster than they write, stays ahead of them.
    fn next_size(&self) -> usize {
        (self.size >> 3usize.saturating_sub(self.sent)).max(1)
    }

    /// Users read for the first time (`fresh`, found in `users`); sends a part for every
    /// `size` of them.
    pub(crate) fn offer(&mut self, fresh: Vec<UserId>, users: &HashMap<UserId, KeycloakUser>) {
        self.pending.extend(fresh);
        while self.pending.len() >= self.next_size() {
            let rest = self.pending.split_off(self.next_size());
            let part = std::mem::replace(&mut self.pending, rest);
            self.send(&part, users);
            self.sent += 1;
        }
    }

    fn send(&mut self, part: &[UserId], users: &HashMap<UserId, KeycloakUser>) {
        if self.sender.is_closed() {
            return;
        }
        let ids: HashSet<&str> = part.iter().map(UserId::as_str).collect();
        let memberships = self
            .members
            .iter()
            .flat_map(|(group_id, member_ids)| {
                member_ids
                    .iter()
                    .filter(|member| ids.contains(member.as_str()))
                    .map(|member| KeycloakMembership {
                        user_id: UserId::new(member.as_str()),
                        group_id: group_id.clone(),
                    })
            })
            .collect();
        let users = part
            .iter()
            .filter_map(|id| users.get(id).cloned())
            .collect();
        let snapshot = crate::fetch::finish(users, self.groups.clone(), memberships);
        // A receiver that is gone wants no more parts; the fetch goes on.
        let _ = self.sender.unbounded_send(Part {
            snapshot,
            realm_users: self.realm_users,
        });
    }
}
