//! Jira's projects and their components, as the emulator keeps them: each project has a lead
//! and each component may have one; leads are kept by account id, so a rename keeps them.
//!
//! The shapes follow Jira Data Center's REST reference: a project has a `key`, a `name` and a
//! `lead` (resource `api/2/project`, ProjectBean, `expand=lead`); a component has a numeric
//! `id` Jira assigns, a `name` and an optional lead (resource `api/2/component`,
//! ComponentBean, `lead` and `leadUserName`). Jira requires a lead on every project (the
//! `lead` of `createProject` is required), so a seeded project must name one.
//!
//! The seed ([`SeedProject`], part of [`SeedDocument`](crate::store::SeedDocument)) names
//! leads by login; the dump ([`DumpProject`]) shows them by their current login.

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::store::Store;

/// The first component id the emulator assigns; Jira's ids of user-made objects start at
/// 10000 (the ids in the REST reference's component examples are 10000 and up).
const FIRST_COMPONENT_ID: u64 = 10_000;
/// The first project id, likewise.
const FIRST_PROJECT_ID: u64 = 10_000;

/// A Jira project of the seed: `{"key": "ABC", "name": "Alpha", "lead": "alice",
/// "components": [{"name": "Backend", "lead": "bob"}]}`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedProject {
    pub key: String,
    pub name: String,
    /// The login of the project lead, an account of the seed.
    pub lead: String,
    #[serde(default)]
    pub components: Vec<SeedComponent>,
}

/// A component of a seeded project; the emulator assigns its id.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedComponent {
    pub name: String,
    /// The login of the component lead, an account of the seed; `None` for no lead.
    #[serde(default)]
    pub lead: Option<String>,
}

/// A project in the state dump, with its lead's current login.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct DumpProject {
    pub key: String,
    pub name: String,
    /// The lead's login; `None` only if the lead's account is gone.
    pub lead: Option<String>,
    pub components: Vec<DumpComponent>,
}

/// A component in the state dump.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct DumpComponent {
    /// The numeric id as a string, as Jira's REST API shows it.
    pub id: String,
    pub name: String,
    /// The lead's login, `None` for no lead.
    pub lead: Option<String>,
}

#[derive(Clone, Debug)]
pub(crate) struct Project {
    /// Upper case, as Jira keeps project keys.
    pub(crate) key: String,
    pub(crate) name: String,
    /// Its numeric id (Jira's `id`), from 10000 up in seed order.
    pub(crate) id: u64,
    pub(crate) lead: Option<u64>,
    pub(crate) components: Vec<Component>,
}

#[derive(Clone, Debug)]
pub(crate) struct Component {
    pub(crate) id: u64,
    pub(crate) name: String,
    pub(crate) lead: Option<u64>,
}

/// Every project, in key order.
#[derive(Clone, Debug, Default)]
pub(crate) struct Projects {
    projects: Vec<Project>,
}

impl Projects {
    /// The projects of `seeds`, whose leads name accounts of `store`; keys are unique
    /// (ignoring case) and component ids are assigned from 10000 in seed order.
    pub(crate) fn seeded(store: &Store, seeds: &[SeedProject]) -> Result<Projects, Error> {
        let lead_of = |login: &str, what: &str| {
            store
                .account_by_name(login)
                .map(|account| account.id)
                .ok_or_else(|| Error::Seed {
                    message: format!("{what} names unknown account {login}"),
                })
        };
        let mut projects: Vec<Project> = Vec::new();
        let mut next_component = FIRST_COMPONENT_ID;
        for (index, seed) in seeds.iter().enumerate() {
            let key = seed.key.trim().to_uppercase();
            if key.is_empty() || projects.iter().any(|project| project.key == key) {
                return Err(Error::Seed {
                    message: format!("project key {:?} is empty or appears twice", seed.key),
                });
            }
            let lead = lead_of(&seed.lead, &format!("project {key}"))?;
            let mut components = Vec::new();
            for component in &seed.components {
                let lead = match &component.lead {
                    Some(login) => Some(lead_of(login, &format!("component {}", component.name))?),
                    None => None,
                };
                components.push(Component {
                    id: next_component,
                    name: component.name.clone(),
                    lead,
                });
                next_component += 1;
            }
            projects.push(Project {
                key,
                name: seed.name.clone(),
                id: FIRST_PROJECT_ID + index as u64,
                lead: Some(lead),
                components,
            });
        }
        projects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Projects { projects })
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Project> {
        self.projects.iter()
    }

    /// A project by key, ignoring case.
    pub(crate) fn project(&self, key: &str) -> Option<&Project> {
        self.projects
            .iter()
            .find(|project| project.key.eq_ignore_ascii_case(key))
    }

