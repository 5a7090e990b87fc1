//! The metric names a Grafana dashboard queries, to check them against what the services
//! emit (`deploy/grafana/keysync-dashboard.json`).
//!
//! [`metric_names`] reads every panel target's PromQL `expr` (panels nested in rows
//! included) and answers the *instrument* names it queries: the series names with the
//! histogram suffixes `_bucket`, `_sum` and `_count` taken off.
//!
//! # From an OTLP metric name to the dashboard's names
//!
//! The services export OpenTelemetry instruments over OTLP; the OpenTelemetry collector's
//! `prometheus` exporter (`deploy/otel-collector.yaml`) turns each into Prometheus series,
//! and the dashboard queries those. With the exporter's default `add_metric_suffixes:
//! true` the translation ([`prometheus_name`]) is:
//!
//! - characters other than letters, digits, `_` and `:` become `_`;
//! - the unit is appended as a word unless the name holds it already: `s` becomes
//!   `_seconds`, `ms` `_milliseconds`, `By` `_bytes`; units in braces (`{message}`) add
//!   nothing, and a gauge of unit `1` gets `_ratio`;
//! - a monotonic counter gets `_total`, unless the name ends in `_total` already;
//! - a histogram `X` becomes the series `X_bucket`, `X_sum` and `X_count`.
//!
//! keysync names its instruments so that this translation changes nothing: counters end in
//! `_total`, histograms of seconds end in `_seconds` (unit `s`), gauges carry no unit or
//! one in braces. So **an OTLP metric name, as `test_support::otlp::OtlpReceiver` reports
//! it, equals the name [`metric_names`] answers**: a dashboard name is emitted when it is in
//! `OtlpReceiver::metric_names()`. For instruments named otherwise, compare with
//! [`prometheus_name`] of the OTLP name, unit and kind, after [`instrument_name`].

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

/// Why a dashboard could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not JSON")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// The instrument names queried by every panel target's `expr` of the dashboard at `path`.
pub fn metric_names(path: &Path) -> Result<BTreeSet<String>, DashboardError> {
    let text = std::fs::read_to_string(path).map_err(|source| DashboardError::Read {
        path: path.to_owned(),
        source,
    })?;
    let dashboard: serde_json::Value =
        serde_json::from_str(&text).map_err(|source| DashboardError::Json {
            path: path.to_owned(),
            source,
        })?;
    Ok(target_exprs(&dashboard)
        .iter()
        .flat_map(|expr| series_names(expr))
        .map(|series| instrument_name(&series).to_owned())
        .collect())
}

/// The `expr` of every panel target in a dashboard's JSON, wherever the panel is nested.
pub fn target_exprs(dashboard: &serde_json::Value) -> Vec<String> {
    let mut exprs = Vec::new();
    collect_exprs(dashboard, &mut exprs);
    exprs
}

fn collect_exprs(value: &serde_json::Value, exprs: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(object) => {
            if let Some(targets) = object.get("targets").and_then(|targets| targets.as_array()) {
                exprs.extend(
                    targets
                        .iter()
                        .filter_map(|target| target.get("expr")?.as_str())
                        .map(str::to_owned),
                );
            }
            for (key, child) in object {
                if key != "targets" {
                    collect_exprs(child, exprs);
                }
            }
        }
        serde_json::Value::Array(items) => {
            for item in items {
                collect_exprs(item, exprs);
            }
        }
        _ => {}
    }
}

/// The instrument a series belongs to: `X_bucket`, `X_sum` and `X_count` belong to the
/// histogram `X`; any other series is its own.
pub fn instrument_name(series: &str) -> &str {
    ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|suffix| series.strip_suffix(suffix))
        .filter(|base| !base.is_empty())
        .unwrap_or(series)
}

/// Words of PromQL that are not metric names where a name could stand: operators, and
/// the aggregations, which may be followed by `by (...)` instead of their arguments.
const KEYWORDS: &[&str] = &[
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "inf",
    "nan",
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];

