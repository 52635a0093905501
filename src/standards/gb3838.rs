//! GB 3838-2002 地表水环境质量标准: the class of a river section, the worst of its parameters.
//!
//! Table 1 (mg/L; GB 3838-2002, as secondary sources agree): for COD, CODMn, NH3-N and TP the
//! class is the first whose limit the value does not exceed; for DO (higher is better) the first
//! whose minimum the value reaches. Worse than class V is "劣V类". TP limits differ for lakes and
//! reservoirs.
//!
//! Values are compared **as reported**: rounded per GB/T 8170-2008 (四舍六入五成双) to the
//! parameter's reporting precision (`reporting_decimals`), never as a raw float mean — 24 hours of
//! TP 0.1 average to 0.10000000000000003 in binary floating point, which is not above 0.1. The
//! precisions are one decimal place finer than or equal to the finest limit of each parameter
//! (COD 1 mg/L; CODMn, DO 0.1; NH3-N, TP river 0.01; TP lake 0.001), as the GB 3838 tables print
//! them.

use serde::{Deserialize, Serialize};

use super::hj633::round_half_even;

/// Water quality class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum WaterClass {
    I,
    II,
    III,
    IV,
    V,
    /// 劣V类.
    WorseThanV,
}

impl WaterClass {
    const ALL: [WaterClass; 5] = [
        WaterClass::I,
        WaterClass::II,
        WaterClass::III,
        WaterClass::IV,
        WaterClass::V,
    ];

    pub fn label_zh(self) -> &'static str {
        match self {
            WaterClass::I => "I类",
            WaterClass::II => "II类",
            WaterClass::III => "III类",
            WaterClass::IV => "IV类",
            WaterClass::V => "V类",
            WaterClass::WorseThanV => "劣V类",
        }
    }
}

/// Parameters GB 3838 classes here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parameter {
    Cod,
    CodMn,
    Nh3n,
    TpRiver,
    TpLake,
    Do,
}

fn limits(p: Parameter) -> [f64; 5] {
    match p {
        Parameter::Cod => [15.0, 15.0, 20.0, 30.0, 40.0],
        Parameter::CodMn => [2.0, 4.0, 6.0, 10.0, 15.0],
        Parameter::Nh3n => [0.15, 0.5, 1.0, 1.5, 2.0],
        Parameter::TpRiver => [0.02, 0.1, 0.2, 0.3, 0.4],
        Parameter::TpLake => [0.01, 0.025, 0.05, 0.1, 0.2],
        Parameter::Do => [7.5, 6.0, 5.0, 3.0, 2.0],
    }
}

/// How a value is compared with a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Comparison {
    /// GB/T 8170 修约值比较法: round to the reporting precision, then compare.
    #[default]
    Rounded,
    /// GB/T 8170 §4.3 全数值比较法: the unrounded value, with binary noise below 1e-9 removed.
    FullValue,
}

impl Comparison {
    /// The value compared with a limit of a parameter reported with `decimals` places.
    pub fn value(self, v: f64, decimals: u32) -> f64 {
        match self {
            Comparison::Rounded => round_half_even(v, decimals),
            Comparison::FullValue => round_half_even(v, 9),
        }
    }
}

/// Decimal places a parameter is reported with (GB/T 8170 rounding before comparison).
pub fn reporting_decimals(p: Parameter) -> u32 {
    match p {
        Parameter::Cod => 0,
        Parameter::CodMn | Parameter::Do => 1,
        Parameter::Nh3n | Parameter::TpRiver => 2,
        Parameter::TpLake => 3,
    }
}

/// The parameter a water quantity key is classed as (rivers: TP against the river limits).
pub fn parameter_of(key: &str) -> Option<Parameter> {
    Some(match key {
        "COD" => Parameter::Cod,
        "CODMn" => Parameter::CodMn,
        "NH3-N" => Parameter::Nh3n,
        "TP" => Parameter::TpRiver,
        "DO" => Parameter::Do,
        _ => return None,
    })
}

/// The value as reported: GB/T 8170 rounding to the parameter's precision.
pub fn reported(p: Parameter, value: f64) -> f64 {
    round_half_even(value, reporting_decimals(p))
}

/// The class one parameter's value meets, judged on the value as reported.
pub fn class_of(p: Parameter, value: f64) -> WaterClass {
    class_by(Comparison::Rounded, p, value)
}

