//! The whole store as the test endpoints' [`Dump`].

use super::{Dump, DumpAccount, DumpMembership, DumpPermission, Store};

impl Store {
    pub(super) fn dump(&self) -> Dump {
        let accounts = self
            .accounts
            .values()
            .map(|account| DumpAccount {
                key: account.key.clone(),
                login: account.name.clone(),
                display_name: account.display_name.clone(),
                email: account.email.clone(),
                active: account.active,
                read_only: account.read_only,
            })
            .collect();
        let memberships = self
            .memberships
            .iter()
            .filter_map(|(group_name, id)| {
                Some(DumpMembership {
                    group: self.groups.get(group_name)?.name.clone(),
                    login: self.accounts.get(id)?.name.clone(),
                })
            })
            .collect();
        let users = self
            .permitted_users()
            .into_iter()
            .map(|(account, permission)| DumpPermission {
                user: Some(account.name.clone()),
                group: None,
                permission,
            });
        let groups = self
            .permitted_groups()
            .into_iter()
            .map(|(group, permission)| DumpPermission {
                user: None,
                group: Some(group.name.clone()),
                permission,
            });
        Dump {
            product: self.product,
            accounts,
            groups: self
                .groups
                .values()
                .map(|group| group.name.clone())
                .collect(),
            memberships,
            permissions: users.chain(groups).collect(),
            projects: self.projects.dump(self),
            counters: self.counters.clone(),
            requests: self.requests.clone(),
        }
    }
}
