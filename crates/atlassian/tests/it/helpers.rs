//! Starting emulators and building clients for the tests.

use std::time::Duration;

use atlassian::bitbucket::BitbucketClient;
use atlassian::config::{
    Auth, BitbucketSettings, ConfluenceSettings, Connection, JiraSettings, UserListing,
};
use atlassian::confluence::ConfluenceClient;
use atlassian::jira::JiraClient;
use atlassian::{Client, NewAccount};
use emulator::store::{Seed, SeedAccount, SeedGroup, SeedMembership};
use emulator::{Config, Product, Running};
use url::Url;

pub const TOKEN: &str = "test-token";

pub async fn spawn(config: Config) -> Running {
    emulator::spawn(config).await.expect("the emulator starts")
}

pub async fn spawn_product(product: Product) -> Running {
    spawn(Config::for_tests(product)).await
}

/// A connection with the test credentials and short backoffs: the test token, except for
/// Bitbucket, whose admin endpoints refuse HTTP access tokens, where it is Basic `admin`.
pub fn connection(emulator: &Running) -> Connection {
    let auth = match emulator.state().product() {
        Product::Bitbucket => basic("admin", "admin"),
        Product::Jira | Product::Confluence => Auth::Bearer(config::Secret::new(TOKEN)),
    };
    connection_with(emulator, auth)
}

/// Basic auth with `user` and `password`.
pub fn basic(user: &str, password: &str) -> Auth {
    Auth::Basic {
        user: user.to_owned(),
        password: config::Secret::new(password),
    }
}

pub fn connection_with(emulator: &Running, auth: Auth) -> Connection {
    let endpoint = Url::parse(&emulator.url()).expect("the emulator URL parses");
    let mut connection = Connection::new(endpoint, auth);
    connection.initial_backoff = Duration::from_millis(20);
    connection.max_backoff = Duration::from_secs(5);
    connection
}

pub fn jira(emulator: &Running) -> JiraClient {
    jira_with(connection(emulator), UserListing::Auto)
}

pub fn jira_with(connection: Connection, user_listing: UserListing) -> JiraClient {
    JiraClient::new(connection, JiraSettings { user_listing }).expect("valid Jira settings")
}

pub fn confluence(emulator: &Running) -> ConfluenceClient {
    confluence_with(connection(emulator))
}

pub fn confluence_with(connection: Connection) -> ConfluenceClient {
    let mut settings = ConfluenceSettings::recommended();
    settings.long_task_poll_interval = Duration::from_millis(20);
    ConfluenceClient::new(connection, settings).expect("valid Confluence settings")
}

pub fn bitbucket(emulator: &Running) -> BitbucketClient {
    bitbucket_with(connection(emulator))
}

pub fn bitbucket_with(connection: Connection) -> BitbucketClient {
    BitbucketClient::new(
        connection,
        BitbucketSettings {
            add_to_default_group: true,
        },
    )
    .expect("valid Bitbucket settings")
}

/// The client of `product` the product tests use, as the [`Client`] enum so that one
/// scenario serves every product: Jira with `UserListing::Auto`, Confluence polling long
/// tasks every 20 ms, Bitbucket adding new users to the default group.
pub fn client_with(product: Product, connection: Connection) -> Client {
    match product {
        Product::Jira => Client::Jira(jira_with(connection, UserListing::Auto)),
        Product::Confluence => Client::Confluence(confluence_with(connection)),
        Product::Bitbucket => Client::Bitbucket(bitbucket_with(connection)),
    }
}

pub fn new_account(login: &str) -> NewAccount {
    NewAccount {
        login: login.to_owned(),
        display_name: format!("{login} Example"),
        email: format!("{login}@example.com"),
        password: None,
    }
}

pub fn seed_account(login: &str) -> SeedAccount {
    SeedAccount {
        login: login.to_owned(),
        display_name: format!("{login} Example"),
        email: format!("{login}@example.com"),
        active: true,
        read_only: false,
    }
}

/// `n` accounts `{prefix}0000`, `{prefix}0001`, …
pub fn seed_accounts(prefix: &str, n: usize) -> Vec<SeedAccount> {
    (0..n)
        .map(|idx| seed_account(&format!("{prefix}{idx:04}")))
        .collect()
}

pub fn seed_group(name: &str) -> SeedGroup {
    SeedGroup {
        name: name.to_owned(),
        deletable: true,
    }
}

pub fn seed_membership(group: &str, login: &str) -> SeedMembership {
    SeedMembership {
        group: group.to_owned(),
        login: login.to_owned(),
    }
}

/// A config for `product` seeded with `seed`.
pub fn seeded(product: Product, seed: Seed) -> Config {
    let mut config = Config::for_tests(product);
    config.seed = seed;
    config
}

/// How many recorded requests went to a path containing `needle`.
pub fn count_requests(emulator: &Running, needle: &str) -> usize {
    emulator
        .state()
        .dump()
        .requests
        .iter()
        .filter(|request| request.uri.contains(needle))
        .count()
}
