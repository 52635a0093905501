//! Decoding JSON payloads into raw items, before validation.
//!
//! Accepted shapes (README "Payloads"):
//! - one reading: `{"ts": …, "quantity": "SO2", "value": 12.3, "unit": "mg/m3", "flag": "N"}`
//! - several quantities at one instant: `{"ts": …, "flag": "N", "values": {"SO2": 12.3, "NOx": {"value": 30.1, "unit": "ppm"}}}`
//! - a JSON array of either.
//!
//! Each item keeps its JSON path (`[2].values.SO2`) so a rejection says exactly where it was.

use serde_json::{Map, Value};

use super::{RejectReason, Rejection};

/// One not-yet-validated reading as found in the payload.
#[derive(Debug, Clone, PartialEq)]
pub struct RawItem {
    pub quantity: Value,
    pub value: Value,
    pub unit: Option<Value>,
    pub ts: Option<Value>,
    pub flag: Option<Value>,
    /// `"1min"`, `"1h"`, `"1d"`: the value is a mean over that window starting at `ts`.
    pub period: Option<Value>,
    /// JSON path of each part, for error messages (`values.SO2`, `[1].ts`, …).
    pub paths: Paths,
}

/// Where each part of an item stands in the payload, rendered only when a rejection needs it
/// (building six path strings per reading cost more than validating it).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Paths {
    /// The enclosing object: `""` (the payload itself) or `[2]`.
    pub object: String,
    /// For an entry of `values`: its quantity key.
    pub key: Option<String>,
    /// The `values` entry is an object with its own `value`/`unit` (`values.NOx.value`), not a scalar.
    pub keyed_object: bool,
    /// The `values` entry carries its own `ts` / `flag`.
    pub own_ts: bool,
    pub own_flag: bool,
    /// Labels given by a non-JSON source (Modbus registers, HJ 212 CP items) instead.
    pub custom: Option<Box<CustomPaths>>,
}

/// Paths named by a source that does not decode JSON.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CustomPaths {
    pub quantity: String,
    pub value: String,
    pub unit: String,
    pub ts: String,
    pub flag: String,
    pub period: String,
}

impl Paths {
    pub fn custom(c: CustomPaths) -> Paths {
        Paths {
            custom: Some(Box::new(c)),
            ..Paths::default()
        }
    }

    /// `values.SO2` / `[1].values.SO2` for a `values` entry.
    fn entry(&self) -> Option<String> {
        self.key
            .as_ref()
            .map(|k| format!("{}.{k}", field(&self.object, "values")))
    }

    pub fn quantity(&self) -> String {
        match (&self.custom, self.entry()) {
            (Some(c), _) => c.quantity.clone(),
            (None, Some(e)) => e,
            (None, None) => field(&self.object, "quantity"),
        }
    }

    pub fn value(&self) -> String {
        match (&self.custom, self.entry()) {
            (Some(c), _) => c.value.clone(),
            (None, Some(e)) if self.keyed_object => field(&e, "value"),
            (None, Some(e)) => e,
            (None, None) => field(&self.object, "value"),
        }
    }

    pub fn unit(&self) -> String {
        match (&self.custom, self.entry()) {
            (Some(c), _) => c.unit.clone(),
            (None, Some(e)) => field(&e, "unit"),
            (None, None) => field(&self.object, "unit"),
        }
    }

    pub fn ts(&self) -> String {
        match (&self.custom, self.entry()) {
            (Some(c), _) => c.ts.clone(),
            (None, Some(e)) if self.own_ts => field(&e, "ts"),
            _ => field(&self.object, "ts"),
        }
    }

    pub fn flag(&self) -> String {
        match (&self.custom, self.entry()) {
            (Some(c), _) => c.flag.clone(),
            (None, Some(e)) if self.own_flag => field(&e, "flag"),
            _ => field(&self.object, "flag"),
        }
    }

    pub fn period(&self) -> String {
        match &self.custom {
            Some(c) => c.period.clone(),
            None => field(&self.object, "period"),
        }
    }
}

/// Decode a payload into items; a rejection here refuses the whole message.
pub fn decode(payload: &[u8]) -> Result<Vec<RawItem>, Rejection> {
    if payload.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(Rejection::new(
            RejectReason::EmptyPayload,
            "payload is empty",
        ));
    }
    if let Some(items) = decode_fast(payload) {
        return Ok(items);
    }
    decode_general(payload)
}

