//! Segmentation metrics shared by validation, `eval` and `report`: pooled confusion counts,
//! 8-connected components, lesion-level detection and the threshold sweep.

pub mod components;
pub mod confusion;
pub mod lesions;
pub mod monitor;
pub mod sweep;

pub use confusion::{ConfusionCounts, EpochAccumulator, EpochScores};
