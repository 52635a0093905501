//! The quantity catalogue: what can be measured, its canonical unit, its HJ 212 code, and how units
//! convert.
//!
//! Sensors declare which catalogue quantities they measure and in which unit; payloads may name a
//! quantity by key, alias or HJ 212 code and may send any unit of the same dimension. Codes are from
//! HJ 212-2017 Appendix B (pollutant codes).

use serde::Serialize;

/// Physical dimension: two units convert only within one dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Dimension {
    /// Mass concentration in gas (base mg/m3). `ppm` converts for gases with a molar factor.
    GasConcentration,
    /// Mass concentration in water (base mg/L).
    WaterConcentration,
    /// Volume fraction in percent.
    Percent,
    /// Temperature (base degC).
    Temperature,
    /// Pressure (base kPa).
    Pressure,
    /// Speed (base m/s).
    Velocity,
    /// Volume flow (base m3/h).
    Flow,
    /// Volume (base m3), e.g. a flow meter's totalizer.
    Volume,
    /// pH (dimensionless, its own scale).
    Ph,
    /// Electric power (base MW), e.g. a generating unit's load.
    Power,
}

/// A unit the daemon understands: canonical spelling, dimension, and the affine map to the
/// dimension's base unit (`base = value * factor + offset`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Unit {
    pub symbol: &'static str,
    pub dimension: Dimension,
    factor: f64,
    offset: f64,
}

const fn unit(symbol: &'static str, dimension: Dimension, factor: f64, offset: f64) -> Unit {
    Unit {
        symbol,
        dimension,
        factor,
        offset,
    }
}

/// Every unit, canonical spelling first. `ppm` is listed as a gas concentration; it converts only for
/// quantities that have a `ppm_to_mg_m3` factor.
const UNITS: &[Unit] = &[
    unit("mg/m3", Dimension::GasConcentration, 1.0, 0.0),
    unit("ug/m3", Dimension::GasConcentration, 0.001, 0.0),
    unit("ppm", Dimension::GasConcentration, f64::NAN, 0.0),
    unit("mg/L", Dimension::WaterConcentration, 1.0, 0.0),
    unit("ug/L", Dimension::WaterConcentration, 0.001, 0.0),
    unit("%", Dimension::Percent, 1.0, 0.0),
    unit("degC", Dimension::Temperature, 1.0, 0.0),
    unit("K", Dimension::Temperature, 1.0, -273.15),
    unit("kPa", Dimension::Pressure, 1.0, 0.0),
    unit("Pa", Dimension::Pressure, 0.001, 0.0),
    unit("hPa", Dimension::Pressure, 0.1, 0.0),
    unit("m/s", Dimension::Velocity, 1.0, 0.0),
    unit("m3/h", Dimension::Flow, 1.0, 0.0),
    unit("m3/s", Dimension::Flow, 3600.0, 0.0),
    unit("L/s", Dimension::Flow, 3.6, 0.0),
    unit("m3/d", Dimension::Flow, 1.0 / 24.0, 0.0),
    unit("m3", Dimension::Volume, 1.0, 0.0),
    unit("L", Dimension::Volume, 0.001, 0.0),
    unit("pH", Dimension::Ph, 1.0, 0.0),
    unit("MW", Dimension::Power, 1.0, 0.0),
    unit("kW", Dimension::Power, 0.001, 0.0),
];

/// Other spellings seen on the wire, mapped to the canonical symbol.
const UNIT_ALIASES: &[(&str, &str)] = &[
    ("mg/m³", "mg/m3"),
    ("mg/nm3", "mg/m3"),
    ("mg/nm³", "mg/m3"),
    ("µg/m3", "ug/m3"),
    ("μg/m3", "ug/m3"),
    ("µg/m³", "ug/m3"),
    ("μg/m³", "ug/m3"),
    ("ug/m³", "ug/m3"),
    ("mg/l", "mg/L"),
    ("µg/l", "ug/L"),
    ("μg/l", "ug/L"),
    ("ug/l", "ug/L"),
    ("°c", "degC"),
    ("℃", "degC"),
    ("c", "degC"),
    ("celsius", "degC"),
    ("m³/h", "m3/h"),
    ("m³/s", "m3/s"),
    ("m³/d", "m3/d"),
    ("l/s", "L/s"),
    ("m³", "m3"),
    ("l", "L"),
    ("percent", "%"),
    ("vol%", "%"),
];

