//! GB 3838-2002 地表水环境质量标准: the class of a river section, the worst of its parameters.
//!
//! Table 1 (mg/L; `standards.md` §4, matching secondary sources): for COD, CODMn, NH3-N and TP the
//! class is the first whose limit the value does not exceed; for DO (higher is better) the first
//! whose minimum the value reaches. Worse than class V is "劣V类". TP limits differ for lakes and
//! reservoirs.

use serde::Serialize;

/// Water quality class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
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

/// The class one parameter's value meets.
pub fn class_of(p: Parameter, value: f64) -> WaterClass {
    let l = limits(p);
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
    let worst = values.iter().map(|(p, v)| class_of(*p, *v)).max()?;
    let setting = values
        .iter()
        .filter(|(p, v)| class_of(*p, *v) == worst)
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
        assert_eq!(class_of(Cod, 15.1), WaterClass::III);
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
}