/// Keywords followed by a parenthesised list of label names.
const LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// The series names a PromQL expression selects: identifiers that are not functions,
/// keywords, label names (in `{...}` matchers or `by (...)` lists), strings, numbers,
/// durations or Grafana variables (`$__rate_interval`, `${datasource}`).
pub fn series_names(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => i = skip_string(&chars, i),
            '{' => i = skip_until(&chars, i, '}'),
            '[' => i = skip_until(&chars, i, ']'),
            '#' => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '$' => {
                i += 1;
                if chars.get(i) == Some(&'{') {
                    i = skip_until(&chars, i, '}');
                } else {
                    while i < chars.len() && is_word(chars[i]) {
                        i += 1;
                    }
                }
            }
            c if c.is_ascii_digit() || c == '.' => {
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len() && (is_word(chars[i]) || chars[i] == ':') {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let mut next = i;
                while next < chars.len() && chars[next].is_whitespace() {
                    next += 1;
                }
                let lower = word.to_ascii_lowercase();
                if chars.get(next) == Some(&'(') {
                    if LABEL_LISTS.contains(&lower.as_str()) {
                        i = skip_until(&chars, next, ')');
                    }
                    // Otherwise a function: its arguments are read next.
                } else if !KEYWORDS.contains(&lower.as_str()) {
                    names.insert(word);
                }
            }
            _ => i += 1,
        }
    }
    names
}

fn is_word(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The index after the string that opens at `start`.
fn skip_string(chars: &[char], start: usize) -> usize {
    let quote = chars[start];
    let mut i = start + 1;
    while i < chars.len() {
        match chars[i] {
            '\\' if quote != '`' => i += 2,
            c if c == quote => return i + 1,
            _ => i += 1,
        }
    }
    i
}

/// The index after the `close` that ends the bracket opening at `start`, skipping strings.
fn skip_until(chars: &[char], start: usize, close: char) -> usize {
    let mut i = start + 1;
    while i < chars.len() {
        match chars[i] {
            '"' | '\'' | '`' => i = skip_string(chars, i),
            c if c == close => return i + 1,
            _ => i += 1,
        }
    }
    i
}

/// An OpenTelemetry instrument kind, as far as the Prometheus translation cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    /// A monotonic sum (`Counter`, `ObservableCounter`): gets `_total`.
    Counter,
    /// A non-monotonic sum (`UpDownCounter`) or a gauge.
    Gauge,
    /// A histogram: its series are `_bucket`, `_sum` and `_count` of the name answered.
    Histogram,
}

/// The Prometheus name the OpenTelemetry collector's `prometheus` exporter gives an OTLP
/// metric `name` with `unit` and `kind` (with `add_metric_suffixes: true`, its default).
/// For a histogram, the series are this name with `_bucket`, `_sum` and `_count`.
pub fn prometheus_name(name: &str, unit: &str, kind: MetricKind) -> String {
    let mut words: Vec<String> = name
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == ':'))
        .filter(|word| !word.is_empty())
        .map(str::to_owned)
        .collect();
    let has_total = kind == MetricKind::Counter && words.last().is_some_and(|w| w == "total");
    if has_total {
        words.pop();
    }
    for unit_word in unit_words(unit) {
        if !words.contains(&unit_word) {
            words.push(unit_word);
        }
    }
    if kind == MetricKind::Gauge && unit.trim() == "1" && words.last().is_none_or(|w| w != "ratio")
    {
        words.push("ratio".to_owned());
    }
    if kind == MetricKind::Counter {
        words.push("total".to_owned());
    }
    let mut translated = words.join("_");
    if translated.starts_with(|c: char| c.is_ascii_digit()) {
        translated.insert(0, '_');
    }
    translated
}