/// Look a unit up by canonical symbol or alias (case-insensitive).
pub fn find_unit(spelling: &str) -> Option<&'static Unit> {
    let s = spelling.trim();
    if let Some(u) = UNITS.iter().find(|u| u.symbol == s) {
        return Some(u);
    }
    let lower = s.to_lowercase();
    let canonical = UNIT_ALIASES
        .iter()
        .find(|(alias, _)| *alias == lower)
        .map(|(_, c)| *c)
        .unwrap_or(lower.as_str());
    UNITS
        .iter()
        .find(|u| u.symbol.eq_ignore_ascii_case(canonical))
}

/// One measurable quantity.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Quantity {
    /// Catalogue key, as written in seeds and payloads, e.g. `SO2`, `PM2.5`.
    pub key: &'static str,
    /// Line-protocol field name (lowercase ASCII).
    pub field: &'static str,
    /// Chinese name (operators read it first).
    pub name_zh: &'static str,
    /// English name.
    pub name_en: &'static str,
    pub dimension: Dimension,
    /// Unit used when a sensor channel does not name one.
    pub default_unit: &'static str,
    /// HJ 212-2017 pollutant code, where the standard has one.
    pub hj212: Option<&'static str>,
    /// Plausible range in `default_unit`; a channel may narrow or widen it.
    pub min: f64,
    pub max: f64,
    /// Flue gas: ppm → mg/m3 at standard state (273.15 K, 101.325 kPa: M/22.4), the HJ 75-2017
    /// factors. Ambient air uses [`Quantity::molar_mass`] at 298.15 K instead ([`GasReference`]).
    #[serde(skip)]
    pub ppm_to_mg_m3: Option<f64>,
    /// Molar mass, g/mol, for the ambient conversion (GB 3095-2012 amendment 2018, GB 3095-2026:
    /// gaseous pollutants at 298.15 K and 1013.25 hPa, mg/m3 = ppm × M/24.465).
    #[serde(skip)]
    pub molar_mass: Option<f64>,
}

#[allow(clippy::too_many_arguments)]
const fn q(
    key: &'static str,
    field: &'static str,
    name_zh: &'static str,
    name_en: &'static str,
    dimension: Dimension,
    default_unit: &'static str,
    hj212: Option<&'static str>,
    min: f64,
    max: f64,
    ppm_to_mg_m3: Option<f64>,
) -> Quantity {
    let molar_mass = match key.as_bytes() {
        b"SO2" => Some(64.066),
        b"NO2" => Some(46.006),
        b"NO" => Some(30.006),
        b"CO" => Some(28.010),
        b"O3" => Some(47.998),
        _ => None,
    };
    Quantity {
        key,
        field,
        name_zh,
        name_en,
        dimension,
        default_unit,
        hj212,
        min,
        max,
        ppm_to_mg_m3,
        molar_mass,
    }
}

use Dimension::*;

