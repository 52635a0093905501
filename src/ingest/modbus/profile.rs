//! Device profiles: a device type described once (which register holds which quantity, in which
//! type and order, with which scale) and reused by every sensor of that type.
//!
//! Profiles live in `config/profiles/*.toml` (compiled in) or in `modbus.profiles_dir`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::decode::{DataType, WordOrder};
use crate::reading::DataFlag;

/// Profiles compiled into the binary.
pub const EMBEDDED_PROFILES: [(&str, &str); 3] = [
    (
        "generic-flue-gas-analyzer.toml",
        include_str!("../../../config/profiles/generic-flue-gas-analyzer.toml"),
    ),
    (
        "generic-water-analyzer.toml",
        include_str!("../../../config/profiles/generic-water-analyzer.toml"),
    ),
    (
        "em-flow-meter.toml",
        include_str!("../../../config/profiles/em-flow-meter.toml"),
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("cannot read profiles from {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("profile file {file}: {message}")]
    Parse { file: String, message: String },
    #[error("profile {id}: {message}")]
    Invalid { id: String, message: String },
}

/// Which Modbus table a value is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegisterKind {
    Holding,
    Input,
    Coil,
    DiscreteInput,
}

impl RegisterKind {
    /// Bits rather than registers.
    pub fn is_bit(self) -> bool {
        matches!(self, RegisterKind::Coil | RegisterKind::DiscreteInput)
    }
}

/// One value of a device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValueDef {
    /// Catalogue quantity.
    pub quantity: String,
    /// Unit of the scaled value; default: the sensor channel's unit.
    #[serde(default)]
    pub unit: Option<String>,
    pub register: RegisterKind,
    /// Zero-based protocol address.
    pub address: u16,
    #[serde(rename = "type")]
    pub data_type: DataType,
    #[serde(default)]
    pub order: WordOrder,
    /// value = raw × scale + offset.
    #[serde(default = "one")]
    pub scale: f64,
    #[serde(default)]
    pub offset: f64,
}

fn one() -> f64 {
    1.0
}

/// A status register whose value sets the data flag of every reading of the poll.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusDef {
    pub register: RegisterKind,
    pub address: u16,
    #[serde(rename = "type", default = "u16_type")]
    pub data_type: DataType,
    #[serde(default)]
    pub order: WordOrder,
    /// Status value (as a decimal string) → HJ 212 flag; other values mean normal (N).
    pub flags: BTreeMap<String, DataFlag>,
}

fn u16_type() -> DataType {
    DataType::U16
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub id: String,
    pub name_zh: String,
    pub name_en: String,
    #[serde(default)]
    pub description: String,
    pub values: Vec<ValueDef>,
    #[serde(default)]
    pub status: Option<StatusDef>,
}

impl Profile {
    /// Check addresses and types; every problem at once.
    pub fn validate(&self) -> Result<(), ProfileError> {
        let mut errs = Vec::new();
        for (i, v) in self.values.iter().enumerate() {
            if crate::catalogue::find_quantity(&v.quantity).is_none() {
                errs.push(format!(
                    "values[{i}].quantity: {:?} is not in the catalogue",
                    v.quantity
                ));
            }
            let width = if v.register.is_bit() {
                1
            } else {
                v.data_type.words() as u32
            };
            if v.address as u32 + width > 65_536 {
                errs.push(format!(
                    "values[{i}].address: {} + {width} registers passes 65535",
                    v.address
                ));
            }
            if v.register.is_bit() && v.data_type != DataType::Bool {
                errs.push(format!(
                    "values[{i}].type: coils and discrete inputs are bool"
                ));
            }
            if !v.scale.is_finite() || v.scale == 0.0 || !v.offset.is_finite() {
                errs.push(format!(
                    "values[{i}].scale: must be a finite non-zero number (offset finite)"
                ));
            }
        }
        if let Some(s) = &self.status {
            for k in s.flags.keys() {
                if k.parse::<i64>().is_err() {
                    errs.push(format!("status.flags: key {k:?} is not an integer"));
                }
            }
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(ProfileError::Invalid {
                id: self.id.clone(),
                message: errs.join("; "),
            })
        }
    }
}

fn parse(file: &str, text: &str) -> Result<Profile, ProfileError> {
    let p: Profile = toml::from_str(text).map_err(|e| ProfileError::Parse {
        file: file.to_string(),
        message: e.to_string(),
    })?;
    p.validate()?;
    Ok(p)
}

/// The compiled-in profiles, by id.
pub fn embedded() -> Result<BTreeMap<String, Profile>, ProfileError> {
    let mut out = BTreeMap::new();
    for (file, text) in EMBEDDED_PROFILES {
        let p = parse(file, text)?;
        out.insert(p.id.clone(), p);
    }
    Ok(out)
}

/// The compiled-in profiles plus every `*.toml` in `dir` (a file's profile replaces a built-in one
/// with the same id).
pub fn load(dir: Option<&Path>) -> Result<BTreeMap<String, Profile>, ProfileError> {
    let mut out = embedded()?;
    if let Some(dir) = dir {
        for (f, text) in crate::registry::read_toml_dir(dir)
            .map_err(|(path, source)| ProfileError::Read { path, source })?
        {
            let p = parse(&f.display().to_string(), &text)?;
            out.insert(p.id.clone(), p);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_profiles_load_and_check() {
        let p = embedded().unwrap();
        assert_eq!(p.len(), 3);
        let water = &p["generic-water-analyzer"];
        let qs: Vec<&str> = water.values.iter().map(|v| v.quantity.as_str()).collect();
        for q in ["COD", "NH3-N", "TP", "TN", "pH"] {
            assert!(qs.contains(&q), "{q}");
        }
        assert!(p["em-flow-meter"]
            .values
            .iter()
            .any(|v| v.quantity == "flow_total"));
        assert!(p["generic-flue-gas-analyzer"].status.is_some());
    }

    #[test]
    fn bad_profiles_report_every_problem() {
        let text = r#"
            id = "bad"
            name_zh = "坏"
            name_en = "bad"
            values = [
              { quantity = "Hg", register = "holding", address = 0, type = "f32" },
              { quantity = "COD", register = "holding", address = 65535, type = "f32" },
              { quantity = "TP", register = "coil", address = 3, type = "u16" },
            ]
        "#;
        let ProfileError::Invalid { message, .. } = parse("bad.toml", text).unwrap_err() else {
            panic!()
        };
        assert!(message.contains("values[0].quantity"), "{message}");
        assert!(
            message.contains("values[1].address: 65535 + 2 registers passes 65535"),
            "{message}"
        );
        assert!(message.contains("values[2].type"), "{message}");
    }
}
