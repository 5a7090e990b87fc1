//! The Grafana dashboard (`deploy/grafana/keysync-dashboard.json`) and the instruments in
//! the services' code stay in step: every metric a panel queries is an instrument some
//! crate makes, every instrument has a panel, and instrument names keep the form under
//! which the collector's Prometheus exporter leaves them unchanged (so the dashboard's
//! names are the OTLP names; see `test_support::dashboard`). That the services really emit
//! them during a run is checked end to end in `tests/`.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use test_support::dashboard::{self, MetricKind};

fn root() -> PathBuf {
    test_support::deps::workspace_root()
}

fn dashboard_path() -> PathBuf {
    root().join("deploy/grafana/keysync-dashboard.json")
}

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            found.push(path);
        }
    }
}

/// The source of every crate's `src/` but this one's (whose docs and tests name metrics as
/// examples).
fn sources() -> Vec<(PathBuf, String)> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(root().join("crates"))
        .expect("crates/")
        .flatten()
    {
        if entry.file_name() != "test-support" {
            rust_files(&entry.path().join("src"), &mut files);
        }
    }
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("reads a source file");
            (path, text)
        })
        .collect()
}

/// The builder methods of the OpenTelemetry meter, and the kind of instrument each makes.
const BUILDERS: &[(&str, MetricKind)] = &[
    ("u64_counter", MetricKind::Counter),
    ("f64_counter", MetricKind::Counter),
    ("u64_observable_counter", MetricKind::Counter),
    ("f64_observable_counter", MetricKind::Counter),
    ("i64_up_down_counter", MetricKind::Gauge),
    ("f64_up_down_counter", MetricKind::Gauge),
    ("u64_gauge", MetricKind::Gauge),
    ("i64_gauge", MetricKind::Gauge),
    ("f64_gauge", MetricKind::Gauge),
    ("u64_observable_gauge", MetricKind::Gauge),
    ("i64_observable_gauge", MetricKind::Gauge),
    ("f64_observable_gauge", MetricKind::Gauge),
    ("u64_histogram", MetricKind::Histogram),
    ("f64_histogram", MetricKind::Histogram),
];

/// The string a `const NAME: &str = "...";` of `text` holds.
fn constant(text: &str, name: &str) -> Option<String> {
    let start = text.find(&format!("const {name}: &str = \""))?;
    let rest = &text[start..];
    let open = rest.find('"')? + 1;
    let close = open + rest[open..].find('"')?;
    Some(rest[open..close].to_owned())
}

/// Every instrument made in the services' code: its name, kind and the `.with_unit` given
/// before its `.build()`, if any.
fn instruments() -> BTreeMap<String, (MetricKind, String)> {
    let mut found = BTreeMap::new();
    for (path, text) in sources() {
        for (builder, kind) in BUILDERS {
            let call = format!(".{builder}(");
            let mut from = 0;
            while let Some(at) = text[from..].find(&call) {
                let start = from + at + call.len();
                from = start;
                let argument = text[start..].trim_start();
                let name = if let Some(literal) = argument.strip_prefix('"') {
                    literal.split('"').next().map(str::to_owned)
                } else {
                    let ident: String = argument
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    constant(&text, &ident)
                };
                let name = name.unwrap_or_else(|| {
                    panic!(
                        "{}: an instrument named by neither a literal nor a const",
                        path.display()
                    )
                });
                let chain = &text[start..];
                let chain = &chain[..chain.find(".build()").unwrap_or(chain.len())];
                let unit = chain
                    .find(".with_unit(\"")
                    .map(|at| {
                        let rest = &chain[at + ".with_unit(\"".len()..];
                        rest[..rest.find('"').unwrap_or(0)].to_owned()
                    })
                    .unwrap_or_default();
                let previous = found.insert(name.clone(), (*kind, unit.clone()));
                if let Some(previous) = previous {
                    assert_eq!(
                        previous,
                        (*kind, unit),
                        "{name} is made twice, differently ({})",
                        path.display()
                    );
                }
            }
        }
    }
    found
}

#[test]
fn every_metric_the_dashboard_queries_is_an_instrument_of_the_services() {
    let queried = dashboard::metric_names(&dashboard_path()).expect("the dashboard reads");
    assert!(queried.len() > 10, "only {queried:?}");
    let instruments = instruments();
    let unknown: Vec<_> = queried
        .iter()
        .filter(|name| !instruments.contains_key(*name))
        .collect();
    assert!(
        unknown.is_empty(),
        "the dashboard queries metrics no crate makes: {unknown:#?}\nmade: {:#?}",
        instruments.keys()
    );
    // And each one as a string literal, which is how a person greps for it.
    let literals: BTreeSet<String> = sources()
        .iter()
        .flat_map(|(_, text)| text.split('"').skip(1).step_by(2).map(str::to_owned))
        .collect();
    let not_literal: Vec<_> = queried.difference(&literals).collect();
    assert!(not_literal.is_empty(), "{not_literal:#?}");
}

#[test]
fn every_instrument_of_the_services_has_a_panel() {
    let queried = dashboard::metric_names(&dashboard_path()).expect("the dashboard reads");
    let missing: Vec<_> = instruments()
        .into_keys()
        .filter(|name| !queried.contains(name))
        .collect();
    assert!(
        missing.is_empty(),
        "instruments no panel shows: {missing:#?}"
    );
}

#[test]
fn instrument_names_are_their_own_prometheus_names() {
    for (name, (kind, unit)) in instruments() {
        assert!(name.starts_with("keysync_"), "{name}: not a keysync_ name");
        assert_eq!(
            dashboard::prometheus_name(&name, &unit, kind),
            name,
            "{name} ({kind:?}, unit {unit:?}) gets another name in Prometheus"
        );
        if kind == MetricKind::Histogram {
            assert_eq!(unit, "s", "{name}: histograms are of seconds");
        }
    }
}

#[test]
fn every_panel_queries_the_chosen_datasource() {
    let text = std::fs::read_to_string(dashboard_path()).expect("the dashboard");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("variables");
    assert!(
        variables
            .iter()
            .any(|variable| variable["name"] == "datasource"
                && variable["type"] == "datasource"
                && variable["query"] == "prometheus"),
        "no `datasource` variable of Prometheus data sources"
    );
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut checked = 0;
    for panel in panels.iter().filter(|panel| panel["type"] != "row") {
        let title = panel["title"].as_str().unwrap_or_default();
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no query");
        for target in targets {
            assert_eq!(target["datasource"]["uid"], "${datasource}", "{title}");
            let expr = target["expr"].as_str().unwrap_or_default();
            assert!(
                !dashboard::series_names(expr).is_empty(),
                "{title}: a query without a metric: {expr:?}"
            );
        }
        checked += 1;
    }
    assert!(checked > 10, "only {checked} panels");
}