/// Decode a payload element by element: a malformed element of an array is refused alone (with
/// its path, `[1]`) and its good neighbours are kept; a payload that is not JSON at all, or empty,
/// is one refusal.
pub fn decode_each(payload: &[u8]) -> (Vec<RawItem>, Vec<Rejection>) {
    if payload.iter().all(|b| b.is_ascii_whitespace()) {
        return (
            Vec::new(),
            vec![Rejection::new(
                RejectReason::EmptyPayload,
                "payload is empty",
            )],
        );
    }
    if let Some(items) = decode_fast(payload) {
        return (items, Vec::new());
    }
    let doc: Checked = match serde_json::from_slice(payload) {
        Ok(d) => d,
        Err(e) => {
            return (
                Vec::new(),
                vec![Rejection::new(
                    RejectReason::NotJson,
                    format!("not JSON: {e}"),
                )],
            )
        }
    };
    let mut items = Vec::new();
    let mut refused = Vec::new();
    let mut one = |e: Checked, path: &str| {
        if let Some(dup) = e.duplicate {
            refused.push(duplicate_key(path, &dup));
            return;
        }
        let mut these = Vec::new();
        match decode_object(e.value, path, &mut these) {
            Ok(()) => items.extend(these),
            Err(r) => refused.push(r),
        }
    };
    match doc.elements {
        Some(elems) if elems.is_empty() => {
            return (
                Vec::new(),
                vec![Rejection::new(
                    RejectReason::InvalidPayload,
                    "empty array: no readings",
                )],
            )
        }
        Some(elems) => {
            for (i, e) in elems.into_iter().enumerate() {
                one(e, &format!("[{i}]"));
            }
        }
        None => one(doc, ""),
    }
    (items, refused)
}

fn duplicate_key(path: &str, key: &str) -> Rejection {
    Rejection::new(
        RejectReason::InvalidPayload,
        format!(
            "{}: key \"{key}\" appears twice in one object; which value is meant is ambiguous (RFC 8259 §4), so neither is taken",
            if path.is_empty() { "payload" } else { path }
        ),
    )
}

/// A JSON value read with its duplicate keys noticed (`serde_json::Value` silently keeps the last
/// one): `duplicate` names the first key found twice in one object anywhere inside, with its
/// path. A top-level array keeps its elements apart (`elements`), so a duplicate refuses only the
/// element it is in.
struct Checked {
    value: Value,
    duplicate: Option<String>,
    elements: Option<Vec<Checked>>,
}

impl<'de> serde::Deserialize<'de> for Checked {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(CheckedVisitor { top: true })
    }
}

/// Below the top level: arrays become plain `Value::Array`s.
struct Nested(Checked);

impl<'de> serde::Deserialize<'de> for Nested {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(CheckedVisitor { top: false }).map(Nested)
    }
}

struct CheckedVisitor {
    top: bool,
}

impl CheckedVisitor {
    fn plain(value: Value) -> Checked {
        Checked {
            value,
            duplicate: None,
            elements: None,
        }
    }
}