/// The catalogue. Flue-gas quantities first, then ambient air, then water.
pub const QUANTITIES: &[Quantity] = &[
    q(
        "SO2",
        "so2",
        "二氧化硫",
        "sulphur dioxide",
        GasConcentration,
        "mg/m3",
        Some("a21026"),
        0.0,
        20_000.0,
        Some(2.86),
    ),
    q(
        "NOx",
        "nox",
        "氮氧化物(以NO2计)",
        "nitrogen oxides as NO2",
        GasConcentration,
        "mg/m3",
        Some("a21002"),
        0.0,
        10_000.0,
        Some(2.05),
    ),
    q(
        "NO",
        "no",
        "一氧化氮",
        "nitric oxide",
        GasConcentration,
        "mg/m3",
        Some("a21003"),
        0.0,
        10_000.0,
        Some(1.34),
    ),
    q(
        "NO2",
        "no2",
        "二氧化氮",
        "nitrogen dioxide",
        GasConcentration,
        "mg/m3",
        Some("a21004"),
        0.0,
        10_000.0,
        Some(2.05),
    ),
    q(
        "CO",
        "co",
        "一氧化碳",
        "carbon monoxide",
        GasConcentration,
        "mg/m3",
        Some("a21005"),
        0.0,
        10_000.0,
        Some(1.25),
    ),
    q(
        "O2",
        "o2",
        "氧含量",
        "oxygen",
        Percent,
        "%",
        Some("a19001"),
        0.0,
        25.0,
        None,
    ),
    q(
        "PM",
        "pm",
        "颗粒物(烟尘)",
        "particulate (smoke dust)",
        GasConcentration,
        "mg/m3",
        Some("a34013"),
        0.0,
        10_000.0,
        None,
    ),
    q(
        "flue_velocity",
        "flue_velocity",
        "烟气流速",
        "flue gas velocity",
        Velocity,
        "m/s",
        Some("a01011"),
        0.0,
        60.0,
        None,
    ),
    q(
        "flue_temp",
        "flue_temp",
        "烟气温度",
        "flue gas temperature",
        Temperature,
        "degC",
        Some("a01012"),
        -40.0,
        600.0,
        None,
    ),
    q(
        "flue_pressure",
        "flue_pressure",
        "烟气压力",
        "flue gas pressure",
        Pressure,
        "kPa",
        Some("a01013"),
        -20.0,
        200.0,
        None,
    ),
    q(
        "moisture",
        "moisture",
        "烟气湿度",
        "flue gas moisture",
        Percent,
        "%",
        Some("a01014"),
        0.0,
        100.0,
        None,
    ),
    q(
        "load",
        "load",
        "机组负荷",
        "unit load",
        Power,
        "MW",
        None,
        0.0,
        2000.0,
        None,
    ),
    q(
        "flue_flow",
        "flue_flow",
        "烟气流量",
        "flue gas flow",
        Flow,
        "m3/h",
        Some("a00000"),
        0.0,
        1.0e8,
        None,
    ),
    q(
        "PM2.5",
        "pm25",
        "细颗粒物",
        "fine particulate matter",
        GasConcentration,
        "ug/m3",
        Some("a34004"),
        0.0,
        5_000.0,
        None,
    ),
    q(
        "PM10",
        "pm10",
        "可吸入颗粒物",
        "inhalable particulate matter",
        GasConcentration,
        "ug/m3",
        Some("a34002"),
        0.0,
        10_000.0,
        None,
    ),
    q(
        "O3",
        "o3",
        "臭氧",
        "ozone",
        GasConcentration,
        "ug/m3",
        Some("a05024"),
        0.0,
        5_000.0,
        Some(2.14),
    ),
    q(
        "COD",
        "cod",
        "化学需氧量",
        "chemical oxygen demand",
        WaterConcentration,
        "mg/L",
        Some("w01018"),
        0.0,
        100_000.0,
        None,
    ),
    q(
        "NH3-N",
        "nh3n",
        "氨氮",
        "ammonia nitrogen",
        WaterConcentration,
        "mg/L",
        Some("w21003"),
        0.0,
        2_000.0,
        None,
    ),
    q(
        "TP",
        "tp",
        "总磷",
        "total phosphorus",
        WaterConcentration,
        "mg/L",
        Some("w21011"),
        0.0,
        500.0,
        None,
    ),
    q(
        "TN",
        "tn",
        "总氮",
        "total nitrogen",
        WaterConcentration,
        "mg/L",
        Some("w21001"),
        0.0,
        2_000.0,
        None,
    ),
    q(
        "pH",
        "ph",
        "pH值",
        "pH",
        Ph,
        "pH",
        Some("w01001"),
        0.0,
        14.0,
        None,
    ),
    q(
        "CODMn",
        "codmn",
        "高锰酸盐指数",
        "permanganate index",
        WaterConcentration,
        "mg/L",
        Some("w01019"),
        0.0,
        1_000.0,
        None,
    ),
    q(
        "BOD5",
        "bod5",
        "五日生化需氧量",
        "five-day biochemical oxygen demand",
        WaterConcentration,
        "mg/L",
        Some("w01017"),
        0.0,
        50_000.0,
        None,
    ),
    q(
        "SS",
        "ss",
        "悬浮物",
        "suspended solids",
        WaterConcentration,
        "mg/L",
        Some("w01012"),
        0.0,
        100_000.0,
        None,
    ),
    q(
        "DO",
        "do",
        "溶解氧",
        "dissolved oxygen",
        WaterConcentration,
        "mg/L",
        Some("w01009"),
        0.0,
        25.0,
        None,
    ),
    q(
        "water_temp",
        "water_temp",
        "水温",
        "water temperature",
        Temperature,
        "degC",
        Some("w01010"),
        -5.0,
        60.0,
        None,
    ),
    q(
        "water_flow",
        "water_flow",
        "污水流量",
        "water flow",
        Flow,
        "m3/h",
        Some("w00000"),
        0.0,
        1.0e6,
        None,
    ),
    q(
        "flow_total",
        "flow_total",
        "累计流量",
        "totalized volume",
        Volume,
        "m3",
        None,
        0.0,
        1.0e13,
        None,
    ),
];

