//! How the per-rater marks stored in a shard become the one training mask: union, at least K
//! raters, or a majority of the raters present on the slice.

use crate::error::Error;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Number of rater mask folders (`mask-0` .. `mask-3`).
pub const RATERS: usize = 4;

/// A rule that fuses the rater bit planes (`rater_bits`, bit r = rater r marked the pixel) into
/// one 0/1 mask. Config names: `union`, `majority`, `at-least-K` with K in 1..=4.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum RaterFusion {
    /// A pixel is foreground when any rater marked it (the shard's `mask` column).
    #[default]
    Union,
    /// A pixel is foreground when at least K raters marked it.
    AtLeast(u8),
    /// A pixel is foreground when at least ceil(present / 2) of the raters present on the slice
    /// marked it; a slice with no rater present is all background.
    Majority,
}

impl RaterFusion {
    /// Whether this rule is the same as the shard's precomputed `mask` column, so a reader can
    /// skip the rater planes.
    pub fn is_union(&self) -> bool {
        matches!(self, RaterFusion::Union)
    }

    /// The number of marking raters a pixel needs under this rule, given the slice's
    /// `raters_present` bitfield. `None` means no pixel can be foreground.
    fn threshold(&self, raters_present: u8) -> Option<u32> {
        match *self {
            RaterFusion::Union => Some(1),
            RaterFusion::AtLeast(k) => Some(u32::from(k.max(1))),
            RaterFusion::Majority => {
                let present = raters_present.count_ones();
                (present > 0).then(|| present.div_ceil(2))
            }
        }
    }

    /// Fuses `rater_bits` (one byte per pixel) into `out` (cleared first; one 0/1 byte per pixel).
    pub fn fuse(&self, rater_bits: &[u8], raters_present: u8, out: &mut Vec<u8>) {
        out.clear();
        match self.threshold(raters_present) {
            None => out.resize(rater_bits.len(), 0),
            Some(k) => out.extend(rater_bits.iter().map(|b| u8::from(b.count_ones() >= k))),
        }
    }
}

impl fmt::Display for RaterFusion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RaterFusion::Union => f.write_str("union"),
            RaterFusion::Majority => f.write_str("majority"),
            RaterFusion::AtLeast(k) => write!(f, "at-least-{k}"),
        }
    }
}

impl FromStr for RaterFusion {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            Error::Usage(format!(
                "rater fusion `{s}`: expected `union`, `majority` or `at-least-K` with K in 1..={RATERS}"
            ))
        };
        match s {
            "union" => Ok(RaterFusion::Union),
            "majority" => Ok(RaterFusion::Majority),
            _ => {
                let k: u8 = s
                    .strip_prefix("at-least-")
                    .and_then(|k| k.parse().ok())
                    .ok_or_else(bad)?;
                if (1..=RATERS as u8).contains(&k) {
                    Ok(RaterFusion::AtLeast(k))
                } else {
                    Err(bad())
                }
            }
        }
    }
}

impl TryFrom<String> for RaterFusion {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse().map_err(|e: Error| e.to_string())
    }
}

impl From<RaterFusion> for String {
    fn from(f: RaterFusion) -> Self {
        f.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fusion_table() {
        // Pixels: no rater, rater 0, raters 0+1, raters 0+1+2, all four, rater 3 only.
        let bits = [0b0000, 0b0001, 0b0011, 0b0111, 0b1111, 0b1000];
        let all = 0b1111;
        let cases: &[(RaterFusion, u8, [u8; 6])] = &[
            (RaterFusion::Union, all, [0, 1, 1, 1, 1, 1]),
            (RaterFusion::AtLeast(1), all, [0, 1, 1, 1, 1, 1]),
            (RaterFusion::AtLeast(2), all, [0, 0, 1, 1, 1, 0]),
            (RaterFusion::AtLeast(3), all, [0, 0, 0, 1, 1, 0]),
            (RaterFusion::AtLeast(4), all, [0, 0, 0, 0, 1, 0]),
            // 4 present → 2 needed.
            (RaterFusion::Majority, all, [0, 0, 1, 1, 1, 0]),
            // 3 present → 2 needed.
            (RaterFusion::Majority, 0b0111, [0, 0, 1, 1, 1, 0]),
            // 1 present → 1 needed.
            (RaterFusion::Majority, 0b0001, [0, 1, 1, 1, 1, 1]),
            // 0 present → all background.
            (RaterFusion::Majority, 0, [0; 6]),
        ];
        let mut out = vec![9; 2];
        for (rule, present, want) in cases {
            rule.fuse(&bits, *present, &mut out);
            assert_eq!(out, want, "{rule} with present {present:04b}");
        }
    }

    #[test]
    fn names_round_trip_and_bad_names_are_usage_errors() {
        for name in [
            "union",
            "majority",
            "at-least-1",
            "at-least-2",
            "at-least-3",
            "at-least-4",
        ] {
            let f: RaterFusion = name.parse().unwrap();
            assert_eq!(f.to_string(), name);
            let json = serde_json::to_string(&f).unwrap();
            assert_eq!(json, format!("\"{name}\""));
            assert_eq!(serde_json::from_str::<RaterFusion>(&json).unwrap(), f);
        }
        for bad in [
            "",
            "Union",
            "at-least-0",
            "at-least-5",
            "at-least-",
            "at-least-x",
        ] {
            let err = bad.parse::<RaterFusion>().unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad}");
            assert!(serde_json::from_str::<RaterFusion>(&format!("\"{bad}\"")).is_err());
        }
    }
}
