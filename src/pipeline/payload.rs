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

/// Where each part of an item stands in the payload.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Paths {
    pub quantity: String,
    pub value: String,
    pub unit: String,
    pub ts: String,
    pub flag: String,
    pub period: String,
}

/// Decode a payload into items; a rejection here refuses the whole message.
pub fn decode(payload: &[u8]) -> Result<Vec<RawItem>, Rejection> {
    if payload.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(Rejection::new(
            RejectReason::EmptyPayload,
            "payload is empty",
        ));
    }
    let doc: Value = serde_json::from_slice(payload)
        .map_err(|e| Rejection::new(RejectReason::NotJson, format!("not JSON: {e}")))?;
    let mut items = Vec::new();
    match doc {
        Value::Array(elems) => {
            if elems.is_empty() {
                return Err(Rejection::new(
                    RejectReason::InvalidPayload,
                    "empty array: no readings",
                ));
            }
            for (i, e) in elems.into_iter().enumerate() {
                decode_object(e, &format!("[{i}]"), &mut items)?;
            }
        }
        other => decode_object(other, "", &mut items)?,
    }
    Ok(items)
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
            let item_path = format!("{}.{q}", field(path, "values"));
            match val {
                Value::Object(mut o) => {
                    let value = o.remove("value").unwrap_or(Value::Null);
                    let unit = o.remove("unit");
                    let own_flag = o.remove("flag");
                    let own_ts = o.remove("ts");
                    reject_extra(&o, &item_path)?;
                    let paths = Paths {
                        quantity: item_path.clone(),
                        value: field(&item_path, "value"),
                        unit: field(&item_path, "unit"),
                        ts: field(if own_ts.is_some() { &item_path } else { path }, "ts"),
                        flag: field(if own_flag.is_some() { &item_path } else { path }, "flag"),
                        period: field(path, "period"),
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
                    quantity: Value::String(q),
                    value: scalar,
                    unit: None,
                    ts: ts.clone(),
                    flag: flag.clone(),
                    period: period.clone(),
                    paths: Paths {
                        quantity: item_path.clone(),
                        value: item_path.clone(),
                        unit: field(&item_path, "unit"),
                        ts: field(path, "ts"),
                        flag: field(path, "flag"),
                        period: field(path, "period"),
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
            quantity: field(path, "quantity"),
            value: field(path, "value"),
            unit: field(path, "unit"),
            ts: field(path, "ts"),
            flag: field(path, "flag"),
            period: field(path, "period"),
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
        assert_eq!(nox.paths.value, "values.NOx.value");
        assert_eq!(nox.paths.flag, "flag");
        let arr = decode(br#"[{"quantity":"O2","value":6},{"values":{"SO2":1,"PM":2}}]"#).unwrap();
        assert_eq!(arr.len(), 3);
        assert_eq!(arr[2].paths.value, "[1].values.SO2");
        assert_eq!(arr[2].paths.ts, "[1].ts");
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