/// The words the exporter appends for a UCUM unit.
fn unit_words(unit: &str) -> Vec<String> {
    let unit = unit.trim();
    if unit.is_empty() || unit == "1" || (unit.starts_with('{') && unit.ends_with('}')) {
        return Vec::new();
    }
    let word = |unit: &str| -> String {
        match unit {
            "d" => "days",
            "h" => "hours",
            "min" => "minutes",
            "s" => "seconds",
            "ms" => "milliseconds",
            "us" => "microseconds",
            "ns" => "nanoseconds",
            "By" => "bytes",
            "KiBy" => "kibibytes",
            "MiBy" => "mebibytes",
            "GiBy" => "gibibytes",
            "%" => "percent",
            other => other,
        }
        .to_owned()
    };
    match unit.split_once('/') {
        Some((per, of)) => {
            let mut words = Vec::new();
            if !per.is_empty() && !per.starts_with('{') {
                words.push(word(per));
            }
            words.push("per".to_owned());
            words.push(match of {
                "s" => "second".to_owned(),
                "m" => "minute".to_owned(),
                "h" => "hour".to_owned(),
                "d" => "day".to_owned(),
                other => word(other),
            });
            words
        }
        None => vec![word(unit)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(expr: &str) -> Vec<String> {
        series_names(expr).into_iter().collect()
    }

    #[test]
    fn series_names_skip_functions_keywords_labels_strings_and_variables() {
        assert_eq!(
            names(
                r#"histogram_quantile(0.95, sum by (le, product) (rate(keysync_product_api_request_duration_seconds_bucket{job=~"$job", product!="x"}[$__rate_interval])))"#
            ),
            ["keysync_product_api_request_duration_seconds_bucket"]
        );
        assert_eq!(
            names(
                "sum(increase(a_total[1h] offset 5m)) / ignoring(outcome) group_left sum without (op) (b_total) or on() vector(0)"
            ),
            ["a_total", "b_total"]
        );
        assert_eq!(
            names(
                "max by (consumer) (keysync_consumer_pending_messages{stream=\"${x}\"}) > 10 and bool up"
            ),
            ["keysync_consumer_pending_messages", "up"]
        );
        assert_eq!(names("# a comment keysync_nothing\nx:rate5m"), ["x:rate5m"]);
        assert_eq!(names("1e3 * 0.5"), Vec::<String>::new());
        assert_eq!(
            names("count without (job) (x) + topk by (a) (3, y)"),
            ["x", "y"]
        );
    }

    #[test]
    fn histogram_series_belong_to_their_instrument() {
        assert_eq!(
            instrument_name("keysync_run_duration_seconds_bucket"),
            "keysync_run_duration_seconds"
        );
        assert_eq!(
            instrument_name("keysync_run_duration_seconds_sum"),
            "keysync_run_duration_seconds"
        );
        assert_eq!(
            instrument_name("keysync_run_duration_seconds_count"),
            "keysync_run_duration_seconds"
        );
        assert_eq!(
            instrument_name("keysync_runs_finished_total"),
            "keysync_runs_finished_total"
        );
        assert_eq!(instrument_name("_count"), "_count");
    }

    #[test]
    fn metric_names_reads_every_target_of_every_panel_nested_or_not() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("dashboard.json");
        let dashboard = serde_json::json!({
            "templating": {"list": [{"query": "label_values(ignored_total, job)"}]},
            "panels": [
                {"type": "timeseries", "targets": [
                    {"expr": "sum(rate(a_total[5m]))"},
                    {"expr": "histogram_quantile(0.5, sum by (le) (rate(b_seconds_bucket[5m])))"}
                ]},
                {"type": "row", "panels": [
                    {"type": "stat", "targets": [{"expr": "sum(b_seconds_sum) / sum(b_seconds_count)"}]},
                    {"type": "text"}
                ]}
            ]
        });
        std::fs::write(&path, dashboard.to_string()).expect("writes");
        let found: Vec<String> = metric_names(&path).expect("reads").into_iter().collect();
        assert_eq!(found, ["a_total", "b_seconds"]);
        assert!(matches!(
            metric_names(&dir.path().join("missing.json")),
            Err(DashboardError::Read { .. })
        ));
    }

    #[test]
    fn prometheus_names_follow_the_collectors_translation() {
        use MetricKind::*;
        // keysync's names translate to themselves.
        for (name, unit, kind) in [
            ("keysync_runs_finished_total", "", Counter),
            ("keysync_run_duration_seconds", "s", Histogram),
            ("keysync_consumer_pending_messages", "{message}", Gauge),
        ] {
            assert_eq!(prometheus_name(name, unit, kind), name);
        }
        assert_eq!(
            prometheus_name("http.server.duration", "ms", Histogram),
            "http_server_duration_milliseconds"
        );
        assert_eq!(prometheus_name("requests", "", Counter), "requests_total");
        assert_eq!(prometheus_name("sent", "By", Counter), "sent_bytes_total");
        assert_eq!(
            prometheus_name("rate", "By/s", Gauge),
            "rate_bytes_per_second"
        );
        assert_eq!(
            prometheus_name("queue.fill", "1", Gauge),
            "queue_fill_ratio"
        );
    }
}
