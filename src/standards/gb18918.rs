//! GB 18918-2002 城镇污水处理厂污染物排放标准, Class 1A (一级 A) effluent limits.
//!
//! mg/L (GB 18918-2002 Table 1, as secondary sources agree): COD 50, BOD5 10, SS 10, NH3-N 5 — 8 when
//! the water is at or below 12 °C (the bracketed value of Table 1) —, TN 15, TP 0.5 (1 for plants
//! built before 2006-01-01), pH 6–9.

//!
//! Like GB 3838, a daily mean is compared as reported (GB/T 8170 rounding: COD, BOD5, SS, NH3-N,
//! TN and pH to 0.1, TP to 0.01 mg/L), so binary noise on a mean equal to a limit is never a
//! violation.

use serde::{Deserialize, Serialize};

/// One parameter's verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub parameter: String,
    pub value: f64,
    /// "≤ 50", "6–9", …
    pub limit: String,
    pub compliant: bool,
}

/// Daily means of the effluent (`None` = not measured).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Effluent {
    pub cod: Option<f64>,
    pub bod5: Option<f64>,
    pub ss: Option<f64>,
    pub nh3n: Option<f64>,
    pub tn: Option<f64>,
    pub tp: Option<f64>,
    pub ph: Option<f64>,
    pub water_temp: Option<f64>,
}

/// The NH3-N limit for a water temperature (8 at or below 12 °C, else 5; 5 when unknown).
pub fn nh3n_limit(water_temp_c: Option<f64>) -> f64 {
    match water_temp_c {
        Some(t) if t <= 12.0 => 8.0,
        _ => 5.0,
    }
}

/// Evaluate every measured parameter against Class 1A.
pub fn class_1a(e: &Effluent, built_before_2006: bool) -> Vec<Verdict> {
    class_1a_by(super::gb3838::Comparison::Rounded, e, built_before_2006)
}

/// Decimal places a parameter is reported with (TP 0.01 mg/L, the rest 0.1).
pub fn reporting_decimals(parameter: &str) -> u32 {
    if parameter == "TP" {
        2
    } else {
        1
    }
}

/// [`class_1a`] under a comparison method.
pub fn class_1a_by(
    cmp: super::gb3838::Comparison,
    e: &Effluent,
    built_before_2006: bool,
) -> Vec<Verdict> {
    let mut out = Vec::new();
    let mut max = |parameter: &'static str, value: Option<f64>, limit: f64| {
        if let Some(v) = value {
            let v = cmp.value(v, reporting_decimals(parameter));
            out.push(Verdict {
                parameter: parameter.to_string(),
                value: v,
                limit: format!("≤ {limit}"),
                compliant: v <= limit,
            });
        }
    };
    max("COD", e.cod, 50.0);
    max("BOD5", e.bod5, 10.0);
    max("SS", e.ss, 10.0);
    max("NH3-N", e.nh3n, nh3n_limit(e.water_temp));
    max("TN", e.tn, 15.0);
    max("TP", e.tp, if built_before_2006 { 1.0 } else { 0.5 });
    if let Some(ph) = e.ph {
        let ph = cmp.value(ph, 1);
        out.push(Verdict {
            parameter: "pH".to_string(),
            value: ph,
            limit: "6–9".into(),
            compliant: (6.0..=9.0).contains(&ph),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_1a_by_hand_with_the_cold_water_ammonia_limit() {
        let e = Effluent {
            cod: Some(50.0),
            nh3n: Some(6.0),
            tp: Some(0.6),
            ph: Some(9.1),
            water_temp: Some(15.0),
            ..Default::default()
        };
        let v = class_1a(&e, false);
        let c: Vec<(&str, bool)> = v
            .iter()
            .map(|x| (x.parameter.as_str(), x.compliant))
            .collect();
        // COD 50 ≤ 50 ok; NH3-N 6 > 5 at 15 °C; TP 0.6 > 0.5; pH 9.1 outside 6–9.
        assert_eq!(
            c,
            vec![
                ("COD", true),
                ("NH3-N", false),
                ("TP", false),
                ("pH", false)
            ]
        );
        // At 12 °C the NH3-N limit is 8: 6 complies. A plant built before 2006: TP limit 1.
        let cold = Effluent {
            water_temp: Some(12.0),
            ..e
        };
        let v = class_1a(&cold, true);
        assert!(v.iter().find(|x| x.parameter == "NH3-N").unwrap().compliant);
        assert!(v.iter().find(|x| x.parameter == "TP").unwrap().compliant);
    }
}
