//! Standards results as InfluxDB line protocol (`cems_hourly`, `cems_daily`, `air_hourly`,
//! `air_daily`, `water_daily`, `plan_targets`), for an InfluxDB store. Tags and string fields are
//! escaped by the store's one line-protocol module, so an id is spelled the same in every series.

use super::results::{
    AirDay, AirHour, AqiSummary, CemsDay, CemsHour, Compliance, IndicatorDetail, TreatmentDay,
    Values, WaterDay,
};
use crate::store::line_protocol::{field_name, string_field, tag};

fn push(out: &mut Vec<String>, k: &str, v: Option<f64>) {
    if let Some(v) = v.filter(|x| x.is_finite()) {
        out.push(format!("{}={v}", field_name(k)));
    }
}

fn push_values(out: &mut Vec<String>, values: &Values) {
    for (k, v) in values {
        push(out, k, *v);
    }
}

pub fn cems_hour(h: &CemsHour) -> Vec<String> {
    h.pollutants
        .iter()
        .map(|(q, p)| {
            let mut f = Vec::new();
            push(&mut f, "measured", p.measured);
            push(&mut f, "corrected", p.corrected);
            push(&mut f, "limit", Some(p.limit));
            push(&mut f, "mass_kg_h", p.mass_kg_h);
            f.push(format!("valid_minutes={}", p.valid_minutes));
            f.push(format!("exceeded={}", u8::from(p.exceeded)));
            f.push(format!("valid={}", u8::from(p.is_valid())));
            let status = serde_json::to_value(p.status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            f.push(format!("status={}", string_field(&status)));
            format!(
                "cems_hourly,site={},unit={},pollutant={} {} {}",
                tag(&h.site),
                tag(&h.unit),
                tag(q),
                f.join(","),
                h.hour_ms
            )
        })
        .collect()
}

pub fn cems_day(d: &CemsDay, day_ms: i64) -> Vec<String> {
    d.pollutants
        .iter()
        .map(|(q, p)| {
            let mut f = Vec::new();
            push(&mut f, "valid_hours", Some(f64::from(p.valid_hours)));
            push(&mut f, "exceeded_hours", Some(f64::from(p.exceeded_hours)));
            push(&mut f, "stopped_hours", Some(f64::from(p.stopped_hours)));
            push(&mut f, "expected_hours", Some(f64::from(p.expected_hours)));
            push(&mut f, "compliance_percent", p.compliance_percent);
            push(&mut f, "completeness_percent", p.completeness_percent);
            push(&mut f, "mass_kg", Some(p.mass_kg));
            push(&mut f, "measured_mean", p.measured_mean);
            push(&mut f, "corrected_mean", p.corrected_mean);
            format!(
                "cems_daily,unit={},pollutant={} {} {day_ms}",
                tag(&d.unit),
                tag(q),
                f.join(",")
            )
        })
        .collect()
}

fn air(
    measurement: &str,
    station: &str,
    ts: i64,
    values: &Values,
    aqi: Option<&AqiSummary>,
    good: Option<bool>,
) -> String {
    let mut f = Vec::new();
    push_values(&mut f, values);
    if let Some(a) = aqi {
        push(&mut f, "aqi", a.aqi.map(f64::from));
        if let Some(g) = &a.grade {
            f.push(format!("grade={}", string_field(g)));
        }
        f.push(format!(
            "primary_pollutant={}",
            string_field(&a.primary_pollutants.join("/"))
        ));
    }
    if let Some(good) = good {
        f.push(format!("good_day={}", u8::from(good)));
    }
    if f.is_empty() {
        f.push("aqi_missing=1".into());
    }
    format!(
        "{measurement},station={} {} {ts}",
        tag(station),
        f.join(",")
    )
}

pub fn air_hour(h: &AirHour) -> String {
    air(
        "air_hourly",
        &h.station,
        h.hour_ms,
        &h.values,
        h.aqi.as_ref(),
        None,
    )
}

pub fn air_day(d: &AirDay, day_ms: i64) -> String {
    air(
        "air_daily",
        &d.station,
        day_ms,
        &d.values,
        d.aqi.as_ref(),
        d.good_day,
    )
}

fn water(entity: &str, day_ms: i64, mut f: Vec<String>) -> String {
    if f.is_empty() {
        f.push("no_data=1".into());
    }
    format!(
        "water_daily,sensor={} {} {day_ms}",
        tag(entity),
        f.join(",")
    )
}

pub fn water_day(d: &WaterDay, day_ms: i64) -> String {
    let mut f = Vec::new();
    push_values(&mut f, &d.values);
    push(&mut f, "volume_m3", d.volume_m3);
    if let Some(c) = d.gb18918_class_1a.as_ref().and_then(|c| c.compliant) {
        f.push(format!("class_1a_compliant={}", u8::from(c)));
    }
    if let Some(c) = &d.gb3838_class {
        f.push(format!("gb3838_class={}", string_field(&c.label_zh)));
    }
    water(&d.sensor, day_ms, f)
}

pub fn treatment_day(d: &TreatmentDay, day_ms: i64) -> String {
    let mut f = Vec::new();
    push(&mut f, "treated_m3", d.treated_m3);
    push(&mut f, "produced_m3", d.produced_m3);
    push(&mut f, "treatment_rate_percent", d.treatment_rate_percent);
    water("treatment", day_ms, f)
}

/// `plan_targets` lines (one point per indicator, at `ts`).
pub fn plan_targets(c: &Compliance, ts_ms: i64) -> Vec<String> {
    c.indicators
        .iter()
        .map(|i| {
            // The field is `goal`: a field named like the `target` tag makes `WHERE "target" = …`
            // match the field in InfluxQL, silently.
            let mut f = vec![format!("goal={}", i.target)];
            push(&mut f, "actual", i.actual);
            if let Some(IndicatorDetail::GoodDays(g)) = &i.detail {
                push(
                    &mut f,
                    "affordable_non_good_days",
                    Some(g.affordable_non_good_days as f64),
                );
            }
            let status = serde_json::to_value(i.status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            f.push(format!("status={}", string_field(&status)));
            format!("plan_targets,target={} {} {ts_ms}", tag(&i.id), f.join(","))
        })
        .collect()
}