/// The class one parameter's value meets under a comparison method.
pub fn class_by(cmp: Comparison, p: Parameter, value: f64) -> WaterClass {
    let l = limits(p);
    let value = cmp.value(value, reporting_decimals(p));
    let meets = |i: usize| {
        if p == Parameter::Do {
            value >= l[i]
        } else {
            value <= l[i]
        }
    };
    (0..5)
        .find(|&i| meets(i))
        .map(|i| WaterClass::ALL[i])
        .unwrap_or(WaterClass::WorseThanV)
}

/// The section's class: the worst parameter's, with the parameters that set it.
pub fn section_class(values: &[(Parameter, f64)]) -> Option<(WaterClass, Vec<Parameter>)> {
    section_class_by(Comparison::Rounded, values)
}

/// [`section_class`] under a comparison method.
pub fn section_class_by(
    cmp: Comparison,
    values: &[(Parameter, f64)],
) -> Option<(WaterClass, Vec<Parameter>)> {
    let worst = values.iter().map(|(p, v)| class_by(cmp, *p, *v)).max()?;
    let setting = values
        .iter()
        .filter(|(p, v)| class_by(cmp, *p, *v) == worst)
        .map(|(p, _)| *p)
        .collect();
    Some((worst, setting))
}

#[cfg(test)]
mod tests {
    use super::*;
    use Parameter::*;

    #[test]
    fn classes_by_hand() {
        assert_eq!(class_of(Cod, 15.0), WaterClass::I);
        // COD is reported to 1 mg/L: 15.1 reports as 15 (I), 15.6 as 16 (III).
        assert_eq!(class_of(Cod, 15.1), WaterClass::I);
        assert_eq!(class_of(Cod, 15.6), WaterClass::III);
        assert_eq!(class_of(Nh3n, 1.0), WaterClass::III);
        assert_eq!(class_of(Nh3n, 2.01), WaterClass::WorseThanV);
        assert_eq!(class_of(TpRiver, 0.1), WaterClass::II);
        assert_eq!(class_of(TpLake, 0.1), WaterClass::IV);
        assert_eq!(class_of(Do, 7.5), WaterClass::I);
        assert_eq!(class_of(Do, 5.5), WaterClass::III);
        assert_eq!(class_of(Do, 1.9), WaterClass::WorseThanV);
        // COD 16 (III), NH3-N 0.6 (III), DO 7 (II): the section is III, set by COD and NH3-N.
        assert_eq!(
            section_class(&[(Cod, 16.0), (Nh3n, 0.6), (Do, 7.0)]),
            Some((WaterClass::III, vec![Cod, Nh3n]))
        );
        assert_eq!(WaterClass::WorseThanV.label_zh(), "劣V类");
    }

    #[test]
    fn a_mean_on_a_limit_is_in_that_class() {
        // 24 hourly TP 0.1 mg/L: the float mean is 0.10000000000000003; reported (0.01 mg/L, GB/T
        // 8170) it is 0.10, which is ≤ 0.1: class II (Table 1), not III. TP 0.2 → III, not IV.
        let mean = |v: f64| (0..24).map(|_| v).sum::<f64>() / 24.0;
        assert!(mean(0.1) > 0.1, "the float noise this guards against");
        assert_eq!(class_of(TpRiver, mean(0.1)), WaterClass::II);
        assert_eq!(class_of(TpRiver, mean(0.2)), WaterClass::III);
        // Half to even: COD 15.5 reports as 16 (III); 14.5 as 14 (I); NH3-N 0.505 as 0.50 (II).
        assert_eq!(class_of(Cod, 15.5), WaterClass::III);
        assert_eq!(class_of(Cod, 14.5), WaterClass::I);
        assert_eq!(class_of(Nh3n, 0.505), WaterClass::II);
        assert_eq!(class_of(Nh3n, 0.506), WaterClass::III);
        // Full-value comparison keeps 0.104 above 0.1 (III) but removes the binary noise.
        assert_eq!(
            class_by(Comparison::FullValue, TpRiver, mean(0.1)),
            WaterClass::II
        );
        assert_eq!(
            class_by(Comparison::FullValue, TpRiver, 0.104),
            WaterClass::III
        );
        assert_eq!(class_of(TpRiver, 0.104), WaterClass::II);
    }
}