impl<'de> serde::de::Visitor<'de> for CheckedVisitor {
    type Value = Checked;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Checked, E> {
        Ok(Self::plain(Value::Bool(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Checked, E> {
        Ok(Self::plain(Value::from(v)))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Checked, E> {
        Ok(Self::plain(Value::from(v)))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Checked, E> {
        Ok(Self::plain(Value::from(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Checked, E> {
        Ok(Self::plain(Value::String(v.to_string())))
    }
    fn visit_string<E>(self, v: String) -> Result<Checked, E> {
        Ok(Self::plain(Value::String(v)))
    }
    fn visit_unit<E>(self) -> Result<Checked, E> {
        Ok(Self::plain(Value::Null))
    }
    fn visit_none<E>(self) -> Result<Checked, E> {
        Ok(Self::plain(Value::Null))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
        let mut elements = Vec::new();
        while let Some(Nested(e)) = seq.next_element()? {
            elements.push(e);
        }
        if self.top {
            return Ok(Checked {
                value: Value::Null,
                duplicate: None,
                elements: Some(elements),
            });
        }
        let mut duplicate = None;
        let mut values = Vec::with_capacity(elements.len());
        for (i, e) in elements.into_iter().enumerate() {
            if duplicate.is_none() {
                duplicate = e.duplicate.map(|d| format!("[{i}].{d}"));
            }
            values.push(e.value);
        }
        Ok(Checked {
            value: Value::Array(values),
            duplicate,
            elements: None,
        })
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
        let mut m = Map::new();
        let mut duplicate = None;
        while let Some(k) = map.next_key::<String>()? {
            let Nested(v) = map.next_value()?;
            if duplicate.is_none() {
                duplicate = v.duplicate.map(|d| format!("{k}.{d}"));
            }
            if m.contains_key(&k) {
                duplicate.get_or_insert(k);
                continue;
            }
            m.insert(k, v.value);
        }
        Ok(Checked {
            value: Value::Object(m),
            duplicate,
            elements: None,
        })
    }
}

/// Every shape, every error with its path.
fn decode_general(payload: &[u8]) -> Result<Vec<RawItem>, Rejection> {
    let doc: Checked = serde_json::from_slice(payload)
        .map_err(|e| Rejection::new(RejectReason::NotJson, format!("not JSON: {e}")))?;
    let mut items = Vec::new();
    let one = |e: Checked, path: &str, items: &mut Vec<RawItem>| match e.duplicate {
        Some(dup) => Err(duplicate_key(path, &dup)),
        None => decode_object(e.value, path, items),
    };
    match doc.elements {
        Some(elems) => {
            if elems.is_empty() {
                return Err(Rejection::new(
                    RejectReason::InvalidPayload,
                    "empty array: no readings",
                ));
            }
            for (i, e) in elems.into_iter().enumerate() {
                one(e, &format!("[{i}]"), &mut items)?;
            }
        }
        None => one(doc, "", &mut items)?,
    }
    Ok(items)
}

/// The common shapes — one `{"quantity", "value", …}` object or an array of them — decoded
/// straight into their fields, without building a JSON map per object (that was a third of the
/// daemon's CPU at 100 readings per message). Anything else, including every malformed payload,
/// returns `None` and takes the general path below, which says exactly what is wrong.
fn decode_fast(payload: &[u8]) -> Option<Vec<RawItem>> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Item {
        quantity: Value,
        value: Value,
        #[serde(default, deserialize_with = "present")]
        unit: Option<Value>,
        #[serde(default, deserialize_with = "present")]
        ts: Option<Value>,
        #[serde(default, deserialize_with = "present")]
        flag: Option<Value>,
        #[serde(default, deserialize_with = "present")]
        period: Option<Value>,
    }
    // A key that is present stays `Some`, even when its value is null (as on the general path).
    fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
        <Value as serde::Deserialize>::deserialize(d).map(Some)
    }
    let raw = |it: Item, object: String| RawItem {
        quantity: it.quantity,
        value: it.value,
        unit: it.unit,
        ts: it.ts,
        flag: it.flag,
        period: it.period,
        paths: Paths {
            object,
            ..Paths::default()
        },
    };
    let first = payload.iter().find(|b| !b.is_ascii_whitespace())?;
    if *first == b'[' {
        let items: Vec<Item> = serde_json::from_slice(payload).ok()?;
        if items.is_empty() {
            return None;
        }
        Some(
            items
                .into_iter()
                .enumerate()
                .map(|(i, it)| raw(it, format!("[{i}]")))
                .collect(),
        )
    } else {
        let it: Item = serde_json::from_slice(payload).ok()?;
        Some(vec![raw(it, String::new())])
    }
}

fn field(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

fn decode_object(v: Value, path: &str, out: &mut Vec<RawItem>) -> Result<(), Rejection> {
    let here = if path.is_empty() { "payload" } else { path };
    let Value::Object(mut obj) = v else {
        return Err(Rejection::new(
            RejectReason::InvalidPayload,
            format!(
                "{here}: expected an object with \"quantity\"/\"value\" or \"values\", found {}",
                kind(&v)
            ),
        ));
    };
    let ts = obj.remove("ts");
    let flag = obj.remove("flag");
    let period = obj.remove("period");
    if let Some(values) = obj.remove("values") {
        let Value::Object(values) = values else {
            return Err(Rejection::new(
                RejectReason::InvalidPayload,
                format!(
                    "{}: expected an object of quantity → value, found {}",
                    field(path, "values"),
                    kind(&values)
                ),
            ));
        };
        if values.is_empty() {
            return Err(Rejection::new(
                RejectReason::InvalidPayload,
                format!("{}: no values", field(path, "values")),
            ));
        }
        if let Some(k) = obj.keys().next() {
            return Err(Rejection::new(
                RejectReason::InvalidPayload,
                format!("{}: unexpected beside \"values\"", field(path, k)),
            ));
        }
        for (q, val) in values {
            match val {
                Value::Object(mut o) => {
                    let value = o.remove("value").unwrap_or(Value::Null);
                    let unit = o.remove("unit");
                    let own_flag = o.remove("flag");
                    let own_ts = o.remove("ts");
                    if !o.is_empty() {
                        reject_extra(&o, &format!("{}.{q}", field(path, "values")))?;
                    }
                    let paths = Paths {
                        object: path.to_string(),
                        key: Some(q.clone()),
                        keyed_object: true,
                        own_ts: own_ts.is_some(),
                        own_flag: own_flag.is_some(),
                        custom: None,
                    };
                    out.push(RawItem {
                        quantity: Value::String(q),
                        value,
                        unit,
                        ts: own_ts.or_else(|| ts.clone()),
                        flag: own_flag.or_else(|| flag.clone()),
                        period: period.clone(),
                        paths,
                    });
                }
                scalar => out.push(RawItem {
                    quantity: Value::String(q.clone()),
                    value: scalar,
                    unit: None,
                    ts: ts.clone(),
                    flag: flag.clone(),
                    period: period.clone(),
                    paths: Paths {
                        object: path.to_string(),
                        key: Some(q),
                        ..Paths::default()
                    },
                }),
            }
        }
        return Ok(());
    }
    let Some(quantity) = obj.remove("quantity") else {
        return Err(Rejection::new(
            RejectReason::InvalidPayload,
            format!("{here}: missing \"quantity\" (or \"values\")"),
        ));
    };
    let Some(value) = obj.remove("value") else {
        return Err(Rejection::new(
            RejectReason::InvalidPayload,
            format!("{}: missing", field(path, "value")),
        ));
    };
    let unit = obj.remove("unit");
    reject_extra(&obj, path)?;
    out.push(RawItem {
        quantity,
        value,
        unit,
        ts,
        flag,
        period,
        paths: Paths {
            object: path.to_string(),
            ..Paths::default()
        },
    });
    Ok(())
}

fn reject_extra(obj: &Map<String, Value>, path: &str) -> Result<(), Rejection> {
    match obj.keys().next() {
        Some(k) => Err(Rejection::new(
            RejectReason::InvalidPayload,
            format!("{}: unknown field", field(path, k)),
        )),
        None => Ok(()),
    }
}

pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fast_path_decodes_exactly_what_the_general_path_does() {
        let cases: &[&str] = &[
            r#"{"ts": 1764000000000, "quantity": "SO2", "value": 12.3, "unit": "mg/m3", "flag": "N"}"#,
            r#"{"quantity": "SO2", "value": "12.3"}"#,
            r#"{"quantity": "SO2", "value": 1, "unit": null, "ts": null, "flag": null, "period": null}"#,
            r#"{"quantity": 5, "value": [1], "ts": "2026-11-24T10:00:00+08:00", "period": "1h"}"#,
            r#" [ {"quantity": "SO2", "value": 1}, {"quantity": "NOx", "value": 2.5, "flag": "M"} ]"#,
        ];
        for c in cases {
            let fast = decode_fast(c.as_bytes()).unwrap_or_else(|| panic!("fast path: {c}"));
            let general = decode_general(c.as_bytes()).unwrap();
            assert_eq!(fast, general, "{c}");
        }
        // Shapes the fast path leaves to the general one.
        for c in [
            r#"{"values": {"SO2": 1}}"#,
            r#"{"quantity": "SO2", "value": 1, "colour": "red"}"#,
            r#"{"quantity": "SO2"}"#,
            r#"{"quantity": "SO2", "value": 1, "value": 2}"#,
            "[]",
            "[1]",
            "12",
            "not json",
        ] {
            assert!(decode_fast(c.as_bytes()).is_none(), "{c}");
        }
    }

    /// The issue's `[good, {"ts", "quantity": "SO2"} (no value), good]`: the middle element is
    /// refused with its path, both neighbours are kept.
    #[test]
    fn a_bad_array_element_is_refused_alone() {
        let (items, refused) = decode_each(
            br#"[{"quantity":"SO2","value":1},{"ts":1764000000000,"quantity":"SO2"},{"quantity":"NOx","value":2}]"#,
        );
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].value, Value::from(1));
        assert_eq!(items[1].quantity, Value::from("NOx"));
        assert_eq!(refused.len(), 1);
        assert!(
            refused[0].detail.starts_with("[1]"),
            "{}",
            refused[0].detail
        );
        // Not JSON, or empty, is one refusal of the whole message.
        assert_eq!(decode_each(b"not json").1.len(), 1);
        assert_eq!(decode_each(b"  ").1[0].reason, RejectReason::EmptyPayload);
        assert_eq!(decode_each(b"[]").1[0].reason, RejectReason::InvalidPayload);
    }

    #[test]
    fn a_duplicate_key_refuses_its_element_alone() {
        // `serde_json::Value` would keep the last "value" (99) and store it as if it were meant.
        let (items, refused) = decode_each(
            br#"[{"quantity":"SO2","value":12,"value":99},{"quantity":"NOx","value":30},{"ts":1,"values":{"SO2":1,"SO2":2}}]"#,
        );
        assert_eq!(items.len(), 1, "{items:?}");
        assert_eq!(items[0].quantity, "NOx");
        assert_eq!(refused.len(), 2, "{refused:?}");
        assert!(refused
            .iter()
            .all(|r| r.reason == RejectReason::InvalidPayload));
        assert!(
            refused[0].detail.contains("[0]")
                && refused[0].detail.contains("\"value\" appears twice"),
            "{}",
            refused[0].detail
        );
        assert!(
            refused[1].detail.contains("[2]") && refused[1].detail.contains("\"values.SO2\""),
            "{}",
            refused[1].detail
        );
        let whole = decode(br#"{"quantity":"SO2","quantity":"NOx","value":1}"#).unwrap_err();
        assert!(
            whole.detail.starts_with("payload: key \"quantity\""),
            "{}",
            whole.detail
        );
        // Equal keys in different objects are not duplicates.
        let (items, refused) =
            decode_each(br#"{"ts":1,"values":{"SO2":{"value":1},"NOx":{"value":2}}}"#);
        assert_eq!((items.len(), refused.len()), (2, 0));
    }

    #[test]
    fn single_multi_and_array_shapes_decode() {
        let one =
            decode(br#"{"ts":1,"quantity":"SO2","value":12.3,"unit":"mg/m3","flag":"N"}"#).unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].quantity, Value::from("SO2"));
        let multi = decode(br#"{"ts":"2026-11-24T10:00:00Z","flag":"C","values":{"SO2":12.3,"NOx":{"value":30.1,"unit":"ppm"}}}"#).unwrap();
        assert_eq!(multi.len(), 2);
        let nox = multi.iter().find(|i| i.quantity == "NOx").unwrap();
        assert_eq!(nox.unit, Some(Value::from("ppm")));
        assert_eq!(
            nox.flag,
            Some(Value::from("C")),
            "top-level flag applies to every value"
        );
        assert_eq!(nox.paths.value(), "values.NOx.value");
        assert_eq!(nox.paths.flag(), "flag");
        let arr = decode(br#"[{"quantity":"O2","value":6},{"values":{"SO2":1,"PM":2}}]"#).unwrap();
        assert_eq!(arr.len(), 3);
        assert_eq!(arr[2].paths.value(), "[1].values.SO2");
        assert_eq!(arr[2].paths.ts(), "[1].ts");
    }

    #[test]
    fn whole_message_rejections_say_why() {
        assert_eq!(
            decode(b"  ").unwrap_err().reason,
            RejectReason::EmptyPayload
        );
        assert_eq!(decode(b"{nope").unwrap_err().reason, RejectReason::NotJson);
        assert_eq!(
            decode(b"42").unwrap_err().reason,
            RejectReason::InvalidPayload
        );
        assert_eq!(
            decode(b"[]").unwrap_err().reason,
            RejectReason::InvalidPayload
        );
        let e = decode(br#"{"quantity":"SO2"}"#).unwrap_err();
        assert_eq!(e.detail, "value: missing");
        let e = decode(br#"{"quantity":"SO2","value":1,"colour":"red"}"#).unwrap_err();
        assert_eq!(e.detail, "colour: unknown field");
        let e = decode(br#"[{"quantity":"SO2","value":1}, 7]"#).unwrap_err();
        assert!(
            e.detail.starts_with("[1]: expected an object"),
            "{}",
            e.detail
        );
    }
}