/// Other names payloads use for a quantity (compared case-insensitively, after the key and code).
const QUANTITY_ALIASES: &[(&str, &str)] = &[
    ("pm25", "PM2.5"),
    ("pm2_5", "PM2.5"),
    ("nh3n", "NH3-N"),
    ("nh3_n", "NH3-N"),
    ("dust", "PM"),
    ("particulate", "PM"),
    ("smoke", "PM"),
];

/// Find a quantity by key, field name, HJ 212 code or alias (case-insensitive).
pub fn find_quantity(name: &str) -> Option<&'static Quantity> {
    let n = name.trim();
    QUANTITIES
        .iter()
        .find(|q| {
            q.key.eq_ignore_ascii_case(n)
                || q.field.eq_ignore_ascii_case(n)
                || q.hj212.is_some_and(|c| c.eq_ignore_ascii_case(n))
        })
        .or_else(|| {
            QUANTITY_ALIASES
                .iter()
                .find(|(alias, _)| alias.eq_ignore_ascii_case(n))
                .and_then(|(_, key)| QUANTITIES.iter().find(|q| q.key == *key))
        })
}

/// What an ambient air station's analysers report, per quantity: the unit a channel without one is
/// stored in, and the range no ambient analyser goes beyond (in that unit).
///
/// Units: GB 3095 states ambient SO2, NO2, O3 and particulates in µg/m³ and CO in mg/m³, and the
/// stations' analysers and loggers report them so; a flue-gas default (mg/m³) would make every
/// ambient value 1,000 times too large.
///
/// Ranges: above the top of HJ 633's IAQI table (SO2 24 h 2,620 µg/m³, NO2 1 h 3,840 µg/m³, CO 1 h
/// 150 mg/m³, O3 1 h 1,200 µg/m³, PM2.5 24 h 500 µg/m³) with headroom, PM10 up to 10,000 µg/m³
/// because sand-dust episodes in northern China go far past its 600 µg/m³ breakpoint; and far
/// below a typical value read 1,000 times too large (20 µg/m³ of SO2 taken as 20 mg/m³). A value
/// outside is refused (dead-lettered): no ambient analyser of that kind reports it.
const AMBIENT: &[(&str, &str, f64)] = &[
    ("SO2", "ug/m3", 10_000.0),
    ("NO2", "ug/m3", 10_000.0),
    ("NO", "ug/m3", 10_000.0),
    ("NOx", "ug/m3", 10_000.0),
    ("CO", "mg/m3", 200.0),
    ("O3", "ug/m3", 2_500.0),
    ("PM2.5", "ug/m3", 2_000.0),
    ("PM10", "ug/m3", 10_000.0),
    ("PM", "ug/m3", 10_000.0),
];