    pub(crate) fn project_mut(&mut self, key: &str) -> Option<&mut Project> {
        self.projects
            .iter_mut()
            .find(|project| project.key.eq_ignore_ascii_case(key))
    }

    /// A component by id, with its project.
    pub(crate) fn component(&self, id: u64) -> Option<(&Project, &Component)> {
        self.projects.iter().find_map(|project| {
            project
                .components
                .iter()
                .find(|component| component.id == id)
                .map(|component| (project, component))
        })
    }

    pub(crate) fn component_mut(&mut self, id: u64) -> Option<&mut Component> {
        self.projects
            .iter_mut()
            .flat_map(|project| project.components.iter_mut())
            .find(|component| component.id == id)
    }

    /// The keys of the projects `account_id` leads, in key order.
    pub(crate) fn led_projects(&self, account_id: u64) -> Vec<&str> {
        self.projects
            .iter()
            .filter(|project| project.lead == Some(account_id))
            .map(|project| project.key.as_str())
            .collect()
    }

    /// The keys of the projects with a component `account_id` leads, in key order, each once.
    pub(crate) fn projects_of_led_components(&self, account_id: u64) -> Vec<&str> {
        self.projects
            .iter()
            .filter(|project| {
                project
                    .components
                    .iter()
                    .any(|component| component.lead == Some(account_id))
            })
            .map(|project| project.key.as_str())
            .collect()
    }

    /// Clears every component lead held by `account_id`; answers how many there were.
    pub(crate) fn clear_component_leads(&mut self, account_id: u64) -> usize {
        let mut cleared = 0;
        for component in self
            .projects
            .iter_mut()
            .flat_map(|project| project.components.iter_mut())
            .filter(|component| component.lead == Some(account_id))
        {
            component.lead = None;
            cleared += 1;
        }
        cleared
    }

    /// The projects as the state dump shows them, leads by current login.
    pub(crate) fn dump(&self, store: &Store) -> Vec<DumpProject> {
        let login = |id: Option<u64>| Some(store.account(id?)?.name.clone());
        self.projects
            .iter()
            .map(|project| DumpProject {
                key: project.key.clone(),
                name: project.name.clone(),
                lead: login(project.lead),
                components: project
                    .components
                    .iter()
                    .map(|component| DumpComponent {
                        id: component.id.to_string(),
                        name: component.name.clone(),
                        lead: login(component.lead),
                    })
                    .collect(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StateHandle;
    use crate::{Config, Product};

    fn handle(product: Product) -> StateHandle {
        StateHandle::new(Config::for_tests(product)).unwrap()
    }

    #[test]
    fn jira_projects_name_known_leads_once_and_other_products_have_none() {
        let jira_handle = handle(Product::Jira);
        let mut jira = jira_handle.lock();
        let ann = jira.insert_account("ann", "Ann", "ann@example.com");
        let project = |key: &str, lead: &str, component_lead: Option<&str>| SeedProject {
            key: key.into(),
            name: key.into(),
            lead: lead.into(),
            components: vec![SeedComponent {
                name: "Core".into(),
                lead: component_lead.map(str::to_owned),
            }],
        };

        let unknown = jira.seeded_projects(&[project("ABC", "nobody", None)]);
        let unknown_component = jira.seeded_projects(&[project("ABC", "ann", Some("nobody"))]);
        let twice =
            jira.seeded_projects(&[project("ABC", "ann", None), project("abc", "ann", None)]);
        let projects = jira
            .seeded_projects(&[
                project("DEF", "ann", None),
                project("ABC", "ann", Some("ann")),
            ])
            .unwrap();

        assert!(matches!(unknown, Err(Error::Seed { .. })));
        assert!(matches!(unknown_component, Err(Error::Seed { .. })));
        assert!(matches!(twice, Err(Error::Seed { .. })));
        assert_eq!(projects.led_projects(ann), ["ABC", "DEF"]);
        assert_eq!(projects.projects_of_led_components(ann), ["ABC"]);
        let ids: Vec<u64> = projects
            .iter()
            .flat_map(|project| project.components.iter().map(|component| component.id))
            .collect();
        assert_eq!(ids, [10_001, 10_000], "assigned in seed order");
        let mut cleared = projects.clone();
        assert_eq!(cleared.clear_component_leads(ann), 1);
        assert!(cleared.projects_of_led_components(ann).is_empty());
        let confluence_handle = handle(Product::Confluence);
        let confluence = confluence_handle.lock();
        assert!(matches!(
            confluence.seeded_projects(&[project("ABC", "ann", None)]),
            Err(Error::Seed { .. })
        ));
    }
}
