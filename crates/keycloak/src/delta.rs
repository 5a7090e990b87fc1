//! Reading again what a burst of events named (`events::Touched`), as a
//! [`model::delta::Delta`]: each named user as it is now (`GET /users/{id}`; gone when
//! Keycloak answers 404) with its direct groups (`GET /users/{id}/groups`), and the whole
//! group tree, without members, when an event named a group. Never the events' own
//! representations, which may be partial or absent. Service accounts are left out, as the
//! full fetch leaves them out.

use std::collections::BTreeSet;

use model::delta::Delta;
use model::snapshot::{GroupId, KeycloakMembership, UserId};

use crate::{
    Error,
    client::{Client, Endpoint},
    events::Touched,
    fetch::user_from,
    representation::UserRepresentation,
};

impl Client {
    /// The delta of `touched`'s users and groups; an error when any of them could not be
    /// read (no partial delta). `touched.full_sync` is the caller's to act on.
    #[tracing::instrument(skip_all, fields(users = touched.users.len(), groups = touched.groups.len()))]
    pub async fn read_delta(&self, touched: &Touched) -> Result<Delta, Error> {
        let mut delta = Delta::default();
        let bound = if touched.users.is_empty() {
            0
        } else {
            self.count_groups().await?
        };
        for id in &touched.users {
            let user: UserRepresentation =
                match self.get(Endpoint::User, &["users", id.as_str()], &[]).await {
                    Ok(user) => user,
                    Err(Error::Http { status: 404, .. }) => {
                        delta.deleted.push(UserId::new(id.as_str()));
                        continue;
                    }
                    Err(error) => return Err(error),
                };
            if user.service_account_client_id.is_some()
                || user.username.starts_with("service-account-")
            {
                continue;
            }
            let user = user_from(user);
            let groups = self.groups_of(&user.id, bound).await?;
            let mut seen = BTreeSet::new();
            for group in groups {
                if seen.insert(group.id.clone()) {
                    delta.memberships.push(KeycloakMembership {
                        user_id: user.id.clone(),
                        group_id: GroupId::new(group.id),
                    });
                }
            }
            delta.users.push(user);
        }
        if !touched.groups.is_empty() {
            delta.groups = Some(self.group_tree().await?);
        }
        Ok(delta)
    }
}