impl Quantity {
    /// The unit a channel of a sensor in `domain` is stored in when it names none: the catalogue's
    /// (flue gas: mg/m³) except for ambient air, where it is what the stations report ([`AMBIENT`]).
    pub fn default_unit_in(&self, domain: crate::reading::Domain) -> &'static str {
        match domain {
            crate::reading::Domain::Air => AMBIENT
                .iter()
                .find(|(k, _, _)| *k == self.key)
                .map_or(self.default_unit, |(_, u, _)| *u),
            _ => self.default_unit,
        }
    }

    /// The plausible range of this quantity for a sensor in `domain`, in
    /// [`Quantity::default_unit_in`]`(domain)`: what no analyser of that kind reports beyond.
    pub fn plausible_in(&self, domain: crate::reading::Domain) -> (f64, f64) {
        match domain {
            crate::reading::Domain::Air => AMBIENT
                .iter()
                .find(|(k, _, _)| *k == self.key)
                .map_or((self.min, self.max), |(_, _, hi)| (0.0, *hi)),
            _ => (self.min, self.max),
        }
    }
}

/// Why a value could not be converted.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum UnitError {
    #[error("unknown unit {0:?}")]
    Unknown(String),
    #[error("cannot convert {from} to {to} for {quantity}")]
    Incompatible {
        from: &'static str,
        to: &'static str,
        quantity: &'static str,
    },
}

/// Which reference state a gas concentration in ppm is converted at. The two domains differ, so
/// every conversion names its own; none is shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GasReference {
    /// Flue gas (CEMS, HJ 75-2017): standard state 273.15 K, 101.325 kPa, mg/m3 = ppm × M/22.4.
    FlueGas,
    /// Ambient air (GB 3095-2012 as amended in 2018, GB 3095-2026 §3.14): gaseous pollutants at
    /// 298.15 K and 1013.25 hPa, mg/m3 = ppm × M/24.465.
    Ambient,
}

/// Litres per mole at 298.15 K and 101.325 kPa (R·T/p = 8.314462 × 298.15 / 101.325).
pub const AMBIENT_MOLAR_VOLUME_L: f64 = 24.465;

impl GasReference {
    /// The reference of a sensor's domain (water has no gases: its units never involve ppm).
    pub fn of(domain: crate::reading::Domain) -> GasReference {
        match domain {
            crate::reading::Domain::Air => GasReference::Ambient,
            _ => GasReference::FlueGas,
        }
    }

    /// mg/m3 per ppm of `q` at this reference.
    pub fn ppm_factor(self, q: &Quantity) -> Option<f64> {
        match self {
            GasReference::FlueGas => q.ppm_to_mg_m3,
            GasReference::Ambient => q.molar_mass.map(|m| m / AMBIENT_MOLAR_VOLUME_L),
        }
    }
}

/// Convert `value` from `from` to `to` for `quantity`. `ppm` converts to and from mass
/// concentrations only for gases with a factor at `gas`'s reference state.
pub fn convert(
    value: f64,
    from: &Unit,
    to: &Unit,
    quantity: &Quantity,
    gas: GasReference,
) -> Result<f64, UnitError> {
    if from.symbol == to.symbol {
        return Ok(value);
    }
    let incompatible = || UnitError::Incompatible {
        from: from.symbol,
        to: to.symbol,
        quantity: quantity.key,
    };
    if from.dimension != to.dimension || from.dimension != quantity.dimension {
        return Err(incompatible());
    }
    let factor = || gas.ppm_factor(quantity).ok_or_else(incompatible);
    let base = if from.symbol == "ppm" {
        value * factor()?
    } else {
        value * from.factor + from.offset
    };
    if to.symbol == "ppm" {
        Ok(base / factor()?)
    } else {
        Ok((base - to.offset) / to.factor)
    }
}

/// Where a value is reported: the same key (SO2) is reported in µg/m³ to the unit in ambient air
/// and in mg/m³ in flue gas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reporting {
    Ambient,
    FlueGas,
    Water,
}

