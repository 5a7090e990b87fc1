//! Near-valid JSON for the fuzz tests: numbers, strings and nesting no decoder should
//! trust, and documents with fields dropped, doubled or of the wrong type.

use proptest::collection::vec;
use proptest::prelude::*;

/// Numbers no decoder should trust.
pub fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop_oneof![
            Just("0"),
            Just("-1"),
            Just("-0"),
            Just("1.5"),
            Just("-0.5"),
            Just("1e999"),
            Just("-1e999"),
            Just("1E-400"),
            Just("18446744073709551615"),
            Just("18446744073709551616"),
            Just("-9223372036854775809"),
            Just("123456789012345678901234567890123456789"),
            Just("0.0000000000000000000000000000001"),
            Just("01"),
            Just("1."),
            Just("-"),
            Just("NaN"),
            Just("Infinity"),
        ]
        .prop_map(str::to_owned),
        2 => any::<i64>().prop_map(|n| n.to_string()),
        2 => any::<u64>().prop_map(|n| n.to_string()),
        1 => any::<f64>().prop_map(|n| format!("{n:e}")),
        1 => (1usize..2000).prop_map(|n| "9".repeat(n)),
    ]
}

/// Strings, quoted: plain, escaped, invalid escapes, very long, unterminated.
pub fn string() -> impl Strategy<Value = String> {
    prop_oneof![
        40 => vec(any::<char>(), 0..12).prop_map(|chars| {
            serde_json::to_string(&String::from_iter(chars)).unwrap_or_default()
        }),
        1 => prop_oneof![
            Just("\"\\ud800\""),
            Just("\"\\udc00\\ud800\""),
            Just("\"\\u0000\""),
            Just("\"\\x41\""),
            Just("\"\\u12\""),
            Just("\"unterminated"),
            Just("\"\u{7f}\u{0}\""),
            Just("\"\t\""),
        ]
        .prop_map(str::to_owned),
        1 => (0usize..300_000).prop_map(|n| format!("\"{}\"", "x".repeat(n))),
        1 => (0usize..2_000).prop_map(|n| format!("\"{}\"", "\\u00e9".repeat(n))),
    ]
}

/// Arrays or objects nested `depth` deep: past serde_json's recursion limit of 128.
pub fn deep() -> impl Strategy<Value = String> {
    (0usize..5_000, any::<bool>()).prop_map(|(depth, objects)| {
        if objects {
            format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth))
        } else {
            format!("{}{}", "[".repeat(depth), "]".repeat(depth))
        }
    })
}

/// Any JSON value, with the given keys likely in objects.
pub fn value(keys: &'static [&'static str]) -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_owned()),
        Just("true".to_owned()),
        Just("false".to_owned()),
        number(),
        string(),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(|items| format!("[{}]", items.join(","))),
            vec((key(keys), inner), 0..6).prop_map(|fields| {
                let fields: Vec<String> = fields
                    .into_iter()
                    .map(|(k, v)| format!("{k}:{v}"))
                    .collect();
                format!("{{{}}}", fields.join(","))
            }),
        ]
    })
}

/// A key, quoted: mostly one of `keys`.
pub fn key(keys: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(keys).prop_map(|key| format!("\"{key}\"")),
        1 => string(),
    ]
}

/// A field of a near-valid object: the valid one, dropped, of the wrong type or twice.
fn field(
    name: &'static str,
    valid: BoxedStrategy<String>,
    keys: &'static [&'static str],
) -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        12 => valid.clone().prop_map(move |v| Some(format!("\"{name}\":{v}"))),
        1 => Just(None),
        1 => value(keys).prop_map(move |v| Some(format!("\"{name}\":{v}"))),
        1 => (valid, value(keys))
            .prop_map(move |(v, w)| Some(format!("\"{name}\":{v},\"{name}\":{w}"))),
    ]
}

/// An object with `fields` (name and valid value), each one kept, dropped, of the wrong
/// type or doubled, and sometimes fields of no use.
pub fn object(
    fields: Vec<(&'static str, BoxedStrategy<String>)>,
    keys: &'static [&'static str],
) -> BoxedStrategy<String> {
    let fields: Vec<_> = fields
        .into_iter()
        .map(|(name, valid)| field(name, valid, keys).boxed())
        .collect();
    (fields, vec((key(keys), value(keys)), 0..2))
        .prop_map(|(fields, extra)| {
            let mut parts: Vec<String> = fields.into_iter().flatten().collect();
            parts.extend(extra.into_iter().map(|(k, v)| format!("{k}:{v}")));
            format!("{{{}}}", parts.join(","))
        })
        .boxed()
}

/// A JSON array of `item`s.
pub fn array(item: BoxedStrategy<String>, max: usize) -> BoxedStrategy<String> {
    vec(item, 0..max)
        .prop_map(|items| format!("[{}]", items.join(",")))
        .boxed()
}

/// A valid string value.
pub fn text() -> BoxedStrategy<String> {
    prop_oneof![
        8 => vec(prop::sample::select(&b"abcdefghijklmnopqrstuvwxyz0123456789.@-"[..]), 1..12)
            .prop_map(|bytes| format!("\"{}\"", String::from_utf8_lossy(&bytes))),
        1 => string(),
    ]
    .boxed()
}

/// A valid boolean.
pub fn boolean() -> BoxedStrategy<String> {
    any::<bool>().prop_map(|b| b.to_string()).boxed()
}

/// A small valid count, or an absurd number.
pub fn count() -> BoxedStrategy<String> {
    prop_oneof![4 => (0u64..20).prop_map(|n| n.to_string()), 1 => number()].boxed()
}

/// Whole documents: `valid` most of the time, else any value, deep nesting, bytes cut
/// off, or garbage.
pub fn document(
    valid: BoxedStrategy<String>,
    keys: &'static [&'static str],
) -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        12 => valid.clone().prop_map(String::into_bytes),
        2 => value(keys).prop_map(String::into_bytes),
        1 => deep().prop_map(String::into_bytes),
        2 => (valid, any::<prop::sample::Index>()).prop_map(|(text, at)| {
            let mut bytes = text.into_bytes();
            bytes.truncate(at.index(bytes.len() + 1));
            bytes
        }),
        1 => vec(any::<u8>(), 0..256),
    ]
    .boxed()
}