/// Decimal places a mean of `key` is reported with (GB/T 8170 rounding), in its default unit:
/// - ambient air, HJ 633-2026's rounding of the AQI inputs: SO2, NO2, O3, PM10, PM2.5 to 1 µg/m³,
///   CO to 0.1 mg/m³;
/// - water, the finer of GB 3838's and GB 18918's reporting precisions as the verdicts use them:
///   COD, CODMn, DO, BOD5, SS to 0.1, NH3-N and TN to 0.01, TP to 0.001 mg/L
///   (lakes), pH to 0.01;
/// - everything else (flue gas, flows, temperatures, O2): three places, the resolution HJ 212
///   loggers send.
pub fn reporting_decimals(key: &str, r: Reporting) -> u32 {
    match (r, key) {
        (Reporting::Ambient, "CO") => 1,
        (Reporting::Ambient, "SO2" | "NO2" | "O3" | "PM10" | "PM2.5") => 0,
        (Reporting::Water, "COD" | "CODMn" | "DO" | "BOD5" | "SS" | "water_temp") => 1,
        (Reporting::Water, "NH3-N" | "TN" | "pH") => 2,
        (Reporting::Water, "TP") => 3,
        _ => 3,
    }
}

/// `value` rounded for the API: GB/T 8170 (half to even) at [`reporting_decimals`].
pub fn reported(key: &str, r: Reporting, value: f64) -> f64 {
    crate::standards::hj633::round_half_even(value, reporting_decimals(key, r))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 18: an ambient channel without a unit is in GB 3095's units, not the flue gas's.
    #[test]
    fn ambient_channels_default_to_what_stations_report() {
        use crate::reading::Domain;
        let q = |k: &str| find_quantity(k).unwrap();
        assert_eq!(q("SO2").default_unit_in(Domain::Air), "ug/m3");
        assert_eq!(q("NO2").default_unit_in(Domain::Air), "ug/m3");
        assert_eq!(q("CO").default_unit_in(Domain::Air), "mg/m3");
        assert_eq!(q("SO2").default_unit_in(Domain::Cems), "mg/m3");
        assert_eq!(q("COD").default_unit_in(Domain::Air), "mg/L");
        assert_eq!(q("SO2").plausible_in(Domain::Air), (0.0, 10_000.0));
        assert_eq!(q("SO2").plausible_in(Domain::Cems), (0.0, 20_000.0));
    }

    #[test]
    fn values_are_reported_at_their_precision() {
        // The pH 7.3100000000000005 is 7.31; the water report's 15.440000000000001 COD 15.4.
        assert_eq!(
            reported("pH", Reporting::Water, 7.310_000_000_000_000_5),
            7.31
        );
        assert_eq!(
            reported("COD", Reporting::Water, 15.440_000_000_000_001),
            15.4
        );
        // GB/T 8170: half to even. 0.125 → 0.12 at two places (NH3-N).
        assert_eq!(reported("NH3-N", Reporting::Water, 0.125), 0.12);
        // Ambient SO2 in µg/m³ to the unit; flue-gas SO2 in mg/m³ keeps three places.
        assert_eq!(reported("SO2", Reporting::Ambient, 8.5), 8.0);
        assert_eq!(reported("CO", Reporting::Ambient, 0.86), 0.9);
        assert_eq!(reported("SO2", Reporting::FlueGas, 46.666_666), 46.667);
    }

    fn u(s: &str) -> &'static Unit {
        find_unit(s).unwrap()
    }

    #[test]
    fn quantities_are_found_by_key_field_code_and_alias() {
        assert_eq!(find_quantity("so2").unwrap().key, "SO2");
        assert_eq!(find_quantity("a21026").unwrap().key, "SO2");
        assert_eq!(find_quantity("A34004").unwrap().key, "PM2.5");
        assert_eq!(find_quantity("pm25").unwrap().key, "PM2.5");
        assert_eq!(find_quantity("nh3n").unwrap().key, "NH3-N");
        assert!(find_quantity("Hg").is_none());
    }

    #[test]
    fn keys_fields_and_codes_are_unique() {
        for (i, a) in QUANTITIES.iter().enumerate() {
            assert!(
                find_unit(a.default_unit).is_some(),
                "{} default unit",
                a.key
            );
            for b in &QUANTITIES[i + 1..] {
                assert_ne!(a.key.to_lowercase(), b.key.to_lowercase());
                assert_ne!(a.field, b.field);
                if a.hj212.is_some() {
                    assert_ne!(a.hj212, b.hj212, "{} vs {}", a.key, b.key);
                }
            }
        }
    }

    #[test]
    fn ppm_converts_with_the_hj75_factors() {
        // HJ 75-2017: SO2 2.86, NO 1.34, NO2 2.05, CO 1.25 mg/m3 per ppm.
        let so2 = find_quantity("SO2").unwrap();
        assert!(
            (convert(10.0, u("ppm"), u("mg/m3"), so2, GasReference::FlueGas).unwrap() - 28.6).abs()
                < 1e-9
        );
        let no = find_quantity("NO").unwrap();
        assert!(
            (convert(100.0, u("ppm"), u("mg/m3"), no, GasReference::FlueGas).unwrap() - 134.0)
                .abs()
                < 1e-9
        );
        let co = find_quantity("CO").unwrap();
        assert!(
            (convert(4.0, u("ppm"), u("mg/m3"), co, GasReference::FlueGas).unwrap() - 5.0).abs()
                < 1e-9
        );
        let pm = find_quantity("PM").unwrap();
        assert!(convert(1.0, u("ppm"), u("mg/m3"), pm, GasReference::FlueGas).is_err());
    }

    #[test]
    fn ambient_ppm_converts_at_298_15_k() {
        // GB 3095-2012 (2018 amendment) / GB 3095-2026: 298.15 K, 1013.25 hPa, mg/m3 = ppm × M/24.465.
        // O3 (M 47.998): 0.1 ppm → 4.7998/24.465 = 0.19619 mg/m3 = 196.2 µg/m3 (273.15 K would give 214).
        let o3 = find_quantity("O3").unwrap();
        let v = convert(0.1, u("ppm"), u("ug/m3"), o3, GasReference::Ambient).unwrap();
        assert!((v - 196.2).abs() < 0.05, "{v}");
        // CO (M 28.010): 2 ppm → 56.02/24.465 = 2.2898 mg/m3 (not 2.50).
        let co = find_quantity("CO").unwrap();
        let v = convert(2.0, u("ppm"), u("mg/m3"), co, GasReference::Ambient).unwrap();
        assert!((v - 2.29).abs() < 0.005, "{v}");
        // The flue-gas factor for the same CO is 1.25 (HJ 75): the two domains never share one.
        let v = convert(2.0, u("ppm"), u("mg/m3"), co, GasReference::FlueGas).unwrap();
        assert!((v - 2.5).abs() < 1e-9);
    }

    #[test]
    fn units_convert_within_a_dimension_only() {
        let pm25 = find_quantity("PM2.5").unwrap();
        assert!(
            (convert(0.035, u("mg/m3"), u("µg/m³"), pm25, GasReference::FlueGas).unwrap() - 35.0)
                .abs()
                < 1e-9
        );
        let t = find_quantity("flue_temp").unwrap();
        assert!(
            (convert(323.15, u("K"), u("℃"), t, GasReference::FlueGas).unwrap() - 50.0).abs()
                < 1e-9
        );
        let flow = find_quantity("water_flow").unwrap();
        assert!(
            (convert(1.0, u("L/s"), u("m3/h"), flow, GasReference::FlueGas).unwrap() - 3.6).abs()
                < 1e-12
        );
        assert!(
            (convert(2400.0, u("m3/d"), u("m3/h"), flow, GasReference::FlueGas).unwrap() - 100.0)
                .abs()
                < 1e-9
        );
        let so2 = find_quantity("SO2").unwrap();
        assert!(matches!(
            convert(1.0, u("mg/L"), u("mg/m3"), so2, GasReference::FlueGas),
            Err(UnitError::Incompatible { .. })
        ));
    }
}
